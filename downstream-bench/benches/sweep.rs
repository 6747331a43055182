//! Uniform random lookups under one view at every size from 8 to 32764
//! slots in steps of about half, vCPU reader against the bare sorted `Vec`:
//! the sizes between those of `read`, where the tree gains a level.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memslots_downstream_bench::peers::{gfns, layout, BareVec, Lookup};
use memslots_downstream_bench::{bare_vec, build, shuffled, under_one_view, SWEEP_SIZES};

const BATCH: usize = 4096;

fn sweep(c: &mut Criterion) {
    for n in SWEEP_SIZES {
        let spans = layout(n);
        let slots = build(&spans, &shuffled(n));
        let vcpu = slots.reader();
        let vec = BareVec::build(&spans);
        let queries = gfns(&spans, BATCH, false);
        let mut group = c.benchmark_group(format!("sweep/uniform/{n}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(BenchmarkId::from_parameter("vcpu"), |b| b.iter(|| under_one_view(&vcpu, &queries)));
        group.bench_function(BenchmarkId::from_parameter("bare Vec"), |b| b.iter(|| bare_vec(&vec, &queries)));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = sweep
}
criterion_main!(benches);
