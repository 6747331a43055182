//! Models 6-10: the grace-period mechanism itself (`src/map/epoch.rs`): one
//! epoch word per registered reader; a reader publishes the global epoch it
//! read, fences, then loads the active set; the writer swaps, advances the
//! epoch, fences, and waits until every word is idle or holds the new epoch.
//!
//! Model 6 runs that protocol against a reader caught in the middle of a pin
//! and has a negative control for each way of breaking it
//! ([`LoomFault`]). Models 7-10 cover the reader's life cycle around a grace
//! period: registering and dropping readers, moving a reader between threads,
//! `repin` in a loop, and nested views.
//!
//! As in `slots.rs`, sets and slots' liveness are loom-tracked cells, so a
//! writer edit or free that is not ordered after a reader's access is a
//! "Causality violation" (or loom's "currently reading from cell" when the
//! reader's view is alive at that moment).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Release};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, negative_control, setup, state, AFTER, BEFORE, KEY};
use memslots::{Change, Error, Flags, LoomFault, Reader, View};

/// The generation of a view without the update-in-progress bit: it never
/// goes down along one thread's views.
fn generation(view: &View<'_>) -> u64 {
    view.generation() & !(1 << 63)
}

/// One lookup of gfn 1 on `view`, checked against the two states slot 0 has
/// in these models and against the generation of the view before (`last`).
fn look(view: &View<'_>, last: &mut u64) -> Option<(u64, Flags)> {
    let seen = state(view.gfn_to_slot(1));
    assert!(seen == BEFORE || seen == AFTER, "model: {seen:?}");
    assert_eq!(state(view.gfn_to_slot(3)), seen, "model: one view saw two states");
    let generation = generation(view);
    assert!(generation >= *last, "model: a later view went back: generation {generation} after {last}");
    // The setup's create swapped once (generation 1); the change is the only
    // swap after it (generation 2).
    let expected = if seen == AFTER { 2 } else { 1 };
    assert_eq!(generation, expected, "model: generation {generation} with {seen:?}");
    *last = generation;
    seen
}

/// The writer's change in models 6-10: FLAGS_ONLY on slot 0, that is edit the
/// inactive set, swap, grace period, catch the other set up, free the old
/// slot.
fn change(w: &mut memslots::Writer) {
    assert_eq!(w.set_flags(KEY, Flags::LOG_DIRTY_PAGES), Ok(Change::FlagsChanged), "model: the change failed");
}

/// Model 6 body. A vCPU reader, made on the model's thread and moved to its
/// own, takes `views` views one after the other (pin, look up, unpin) while
/// the writer makes the change. Every interleaving of the reader's pin
/// (load the epoch, publish it, fence, load the active set) with the writer's
/// swap, epoch advance, fence and scan of the reader words is explored,
/// including a reader that has published its word but not yet loaded the set
/// when the writer scans, and one whose word the writer reads as idle from
/// the view before. With `fault`, the same model with the protocol broken.
fn grace(views: usize, fault: Option<LoomFault>) {
    let (slots, mut w) = setup(fault);
    let reader = slots.reader();
    let t = thread::spawn(move || {
        let mut last = 0;
        for _ in 0..views {
            look(&reader.pin(), &mut last);
        }
    });
    change(&mut w);
    t.join().unwrap();
    assert_eq!(slots.slot_objects(), 1, "model: slot objects left");
}

/// Model 6: one view against the change. Preemption bound 4.
#[test]
fn model6_grace_period_one_view() {
    check(4, || grace(1, None));
}

/// Model 6: two views one after the other, so the writer can read the word
/// as idle (the first view ended) while the second view is mid-pin.
/// Preemption bound 4.
#[test]
fn model6_grace_period_two_views() {
    check(4, || grace(2, None));
}

/// Negative control (a), first form: readers publish their epoch without
/// the SeqCst fence ([`LoomFault::PinWithoutFence`]). Store buffering: the
/// reader's store of its word and the writer's store of the active index can
/// each be missed by the other thread's later load, so the writer reads the
/// word as idle while the reader loads the set that was active before the
/// swap, and the writer's catch-up edits that set. Loom finds it in its
/// first execution, at any bound (0 too): the writer runs its whole change
/// first and the reader's pin then still reads the old active index, which
/// nothing orders before it. Reported as a "Causality violation" between the
/// reader's read of the set (`AddressSpace::active`) and the writer's write
/// (`AddressSpace::inactive`). Preemption bound 4, as the model without the
/// fault.
#[test]
fn model6_negative_control_pin_without_fence() {
    negative_control("model6_negative_control_pin_without_fence", 4, || grace(1, Some(LoomFault::PinWithoutFence)));
}

/// Negative control (b), first form: the writer scans the reader words
/// without its fence after the swap ([`LoomFault::WriterWithoutFence`]); the
/// same store-buffering outcome from the writer's side: the reader's fence
/// alone orders nothing against the writer. Found and reported as (a).
/// Preemption bound 4.
#[test]
fn model6_negative_control_writer_without_fence() {
    negative_control("model6_negative_control_writer_without_fence", 4, || {
        grace(1, Some(LoomFault::WriterWithoutFence))
    });
}

/// Negative control (c), first form: no grace period at all
/// ([`LoomFault::SkipGracePeriod`]). Preemption bound 4.
#[test]
fn model6_negative_control_skip_grace_period() {
    negative_control("model6_negative_control_skip_grace_period", 4, || grace(1, Some(LoomFault::SkipGracePeriod)));
}

/// Model 6, second form: the reader re-enters while the writer is inside
/// its change. The reader takes a view and only then lets the writer start
/// (a Release/Acquire handshake), so that view saw the slot before the
/// change and the writer, having seen the reader's word, must wait for it.
/// The reader keeps that view until it sees the writer inside the change
/// (the writer has allocated the new slot: `slot_objects` is 2), ends it
/// and pins again. `slot_objects` is a Relaxed statistic, so that gate only
/// orders the schedule, not memory: the second pin runs after the writer
/// started and before it can free anything, concurrently with its swap,
/// epoch advance, fence and scan of the reader words. The writer can read
/// the word as idle (the end of the first view) while the second pin is
/// under way, which is safe only if that pin then loads the new set. Every
/// violation loom can find here involves that second pin. With `fault`,
/// the protocol broken.
fn reenter_mid_grace(fault: Option<LoomFault>) {
    let (slots, mut w) = setup(fault);
    let reader = slots.reader();
    let started = Arc::new(AtomicBool::new(false));
    let t = {
        let started = started.clone();
        let slots = slots.clone();
        thread::spawn(move || {
            let mut last = 0;
            let view = reader.pin();
            assert_eq!(look(&view, &mut last), BEFORE, "model: a view taken before the change saw it");
            // Release: pairs with the writer's Acquire load; the view
            // (and the reader's published word) happen before the change.
            started.store(true, Release);
            // The writer cannot free the old slot before this view ends,
            // so the count stays at 2 until then once it got there.
            while slots.slot_objects() != 2 {
                thread::yield_now();
            }
            drop(view);
            look(&reader.pin(), &mut last);
        })
    };
    // Acquire: pairs with the reader's Release store above.
    while !started.load(Acquire) {
        thread::yield_now();
    }
    change(&mut w);
    t.join().unwrap();
    assert_eq!(slots.slot_objects(), 1, "model: slot objects left");
}

/// Model 6, second form, correct protocol. Preemption bound 4.
#[test]
fn model6_grace_period_reenter_mid_grace() {
    check(4, || reenter_mid_grace(None));
}

/// Negative control (a), second form: [`LoomFault::PinWithoutFence`]. Here
/// every violation involves the second pin, made while the writer is inside
/// its change, so loom needs a preemption to find one: at bound 0 it misses
/// it (4 executions, all pass); it is found in execution 54 at bound 1, 226
/// at bound 2, 582 at bound 3, 1071 at bound 4. The report is a "Causality
/// violation" between the second pin's read of the old set and the writer's
/// catch-up write to it. Preemption bound 4, as the model without the fault.
#[test]
fn model6_negative_control_reenter_pin_without_fence() {
    negative_control("model6_negative_control_reenter_pin_without_fence", 4, || {
        reenter_mid_grace(Some(LoomFault::PinWithoutFence))
    });
}

/// Negative control (b), second form: [`LoomFault::WriterWithoutFence`];
/// found in the same executions as (a). Preemption bound 4.
#[test]
fn model6_negative_control_reenter_writer_without_fence() {
    negative_control("model6_negative_control_reenter_writer_without_fence", 4, || {
        reenter_mid_grace(Some(LoomFault::WriterWithoutFence))
    });
}

/// Negative control (c), second form: [`LoomFault::SkipGracePeriod`]. The
/// writer edits the old set while the first view is alive: loom's "currently
/// reading from cell" in its first execution. Preemption bound 4.
#[test]
fn model6_negative_control_reenter_skip_grace_period() {
    negative_control("model6_negative_control_reenter_skip_grace_period", 4, || {
        reenter_mid_grace(Some(LoomFault::SkipGracePeriod))
    });
}

/// Model 7: readers register and go away while the writer is in its grace
/// period. A vCPU reader made on the model's thread holds a view (so the
/// writer may be waiting for it) while its thread registers two more
/// readers: one takes the entry a dropped reader gave back (the claim
/// compare-exchange), the other allocates a new entry (the push onto the
/// list the writer walks, possibly while the writer walks it). Their views
/// outlive the first view, so the writer must find the new readers' words,
/// not only the first one's. Then the first of them is dropped (its entry
/// given back) and registered again (the same entry claimed again) with a
/// view, while the other's view is still alive. Preemption bound 3 (bound
/// 4: 118k executions, about 7 s).
#[test]
fn model7_register_and_drop_during_grace_period() {
    check(3, || {
        let (slots, mut w) = setup(None);
        let holder = slots.reader();
        // Leaves a free entry behind for the first registration to reuse.
        drop(slots.device_reader());
        let t = {
            let slots = slots.clone();
            thread::spawn(move || {
                let mut last = 0;
                let view = holder.pin();
                let first = look(&view, &mut last);
                let reused = slots.reader();
                let pushed = slots.device_reader();
                assert_eq!((reused.loom_entry_index(), pushed.loom_entry_index()), (1, 2), "model: entry reuse");
                assert!(reused.id() > 1 && pushed.id() > 1 && reused.id() != pushed.id(), "model: ids are new");
                let a = reused.pin();
                let b = pushed.pin();
                let seen_a = look(&a, &mut last);
                let seen_b = look(&b, &mut last);
                drop(view);
                assert_eq!(look(&a, &mut 0), seen_a, "model: a view changed");
                drop(a);
                let reused_id = reused.id();
                drop(reused);
                let again = slots.reader();
                assert_eq!(again.loom_entry_index(), 1, "model: entry reuse");
                assert_ne!(again.id(), reused_id, "model: a reused entry gets a new id");
                look(&again.pin(), &mut last);
                assert_eq!(look(&b, &mut 0), seen_b, "model: a view changed");
                assert!(first == BEFORE || seen_b == AFTER, "model: a later view went back");
            })
        };
        change(&mut w);
        t.join().unwrap();
        assert_eq!(slots.slot_objects(), 1, "model: slot objects left");
    });
}

/// Model 8 body: `reader`'s views on the thread it is on now, then it moves
/// on to a thread spawned here (or comes back, when `hops` is 0).
fn hop(reader: Reader, hops: usize) -> Reader {
    let mut last = 0;
    look(&reader.pin(), &mut last);
    if hops == 0 {
        return reader;
    }
    thread::spawn(move || hop(reader, hops - 1)).join().unwrap()
}

/// Model 8: a reader moved between threads between views. It takes a view
/// on the model's thread (the writer's), moves to a second thread and a third
/// (spawned by the second), taking a view on each while the writer makes
/// the change, and comes back. The writer must neither miss it nor mistake
/// its views for its own thread's (the reader's owner word, set on each pin).
/// Back on the writer's thread, a view held there makes the next change
/// refuse with `ViewHeldByWriterThread` and change nothing. Preemption
/// bound 4.
#[test]
fn model8_reader_moves_between_threads() {
    check(4, || {
        let (slots, mut w) = setup(None);
        let reader = slots.reader();
        look(&reader.pin(), &mut 0);
        let t = thread::spawn(move || hop(reader, 1));
        change(&mut w);
        let reader = t.join().unwrap();
        let view = reader.pin();
        assert_eq!(look(&view, &mut 0), AFTER, "model: the change is not visible after it returned");
        let generation = view.generation();
        assert_eq!(w.set_flags(KEY, Flags::empty()), Err(Error::ViewHeldByWriterThread), "model: own view");
        assert_eq!(reader.pin().generation(), generation, "model: a refused change was published");
        drop(view);
        assert_eq!(w.set_flags(KEY, Flags::empty()), Ok(Change::FlagsChanged), "model: the change failed");
        assert_eq!(slots.slot_objects(), 1, "model: slot objects left");
    });
}

/// Model 9: `repin` in a loop. A device loop holds one view from start to
/// end and only repins it at its quiescent points, until it learns that the
/// writer's change has returned; the writer must be able to finish all the
/// same (a repin publishes the new epoch). If it could not, both threads
/// would spin until loom's branch limit. After the loop, a repin sees the
/// change. Preemption bound 4.
#[test]
fn model9_repin_loop_lets_the_writer_finish() {
    check(4, || {
        let (slots, mut w) = setup(None);
        let reader = slots.device_reader();
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let done = done.clone();
            thread::spawn(move || {
                let mut last = 0;
                let mut view = reader.pin();
                look(&view, &mut last);
                // Acquire: pairs with the writer's Release store after the
                // change returned.
                while !done.load(Acquire) {
                    thread::yield_now();
                    view = view.repin();
                    look(&view, &mut last);
                }
                view = view.repin();
                assert_eq!(look(&view, &mut last), AFTER, "model: a repin after the change missed it");
            })
        };
        change(&mut w);
        done.store(true, Release);
        t.join().unwrap();
        assert_eq!(slots.slot_objects(), 1, "model: slot objects left");
    });
}

/// Model 10 body: two views of one reader; the one taken first ends first
/// when `outer_first`, else last. The view left alive looks up again, and if
/// it saw the slot before the change, the writer must not have returned
/// yet: it waits until both views end. (Loom also checks the set and slot
/// accesses themselves.)
fn nested(outer_first: bool) {
    let (slots, mut w) = setup(None);
    let reader = slots.reader();
    let done = Arc::new(AtomicBool::new(false));
    let t = {
        let done = done.clone();
        thread::spawn(move || {
            let mut last = 0;
            let outer = reader.pin();
            let a = look(&outer, &mut last);
            let inner = reader.pin();
            let b = look(&inner, &mut last);
            let (alive, seen) = if outer_first {
                drop(outer);
                (inner, b)
            } else {
                drop(inner);
                (outer, a)
            };
            // Acquire: pairs with the writer's Release store after the
            // change returned.
            let writer_returned = done.load(Acquire);
            assert_eq!(look(&alive, &mut 0), seen, "model: a view changed when the other ended");
            assert!(
                !(seen == BEFORE && writer_returned),
                "model: the writer returned while a view of the old set was alive"
            );
        })
    };
    change(&mut w);
    done.store(true, Release);
    t.join().unwrap();
    assert_eq!(slots.slot_objects(), 1, "model: slot objects left");
}

/// Model 10: nested views, the outer one ending first. Preemption bound 4.
#[test]
fn model10_nested_views_outer_ends_first() {
    check(4, || nested(true));
}

/// Model 10: nested views, the inner one ending first. Preemption bound 4.
#[test]
fn model10_nested_views_inner_ends_first() {
    check(4, || nested(false));
}
