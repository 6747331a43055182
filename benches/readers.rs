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

/// What asymmetric fences would trade: a reader's publication with only a
/// compiler fence (the lower bound of a `membarrier`-based pin, which the
/// crate does not offer) against the crate's locked exchange, and the
/// writer-side `membarrier(PRIVATE_EXPEDITED)` that such a pin would need on
/// every grace period: it interrupts every CPU running a thread of the
/// process, vCPU threads inside `KVM_RUN` included.
fn asymmetric_fence(c: &mut Criterion) {
    use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
    let mut group = c.benchmark_group("asymmetric_fence");
    let word = AtomicU64::new(0);
    let active = AtomicU64::new(1);
    group.bench_function("pin_compiler_fence_only", |b| {
        b.iter(|| {
            word.store(black_box(7), Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            let set = active.load(Ordering::Acquire);
            word.store(0, Ordering::Release);
            set
        })
    });
    group.bench_function("pin_locked_exchange", |b| {
        b.iter(|| {
            word.swap(black_box(7), Ordering::SeqCst);
            let set = active.load(Ordering::SeqCst);
            word.store(0, Ordering::Release);
            set
        })
    });
    // SAFETY: membarrier takes integer arguments and touches no memory of
    // ours; registration is required before the expedited command.
    let registered = unsafe {
        libc::syscall(libc::SYS_membarrier, 1 << 4 /* REGISTER_PRIVATE_EXPEDITED */, 0, 0) == 0
    };
    if registered {
        // Another thread of the process spins on the other core, as a vCPU
        // thread would: the barrier has to interrupt it.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        group.bench_function("writer_membarrier_private_expedited", |b| {
            // SAFETY: as above.
            b.iter(|| unsafe {
                libc::syscall(libc::SYS_membarrier, 1 << 3 /* PRIVATE_EXPEDITED */, 0, 0)
            })
        });
        stop.store(true, Ordering::Relaxed);
        spinner.join().expect("spinner");
    } else {
        eprintln!("membarrier(PRIVATE_EXPEDITED) unavailable here: not measured");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short: the machine is shared and the whole bench should take under
    // three minutes; the peers are measured in the same run.
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = pin_unpin, pinned_lookup, asymmetric_fence
}
criterion_main!(benches);
