//! Readers look up continuously while the writer creates, moves, re-flags and
//! deletes slots. Every slot a reader gets must have covered that gfn at some
//! moment during the lookup (checked against the writer's log of versions),
//! no reader may see an INVALID or freed slot, and at the end the live slot
//! objects must be exactly the slots the map holds.
//!
//! `MEMSLOTS_STRESS_MS` sets the run time (default 2000 ms). Under miri the
//! writer instead makes a fixed, small number of operations.

mod common;

use common::rng::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::model::Model;
use memslots::{Config, Flags, Memslots, Region, SlotKey};

/// Static slots, never touched: lookups there must always succeed.
const STATIC: [(u16, u64, u64); 2] = [(0, 0x0, 0x100), (1, 0x1000, 0x400)];
/// Dynamic slots churn in this gfn window.
const WINDOW: std::ops::Range<u64> = 0x10_000..0x10_400;
const DYNAMIC_IDS: std::ops::Range<u16> = 10..26;

fn hva_of(key: SlotKey) -> u64 {
    0x7000_0000_0000 + (u64::from(key.as_id) << 40) + (u64::from(key.id) << 28)
}

/// A sampled lookup: the slot returned, the gfn, and the writer's step
/// counter before the pin and after the lookup.
struct Seen {
    region: Region,
    gfn: u64,
    steps: (u64, u64),
}

/// How long the writer runs, and how much must at least have happened.
struct Budget {
    run: Duration,
    max_updates: u64,
    min_updates: u64,
    min_lookups: u64,
    min_seen: usize,
}

impl Budget {
    fn new() -> Self {
        if cfg!(miri) {
            return Budget { run: Duration::MAX, max_updates: 40, min_updates: 40, min_lookups: 1, min_seen: 0 };
        }
        let ms = std::env::var("MEMSLOTS_STRESS_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        Budget {
            run: Duration::from_millis(ms),
            max_updates: u64::MAX,
            min_updates: 100,
            min_lookups: 10_000,
            min_seen: 100,
        }
    }
}

#[test]
fn readers_see_only_live_covering_slots() {
    let budget = Budget::new();
    let config = Config::default();
    let slots = Memslots::new(config).unwrap();
    let mut model = Model::new(config);
    let mut w = slots.writer().unwrap();
    for as_id in 0..2 {
        for (id, base_gfn, npages) in STATIC {
            let r = Region { id, as_id, base_gfn, npages, hva: hva_of(SlotKey { id, as_id }), flags: Flags::empty() };
            w.create(r).unwrap();
            model.create(r).unwrap();
        }
    }
    // step = number of writer operations completed.
    let step = AtomicU64::new(0);
    let stop = AtomicBool::new(false);

    let (log, seen, lookups, updates) = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|i| {
                let (slots, step, stop) = (&slots, &step, &stop);
                s.spawn(move || {
                    let mut reader = if i == 0 { slots.reader() } else { slots.device_reader() };
                    let mut rng = Rng(i + 1);
                    let mut seen = Vec::new();
                    let mut lookups = 0u64;
                    while !stop.load(SeqCst) {
                        reader.set_smm(rng.below(8) == 0).unwrap();
                        let as_id = reader.address_space();
                        let s0 = step.load(SeqCst);
                        let view = reader.pin();
                        let mut batch = Vec::new();
                        for _ in 0..64 {
                            let gfn = if rng.below(4) == 0 {
                                rng.below(0x1400)
                            } else {
                                WINDOW.start + rng.below(WINDOW.end - WINDOW.start + 0x40)
                            };
                            lookups += 1;
                            if let Some((id, base, n)) =
                                STATIC.iter().copied().find(|&(_, b, n)| gfn >= b && gfn < b + n)
                            {
                                let slot = view.gfn_to_slot(gfn).expect("a static slot vanished");
                                assert_eq!(
                                    (slot.id(), slot.as_id(), slot.base_gfn(), slot.npages()),
                                    (id, as_id, base, n)
                                );
                                continue;
                            }
                            if let Some(slot) = view.gfn_to_slot(gfn) {
                                let r = *slot.region();
                                assert!(
                                    r.base_gfn <= gfn && gfn < r.end_gfn(),
                                    "slot does not cover gfn {gfn:#x}: {r:?}"
                                );
                                assert_eq!(r.as_id, as_id);
                                assert_eq!(r.hva, hva_of(r.key()), "corrupt slot {r:?}");
                                assert_eq!(slot.flags().bits() & !3, 0, "an INVALID slot escaped: {r:?}");
                                batch.push((r, gfn));
                            }
                        }
                        // Exactly the intersecting slots, in order, disjoint.
                        let mut last_end = 0;
                        for slot in view.slots_in_gfn_range(WINDOW) {
                            assert!(
                                slot.base_gfn() >= last_end
                                    && slot.end_gfn() > WINDOW.start
                                    && slot.base_gfn() < WINDOW.end
                            );
                            last_end = slot.end_gfn();
                        }
                        drop(view);
                        let s1 = step.load(SeqCst);
                        seen.extend(batch.into_iter().step_by(8).map(|(region, gfn)| Seen {
                            region,
                            gfn,
                            steps: (s0, s1),
                        }));
                    }
                    (seen, lookups)
                })
            })
            .collect();

        // The writer: random valid and invalid operations, checked against
        // the model; a log of (version, first step, last step) for readers.
        let mut rng = Rng(99);
        let mut live: HashMap<SlotKey, (Region, u64)> = HashMap::new();
        let mut log: Vec<(Region, u64, u64)> = Vec::new();
        let start = Instant::now();
        let mut op = 0u64;
        while start.elapsed() < budget.run && op < budget.max_updates {
            let key = SlotKey { id: DYNAMIC_IDS.start + rng.below(16) as u16, as_id: rng.below(2) as u16 };
            let base = WINDOW.start + rng.below(WINDOW.end - WINDOW.start);
            let flags = Flags::from_bits(rng.below(2) as u32).unwrap();
            let (got, want) = match rng.below(4) {
                0 => {
                    let r = Region {
                        id: key.id,
                        as_id: key.as_id,
                        base_gfn: base,
                        npages: 1 + rng.below(0x30),
                        hva: hva_of(key),
                        flags,
                    };
                    (w.create(r), model.create(r))
                }
                1 => (w.delete(key), model.delete(key)),
                2 => (w.move_to(key, base), model.move_to(key, base)),
                _ => (w.set_flags(key, flags), model.set_flags(key, flags)),
            };
            assert_eq!(got, want);
            // Versions that changed in op `op` end at step `op`; new ones
            // start there.
            let now = model.by_id(key);
            let before = live.get(&key).map(|v| v.0);
            if before != now {
                if let Some((old, first)) = live.remove(&key) {
                    log.push((old, first, op));
                }
                if let Some(new) = now {
                    live.insert(key, (new, op));
                }
            }
            op += 1;
            step.store(op, SeqCst);
        }
        stop.store(true, SeqCst);
        log.extend(live.into_values().map(|(r, first)| (r, first, u64::MAX)));
        let mut seen = Vec::new();
        let mut lookups = 0;
        for r in readers {
            let (s, n) = r.join().unwrap();
            seen.extend(s);
            lookups += n;
        }
        (log, seen, lookups, op)
    });

    let mut versions: HashMap<Region, Vec<(u64, u64)>> = HashMap::new();
    for (r, first, last) in log {
        versions.entry(r).or_default().push((first, last));
    }
    for s in &seen {
        let lives = versions.get(&s.region).unwrap_or_else(|| panic!("never created: {:?}", s.region));
        assert!(
            lives.iter().any(|&(first, last)| first <= s.steps.1 && s.steps.0 <= last),
            "{:?} at gfn {:#x} seen during steps {:?}, but it lived during {lives:?}",
            s.region,
            s.gfn,
            s.steps
        );
    }
    assert!(
        updates >= budget.min_updates && lookups >= budget.min_lookups,
        "too little happened: {updates} updates, {lookups} lookups"
    );
    assert!(seen.len() >= budget.min_seen, "too few dynamic hits checked: {}", seen.len());
    assert_eq!(slots.slot_objects(), model.slots.len(), "live slot objects differ from the slots held");
    println!("stress: {updates} updates, {lookups} lookups, {} dynamic hits checked against the log", seen.len());
}
