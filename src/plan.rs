//! Validation: turns a request into the change to make, with KVM's rules from
//! `kvm_set_memory_region`, checked in this order:
//!
//! 1. unknown flag bits;
//! 2. size, guest address, host address not page aligned;
//! 3. host range wraps;
//! 4. address space, then slot id, out of range;
//! 5. guest range wraps; more than 2^31 - 1 pages;
//! 6. size 0: delete, of a slot that must exist;
//! 7. new slot: the total-pages limit;
//!    existing slot: new host address, new size, READONLY toggled are refused;
//!    same base and flags is a no-op;
//! 8. CREATE and MOVE must not overlap another slot (its own old range is fine).

use crate::addr::{is_page_aligned, Gfn, Hva, MAX_SLOT_PAGES, PAGE_SHIFT};
use crate::error::Error;
use crate::set::Set;
use crate::slot::{Flags, Region, SlotKey, SlotPtr};

/// A request in the raw form of `KVM_SET_USER_MEMORY_REGION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawRegion {
    pub(crate) id: u32,
    pub(crate) as_id: u32,
    pub(crate) gpa: u64,
    pub(crate) size: u64,
    pub(crate) hva: Hva,
    pub(crate) flags: u32,
}

impl RawRegion {
    /// The raw form of `region`. The caller has checked that `base_gfn` and
    /// `npages` fit (`check_frames`).
    pub(crate) fn from_region(region: &Region) -> RawRegion {
        RawRegion {
            id: region.id.into(),
            as_id: region.as_id.into(),
            gpa: region.base_gfn << PAGE_SHIFT,
            size: region.npages << PAGE_SHIFT,
            hva: region.hva,
            flags: region.flags.bits(),
        }
    }
}

/// What a valid request changes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Plan {
    Unchanged,
    Create(Region),
    Delete(SlotPtr),
    Move(SlotPtr, Region),
    Flags(SlotPtr, Region),
}

/// What `Writer::set_region` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new slot.
    Created,
    /// The slot was removed.
    Deleted,
    /// The slot moved to a new guest address.
    Moved,
    /// Only the flags changed.
    FlagsChanged,
    /// The parameters matched the slot: nothing was done.
    Unchanged,
}

impl Plan {
    pub(crate) fn change(&self) -> Change {
        match self {
            Plan::Unchanged => Change::Unchanged,
            Plan::Create(_) => Change::Created,
            Plan::Delete(_) => Change::Deleted,
            Plan::Move(..) => Change::Moved,
            Plan::Flags(..) => Change::FlagsChanged,
        }
    }
}

/// The limits a request is checked against.
pub(crate) struct Limits {
    pub(crate) address_spaces: u16,
    pub(crate) max_slots: u16,
    pub(crate) max_total_pages: u64,
}

impl Limits {
    /// Checks a typed key; returns the raw key's errors for it.
    pub(crate) fn check_key(&self, key: SlotKey) -> Result<(), Error> {
        if key.as_id >= self.address_spaces {
            return Err(Error::InvalidAddressSpace { as_id: key.as_id.into() });
        }
        if key.id >= self.max_slots {
            return Err(Error::InvalidSlotId { id: key.id.into() });
        }
        Ok(())
    }
}

/// Checks that a gfn range given in frames converts to bytes without wrapping.
pub(crate) fn check_frames(base_gfn: Gfn, npages: u64) -> Result<(), Error> {
    if npages > MAX_SLOT_PAGES {
        return Err(Error::SlotTooLarge { npages });
    }
    if base_gfn.checked_mul(1 << PAGE_SHIFT).is_none() {
        return Err(Error::GpaWraps);
    }
    Ok(())
}

/// Validates `raw` against `set` (the writer's view of its address space) and
/// the pages already in use. Changes nothing.
pub(crate) fn plan<'s>(
    limits: &Limits,
    set_of: impl FnOnce(u16) -> &'s Set,
    total_pages: u64,
    raw: RawRegion,
) -> Result<Plan, Error> {
    let flags = Flags::from_bits(raw.flags).ok_or(Error::UnknownFlags { bits: raw.flags })?;
    if !is_page_aligned(raw.size) {
        return Err(Error::UnalignedSize { size: raw.size });
    }
    if !is_page_aligned(raw.gpa) {
        return Err(Error::UnalignedGpa { gpa: raw.gpa });
    }
    if !is_page_aligned(raw.hva) {
        return Err(Error::UnalignedHva { hva: raw.hva });
    }
    if raw.hva.checked_add(raw.size).is_none() {
        return Err(Error::HvaWraps);
    }
    let as_id = u16::try_from(raw.as_id).ok().filter(|&a| a < limits.address_spaces);
    let as_id = as_id.ok_or(Error::InvalidAddressSpace { as_id: raw.as_id })?;
    let id = u16::try_from(raw.id).ok().filter(|&i| i < limits.max_slots);
    let id = id.ok_or(Error::InvalidSlotId { id: raw.id })?;
    if raw.gpa.checked_add(raw.size).is_none() {
        return Err(Error::GpaWraps);
    }
    let npages = raw.size >> PAGE_SHIFT;
    if npages > MAX_SLOT_PAGES {
        return Err(Error::SlotTooLarge { npages });
    }

    let key = SlotKey { id, as_id };
    let set = set_of(as_id);
    let old = set.ptr_by_id(id);
    if npages == 0 {
        return old.map(Plan::Delete).ok_or(Error::NoSuchSlot { key });
    }
    let new = Region { id, as_id, base_gfn: raw.gpa >> PAGE_SHIFT, npages, hva: raw.hva, flags };
    let plan = match old {
        None => {
            let limit = limits.max_total_pages;
            if total_pages.checked_add(npages).is_none_or(|total| total > limit) {
                return Err(Error::TotalPagesExceeded { limit });
            }
            Plan::Create(new)
        }
        Some(old_ptr) => {
            // SAFETY: `old_ptr` is in the writer's set, so it is allocated.
            let old = unsafe { old_ptr.get() }.region();
            if new.hva != old.hva {
                return Err(Error::HvaChange { key });
            }
            if new.npages != old.npages {
                return Err(Error::Resize { key });
            }
            if new.flags.contains(Flags::READONLY) != old.flags.contains(Flags::READONLY) {
                return Err(Error::ReadonlyToggle { key });
            }
            if new.base_gfn != old.base_gfn {
                Plan::Move(old_ptr, new)
            } else if new.flags != old.flags {
                return Ok(Plan::Flags(old_ptr, new));
            } else {
                return Ok(Plan::Unchanged);
            }
        }
    };
    match set.first_overlap(new.base_gfn..new.end_gfn(), key) {
        Some(with) => Err(Error::Overlap { key, with }),
        None => Ok(plan),
    }
}
