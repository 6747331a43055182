//! 1000 single writer calls against one batch of the same 1000 operations
//! (issue #12), in a map of 509 and of 32764 slots besides the 1000 the
//! work touches. Each iteration does the same net work both ways:
//!
//! - `moves`: 1000 distinct slots move to free space (even iterations) or
//!   back (odd ones);
//! - `flags`: `LOG_DIRTY_PAGES` goes on (even) or off (odd) on 1000
//!   distinct slots;
//! - `creates`: 1000 new slots are created; they are deleted again, by one
//!   untimed batch, before the next iteration.
//!
//! The map's `max_slots` is raised above x86's 32764 to make room for the
//! 1000 (moves, flags: 33764 slots in all at the larger size).
//!
//! `moves` and the others run with no reader registered: that measures the
//! writer's own work (a single move or delete is two swaps and two grace
//! periods; the whole batch is as many). `moves_with_reader` repeats the
//! moves while a vCPU reader thread looks up in a loop, a view per lookup,
//! so every grace period has a reader to wait for.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use memslots::{Config, Flags, Memslots, Region, SlotKey, Writer};

/// Operations per iteration, both ways.
const OPS: u16 = 1000;
/// Where moved and created slots go: above every slot of the map.
const HIGH: u64 = 0x1000_0000;
const NPAGES: u64 = 0x10;

fn region(id: u16, base_gfn: u64) -> Region {
    Region {
        id,
        as_id: 0,
        base_gfn,
        npages: NPAGES,
        hva: 0x1000_0000_0000 + (u64::from(id) << 20),
        flags: Flags::empty(),
    }
}

fn key(id: u16) -> SlotKey {
    SlotKey { id, as_id: 0 }
}

/// A map of `slots` slots in address space 0 (ids `0..slots` at gfn
/// `id * NPAGES`), with room for `OPS` more ids.
fn map(slots: u16) -> (Memslots, Writer) {
    let config = Config::new(2, slots + OPS);
    let map = Memslots::new(config).expect("config");
    let mut w = map.writer().expect("writer");
    let mut b = w.batch();
    for id in 0..slots {
        b.create(region(id, u64::from(id) * NPAGES));
    }
    b.commit().expect("setup");
    (map, w)
}

/// `OPS` distinct ids spread evenly over `0..slots`.
fn worked(slots: u16) -> Vec<u16> {
    let total = u32::from(slots);
    (0..u32::from(OPS)).map(|j| (j * total / u32::from(OPS)) as u16).collect()
}

/// `ids` move to free space and back: 1000 single calls, then one batch.
fn bench_moves(c: &mut Criterion, name: &str, existing: u16, slots: &Memslots, w: &mut Writer, ids: &[u16]) {
    let target = |id: u16, out: bool| if out { HIGH + u64::from(id) * NPAGES } else { u64::from(id) * NPAGES };
    // Go on from where the slots are.
    let mut out = slots.reader().pin().slot_by_id(ids[0]).map(|s| s.base_gfn()) == Some(0);
    let mut group = c.benchmark_group(name);
    group.bench_function(BenchmarkId::new("1000 single", existing), |b| {
        b.iter(|| {
            for &id in ids {
                black_box(w.move_to(key(id), target(id, out)).expect("move"));
            }
            out = !out;
        })
    });
    group.bench_function(BenchmarkId::new("one 1000-op batch", existing), |b| {
        b.iter(|| {
            let mut batch = w.batch();
            for &id in ids {
                batch.move_to(key(id), target(id, out));
            }
            black_box(batch.commit().expect("moves"));
            out = !out;
        })
    });
    group.finish();
}

fn compare(c: &mut Criterion) {
    for existing in [509u16, 32764] {
        // moves and flags work on OPS of the map's slots: the others are the
        // `existing` ones.
        let total = existing + OPS;

        let (slots, mut w) = map(total);
        let ids = worked(total);
        bench_moves(c, "moves", existing, &slots, &mut w, &ids);
        assert_eq!(slots.slot_objects(), usize::from(total));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let (stop, reader) = (stop.clone(), slots.reader());
            std::thread::spawn(move || {
                let mut gfn = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    black_box(reader.pin().gfn_to_hva(gfn));
                    gfn = (gfn + 7) % (NPAGES * 64);
                }
            })
        };
        bench_moves(c, "moves_with_reader", existing, &slots, &mut w, &ids);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        busy.join().expect("reader thread");

        let mut group = c.benchmark_group("flags");
        let flags = |on: bool| if on { Flags::LOG_DIRTY_PAGES } else { Flags::empty() };
        group.bench_function(BenchmarkId::new("1000 single", existing), |b| {
            let mut on = true;
            b.iter(|| {
                for &id in &ids {
                    black_box(w.set_flags(key(id), flags(on)).expect("flags"));
                }
                on = !on;
            })
        });
        group.bench_function(BenchmarkId::new("one 1000-op batch", existing), |b| {
            let mut on = slots.reader().pin().slot_by_id(ids[0]).map(|s| s.flags()) == Some(Flags::empty());
            b.iter(|| {
                let mut batch = w.batch();
                for &id in &ids {
                    batch.set_flags(key(id), flags(on));
                }
                black_box(batch.commit().expect("flags"));
                on = !on;
            })
        });
        group.finish();
        drop(w);
        drop(slots);

        let mut group = c.benchmark_group("creates");
        let (slots, mut w) = map(existing);
        let new: Vec<Region> = (0..OPS).map(|j| region(existing + j, HIGH + u64::from(j) * NPAGES)).collect();
        let delete_all = |w: &mut Writer| {
            let mut batch = w.batch();
            for r in &new {
                batch.delete(r.key());
            }
            batch.commit().expect("deletes");
        };
        group.bench_function(BenchmarkId::new("1000 single", existing), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for r in &new {
                        black_box(w.create(*r).expect("create"));
                    }
                    timed += start.elapsed();
                    delete_all(&mut w);
                }
                timed
            })
        });
        group.bench_function(BenchmarkId::new("one 1000-op batch", existing), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut batch = w.batch();
                    for r in &new {
                        batch.create(*r);
                    }
                    black_box(batch.commit().expect("creates"));
                    timed += start.elapsed();
                    delete_all(&mut w);
                }
                timed
            })
        });
        assert_eq!(slots.slot_objects(), usize::from(existing));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = compare
}
criterion_main!(benches);
