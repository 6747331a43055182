//! Models 1-4 and 11: the slot protocol under loom, with the crate's
//! grace-period mechanism (`src/map/epoch.rs`) modeled too: its epoch words
//! are loom atomics and the writer's wait yields to loom. Sets live in
//! loom-tracked cells and every slot handed to a reader is a tracked read of
//! a cell the writer writes before freeing it, so loom reports a reader
//! inside a set the writer edits and a reader holding a slot the writer
//! frees.
//!
//! Model 5 (the zap binner) is in `zap.rs`; models 6-10 (the grace-period
//! mechanism itself and the reader's life cycle around it) in `grace.rs`.
#![cfg(loom)]

use loom::thread;
use loom_tests::{negative_control, setup, state, AFTER, BEFORE, HVA, KEY};
use memslots::{Change, Flags, LoomFault, Memslots, Region, Slot, SlotKey, Writer};

/// Runs `read` on a reader thread while the model's thread applies `write`,
/// then checks the live slot objects.
fn against_writer(read: impl FnOnce(Memslots) + Send + 'static, write: impl FnOnce(&mut Writer), objects: usize) {
    let (slots, mut w) = setup(None);
    let reader = {
        let slots = slots.clone();
        thread::spawn(move || read(slots))
    };
    write(&mut w);
    reader.join().unwrap();
    assert_eq!(slots.slot_objects(), objects, "model: slot objects left");
}

/// Model 1 body: a flags change (swap, grace period, catch-up, free) against
/// `readers` readers, each of which must see the old or the new slot, the
/// same one for every lookup under one view.
fn flags_change(readers: usize, fault: Option<LoomFault>) {
    let (slots, mut w) = setup(fault);
    let handles: Vec<_> = (0..readers)
        .map(|i| {
            let slots = slots.clone();
            thread::spawn(move || {
                let reader = if i == 0 { slots.reader() } else { slots.device_reader() };
                let view = reader.pin();
                let seen = state(view.gfn_to_slot(1));
                assert!(seen == BEFORE || seen == AFTER, "model: {seen:?}");
                assert_eq!(state(view.gfn_to_slot(3)), seen, "model: one view saw two states");
            })
        })
        .collect();
    assert_eq!(w.set_flags(KEY, Flags::LOG_DIRTY_PAGES), Ok(Change::FlagsChanged));
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(slots.slot_objects(), 1, "model: slot objects left");
}

/// Model 1, one reader. Preemption bound 4.
#[test]
fn model1_swap_grace_catch_up_one_reader() {
    loom_tests::check(4, || flags_change(1, None));
}

/// Model 1, two readers (a vCPU and a device reader). Preemption bound 2
/// (bound 3: 147k executions, about 7 s; bound 4: over 1M, about a minute).
#[test]
fn model1_swap_grace_catch_up_two_readers() {
    loom_tests::check(2, || flags_change(2, None));
}

/// Negative control for model 1: without the grace-period wait
/// ([`LoomFault::SkipGracePeriod`]) the writer edits a set, or frees a slot,
/// while a reader still uses it, and loom must say so. Preemption bound 4,
/// as the model without the fault.
/// The model runs in a child process (see `loom_tests::negative_control`).
#[test]
fn model1_negative_control_without_grace_period() {
    negative_control("model1_negative_control_without_grace_period", 4, || {
        flags_change(1, Some(LoomFault::SkipGracePeriod))
    });
}

/// Model 2: MOVE through the INVALID slot. A view sees the slot at its old
/// place, nowhere (while INVALID), or at its new place; never both, never the
/// INVALID copy. Preemption bound 4.
#[test]
fn model2_move_through_invalid() {
    loom_tests::check(4, || {
        let read = |slots: Memslots| {
            let reader = slots.reader();
            let view = reader.pin();
            let old = state(view.gfn_to_slot(1));
            let new = state(view.gfn_to_slot(0x101));
            assert!(old.is_none() || new.is_none(), "model: both places at once: {old:?} {new:?}");
            assert_eq!(
                view.slots_in_gfn_range(0..0x200).count(),
                usize::from(old.is_some() || new.is_some()),
                "model: the range iterator disagrees with the lookups"
            );
        };
        against_writer(read, |w| assert_eq!(w.move_to(KEY, 0x100), Ok(Change::Moved)), 1);
    });
}

/// Model 2: DELETE through the INVALID slot. Preemption bound 4.
#[test]
fn model2_delete_through_invalid() {
    loom_tests::check(4, || {
        let read = |slots: Memslots| {
            let reader = slots.device_reader();
            let view = reader.pin();
            let seen = state(view.gfn_to_slot(1));
            assert!(seen.is_none() || seen == BEFORE, "model: {seen:?}");
            assert_eq!(view.slot_by_id(0).is_some(), seen.is_some(), "model: by id and by gfn disagree");
        };
        against_writer(read, |w| assert_eq!(w.delete(KEY), Ok(Change::Deleted)), 0);
    });
}

/// Model 3: the set's last-used cache. A device reader offers the slot
/// there on its second lookup in a row and reads it back after its own cache
/// moved on, while the writer moves the slot and moves the cache with its
/// compare-exchange. Preemption bound 3.
#[test]
fn model3_last_used_cache() {
    loom_tests::check(3, || {
        let read = |slots: Memslots| {
            let reader = slots.device_reader();
            for _ in 0..2 {
                let view = reader.pin();
                let old = state(view.gfn_to_slot(1));
                assert_eq!(state(view.gfn_to_slot(1)), old, "model: a repeated lookup differs");
                let new = state(view.gfn_to_slot(0x101));
                let again = state(view.gfn_to_slot(1));
                assert_eq!(old, again, "model: the cache changed what a view sees");
                assert!(old.is_none() || new.is_none(), "model: both places at once");
            }
        };
        against_writer(read, |w| assert_eq!(w.move_to(KEY, 0x100), Ok(Change::Moved)), 1);
    });
}

/// Model 4: the per-vCPU cache and the generation. The second view must not
/// get the slot cached by the first one once the generation moved on: every
/// lookup agrees with the set the view reads. Preemption bound 3 (bound 4:
/// 600k executions, about 30 s).
#[test]
fn model4_vcpu_cache_generation() {
    loom_tests::check(3, || {
        let read = |slots: Memslots| {
            let reader = slots.reader();
            for _ in 0..2 {
                let view = reader.pin();
                let cached = view.gfn_to_slot(1).map(|s| s as *const Slot);
                let in_set = view.slots_in_gfn_range(1..2).next().map(|s| s as *const Slot);
                assert_eq!(cached, in_set, "model: the vCPU cache disagrees with the viewed set");
            }
        };
        let write = |w: &mut Writer| {
            assert_eq!(w.move_to(KEY, 0x100), Ok(Change::Moved));
            assert_eq!(w.move_to(KEY, 0), Ok(Change::Moved));
        };
        against_writer(read, write, 1);
    });
}

/// Model 11: an atomic batch. One commit deletes slot 0, creates slot 1 and
/// moves slot 2: one INVALID swap for the delete and the move, one final
/// swap, one catch-up. Every view sees the original state, the
/// intermediate one (neither the deleted nor the moved slot, nor the new
/// one yet) or the final one, never a mix, and two views one after the
/// other never go back. Preemption bound 3.
#[test]
fn model11_atomic_batch() {
    loom_tests::check(3, || batch_of_three(None));
}

/// Negative control for model 11: a batch published operation by operation
/// lets a view see a mix.
#[test]
fn model11_negative_control_op_by_op() {
    negative_control("model11_negative_control_op_by_op", 3, || batch_of_three(Some(LoomFault::BatchOpByOp)));
}

/// Model 11 body: a batch of a delete, a create and a move against a reader
/// taking two views, each of which must see the state before the batch, the
/// INVALID step, or the state after it, in that order.
fn batch_of_three(fault: Option<LoomFault>) {
    /// Which of: slot 0, slot 1, slot 2 at its old place, slot 2 at its
    /// new place a view sees, and how many slots its range query yields.
    fn seen(view: &memslots::View<'_>) -> ([bool; 4], usize) {
        let at = |gfn| view.gfn_to_slot(gfn).is_some();
        ([at(1), at(0x21), at(0x11), at(0x31)], view.slots_in_gfn_range(0..0x100).count())
    }
    const ORIGINAL: ([bool; 4], usize) = ([true, false, true, false], 2);
    const INVALID: ([bool; 4], usize) = ([false, false, false, false], 0);
    const FINAL: ([bool; 4], usize) = ([false, true, false, true], 2);
    let states = [ORIGINAL, INVALID, FINAL];
    {
        let (slots, mut w) = setup(fault);
        let region = |id, base_gfn| Region { id, as_id: 0, base_gfn, npages: 4, hva: HVA, flags: Flags::empty() };
        assert_eq!(w.create(region(2, 0x10)), Ok(Change::Created));
        let reader = slots.reader();
        let t = thread::spawn(move || {
            let mut last = 0;
            for _ in 0..2 {
                let view = reader.pin();
                let now = seen(&view);
                let Some(i) = states.iter().position(|s| *s == now) else {
                    panic!("model: a view saw a mix of the batch: {now:?}");
                };
                assert!(i >= last, "model: a later view went back from {:?} to {now:?}", states[last]);
                last = i;
            }
        });
        let mut batch = w.batch();
        batch.delete(KEY).create(region(1, 0x20)).move_to(SlotKey { id: 2, as_id: 0 }, 0x30);
        assert_eq!(
            batch.commit(),
            Ok(vec![Change::Deleted, Change::Created, Change::Moved]),
            "model: the batch failed"
        );
        t.join().unwrap();
        assert_eq!(slots.slot_objects(), 2, "model: slot objects left");
    }
}
