//! The layouts the writer vCPU steps through. Layout `k` is a pure function
//! of `k`, so the reader vCPU can rebuild every layout (and every state in
//! between) that a view of it may show, and check each answer exactly.
//!
//! Slot `id` only ever lives in its own stretch of gfns, so no two slots
//! can collide. Each step changes one slot, or three in one batch (every
//! fifth step): a slot that is absent is created; one that is present is
//! deleted, moved within its stretch, or has `LOG_DIRTY_PAGES` toggled. A
//! slot's host address names the step that created it.

use core::ops::Range;

use memslots::{Flags, Gfn, Hva, Region, PAGE_SIZE};

/// Slot ids in use.
pub const IDS: usize = 8;
/// Steps in the schedule; layout 0 is empty.
pub const STEPS: u64 = 160;
/// The first gfn of slot 0's stretch.
pub const FIRST_GFN: Gfn = 0x10_0000;
/// Gfns in each slot's stretch.
pub const STRETCH: u64 = 0x1000;
/// One past the last gfn any slot may hold.
pub const END_GFN: Gfn = FIRST_GFN + IDS as u64 * STRETCH;
/// The largest slot, in pages.
const MAX_PAGES: u64 = 64;

/// splitmix64: the schedule's and the reader's source of numbers.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The host address of slot `id` made at step `step`.
fn hva_of(step: u64, id: u16) -> Hva {
    (step << 32) | (u64::from(id) << 24)
}

/// Up to [`IDS`] slots, as a query returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regions {
    items: [Option<Region>; IDS],
    len: usize,
    /// More than [`IDS`] were pushed: never a right answer.
    overflowed: bool,
}

impl Regions {
    /// Appends `region`, or marks the list overflowed when full.
    pub fn push(&mut self, region: Region) {
        match self.items.get_mut(self.len) {
            Some(item) => {
                *item = Some(region);
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }

    fn sort_by_key(&mut self, key: impl Fn(&Region) -> u64) {
        self.items[..self.len].sort_unstable_by_key(|r| r.as_ref().map(&key));
    }
}

/// One slot's part of a step.
#[derive(Clone, Copy, Debug)]
pub struct Change {
    /// The slot before the step.
    pub old: Option<Region>,
    /// The slot after it.
    pub new: Option<Region>,
}

impl Change {
    /// A delete or a move: readers see the slot vanish before the step is
    /// published (the INVALID copy).
    pub fn invalidates(&self) -> bool {
        match (self.old, self.new) {
            (Some(old), new) => new.is_none_or(|new| new.base_gfn != old.base_gfn),
            (None, _) => false,
        }
    }
}

/// The slots of one layout, by id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    slots: [Option<Region>; IDS],
    /// Slots shown as their INVALID copy (being deleted or moved).
    invalid: [bool; IDS],
}

impl Layout {
    /// The changes of step `step` from this layout (which must be layout
    /// `step - 1`).
    pub fn changes(&self, step: u64) -> impl Iterator<Item = Change> + '_ {
        let count = if step.is_multiple_of(5) { 3 } else { 1 };
        [0, 3, 5].into_iter().take(count).map(move |shift| {
            let id = ((step + shift) % IDS as u64) as u16;
            let old = self.slots[usize::from(id)];
            Change { old, new: next(step, id, old) }
        })
    }

    /// Layout `step`, from this one (layout `step - 1`).
    pub fn stepped(&self, step: u64) -> Layout {
        let mut next = *self;
        for change in self.changes(step) {
            if let Some(region) = change.old.or(change.new) {
                next.slots[usize::from(region.id)] = change.new;
            }
        }
        next
    }

    /// What readers see while step `step` is being published: this layout
    /// with the slots it deletes or moves INVALID (no lookup finds them; the
    /// walk of host ranges still does).
    pub fn invalidated(&self, step: u64) -> Layout {
        let mut next = *self;
        for change in self.changes(step).filter(Change::invalidates) {
            if let Some(old) = change.old {
                next.invalid[usize::from(old.id)] = true;
            }
        }
        next
    }

    /// The usable slots (present and not INVALID), by id.
    pub fn present(&self) -> impl Iterator<Item = &Region> + '_ {
        self.slots.iter().zip(&self.invalid).filter(|(_, &invalid)| !invalid).filter_map(|(slot, _)| slot.as_ref())
    }

    /// The usable slot with `id`.
    pub fn by_id(&self, id: u16) -> Option<Region> {
        let i = usize::from(id);
        self.slots.get(i).copied().flatten().filter(|_| !self.invalid[i])
    }

    /// The slot holding `gfn`.
    pub fn at(&self, gfn: Gfn) -> Option<Region> {
        self.present().find(|r| (r.base_gfn..r.end_gfn()).contains(&gfn)).copied()
    }

    /// The slots intersecting `gfns`, by gfn.
    pub fn in_gfn_range(&self, gfns: &Range<Gfn>) -> Regions {
        let mut found = Regions::default();
        for r in self.present().filter(|r| r.base_gfn < gfns.end && gfns.start < r.end_gfn()) {
            found.push(*r);
        }
        found.sort_by_key(|r| r.base_gfn);
        found
    }

    /// The slots whose host range intersects `hvas`, by host address.
    pub fn in_hva_range(&self, hvas: &Range<Hva>) -> Regions {
        let mut found = Regions::default();
        // INVALID slots too, as `View::slots_in_hva_range` gives them.
        for r in self.slots.iter().flatten().filter(|r| r.hva < hvas.end && hvas.start < r.hva + r.npages * PAGE_SIZE) {
            found.push(*r);
        }
        found.sort_by_key(|r| r.hva);
        found
    }
}

/// Slot `id` after step `step`, from `old`.
fn next(step: u64, id: u16, old: Option<Region>) -> Option<Region> {
    let h = mix((step << 8) | u64::from(id));
    let stretch = FIRST_GFN + u64::from(id) * STRETCH;
    let Some(old) = old else {
        let npages = 1 + h % MAX_PAGES;
        let mut flags = Flags::empty();
        flags.set(Flags::READONLY, (h >> 20) & 3 == 0);
        flags.set(Flags::LOG_DIRTY_PAGES, (h >> 22) & 1 == 1);
        let base_gfn = stretch + (h >> 8) % (STRETCH - npages + 1);
        return Some(Region { id, as_id: 0, base_gfn, npages, hva: hva_of(step, id), flags });
    };
    match (h >> 40) % 4 {
        0 => None,
        1 | 2 => {
            // A different place in the stretch.
            let places = STRETCH - old.npages + 1;
            let now = old.base_gfn - stretch;
            Some(Region { base_gfn: stretch + (now + 1 + (h >> 8) % (places - 1)) % places, ..old })
        }
        _ => Some(Region { flags: old.flags ^ Flags::LOG_DIRTY_PAGES, ..old }),
    }
}
