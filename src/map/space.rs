//! An address space: two sets, one active for readers, one for the writer.

use crate::base::sync::{AtomicU64, AtomicUsize, ConstPtr, MutPtr, Ordering, UnsafeCell};
use crate::map::set::Set;

/// Marks a generation read during a swap: never equal to a published one.
pub(crate) const GEN_UPDATE_IN_PROGRESS: u64 = 1 << 63;

pub(crate) struct AddressSpace {
    sets: [UnsafeCell<Set>; 2],
    /// The generation of each set, beside it rather than in it, so that it
    /// can be read without touching a set the writer may be editing.
    generations: [AtomicU64; 2],
    /// Index of the active set.
    active: AtomicUsize,
}

// SAFETY: the sets are shared under invariants 2 and 7 (the `map` module
// docs): readers only read the active set while in a view, the one writer
// only writes the inactive set a grace period after it was last active.
unsafe impl Sync for AddressSpace {}
// Send from its fields: the sets own their data and slot pointers are Send.
static_assertions::assert_impl_all!(AddressSpace: Send);

impl AddressSpace {
    /// Address space `as_id`: its generation starts at `as_id`.
    pub(crate) fn new(as_id: u16) -> AddressSpace {
        let generation = u64::from(as_id);
        AddressSpace {
            sets: [UnsafeCell::new(Set::new()), UnsafeCell::new(Set::new())],
            generations: [AtomicU64::new(generation), AtomicU64::new(generation)],
            active: AtomicUsize::new(0),
        }
    }

    /// The active set and its generation, for readers and for the writer's
    /// reads.
    #[inline(always)]
    pub(crate) fn active(&self) -> (ConstPtr<Set>, u64) {
        // Acquire: pairs with the Release store in `swap`, so the set's
        // contents and generation as published are visible. SeqCst: pairs
        // with the SeqCst publication of a reader's epoch that precedes it
        // (`Epochs::publish`), against the writer's fence. On x86 and AArch64
        // this costs what an Acquire load costs.
        let active = self.active.load(Ordering::SeqCst);
        // Relaxed: stored before the Release store of `active` read above.
        (self.sets[active].get(), self.generations[active].load(Ordering::Relaxed))
    }

    /// The generation of the active set, for statistics and display.
    pub(crate) fn generation(&self) -> u64 {
        self.active().1
    }

    /// The inactive set, for the writer.
    ///
    /// # Safety
    /// Only the writer calls this, and a grace period has passed since the
    /// set was last active (no reader is inside it).
    pub(crate) unsafe fn inactive(&self) -> MutPtr<Set> {
        // Relaxed: only the writer stores `active`.
        self.sets[1 - self.active.load(Ordering::Relaxed)].get_mut()
    }

    /// Publishes the inactive set with the next generation (stepping by the
    /// number of address spaces). The set left behind carries the
    /// update-in-progress bit, so a reader still inside it caches nothing.
    ///
    /// Writer only (invariant 7).
    pub(crate) fn swap(&self, address_spaces: u16) {
        // Relaxed: only the writer stores `active` and the generations.
        let old = self.active.load(Ordering::Relaxed);
        let generation = self.generations[old].load(Ordering::Relaxed) & !GEN_UPDATE_IN_PROGRESS;
        // Relaxed: readers only use the bit to refuse caching; nothing is
        // ordered by it.
        self.generations[old].store(generation | GEN_UPDATE_IN_PROGRESS, Ordering::Relaxed);
        // Relaxed: ordered before readers' loads by the Release store below.
        self.generations[1 - old].store(generation + u64::from(address_spaces), Ordering::Relaxed);
        // Release: pairs with the Acquire (SeqCst) load in `active`,
        // publishing the set's edits and generation.
        self.active.store(1 - old, Ordering::Release);
    }

    /// Both sets, for teardown.
    pub(crate) fn sets_mut(&mut self) -> [MutPtr<Set>; 2] {
        [self.sets[0].get_mut(), self.sets[1].get_mut()]
    }
}
