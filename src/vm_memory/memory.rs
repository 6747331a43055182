//! The guest memory a snapshot shows: one view of the slot map as
//! vm-memory's `GuestMemory`, which is told whether an access writes, over
//! the slots as a `GuestMemoryBackend`.

use core::iter::FusedIterator;

use ::vm_memory::bitmap::BS;
use ::vm_memory::guest_memory::GuestMemorySliceIterator;
use ::vm_memory::{
    GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion, GuestMemoryResult,
    MemoryRegionAddress, Permissions, VolatileSlice,
};

use crate::base::addr::{GFN_LIMIT, PAGE_SHIFT};
use crate::map::View;
use crate::vm_memory::bitmap::DirtyLog;
use crate::vm_memory::region::SlotRegion;

/// One layout of the slot map as vm-memory's [`GuestMemory`], what
/// devices use (and through vm-memory's blanket implementation
/// `Bytes<GuestAddress>`): an access that writes is refused on a
/// `READONLY` slot ([module docs](crate::vm_memory#readonly-slots)).
/// Reached only through a [`SlotSnapshot`](crate::vm_memory::SlotSnapshot),
/// on the thread that took it.
#[derive(Debug)]
pub struct SlotMemory {
    regions: SlotRegions,
}

/// The slots of one layout as vm-memory's [`GuestMemoryBackend`]: the
/// regions, found through the map's index. Its accessors do not say whether
/// the caller will write, so they refuse `READONLY` slots (a region's
/// `Bytes` do not). From [`SlotMemory::regions`] or
/// [`GuestMemory::physical_memory`].
#[derive(Debug)]
pub struct SlotRegions {
    /// Really borrows the reader stored beside it (V2).
    view: View<'static>,
}

impl SlotMemory {
    /// Memory for a view whose reader outlives it (V2).
    #[inline]
    pub(super) fn new(view: View<'static>) -> SlotMemory {
        SlotMemory { regions: SlotRegions { view } }
    }

    /// The view behind the snapshot, for the crate's own accessors: a
    /// [`GuestRange`](crate::GuestRange) to hold across blocking I/O,
    /// [`GpaCache`](crate::GpaCache)d reads, the generation.
    pub fn view(&self) -> &View<'_> {
        &self.regions.view
    }

    /// The slots as regions: `find_region`, `iter`, `num_regions`.
    pub fn regions(&self) -> &SlotRegions {
        &self.regions
    }

    /// The slices of `addr..addr + count`, refused in a `READONLY` slot if
    /// `access` writes.
    #[inline]
    fn slices(&self, addr: GuestAddress, count: usize, access: Permissions) -> SlotSlices<'_> {
        // Not `access.has_write()`, which is not inlined across crates, so
        // that a constant access (every `Bytes` method) folds the check away.
        let write = matches!(access, Permissions::Write | Permissions::ReadWrite);
        SlotSlices { regions: &self.regions, addr, count, write }
    }
}

impl GuestMemory for SlotMemory {
    type PhysicalMemory = SlotRegions;
    type Bitmap = DirtyLog;

    /// Whether every byte of the range lies in a slot with host memory,
    /// none of them `READONLY` if `access` writes.
    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        self.slices(addr, count, access).all(|slice| slice.is_ok())
    }

    /// The slices of `addr..addr + count`, one per slot, as
    /// `GuestMemoryBackend::get_slices` walks them; a slice in a `READONLY`
    /// slot is `IOError` (`PermissionDenied`) if `access` writes. Write
    /// only through a slice asked for with `Permissions::Write`.
    #[inline]
    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> GuestMemoryResult<impl GuestMemorySliceIterator<'a, BS<'a, DirtyLog>>> {
        Ok(self.slices(addr, count, access))
    }

    /// The slots, whose accessors refuse `READONLY` slots.
    fn physical_memory(&self) -> Option<&SlotRegions> {
        Some(&self.regions)
    }
}

impl GuestMemoryBackend for SlotRegions {
    type R = SlotRegion;

    /// The slot holding `addr`, through the map's index and the thread's
    /// last-used-slot cache.
    #[inline]
    fn find_region(&self, addr: GuestAddress) -> Option<&SlotRegion> {
        self.view.gfn_to_slot(addr.0 >> PAGE_SHIFT).map(SlotRegion::of)
    }

    /// `find_region` and the offset in it, without checking the offset again.
    ///
    /// Not inlined: with the whole lookup inside it, the slice walk (which
    /// calls this for every access) grows past what the compiler inlines,
    /// and every `read_obj` then pays for calls and stores to the stack;
    /// kept out of line, the walk inlines (figures in
    /// docs/design-notes.md).
    #[inline(never)]
    fn to_region_addr(&self, addr: GuestAddress) -> Option<(&SlotRegion, MemoryRegionAddress)> {
        let region = self.find_region(addr)?;
        Some((region, MemoryRegionAddress(addr.0 - region.start_addr().0)))
    }

    /// The slots in guest-address order.
    fn iter(&self) -> impl Iterator<Item = &SlotRegion> {
        self.view.slots_in_gfn_range(0..GFN_LIMIT).map(SlotRegion::of)
    }
}

/// vm-memory's slice walk (`GuestMemoryBackendSliceIterator`), told
/// whether the access writes: a slice per slot, up to the end of the slot,
/// and nothing after an error.
struct SlotSlices<'a> {
    regions: &'a SlotRegions,
    addr: GuestAddress,
    /// Bytes left; 0 after an error.
    count: usize,
    write: bool,
}

impl<'a> SlotSlices<'a> {
    /// The slice at `addr`, up to `count` bytes or the end of its slot.
    #[inline]
    fn step(&mut self) -> GuestMemoryResult<VolatileSlice<'a, BS<'a, DirtyLog>>> {
        let (region, start) =
            self.regions.to_region_addr(self.addr).ok_or(GuestMemoryError::InvalidGuestAddress(self.addr))?;
        let len = (region.len() - start.0).min(self.count as u64) as usize;
        self.count -= len;
        // The slice ends in the slot, so this wraps only to 0, after a slot
        // at the top of the address space; vm-memory's walk goes on there.
        self.addr = GuestAddress(self.addr.0.wrapping_add(len as u64));
        region.slice(start.0, len, self.write)
    }
}

impl<'a> Iterator for SlotSlices<'a> {
    type Item = GuestMemoryResult<VolatileSlice<'a, BS<'a, DirtyLog>>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.count == 0 {
            return None;
        }
        let slice = self.step();
        if slice.is_err() {
            self.count = 0;
        }
        Some(slice)
    }
}

/// `count` stays 0 once it is.
impl FusedIterator for SlotSlices<'_> {}

impl<'a> GuestMemorySliceIterator<'a, BS<'a, DirtyLog>> for SlotSlices<'a> {
    /// The first slice or its error, then the slices up to the next error
    /// (the walk yields nothing after one). Not vm-memory's default, whose
    /// `Peekable` kept the walk from inlining into `Bytes`: `read_obj` took
    /// 2.5 times as long (benches/vm_memory.rs).
    #[inline]
    fn stop_on_error(mut self) -> GuestMemoryResult<impl Iterator<Item = VolatileSlice<'a, BS<'a, DirtyLog>>>> {
        let first = self.next().transpose()?;
        Ok(UpToError { first, rest: self })
    }
}

/// What `SlotSlices::stop_on_error` returns: the first slice, then the
/// walk's slices up to its first error.
struct UpToError<'a> {
    first: Option<VolatileSlice<'a, BS<'a, DirtyLog>>>,
    rest: SlotSlices<'a>,
}

impl<'a> Iterator for UpToError<'a> {
    type Item = VolatileSlice<'a, BS<'a, DirtyLog>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.first.take() {
            Some(first) => Some(first),
            None => self.rest.next()?.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::sync::Arc;

    use ::vm_memory::{
        Bytes, GuestAddress, GuestAddressSpace, GuestMemory, GuestMemoryBackend, GuestMemoryRegion,
        MemoryRegionAddress, Permissions,
    };

    use crate::vm_memory::GuestMemorySlots;
    use crate::{Config, Flags, GuestRam, Memslots, SlotKey};

    /// A writable page, then a READONLY one (owned RAM, so this also runs
    /// under miri): every write that reaches the second stops there, reads
    /// cross it, and region slices of it are refused.
    #[test]
    fn writes_stop_at_readonly_slots() {
        let slots = Memslots::new(Config::default().with_address_spaces(1)).unwrap();
        let mut w = slots.writer().unwrap();
        for (id, flags) in [(0, Flags::empty()), (1, Flags::READONLY)] {
            let ram = Arc::new(GuestRam::new(4096).unwrap());
            w.create_owned(SlotKey { id, as_id: 0 }, u64::from(id), flags, ram).unwrap();
        }
        let space = GuestMemorySlots::new(slots.clone());
        let mem = space.memory();
        let across = GuestAddress(0xff8);
        assert_eq!(mem.write(&[1; 16], across).unwrap(), 8);
        assert!(mem.store(1u32, GuestAddress(0x1000), core::sync::atomic::Ordering::Relaxed).is_err());
        let mut read = [0xff; 16];
        mem.read_slice(&mut read, across).unwrap();
        assert_eq!(read, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);

        // Two slices to read; to write, the first and an error.
        let slices = |access| -> Vec<_> {
            mem.get_slices(across, 16, access).unwrap().map(|slice| slice.ok().map(|s| s.len())).collect()
        };
        assert_eq!(slices(Permissions::Read), [Some(8), Some(8)]);
        assert_eq!(slices(Permissions::Write), [Some(8), None]);
        assert!(mem.check_range(across, 16, Permissions::Read));
        assert!(!mem.check_range(across, 16, Permissions::Write));

        let (writable, readonly) = (
            mem.regions().find_region(GuestAddress(0)).unwrap(),
            mem.regions().find_region(GuestAddress(0x1000)).unwrap(),
        );
        assert!(writable.get_slice(MemoryRegionAddress(0), 8).is_ok());
        assert!(readonly.get_slice(MemoryRegionAddress(0), 8).is_err());
        assert!(readonly.get_host_address(MemoryRegionAddress(0)).is_err());
        assert!(readonly.write_obj(1u8, MemoryRegionAddress(0)).is_err());
        assert_eq!(readonly.read_obj::<u8>(MemoryRegionAddress(0)).unwrap(), 0);
        assert_eq!(writable.read_obj::<u8>(MemoryRegionAddress(0xff8)).unwrap(), 1);
    }
}
