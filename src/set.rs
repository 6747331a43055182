//! One slot set: the ordered gfn index, the hva interval index, the id index,
//! the shared last-used cache and the generation.
//!
//! Readers only use a set while it is active and they are pinned; the writer
//! edits a set only while it is inactive and a grace period has passed since
//! it was last active, so the plain collections need no locks.

use alloc::collections::BTreeMap;
use core::ops::Range;

use crate::addr::{Gfn, Hva, PAGE_SHIFT};
use crate::gfn_index::GfnIndex;
use crate::interval::IntervalTree;
use crate::slot::{Slot, SlotKey, SlotPtr};
use crate::sync::{AtomicPtr, AtomicU64, Ordering};

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
    #[inline]
    pub(crate) fn contains(&self, gfn: Gfn) -> bool {
        gfn.wrapping_sub(self.base_gfn) < self.entry.npages
    }

    /// The host address of `gfn`, if the (usable) slot holds it.
    #[inline]
    pub(crate) fn hva(&self, gfn: Gfn) -> Option<Hva> {
        self.contains(gfn).then(|| self.entry.hva + ((gfn - self.base_gfn) << PAGE_SHIFT))
    }
}

pub(crate) struct Set {
    by_gfn: GfnIndex<Entry>,
    by_hva: IntervalTree<SlotPtr>,
    by_id: BTreeMap<u16, SlotPtr>,
    /// The slot of the last lookup made without a per-vCPU cache.
    last_used: AtomicPtr<Slot>,
    /// Set by the writer before the set is published; see `space::swap`.
    pub(crate) generation: AtomicU64,
}

impl Set {
    pub(crate) fn new(generation: u64) -> Set {
        Set {
            by_gfn: GfnIndex::new(),
            by_hva: IntervalTree::new(),
            by_id: BTreeMap::new(),
            last_used: AtomicPtr::new(core::ptr::null_mut()),
            generation: AtomicU64::new(generation),
        }
    }

    /// The usable slot holding `gfn`, without reading the slot object.
    #[inline]
    pub(crate) fn lookup(&self, gfn: Gfn) -> Option<Hit> {
        let (base_gfn, entry) = self.by_gfn.floor(gfn)?;
        let hit = Hit { base_gfn, entry };
        hit.contains(gfn).then_some(hit)
    }

    /// The slot whose range holds `gfn`, INVALID ones included.
    pub(crate) fn search(&self, gfn: Gfn) -> Option<&Slot> {
        let (_, entry) = self.by_gfn.floor(gfn)?;
        // SAFETY: a slot in a set outlives the borrow of the set.
        let slot = unsafe { entry.slot.get() };
        slot.contains(gfn).then_some(slot)
    }

    /// The set's last-used slot, if any.
    #[inline]
    pub(crate) fn last_used(&self) -> Option<&Slot> {
        // Relaxed: the slot was published to readers by the Release store of
        // the active index (space::swap) that the caller's Acquire load read;
        // the writer moves this cache only while no reader uses the set.
        let ptr = self.last_used.load(Ordering::Relaxed);
        // SAFETY: the cache only ever holds slots of this set (the writer
        // moves it off a slot before the slot leaves the set).
        SlotPtr::from_raw(ptr).map(|slot| unsafe { slot.get() })
    }

    #[inline]
    pub(crate) fn set_last_used(&self, slot: SlotPtr) {
        // Relaxed: see `last_used`.
        self.last_used.store(slot.as_raw(), Ordering::Relaxed);
    }

    /// The slots intersecting `gfns`, in gfn order, INVALID ones included.
    pub(crate) fn in_gfn_range(&self, gfns: Range<Gfn>) -> impl Iterator<Item = &Slot> + '_ {
        // Start at the slot holding `gfns.start`, if one does, so the walk
        // yields exactly the intersecting slots.
        let first = match self.search(gfns.start) {
            Some(slot) => slot.base_gfn(),
            None => gfns.start,
        };
        self.by_gfn
            .iter_from(first)
            // SAFETY: a slot in a set outlives the borrow of the set.
            .map(|entry| unsafe { entry.slot.get() })
            .take_while(move |slot| slot.base_gfn() < gfns.end)
    }

    /// The slots whose host range intersects `hvas`, by host address.
    pub(crate) fn in_hva_range(&self, hvas: Range<u64>) -> impl Iterator<Item = &Slot> + '_ {
        // SAFETY: a slot in a set outlives the borrow of the set.
        self.by_hva.overlapping(hvas).map(|slot| unsafe { slot.get() })
    }

    pub(crate) fn by_id(&self, id: u16) -> Option<&Slot> {
        // SAFETY: a slot in a set outlives the borrow of the set.
        self.by_id.get(&id).map(|&slot| unsafe { slot.get() })
    }

    pub(crate) fn ptr_by_id(&self, id: u16) -> Option<SlotPtr> {
        self.by_id.get(&id).copied()
    }

    /// The first slot other than `key`'s that intersects `gfns`: an O(log n)
    /// range query.
    pub(crate) fn first_overlap(&self, gfns: Range<Gfn>, key: SlotKey) -> Option<SlotKey> {
        self.in_gfn_range(gfns).map(Slot::key).find(|other| *other != key)
    }

    /// Every slot of the set, by id.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &Slot> + '_ {
        // SAFETY: a slot in a set outlives the borrow of the set.
        self.by_id.values().map(|&slot| unsafe { slot.get() })
    }

    /// Every slot of the set, by id, as the pointers the writer frees.
    pub(crate) fn slot_ptrs(&self) -> impl Iterator<Item = SlotPtr> + '_ {
        self.by_id.values().copied()
    }

    /// Replaces `old` with `new` in every index (either may be absent) and
    /// moves the last-used cache from `old` to `new`. Writer only, while the
    /// set is inactive.
    pub(crate) fn replace(&mut self, old: Option<SlotPtr>, new: Option<SlotPtr>) {
        if let Some(old) = old {
            // SAFETY: `old` is in this set, so it is still allocated.
            let slot = unsafe { old.get() };
            self.by_gfn.remove(slot.base_gfn());
            self.by_hva.remove(slot.hva(), slot.id().into());
            self.by_id.remove(&slot.id());
            let new_raw = new.map_or(core::ptr::null_mut(), SlotPtr::as_raw);
            // One compare-exchange moves the cache off the old slot and
            // leaves it alone if it points elsewhere. Relaxed: no reader uses
            // this set now; the next publication (Release) orders the store.
            let _ = self.last_used.compare_exchange(old.as_raw(), new_raw, Ordering::Relaxed, Ordering::Relaxed);
        }
        if let Some(new) = new {
            // SAFETY: the writer just allocated `new` or holds it in a set.
            let slot = unsafe { new.get() };
            self.by_gfn.insert(slot.base_gfn(), Entry::of(slot, new));
            self.by_hva.insert(slot.hva_range(), slot.id().into(), new);
            self.by_id.insert(slot.id(), new);
        }
    }
}
