//! Readers on two cores: one reader alone against the same reader while a
//! second reader of the same kind runs the same loop on another thread.
//! Each iteration is 4096 lookups under one view, uniform random gfns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memslots::{Memslots, Reader};
use memslots_downstream_bench::peers::{gfns, layout};
use memslots_downstream_bench::{build, shuffled, under_one_view};

const BATCH: usize = 4096;

fn reader(slots: &Memslots, kind: &str) -> Reader {
    if kind == "vcpu" {
        slots.reader()
    } else {
        slots.device_reader()
    }
}

fn two_readers(c: &mut Criterion) {
    for n in [509, 32764] {
        let spans = layout(n);
        let slots = build(&spans, &shuffled(n));
        for pattern in ["uniform", "hot"] {
            let queries = gfns(&spans, BATCH, pattern == "hot");
            let mut group = c.benchmark_group(format!("two_readers/{pattern}/{n}"));
            group.throughput(Throughput::Elements(BATCH as u64));
            for kind in ["vcpu", "device"] {
                let mine = reader(&slots, kind);
                group.bench_function(BenchmarkId::new(kind, "alone"), |b| b.iter(|| under_one_view(&mine, &queries)));
                let stop = AtomicBool::new(false);
                thread::scope(|s| {
                    s.spawn(|| {
                        let other = reader(&slots, kind);
                        // The other reader walks the queries from another point.
                        let (a, b) = queries.split_at(BATCH / 2);
                        let rotated: Vec<u64> = b.iter().chain(a).copied().collect();
                        while !stop.load(Ordering::Relaxed) {
                            under_one_view(&other, &rotated);
                        }
                    });
                    // Let the other thread start before measuring.
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_millis(50) {
                        under_one_view(&mine, &queries);
                    }
                    group.bench_function(BenchmarkId::new(kind, "beside another"), |b| {
                        b.iter(|| under_one_view(&mine, &queries))
                    });
                    stop.store(true, Ordering::Relaxed);
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = two_readers
}
criterion_main!(benches);
