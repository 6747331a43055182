//! The zap binner: the cost of adding a range with 0..=15 entries present,
//! and under contention the number of zap passes per 1000 calls from two
//! threads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use memslots::{ZapBinner, ZapBins};

/// Bins holding `n` disjoint ranges `0x1000 * (i + 1) .. + 0x10`.
fn bins_with(n: u64) -> ZapBins {
    let mut bins = ZapBins::new();
    for i in 0..n {
        bins.add(0x1000 * (i + 1)..0x1000 * (i + 1) + 0x10);
    }
    bins
}

fn add(c: &mut Criterion) {
    let mut group = c.benchmark_group("zap_add");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(800));
    for n in 0..=15u64 {
        // A new range after the middle entry: an insert (n = 15: the overflow
        // into a full zap).
        let middle = 0x1000 * (n / 2 + 1) + 0x800;
        group.bench_function(format!("insert/{n}"), |b| {
            b.iter_batched_ref(
                || bins_with(n),
                |bins| bins.add(black_box(middle..middle + 0x10)),
                BatchSize::SmallInput,
            )
        });
        if n > 0 {
            // A range touching the middle entry: a merge.
            let touching = 0x1000 * (n / 2 + 1) + 0x10;
            group.bench_function(format!("merge/{n}"), |b| {
                b.iter_batched_ref(
                    || bins_with(n),
                    |bins| bins.add(black_box(touching..touching + 0x10)),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// Two threads call `zap_or_wait` on distinct ranges with a zap that costs
/// `zap_cost`; returns (calls, passes, zaps).
fn contention(calls_per_thread: u64, zap_cost: Duration) -> (u64, u64, u64) {
    let binner = ZapBinner::new();
    let zaps = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (binner, zaps) = (&binner, &zaps);
            s.spawn(move || {
                for i in 0..calls_per_thread {
                    let start = 0x1000 + (t * calls_per_thread + i) % 64 * 0x100;
                    binner.zap_or_wait(start..start + 0x10, |_| {
                        zaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let until = Instant::now() + zap_cost;
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    });
                }
            });
        }
    });
    (2 * calls_per_thread, binner.passes(), zaps.into_inner())
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    add(&mut c);
    println!("\nzap passes per 1000 calls, two threads, each zap busy for the given time:");
    for cost_us in [0u64, 1, 10] {
        let (calls, passes, zaps) = contention(20_000, Duration::from_micros(cost_us));
        println!(
            "  zap {cost_us:>2} us: {:>6.1} passes / 1000 calls, {:>6.1} zaps / 1000 calls ({calls} calls)",
            passes as f64 * 1000.0 / calls as f64,
            zaps as f64 * 1000.0 / calls as f64
        );
    }
    c.final_summary();
}
