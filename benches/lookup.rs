//! Lookup latency against the peers: uniform random and hot gfns, pinned per
//! lookup and under one guard, for N = 1 .. 32764 slots. Each iteration is
//! 4096 lookups; criterion's throughput line gives lookups per second.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::peers::{gfns, layout, ArcSwapVec, BareVec, Lookup, MemslotsMap, RwLockBTree, VmMemory};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 6] = [1, 8, 32, 509, 4096, 32764];
const BATCH: usize = 4096;

fn lookups<M: Lookup>(c: &mut Criterion) {
    for hot in [false, true] {
        let pattern = if hot { "hot" } else { "uniform" };
        for n in SIZES {
            let spans = layout(n);
            let map = M::build(&spans);
            let queries = gfns(&spans, BATCH, hot);
            let mut group = c.benchmark_group(format!("lookup/{pattern}/{n}"));
            group.throughput(Throughput::Elements(BATCH as u64));
            group.bench_function(BenchmarkId::new(M::NAME, "pinned"), |b| {
                b.iter(|| queries.iter().for_each(|&g| _ = black_box(map.find_pinned(black_box(g)))))
            });
            group.bench_function(BenchmarkId::new(M::NAME, "guard"), |b| {
                b.iter(|| {
                    let guard = map.guard();
                    queries.iter().for_each(|&g| _ = black_box(M::find(&guard, black_box(g))))
                })
            });
            group.finish();
        }
    }
}

fn all(c: &mut Criterion) {
    lookups::<MemslotsMap>(c);
    lookups::<VmMemory>(c);
    lookups::<RwLockBTree>(c);
    lookups::<ArcSwapVec>(c);
    lookups::<BareVec>(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = all
}
criterion_main!(benches);
