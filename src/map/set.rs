//! One slot set: the ordered gfn index, the hva index, the id index and
//! the shared last-used cache.
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

use crate::base::addr::{Gfn, Hva};
use crate::base::sync::{AtomicPtr, Ordering};
use crate::map::gfn_index::{self, GfnIndex};
use crate::map::hva_index::{self, HvaIndex, Key};
use crate::map::slot::{Slot, SlotPtr};
use crate::vocab::SlotKey;

pub(crate) struct Set {
    by_gfn: GfnIndex<SlotPtr>,
    by_hva: HvaIndex<SlotPtr>,
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
            by_hva: HvaIndex::new(),
            by_id: Vec::new(),
            last_used: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The usable slot holding `gfn`: the gfn index and the first cache
    /// line of one slot object.
    #[inline(always)]
    pub(crate) fn lookup(&self, gfn: Gfn) -> Option<&Slot> {
        let (_, ptr) = self.by_gfn.floor(gfn)?;
        // SAFETY: a set holds only live slots (invariant 6).
        let slot = unsafe { ptr.get() };
        slot.touch();
        (slot.contains(gfn) & !slot.is_invalid()).then_some(slot)
    }

    /// The slot holding `gfn`, INVALID or not: for telling a hole from a
    /// slot being deleted or moved, off the lookup's path.
    pub(crate) fn containing(&self, gfn: Gfn) -> Option<&Slot> {
        let (_, ptr) = self.by_gfn.floor(gfn)?;
        // SAFETY: a set holds only live slots (invariant 6).
        let slot = unsafe { ptr.get() };
        slot.touch();
        slot.contains(gfn).then_some(slot)
    }

    /// The walks an edit makes in this set to change a slot's first gfn
    /// from `gfns[0]` to `gfns[1]` and its entry at host address `hva` with
    /// id `id`, to be loaded ahead by `warm`.
    pub(crate) fn edit_paths(&self, gfns: [Gfn; 2], hva: Hva, id: u16) -> EditPaths<'_> {
        core::hint::black_box(self.ptr_by_id(id));
        EditPaths {
            gfn: self.by_gfn.descent(gfns[0]),
            new_gfn: (gfns[1] != gfns[0]).then(|| self.by_gfn.descent(gfns[1])),
            hva: self.by_hva.descent(hva, id),
        }
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

    /// The slots intersecting `gfns`, in gfn order, INVALID ones included;
    /// none for an empty range.
    pub(crate) fn in_gfn_range(&self, gfns: Range<Gfn>) -> impl Iterator<Item = &Slot> + '_ {
        let walk = (!gfns.is_empty()).then(|| self.by_gfn.walk_from(gfns.start));
        walk.into_iter()
            .flatten()
            .take_while(move |&(base, _)| base < gfns.end)
            // SAFETY: a set holds only live slots (invariant 6).
            .map(|(_, slot)| unsafe { slot.get() })
            // Only the first, the slot below `gfns.start`, may end before it.
            .skip_while(move |slot| slot.end_gfn() <= gfns.start)
    }

    /// The slots whose host range intersects `hvas`, by host address.
    pub(crate) fn in_hva_range(&self, hvas: Range<u64>) -> impl Iterator<Item = &Slot> + '_ {
        // SAFETY: a set holds only live slots (invariant 6).
        self.by_hva.overlapping(hvas, hva_key).map(|slot| unsafe { slot.get() })
    }

    pub(crate) fn by_id(&self, id: u16) -> Option<&Slot> {
        // SAFETY: a set holds only live slots (invariant 6).
        self.ptr_by_id(id).map(|slot| unsafe { slot.get() })
    }

    pub(crate) fn ptr_by_id(&self, id: u16) -> Option<SlotPtr> {
        self.by_id.get(usize::from(id)).copied().flatten()
    }

    /// The first slot other than `except` that intersects `gfns` (not
    /// empty): an O(log n) range query that reads one slot object at most,
    /// the one below `gfns.start`, unless a slot overlaps.
    pub(crate) fn first_overlap(&self, gfns: Range<Gfn>, except: Option<SlotPtr>) -> Option<SlotKey> {
        self.by_gfn
            .walk_from(gfns.start)
            .take_while(|&(base, _)| base < gfns.end)
            .filter(|&(_, slot)| Some(slot) != except)
            // SAFETY: a set holds only live slots (invariant 6).
            .map(|(base, slot)| (base, unsafe { slot.get() }))
            .find(|&(base, slot)| base >= gfns.start || slot.end_gfn() > gfns.start)
            .map(|(_, slot)| slot.key())
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
            // SAFETY: per the caller; `old` was removed just above, told
            // that `new` succeeds it.
            unsafe { self.insert(new, old) };
        }
    }

    /// Takes `old` out of every index and moves the last-used cache from it
    /// to `successor` (or empties it). Where `successor` will take the same
    /// place (see `SharedEntries`), `old` stays until `insert` puts the successor
    /// over it, which then reads no other slot. Writer only, while the set
    /// is inactive.
    ///
    /// # Safety
    /// `old` is in this set; `successor`, if given, is live, and is next
    /// given to `insert` with `old` as its predecessor, before the set is
    /// published.
    pub(crate) unsafe fn remove(&mut self, old: SlotPtr, successor: Option<SlotPtr>) {
        // SAFETY: `old` is in this set, so it is live (invariant 6), and so
        // is `successor`, per the caller.
        let (slot, shared) = unsafe { (old.get(), SharedEntries::between(old, successor)) };
        if !shared.gfn_entry {
            let removed = self.by_gfn.remove(slot.base_gfn());
            debug_assert_eq!(removed, Some(old), "the gfn index held the slot");
        }
        if !shared.hva_entry {
            let removed = self.by_hva.remove(old, hva_key);
            debug_assert!(removed, "the hva index held the slot");
        }
        self.by_id[usize::from(slot.id())] = None;
        let successor = successor.map_or(core::ptr::null_mut(), SlotPtr::as_raw);
        // One compare-exchange moves the cache off the old slot and leaves
        // it alone if it points elsewhere. Relaxed: no reader uses this set
        // now; the next publication (Release) orders the store.
        let _ = self.last_used.compare_exchange(old.as_raw(), successor, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Puts `new` in every index: over `predecessor` where it takes the
    /// same place, else anew. Writer only, while the set is inactive.
    ///
    /// # Safety
    /// `new` is a live slot that stays allocated for as long as this set
    /// holds it (invariant 6), and overlaps no slot of the set;
    /// `predecessor`, if given, was last given to `remove` with `new` as its
    /// successor (so it is still where they share a place, and live).
    pub(crate) unsafe fn insert(&mut self, new: SlotPtr, predecessor: Option<SlotPtr>) {
        // SAFETY: live, per the caller.
        let (slot, shared) = unsafe { (new.get(), SharedEntries::between(new, predecessor)) };
        if shared.gfn_entry {
            let replaced = self.by_gfn.replace(slot.base_gfn(), new);
            debug_assert_eq!(replaced, predecessor, "the predecessor held the place");
        } else {
            self.by_gfn.insert(slot.base_gfn(), new);
        }
        match predecessor {
            Some(old) if shared.hva_entry => {
                let replaced = self.by_hva.replace(old, new, hva_key);
                debug_assert!(replaced, "the predecessor held the place");
            }
            _ => self.by_hva.insert(new, hva_key),
        }
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

/// Which indexes key two slots alike, so that one can take the other's
/// entry there without a search: the gfn index by first gfn, the hva index
/// by host range and id. A move keeps its host range, a flag change and an
/// INVALID copy keep both.
struct SharedEntries {
    gfn_entry: bool,
    hva_entry: bool,
}

impl SharedEntries {
    /// # Safety
    /// Both slots are live.
    unsafe fn between(a: SlotPtr, b: Option<SlotPtr>) -> SharedEntries {
        let Some(b) = b else { return SharedEntries { gfn_entry: false, hva_entry: false } };
        // SAFETY: per the caller.
        let (a, b) = unsafe { (a.get(), b.get()) };
        SharedEntries {
            gfn_entry: a.base_gfn() == b.base_gfn(),
            hva_entry: a.hva_range() == b.hva_range() && a.id() == b.id(),
        }
    }
}

/// The host range and id of a slot in the hva index, read from the slot:
/// the index keeps only the pointers. Only for `by_hva`, which calls it on
/// the slots it holds and the one being inserted.
fn hva_key(slot: &SlotPtr) -> Key {
    // The index holds only slots of its set, which are live (invariant 6),
    // and the slot being inserted, live per `insert`'s contract.
    // SAFETY: as just said.
    let slot = unsafe { slot.get() };
    let hvas = slot.hva_range();
    Key { start: hvas.start, end: hvas.end, tag: slot.id() }
}

/// The walks of one set that `warm` runs.
pub(crate) struct EditPaths<'a> {
    gfn: gfn_index::Descent<'a, SlotPtr>,
    new_gfn: Option<gfn_index::Descent<'a, SlotPtr>>,
    hva: hva_index::Descent<'a, SlotPtr>,
}

impl EditPaths<'_> {
    fn step(&mut self) -> bool {
        self.gfn.step() | self.new_gfn.as_mut().is_some_and(gfn_index::Descent::step) | self.hva.step()
    }
}

/// Loads the nodes of several sets' walks level by level, all walks at
/// once. With cold caches an edit waits for every node it visits in turn (a
/// miss, often a TLB miss too); loaded in lockstep first, the misses of all
/// the walks of a change, in both sets, overlap.
pub(crate) fn warm(sets: &mut [EditPaths<'_>]) {
    while sets.iter_mut().fold(false, |any, set| set.step() | any) {}
}
