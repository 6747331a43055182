//! The read path from outside the crate: uniform random and hot gfns, under
//! one view and pinned per lookup, both reader kinds, against a bare sorted
//! `Vec` and `ArcSwap<Vec>`. Each iteration is 4096 lookups.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memslots::Reader;
use memslots_downstream_bench::peers::{gfns, layout, ArcSwapVec, BareVec, Lookup};
use memslots_downstream_bench::{bare_vec, build, shuffled, under_one_view, SIZES};

const BATCH: usize = 4096;

fn pinned_each(reader: &Reader, queries: &[u64]) {
    queries.iter().for_each(|&g| _ = black_box(reader.pin().gfn_to_hva(black_box(g))));
}

fn read(c: &mut Criterion) {
    for n in SIZES {
        let spans = layout(n);
        // Built in random order, as a VMM's slots come and go.
        let slots = build(&spans, &shuffled(n));
        let (vcpu, device) = (slots.reader(), slots.device_reader());
        let (vec, arcswap) = (BareVec::build(&spans), ArcSwapVec::build(&spans));
        for pattern in ["uniform", "hot"] {
            let queries = gfns(&spans, BATCH, pattern == "hot");
            let mut group = c.benchmark_group(format!("view/{pattern}/{n}"));
            group.throughput(Throughput::Elements(BATCH as u64));
            group.bench_function(BenchmarkId::from_parameter("vcpu"), |b| b.iter(|| under_one_view(&vcpu, &queries)));
            group.bench_function(BenchmarkId::from_parameter("device"), |b| {
                b.iter(|| under_one_view(&device, &queries))
            });
            group.bench_function(BenchmarkId::from_parameter("bare Vec"), |b| b.iter(|| bare_vec(&vec, &queries)));
            group.finish();
        }
        let queries = gfns(&spans, BATCH, false);
        let mut group = c.benchmark_group(format!("pinned/uniform/{n}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(BenchmarkId::from_parameter("vcpu"), |b| b.iter(|| pinned_each(&vcpu, &queries)));
        group.bench_function(BenchmarkId::from_parameter("device"), |b| b.iter(|| pinned_each(&device, &queries)));
        group.bench_function(BenchmarkId::from_parameter("ArcSwap<Vec>"), |b| {
            b.iter(|| queries.iter().for_each(|&g| _ = black_box(arcswap.find_pinned(black_box(g)))))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = read
}
criterion_main!(benches);
