//! One slot set: the ordered gfn index, the hva interval index, the id index,
//! the shared last-used cache and the generation.
//!
//! Readers only use a set while it is active and they are pinned; the writer
//! edits a set only while it is inactive and a grace period has passed since
//! it was last active (invariant 2), so the plain collections need no locks.
//!
//! A set holds only live slots (invariant 6): every pointer in its indexes
//! and in its last-used cache stays allocated while the set holds it. The
//! writer keeps this through the contract of the one function that puts
//! pointers in, [`Set::replace`]; the safe functions that turn a held
//! pointer into `&Slot` for the length of a borrow of the set rely on it.

use alloc::vec::Vec;
use core::ops::Range;

use crate::addr::{Gfn, Hva, PAGE_SHIFT};
use crate::map::gfn_index::GfnIndex;
use crate::map::interval::IntervalTree;
use crate::map::slot::{Slot, SlotKey, SlotPtr};
use crate::sync::{AtomicPtr, Ordering};

/// What a lookup needs of a slot, kept in the gfn index beside the pointer
/// so that a lookup does not read the slot object (slots never change, so
/// the copy cannot go stale).
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    /// 0 for an INVALID slot, which no lookup may return.
    npages: u64,
    hva: Hva,
    pub(crate) slot: SlotPtr,
}

impl Entry {
    fn of(slot: &Slot, ptr: SlotPtr) -> Entry {
        let npages = if slot.is_invalid() { 0 } else { slot.npages() };
        Entry { npages, hva: slot.hva(), slot: ptr }
    }
}

/// A lookup's result: the entry and the slot's first gfn.
#[derive(Clone, Copy)]
pub(crate) struct Hit {
    pub(crate) base_gfn: Gfn,
    pub(crate) entry: Entry,
}

impl Hit {
    pub(crate) fn of(slot: &Slot) -> Hit {
        Hit { base_gfn: slot.base_gfn(), entry: Entry::of(slot, SlotPtr::of(slot)) }
    }

    /// Whether the (usable) slot holds `gfn`.
    #[inline(always)]
    pub(crate) fn contains(&self, gfn: Gfn) -> bool {
        gfn.wrapping_sub(self.base_gfn) < self.entry.npages
    }

    /// The host address of `gfn`, if the (usable) slot holds it.
    #[inline(always)]
    pub(crate) fn hva(&self, gfn: Gfn) -> Option<Hva> {
        self.contains(gfn).then(|| self.entry.hva + ((gfn - self.base_gfn) << PAGE_SHIFT))
    }
}

pub(crate) struct Set {
    by_gfn: GfnIndex<Entry>,
    by_hva: IntervalTree<SlotPtr>,
    /// Indexed by slot id, up to the highest id the set has held: 8 bytes
    /// a slot where ids are dense, as VMMs allocate them.
    by_id: Vec<Option<SlotPtr>>,
    /// The first slot that served a device reader twice in a row since the
    /// cache was last empty (see `View::hit`); the writer moves it to the
    /// successor of a slot that moves or changes flags, and empties it when
    /// the slot is deleted.
    last_used: AtomicPtr<Slot>,
}

impl Set {
    pub(crate) fn new() -> Set {
        Set {
            by_gfn: GfnIndex::new(),
            by_hva: IntervalTree::new(),
            by_id: Vec::new(),
            last_used: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The usable slot holding `gfn`, without reading the slot object.
    #[inline(always)]
    pub(crate) fn lookup(&self, gfn: Gfn) -> Option<Hit> {
        let (base_gfn, entry) = self.by_gfn.floor(gfn)?;
        let hit = Hit { base_gfn, entry };
        hit.contains(gfn).then_some(hit)
    }

    /// The slot whose range holds `gfn`, INVALID ones included.
    pub(crate) fn search(&self, gfn: Gfn) -> Option<&Slot> {
        let (_, entry) = self.by_gfn.floor(gfn)?;
        // SAFETY: a set holds only live slots (invariant 6).
        let slot = unsafe { entry.slot.get() };
        slot.contains(gfn).then_some(slot)
    }

    /// The set's last-used slot, if any.
    #[inline(always)]
    pub(crate) fn last_used(&self) -> Option<&Slot> {
        // Relaxed: the slot was published to readers by the Release store of
        // the active index (space::swap) that the caller's Acquire load read;
        // the writer moves this cache only while no reader uses the set.
        let ptr = self.last_used.load(Ordering::Relaxed);
        // SAFETY: the cache only holds slots of this set (`replace` moves it
        // off a slot that leaves), which are live (invariant 6).
        SlotPtr::from_raw(ptr).map(|slot| unsafe { slot.get() })
    }

    /// Makes `slot` the last-used slot if there is none: the slot stays
    /// until the writer moves the cache off it, so readers on other cores
    /// only ever read the cache line and it does not bounce between them.
    #[inline(always)]
    pub(crate) fn offer_last_used(&self, slot: SlotPtr) {
        // Relaxed: see `last_used`. Two readers may both see it empty; either
        // store leaves a slot of this set there.
        if self.last_used.load(Ordering::Relaxed).is_null() {
            self.last_used.store(slot.as_raw(), Ordering::Relaxed);
        }
    }

    /// The slots intersecting `gfns`, in gfn order, INVALID ones included.
    pub(crate) fn in_gfn_range(&self, gfns: Range<Gfn>) -> impl Iterator<Item = &Slot> + '_ {
        // Start at the slot holding `gfns.start`, if one does, so the walk
        // yields exactly the intersecting slots; an empty range yields none.
        let first = match self.search(gfns.start) {
            Some(slot) => slot.base_gfn(),
            None => gfns.start,
        };
        let walk = (!gfns.is_empty()).then(|| self.by_gfn.iter_from(first));
        walk.into_iter()
            .flatten()
            // SAFETY: a set holds only live slots (invariant 6).
            .map(|entry| unsafe { entry.slot.get() })
            .take_while(move |slot| slot.base_gfn() < gfns.end)
    }

    /// The slots whose host range intersects `hvas`, by host address.
    pub(crate) fn in_hva_range(&self, hvas: Range<u64>) -> impl Iterator<Item = &Slot> + '_ {
        let walk = (!hvas.is_empty()).then(|| self.by_hva.overlapping(hvas));
        // SAFETY: a set holds only live slots (invariant 6).
        walk.into_iter().flatten().map(|slot| unsafe { slot.get() })
    }

    pub(crate) fn by_id(&self, id: u16) -> Option<&Slot> {
        // SAFETY: a set holds only live slots (invariant 6).
        self.ptr_by_id(id).map(|slot| unsafe { slot.get() })
    }

    pub(crate) fn ptr_by_id(&self, id: u16) -> Option<SlotPtr> {
        self.by_id.get(usize::from(id)).copied().flatten()
    }

    /// The first slot other than `key`'s that intersects `gfns`: an O(log n)
    /// range query.
    pub(crate) fn first_overlap(&self, gfns: Range<Gfn>, key: SlotKey) -> Option<SlotKey> {
        self.in_gfn_range(gfns).map(Slot::key).find(|other| *other != key)
    }

    /// Every slot of the set, by id.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &Slot> + '_ {
        // SAFETY: a set holds only live slots (invariant 6).
        self.slot_ptrs().map(|slot| unsafe { slot.get() })
    }

    /// Every slot of the set, by id, as the pointers the writer frees.
    pub(crate) fn slot_ptrs(&self) -> impl Iterator<Item = SlotPtr> + '_ {
        self.by_id.iter().filter_map(|&slot| slot)
    }

    /// Replaces `old` with `new` in every index (either may be absent) and
    /// moves the last-used cache from `old` to `new`. Writer only, while the
    /// set is inactive.
    ///
    /// # Safety
    /// `old`, if given, is in this set; `new`, if given, is a live slot that
    /// stays allocated for as long as this set holds it (invariant 6), and
    /// its range overlaps no slot of the set but `old`.
    pub(crate) unsafe fn replace(&mut self, old: Option<SlotPtr>, new: Option<SlotPtr>) {
        if let Some(old) = old {
            // SAFETY: per the caller.
            unsafe { self.remove(old, new) };
        }
        if let Some(new) = new {
            // SAFETY: per the caller.
            unsafe { self.insert(new) };
        }
    }

    /// Takes `old` out of every index and moves the last-used cache from it
    /// to `successor` (or empties it). Writer only, while the set is
    /// inactive.
    ///
    /// # Safety
    /// `old` is in this set; `successor`, if given, is in the set, or will
    /// be inserted before the set is next published.
    pub(crate) unsafe fn remove(&mut self, old: SlotPtr, successor: Option<SlotPtr>) {
        // SAFETY: `old` is in this set, so it is live (invariant 6).
        let slot = unsafe { old.get() };
        self.by_gfn.remove(slot.base_gfn());
        self.by_hva.remove(slot.hva(), slot.id().into());
        self.by_id[usize::from(slot.id())] = None;
        let successor = successor.map_or(core::ptr::null_mut(), SlotPtr::as_raw);
        // One compare-exchange moves the cache off the old slot and leaves
        // it alone if it points elsewhere. Relaxed: no reader uses this set
        // now; the next publication (Release) orders the store.
        let _ = self.last_used.compare_exchange(old.as_raw(), successor, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Puts `new` in every index. Writer only, while the set is inactive.
    ///
    /// # Safety
    /// `new` is a live slot that stays allocated for as long as this set
    /// holds it (invariant 6), and overlaps no slot of the set.
    pub(crate) unsafe fn insert(&mut self, new: SlotPtr) {
        // SAFETY: live, per the caller.
        let slot = unsafe { new.get() };
        self.by_gfn.insert(slot.base_gfn(), Entry::of(slot, new));
        self.by_hva.insert(slot.hva_range(), slot.id().into(), new);
        let id = usize::from(slot.id());
        if id >= self.by_id.len() {
            // Grow by an eighth, not by doubling: the table ends near the
            // highest id.
            let len = self.by_id.len();
            self.by_id.reserve_exact((id + 1 - len).max(len / 8));
            self.by_id.resize(id + 1, None);
        }
        self.by_id[id] = Some(new);
    }
}
