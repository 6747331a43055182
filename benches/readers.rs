//! The reader path alone, one thread, no writer: the cost of a pin and unpin,
//! and of one lookup with its own pin (as a vCPU exit handler does it) for
//! both reader kinds against `ArcSwap<Vec>`'s `load()`.
//!
//! Every iteration is one pin or one lookup, so criterion's times are per
//! operation. The gfns come from a fixed array of uniform random gfns inside
//! the slots, walked in order.

// The peers module is shared with the other benches; this one uses part of it.
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::time::Duration;

use common::peers::{gfns, layout, memslots_config, region, ArcSwapVec, Lookup, Span};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use memslots::Memslots;

const SIZES: [usize; 4] = [8, 509, 4096, 32764];
/// Precomputed gfns per size; a power of two so the index wraps with a mask.
const QUERIES: usize = 4096;

fn build(spans: &[Span]) -> Memslots {
    let slots = Memslots::new(memslots_config()).expect("valid config");
    let mut w = slots.writer().expect("first writer");
    for (id, s) in spans.iter().enumerate() {
        w.create(region(id, s)).expect("valid layout");
    }
    slots
}

fn pin_unpin(c: &mut Criterion) {
    let mut group = c.benchmark_group("pin_unpin");
    for n in [0, 509] {
        let slots = build(&layout(n));
        for (kind, reader) in [("vcpu", slots.reader()), ("device", slots.device_reader())] {
            group.bench_function(BenchmarkId::new(kind, n), |b| b.iter(|| drop(black_box(reader.pin()))));
        }
    }
    group.finish();
}

/// One lookup per iteration, each with its own pin or `load()`, walking
/// `queries` in order.
fn bench_lookups(
    group: &mut BenchmarkGroup<WallTime>,
    name: &str,
    n: usize,
    queries: &[u64],
    find: impl Fn(u64) -> Option<u64>,
) {
    let mut next = 0;
    group.bench_function(BenchmarkId::new(name, n), |b| {
        b.iter(|| {
            let gfn = queries[next];
            next = (next + 1) & (QUERIES - 1);
            find(black_box(gfn))
        })
    });
}

fn pinned_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("pinned_lookup");
    for n in SIZES {
        let spans = layout(n);
        let queries = gfns(&spans, QUERIES, false);
        let slots = build(&spans);
        let (vcpu, device) = (slots.reader(), slots.device_reader());
        bench_lookups(&mut group, "memslots_vcpu", n, &queries, |g| vcpu.pin().gfn_to_hva(g));
        bench_lookups(&mut group, "memslots_device", n, &queries, |g| device.pin().gfn_to_hva(g));
        let arcswap = ArcSwapVec::build(&spans);
        bench_lookups(&mut group, "arcswap_vec", n, &queries, |g| arcswap.find_pinned(g));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short: the machine is shared and the whole bench should take under
    // three minutes; the peers are measured in the same run.
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = pin_unpin, pinned_lookup
}
criterion_main!(benches);
