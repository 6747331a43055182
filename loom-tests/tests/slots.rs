//! Models 1-4: the slot protocol under loom, with crossbeam-epoch modeled too
//! (`--cfg crossbeam_loom`). Sets live in loom-tracked cells and every slot
//! handed to a reader is a tracked read of a cell the writer writes before
//! freeing it, so loom reports a reader inside a set the writer edits and a
//! reader holding a slot the writer frees.
#![cfg(loom)]

use loom::thread;
use memslots::{Config, Flags, Memslots, Region, Slot, SlotKey, Writer};

const KEY: SlotKey = SlotKey { id: 0, as_id: 0 };
const HVA: u64 = 0x10_0000;

/// One address space holding slot 0 at gfns 0..4.
fn setup() -> (Memslots, Writer) {
    let slots = Memslots::new(Config { address_spaces: 1, max_slots: 4, max_total_pages: u64::MAX }).unwrap();
    let mut w = slots.writer().unwrap();
    w.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 4, hva: HVA, flags: Flags::empty() }).unwrap();
    (slots, w)
}

fn state(slot: Option<&Slot>) -> Option<(u64, Flags)> {
    slot.map(|s| (s.base_gfn(), s.flags()))
}

/// Runs `read` on a reader thread while the model's thread applies `write`,
/// then checks the live slot objects.
fn against_writer(read: impl FnOnce(Memslots) + Send + 'static, write: impl FnOnce(&mut Writer), objects: usize) {
    let (slots, mut w) = setup();
    let reader = {
        let slots = slots.clone();
        thread::spawn(move || read(slots))
    };
    write(&mut w);
    reader.join().unwrap();
    assert_eq!(slots.slot_objects(), objects);
}

/// Model 1 body: a flags change (swap, grace period, catch-up, free) against
/// `readers` readers, each of which must see the old or the new slot, the
/// same one for every lookup under one view.
fn flags_change(readers: usize, skip_grace_period: bool) {
    let (slots, mut w) = setup();
    if skip_grace_period {
        w.loom_skip_grace_period();
    }
    let handles: Vec<_> = (0..readers)
        .map(|i| {
            let slots = slots.clone();
            thread::spawn(move || {
                let reader = if i == 0 { slots.reader() } else { slots.device_reader() };
                let view = reader.pin();
                let seen = state(view.gfn_to_slot(1));
                assert!(seen == Some((0, Flags::empty())) || seen == Some((0, Flags::LOG_DIRTY_PAGES)), "{seen:?}");
                assert_eq!(state(view.gfn_to_slot(3)), seen, "one view saw two states");
            })
        })
        .collect();
    w.set_flags(KEY, Flags::LOG_DIRTY_PAGES).unwrap();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(slots.slot_objects(), 1);
}

/// Model 1, one reader. Preemption bound 2.
#[test]
fn model1_swap_grace_catch_up_one_reader() {
    loom_tests::check(2, || flags_change(1, false));
}

/// Model 1, two readers (a vCPU and a device reader). Preemption bound 1.
#[test]
fn model1_swap_grace_catch_up_two_readers() {
    loom_tests::check(1, || flags_change(2, false));
}

/// Negative control for model 1: without the grace-period wait the writer
/// edits a set, or frees a slot, while a reader still uses it, and loom must
/// say so. Preemption bound 2.
///
/// Loom's report unwinds through a tracked access whose destructor panics
/// again, which aborts the process, so the model runs in a child process
/// (this same test binary) and the test checks that the child failed with
/// loom's report.
#[test]
fn model1_negative_control_without_grace_period() {
    const CHILD: &str = "MEMSLOTS_LOOM_NEGATIVE_CONTROL";
    if std::env::var_os(CHILD).is_some() {
        loom_tests::check(2, || flags_change(1, true));
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "model1_negative_control_without_grace_period", "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "loom missed the broken protocol");
    assert!(stderr.contains("Causality violation"), "the child failed for another reason:\n{stderr}");
    println!(
        "loom caught the protocol without a grace period: {}",
        stderr.lines().find(|l| l.contains("Causality")).unwrap()
    );
}

/// Model 2: MOVE through the INVALID slot. A view sees the slot at its old
/// place, nowhere (while INVALID), or at its new place; never both, never the
/// INVALID copy. Preemption bound 2.
#[test]
fn model2_move_through_invalid() {
    loom_tests::check(2, || {
        let read = |slots: Memslots| {
            let reader = slots.reader();
            let view = reader.pin();
            let old = state(view.gfn_to_slot(1));
            let new = state(view.gfn_to_slot(0x101));
            assert!(old.is_none() || new.is_none(), "both places at once: {old:?} {new:?}");
            assert_eq!(view.slots_in_gfn_range(0..0x200).count(), usize::from(old.is_some() || new.is_some()));
        };
        against_writer(read, |w| w.move_to(KEY, 0x100).unwrap(), 1);
    });
}

/// Model 2: DELETE through the INVALID slot. Preemption bound 2.
#[test]
fn model2_delete_through_invalid() {
    loom_tests::check(2, || {
        let read = |slots: Memslots| {
            let reader = slots.device_reader();
            let view = reader.pin();
            let seen = state(view.gfn_to_slot(1));
            assert!(seen.is_none() || seen == Some((0, Flags::empty())));
            assert_eq!(view.slot_by_id(0).is_some(), seen.is_some());
        };
        against_writer(read, |w| w.delete(KEY).unwrap(), 0);
    });
}

/// Model 3: the set's last-used cache. A device reader refreshes it on
/// misses while the writer moves the slot and moves the cache with its
/// compare-exchange. Preemption bound 2.
#[test]
fn model3_last_used_cache() {
    loom_tests::check(2, || {
        let read = |slots: Memslots| {
            let reader = slots.device_reader();
            for _ in 0..2 {
                let view = reader.pin();
                let old = state(view.gfn_to_slot(1));
                let new = state(view.gfn_to_slot(0x101));
                let again = state(view.gfn_to_slot(1));
                assert_eq!(old, again, "the cache changed what a view sees");
                assert!(old.is_none() || new.is_none());
            }
        };
        against_writer(read, |w| w.move_to(KEY, 0x100).unwrap(), 1);
    });
}

/// Model 4: the per-vCPU cache and the generation. The second view must not
/// get the slot cached by the first one once the generation moved on: every
/// lookup agrees with the set the view reads. Preemption bound 2.
#[test]
fn model4_vcpu_cache_generation() {
    loom_tests::check(2, || {
        let read = |slots: Memslots| {
            let reader = slots.reader();
            for _ in 0..2 {
                let view = reader.pin();
                let cached = view.gfn_to_slot(1).map(|s| s as *const Slot);
                let in_set = view.slots_in_gfn_range(1..2).next().map(|s| s as *const Slot);
                assert_eq!(cached, in_set, "the vCPU cache disagrees with the viewed set");
            }
        };
        let write = |w: &mut Writer| {
            w.move_to(KEY, 0x100).unwrap();
            w.move_to(KEY, 0).unwrap();
        };
        against_writer(read, write, 1);
    });
}
