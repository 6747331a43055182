//! A plain reference model of the slot map: a Vec of regions and linear
//! scans, with KVM's validation rules written out again independently.

#![allow(dead_code)]

use memslots::{Change, Config, Error, Flags, Region, SlotKey, UserMemoryRegion, GFN_LIMIT, MAX_SLOT_PAGES};

use super::agree::Op;

const PAGE: u64 = 4096;

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub config: Config,
    pub slots: Vec<Region>,
}

impl Model {
    pub fn new(config: Config) -> Model {
        Model { config, slots: Vec::new() }
    }

    fn find(&self, key: SlotKey) -> Option<usize> {
        self.slots.iter().position(|r| r.key() == key)
    }

    fn total(&self) -> u64 {
        self.slots.iter().map(|r| r.npages).sum()
    }

    /// The slot id first, then the address space, as the raw call checks
    /// them.
    fn check_key(&self, key: SlotKey) -> Result<(), Error> {
        if key.id >= self.config.max_slots {
            return Err(Error::InvalidSlotId { id: key.id.into() });
        }
        if key.as_id >= self.config.address_spaces {
            return Err(Error::InvalidAddressSpace { as_id: key.as_id.into() });
        }
        Ok(())
    }

    /// A range given in frames must end below `GFN_LIMIT`: its byte end
    /// `(base_gfn + npages) << 12` must not reach 2^64 (KVM's wrap check).
    fn check_frames(base_gfn: u64, npages: u64) -> Result<(), Error> {
        if npages > MAX_SLOT_PAGES {
            return Err(Error::SlotTooLarge { npages });
        }
        if u128::from(base_gfn) + u128::from(npages) >= u128::from(GFN_LIMIT) {
            return Err(Error::GpaWraps);
        }
        Ok(())
    }

    /// `KVM_SET_USER_MEMORY_REGION`, with the `slot` field split as the
    /// kernel splits it: address space from the upper 16 bits, id from the
    /// lower 16.
    pub fn set_region(&mut self, raw: UserMemoryRegion) -> Result<Change, Error> {
        let UserMemoryRegion { slot, flags, guest_phys_addr: gpa, memory_size: size, userspace_addr: hva } = raw;
        let unknown = flags.bits() & !(Flags::LOG_DIRTY_PAGES.bits() | Flags::READONLY.bits());
        if unknown != 0 {
            return Err(Error::UnknownFlags { bits: unknown });
        }
        let (as_id, id) = (slot >> 16, slot & 0xffff);
        // The id (the low 16 bits) is checked before the fields, the address
        // space after them.
        if id >= u32::from(self.config.max_slots) {
            return Err(Error::InvalidSlotId { id });
        }
        if !size.is_multiple_of(PAGE) {
            return Err(Error::UnalignedSize { size });
        }
        if !gpa.is_multiple_of(PAGE) {
            return Err(Error::UnalignedGpa { gpa });
        }
        if !hva.is_multiple_of(PAGE) {
            return Err(Error::UnalignedHva { hva });
        }
        if u128::from(hva) + u128::from(size) > u128::from(u64::MAX) {
            return Err(Error::HvaWraps);
        }
        if as_id >= u32::from(self.config.address_spaces) {
            return Err(Error::InvalidAddressSpace { as_id });
        }
        if u128::from(gpa) + u128::from(size) > u128::from(u64::MAX) {
            return Err(Error::GpaWraps);
        }
        let npages = size / PAGE;
        if npages > MAX_SLOT_PAGES {
            return Err(Error::SlotTooLarge { npages });
        }
        let key = SlotKey { id: id as u16, as_id: as_id as u16 };
        let old = self.find(key);
        if npages == 0 {
            let i = old.ok_or(Error::NoSuchSlot { key })?;
            self.slots.remove(i);
            return Ok(Change::Deleted);
        }
        let new = Region { id: key.id, as_id: key.as_id, base_gfn: gpa / PAGE, npages, hva, flags };
        let change = match old {
            None => {
                let limit = self.config.max_total_pages;
                if u128::from(self.total()) + u128::from(npages) > u128::from(limit) {
                    return Err(Error::TotalPagesExceeded { limit });
                }
                Change::Created
            }
            Some(i) => {
                let old = self.slots[i];
                if old.hva != hva {
                    return Err(Error::HvaChange { key });
                }
                if old.npages != npages {
                    return Err(Error::Resize { key });
                }
                if old.flags.contains(Flags::READONLY) != new.flags.contains(Flags::READONLY) {
                    return Err(Error::ReadonlyToggle { key });
                }
                if old.base_gfn != new.base_gfn {
                    Change::Moved
                } else if old.flags != new.flags {
                    Change::FlagsChanged
                } else {
                    return Ok(Change::Unchanged);
                }
            }
        };
        if matches!(change, Change::Created | Change::Moved) {
            let mut colliding: Vec<&Region> = self
                .slots
                .iter()
                .filter(|r| r.as_id == new.as_id && r.id != new.id)
                .filter(|r| r.base_gfn < new.end_gfn() && new.base_gfn < r.end_gfn())
                .collect();
            colliding.sort_by_key(|r| r.base_gfn);
            if let Some(with) = colliding.first() {
                return Err(Error::Overlap { key, with: with.key() });
            }
        }
        match old {
            Some(i) => self.slots[i] = new,
            None => self.slots.push(new),
        }
        Ok(change)
    }

    fn apply(&mut self, r: &Region) -> Result<Change, Error> {
        self.set_region(UserMemoryRegion {
            slot: (u32::from(r.as_id) << 16) | u32::from(r.id),
            flags: r.flags,
            guest_phys_addr: r.base_gfn * PAGE,
            memory_size: r.npages * PAGE,
            userspace_addr: r.hva,
        })
    }

    fn existing(&self, key: SlotKey) -> Result<Region, Error> {
        self.check_key(key)?;
        self.find(key).map(|i| self.slots[i]).ok_or(Error::NoSuchSlot { key })
    }

    pub fn create(&mut self, r: Region) -> Result<Change, Error> {
        self.check_key(r.key())?;
        if r.npages == 0 {
            return Err(Error::EmptySlot);
        }
        if self.find(r.key()).is_some() {
            return Err(Error::SlotExists { key: r.key() });
        }
        Self::check_frames(r.base_gfn, r.npages)?;
        self.apply(&r)
    }

    pub fn delete(&mut self, key: SlotKey) -> Result<Change, Error> {
        let old = self.existing(key)?;
        self.apply(&Region { npages: 0, ..old })
    }

    pub fn move_to(&mut self, key: SlotKey, base_gfn: u64) -> Result<Change, Error> {
        let old = self.existing(key)?;
        Self::check_frames(base_gfn, old.npages)?;
        self.apply(&Region { base_gfn, ..old })
    }

    pub fn set_flags(&mut self, key: SlotKey, flags: Flags) -> Result<Change, Error> {
        let old = self.existing(key)?;
        self.apply(&Region { flags, ..old })
    }

    /// One single call.
    ///
    /// # Panics
    /// For a batch.
    pub fn single(&mut self, op: &Op) -> Result<Change, Error> {
        match *op {
            Op::Create(r) => self.create(r),
            Op::Delete(k) => self.delete(k),
            Op::Move(k, g) => self.move_to(k, g),
            Op::SetFlags(k, f) => self.set_flags(k, f),
            Op::SetRegion(r) => self.set_region(r),
            Op::Batch(_) => panic!("not a single call: {op:?}"),
        }
    }

    /// A batch, the simple way: the operations applied one by one to a copy
    /// of the state by the single-call rules, each to the state the ones
    /// before left. The first refused one fails the batch with its index and
    /// leaves the state as it was; otherwise the copy becomes the state.
    /// Generations are not modelled.
    ///
    /// # Panics
    /// For a nested batch.
    pub fn batch(&mut self, ops: &[Op]) -> Result<Vec<Change>, (Option<usize>, Error)> {
        let mut next = self.clone();
        let changes = ops
            .iter()
            .enumerate()
            .map(|(index, op)| next.single(op).map_err(|error| (Some(index), error)))
            .collect::<Result<Vec<Change>, _>>()?;
        *self = next;
        Ok(changes)
    }

    pub fn lookup(&self, as_id: u16, gfn: u64) -> Option<Region> {
        self.slots.iter().find(|r| r.as_id == as_id && r.base_gfn <= gfn && gfn < r.end_gfn()).copied()
    }

    pub fn by_id(&self, key: SlotKey) -> Option<Region> {
        self.find(key).map(|i| self.slots[i])
    }

    /// The slots intersecting `start..end`; none for an empty or reversed
    /// range.
    pub fn in_gfn_range(&self, as_id: u16, start: u64, end: u64) -> Vec<Region> {
        if start >= end {
            return Vec::new();
        }
        let mut v: Vec<Region> = self
            .slots
            .iter()
            .filter(|r| r.as_id == as_id && r.base_gfn < end && start < r.end_gfn())
            .copied()
            .collect();
        v.sort_by_key(|r| r.base_gfn);
        v
    }

    /// The slots whose host range intersects `lo..hi`, by host address
    /// then id; none for an empty or reversed range.
    pub fn in_hva_range(&self, as_id: u16, lo: u64, hi: u64) -> Vec<Region> {
        if lo >= hi {
            return Vec::new();
        }
        let mut v: Vec<Region> = self
            .slots
            .iter()
            .filter(|r| r.as_id == as_id && r.hva < hi && lo < r.hva + r.npages * PAGE)
            .copied()
            .collect();
        v.sort_by_key(|r| (r.hva, r.id));
        v
    }

    /// Gfns worth probing in `as_id`: every slot edge, its neighbours, the
    /// holes between, and the top of the range (the last gfn a slot may
    /// hold, the first it may not, `GFN_LIMIT`, and the largest gfns).
    pub fn probe_gfns(&self, as_id: u16) -> Vec<u64> {
        let mut v = vec![0, GFN_LIMIT - 2, GFN_LIMIT - 1, GFN_LIMIT, GFN_LIMIT + 1, u64::MAX - 1, u64::MAX];
        for r in self.slots.iter().filter(|r| r.as_id == as_id) {
            for g in [r.base_gfn, r.end_gfn()] {
                v.extend([g.wrapping_sub(1), g, g + 1]);
            }
        }
        v
    }
}
