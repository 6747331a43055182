//! Validation: turns a request into the change to make, with KVM's rules,
//! checked in the order of a current kernel (6.8 on), so a VMM sees the first
//! error the ioctl would give: `kvm_vm_ioctl` refuses flags the ioctl does
//! not know, `kvm_vm_ioctl_set_memory_region` an out-of-range slot id, and
//! `kvm_set_memory_region` the rest:
//!
//! 1. unknown flag bits;
//! 2. slot id (the low 16 bits of the slot field) out of range;
//! 3. size, guest address, host address not page aligned;
//! 4. host range wraps;
//! 5. address space out of range;
//! 6. guest range wraps; more than 2^31 - 1 pages;
//! 7. size 0: delete, of a slot that must exist;
//! 8. new slot: the total-pages limit;
//!    existing slot: new host address, new size, READONLY toggled are refused;
//!    same base and flags is a no-op;
//! 9. CREATE and MOVE must not overlap another slot (its own old range is fine);
//! 10. CREATE and MOVE must end within the guest physical address width
//!     (x86's `kvm_arch_prepare_memory_region`, after the generic checks).

use crate::base::addr::{is_page_aligned, MAX_SLOT_PAGES, PAGE_SHIFT};
use crate::error::Error;
use crate::map::set::Set;
use crate::map::slot::SlotPtr;
use crate::map::Config;
use crate::vocab::{Change, Flags, Region, SlotKey, UserMemoryRegion};

/// What a valid request changes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Plan {
    Unchanged,
    Create(Region),
    Delete(SlotPtr),
    Move(SlotPtr, Region),
    Flags(SlotPtr, Region),
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

/// The limits of the configuration, as validation checks them.
impl Config {
    /// Checks a typed key: the slot id first, as KVM does.
    pub(crate) fn check_key(&self, key: SlotKey) -> Result<(), Error> {
        self.check_id(key.id)?;
        self.check_address_space(key.as_id)
    }

    fn check_id(&self, id: u16) -> Result<(), Error> {
        if id >= self.max_slots {
            return Err(Error::InvalidSlotId { id: id.into() });
        }
        Ok(())
    }

    fn check_address_space(&self, as_id: u16) -> Result<(), Error> {
        if as_id >= self.address_spaces {
            return Err(Error::InvalidAddressSpace { as_id: as_id.into() });
        }
        Ok(())
    }
}

/// Validates `raw` against `set` (the writer's view of its address space) and
/// the pages already in use. Changes nothing.
pub(crate) fn plan<'s>(
    config: &Config,
    set_of: impl FnOnce(u16) -> &'s Set,
    total_pages: u64,
    raw: UserMemoryRegion,
) -> Result<Plan, Error> {
    let unknown = raw.flags.bits() & !Flags::all().bits();
    if unknown != 0 {
        return Err(Error::UnknownFlags { bits: unknown });
    }
    let key = raw.key();
    config.check_id(key.id)?;
    let (flags, gpa, size, hva) = (raw.flags, raw.guest_phys_addr, raw.memory_size, raw.userspace_addr);
    if !is_page_aligned(size) {
        return Err(Error::UnalignedSize { size });
    }
    if !is_page_aligned(gpa) {
        return Err(Error::UnalignedGpa { gpa });
    }
    if !is_page_aligned(hva) {
        return Err(Error::UnalignedHva { hva });
    }
    if hva.checked_add(size).is_none() {
        return Err(Error::HvaWraps);
    }
    config.check_address_space(key.as_id)?;
    if gpa.checked_add(size).is_none() {
        return Err(Error::GpaWraps);
    }
    let npages = size >> PAGE_SHIFT;
    if npages > MAX_SLOT_PAGES {
        return Err(Error::SlotTooLarge { npages });
    }

    let SlotKey { id, as_id } = key;
    let set = set_of(as_id);
    let old = set.ptr_by_id(id);
    if npages == 0 {
        return old.map(Plan::Delete).ok_or(Error::NoSuchSlot { key });
    }
    let new = Region { id, as_id, base_gfn: gpa >> PAGE_SHIFT, npages, hva, flags };
    let plan = match old {
        None => {
            let limit = config.max_total_pages;
            if total_pages.checked_add(npages).is_none_or(|total| total > limit) {
                return Err(Error::TotalPagesExceeded { limit });
            }
            Plan::Create(new)
        }
        Some(old_ptr) => {
            // SAFETY: `old_ptr` is in the writer's set, so it is live
            // (invariant 6).
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
    if let Some(with) = set.first_overlap(new.base_gfn..new.end_gfn(), old) {
        return Err(Error::Overlap { key, with });
    }
    if new.end_gfn() > config.max_gfn_end() {
        return Err(Error::BeyondPhysAddrWidth { key, bits: config.phys_addr_bits });
    }
    Ok(plan)
}
