//! An address space: two sets, one active for readers, one for the writer.

use crate::set::Set;
use crate::sync::{AtomicUsize, ConstPtr, MutPtr, Ordering, UnsafeCell};

/// Marks a generation read during a swap: never equal to a published one.
pub(crate) const GEN_UPDATE_IN_PROGRESS: u64 = 1 << 63;

pub(crate) struct AddressSpace {
    sets: [UnsafeCell<Set>; 2],
    /// Index of the active set.
    active: AtomicUsize,
}

// SAFETY: the sets are shared under the protocol of DESIGN.md: readers only
// read the active set while pinned, the writer (one at a time, enforced by
// `Inner::writer_taken`) only writes the inactive one after a grace period.
unsafe impl Sync for AddressSpace {}
// SAFETY: the sets own their data; slot pointers are Send.
unsafe impl Send for AddressSpace {}

impl AddressSpace {
    /// Address space `as_id` of `count`: its generation starts at `as_id`.
    pub(crate) fn new(as_id: u16) -> AddressSpace {
        let generation = u64::from(as_id);
        AddressSpace {
            sets: [UnsafeCell::new(Set::new(generation)), UnsafeCell::new(Set::new(generation))],
            active: AtomicUsize::new(0),
        }
    }

    /// The active set, for readers and for the writer's reads.
    #[inline]
    pub(crate) fn active(&self) -> ConstPtr<Set> {
        // Acquire: pairs with the Release store in `swap`, so the set's
        // contents and generation as published are visible.
        self.sets[self.active.load(Ordering::Acquire)].get()
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
    /// # Safety
    /// Writer only; the caller holds no reference into either set.
    pub(crate) unsafe fn swap(&self, address_spaces: u16) {
        // Relaxed: only the writer stores `active`.
        let old = self.active.load(Ordering::Relaxed);
        // SAFETY (both derefs below): shared access; the writer holds no
        // mutable reference into the sets, and the new set is quiescent.
        let old_ptr = self.sets[old].get();
        // SAFETY: see above.
        let old_set = unsafe { old_ptr.deref() };
        // Relaxed: the writer is the only one to store generations.
        let generation = old_set.generation.load(Ordering::Relaxed) & !GEN_UPDATE_IN_PROGRESS;
        // Relaxed: readers only use the bit to refuse caching; nothing is
        // ordered by it.
        old_set.generation.store(generation | GEN_UPDATE_IN_PROGRESS, Ordering::Relaxed);
        let new_ptr = self.sets[1 - old].get();
        // SAFETY: see above.
        let new_set = unsafe { new_ptr.deref() };
        // Relaxed: ordered before readers' loads by the Release store below.
        new_set.generation.store(generation + u64::from(address_spaces), Ordering::Relaxed);
        // Release: pairs with the Acquire load in `active`, publishing the
        // set's edits and generation.
        self.active.store(1 - old, Ordering::Release);
    }

    /// Both sets, for teardown.
    pub(crate) fn sets_mut(&mut self) -> [MutPtr<Set>; 2] {
        [self.sets[0].get_mut(), self.sets[1].get_mut()]
    }
}
