//! A slot as a vm-memory region.

use core::fmt;
use std::io;

use ::vm_memory::bitmap::{Bitmap, BS};
use ::vm_memory::{
    AtomicAccess, Bytes, GuestAddress, GuestMemoryError, GuestMemoryRegion, GuestMemoryResult, GuestUsize,
    MemoryRegionAddress, ReadVolatile, VolatileSlice, WriteVolatile,
};

use crate::base::addr::PAGE_SHIFT;
use crate::map::Slot;
use crate::vm_memory::bitmap::{DirtyLog, DirtySlice};
use crate::vocab::Flags;

/// A slot seen through vm-memory's [`GuestMemoryRegion`]: its guest range,
/// its host memory and its dirty log. Borrowed from a
/// [`SlotRegions`](crate::vm_memory::SlotRegions), so it lives as long as
/// the snapshot it came from.
///
/// Its `Bytes` reads a `READONLY` slot and refuses to write it;
/// `get_slice`, `as_volatile_slice` and `get_host_address`, which do not
/// say whether the caller will write, refuse a `READONLY` slot
/// ([module docs](crate::vm_memory#readonly-slots)).
#[repr(transparent)]
pub struct SlotRegion(Slot);

/// What a refused write to a `READONLY` slot returns.
#[cold]
fn read_only() -> GuestMemoryError {
    GuestMemoryError::IOError(io::ErrorKind::PermissionDenied.into())
}

impl SlotRegion {
    /// The region of a slot.
    #[inline]
    pub(super) fn of(slot: &Slot) -> &SlotRegion {
        // SAFETY: V1: `SlotRegion` is a transparent wrapper of `Slot`.
        unsafe { &*(slot as *const Slot).cast::<SlotRegion>() }
    }

    /// The slot.
    pub fn slot(&self) -> &Slot {
        &self.0
    }

    /// The host address `offset` bytes into the slot, which the caller has
    /// checked lies inside it (or at its end), for an access that may
    /// write if `write`.
    #[inline]
    fn host(&self, offset: u64, write: bool) -> GuestMemoryResult<*mut u8> {
        if !self.0.has_host_memory() {
            return Err(GuestMemoryError::HostAddressNotAvailable);
        }
        // V4: a READONLY slot's memory may be mapped read-only.
        if write && self.0.flags().contains(Flags::READONLY) {
            return Err(read_only());
        }
        // A slot's host range does not wrap (the writer's validation); the
        // provenance of the address was exposed when it was registered
        // (`GuestRam::as_ptr`, or the embedder's mapping for `create_raw`).
        Ok(core::ptr::with_exposed_provenance_mut((self.0.hva() + offset) as usize))
    }

    /// `count` bytes of the slot from `offset`, marking the slot's dirty
    /// log when written, for an access that may write if `write`.
    #[inline]
    pub(super) fn slice(
        &self,
        offset: u64,
        count: usize,
        write: bool,
    ) -> GuestMemoryResult<VolatileSlice<'_, BS<'_, DirtyLog>>> {
        let end = offset.checked_add(count as u64).ok_or(GuestMemoryError::InvalidBackendAddress)?;
        if end > self.len() {
            return Err(GuestMemoryError::InvalidBackendAddress);
        }
        let host = self.host(offset, write)?;
        let bitmap = self.bitmap().slice_at(offset as usize);
        // `with_bitmap`'s contract holds. `offset..end` lies in the
        // slot, whose host memory stays mapped while the snapshot this
        // region borrows from lives: the slot object (holding its
        // `GuestRam`) is freed only a grace period after no set can hand it
        // out, so after every view that reached it (map invariants 2 and 3),
        // and a `create_raw` mapping stays until the slot's delete returns,
        // which waits for the view (`Writer::create_raw`'s contract). That
        // memory is writable unless the slot is READONLY (the same
        // contract; owned RAM always is), and a slice of a READONLY slot is
        // made only for a caller that reads it (V4). The crate never makes
        // references into guest memory, so every other access is volatile
        // or a raw copy.
        // SAFETY: as just said.
        Ok(unsafe { VolatileSlice::with_bitmap(host, count, bitmap, None) })
    }

    /// The whole slot, for an access that may write if `write`.
    #[inline]
    fn whole(&self, write: bool) -> GuestMemoryResult<VolatileSlice<'_, BS<'_, DirtyLog>>> {
        self.slice(0, self.len() as usize, write)
    }
}

impl GuestMemoryRegion for SlotRegion {
    type B = DirtyLog;

    #[inline]
    fn len(&self) -> GuestUsize {
        self.0.npages() << PAGE_SHIFT
    }

    #[inline]
    fn start_addr(&self) -> GuestAddress {
        GuestAddress(self.0.base_gfn() << PAGE_SHIFT)
    }

    #[inline]
    fn bitmap(&self) -> DirtySlice<'_> {
        DirtySlice::whole(self.0.dirty_log().map(|log| DirtyLog::of(log)))
    }

    /// The host address of `addr`.
    ///
    /// # Errors
    /// `InvalidBackendAddress` outside the region, `HostAddressNotAvailable`
    /// for a slot without host memory, `IOError` (`PermissionDenied`) for a
    /// `READONLY` slot: a caller may write through the pointer.
    #[inline]
    fn get_host_address(&self, addr: MemoryRegionAddress) -> GuestMemoryResult<*mut u8> {
        let addr = self.check_address(addr).ok_or(GuestMemoryError::InvalidBackendAddress)?;
        self.host(addr.0, true)
    }

    /// `count` bytes of the region from `offset`, marking the slot's dirty
    /// log when written.
    ///
    /// # Errors
    /// `InvalidBackendAddress` when they do not lie in the region,
    /// `HostAddressNotAvailable` for a slot without host memory, `IOError`
    /// (`PermissionDenied`) for a `READONLY` slot: a caller may write
    /// through the slice.
    #[inline]
    fn get_slice(
        &self,
        offset: MemoryRegionAddress,
        count: usize,
    ) -> GuestMemoryResult<VolatileSlice<'_, BS<'_, DirtyLog>>> {
        self.slice(offset.0, count, true)
    }
}

/// The accessors `GuestMemoryRegionBytes` would give, each over the whole
/// slot as vm-memory's are, but told whether it writes: a write to a
/// `READONLY` slot fails with `IOError` (`PermissionDenied`).
impl Bytes<MemoryRegionAddress> for SlotRegion {
    type E = GuestMemoryError;

    fn write(&self, buf: &[u8], addr: MemoryRegionAddress) -> GuestMemoryResult<usize> {
        Ok(self.whole(true)?.write(buf, addr.0 as usize)?)
    }

    fn read(&self, buf: &mut [u8], addr: MemoryRegionAddress) -> GuestMemoryResult<usize> {
        Ok(self.whole(false)?.read(buf, addr.0 as usize)?)
    }

    fn write_slice(&self, buf: &[u8], addr: MemoryRegionAddress) -> GuestMemoryResult<()> {
        Ok(self.whole(true)?.write_slice(buf, addr.0 as usize)?)
    }

    fn read_slice(&self, buf: &mut [u8], addr: MemoryRegionAddress) -> GuestMemoryResult<()> {
        Ok(self.whole(false)?.read_slice(buf, addr.0 as usize)?)
    }

    fn read_volatile_from<F: ReadVolatile>(
        &self,
        addr: MemoryRegionAddress,
        src: &mut F,
        count: usize,
    ) -> GuestMemoryResult<usize> {
        Ok(self.whole(true)?.read_volatile_from(addr.0 as usize, src, count)?)
    }

    fn read_exact_volatile_from<F: ReadVolatile>(
        &self,
        addr: MemoryRegionAddress,
        src: &mut F,
        count: usize,
    ) -> GuestMemoryResult<()> {
        Ok(self.whole(true)?.read_exact_volatile_from(addr.0 as usize, src, count)?)
    }

    fn write_volatile_to<F: WriteVolatile>(
        &self,
        addr: MemoryRegionAddress,
        dst: &mut F,
        count: usize,
    ) -> GuestMemoryResult<usize> {
        Ok(self.whole(false)?.write_volatile_to(addr.0 as usize, dst, count)?)
    }

    fn write_all_volatile_to<F: WriteVolatile>(
        &self,
        addr: MemoryRegionAddress,
        dst: &mut F,
        count: usize,
    ) -> GuestMemoryResult<()> {
        Ok(self.whole(false)?.write_all_volatile_to(addr.0 as usize, dst, count)?)
    }

    fn store<T: AtomicAccess>(
        &self,
        val: T,
        addr: MemoryRegionAddress,
        order: core::sync::atomic::Ordering,
    ) -> GuestMemoryResult<()> {
        Ok(self.whole(true)?.store(val, addr.0 as usize, order)?)
    }

    fn load<T: AtomicAccess>(
        &self,
        addr: MemoryRegionAddress,
        order: core::sync::atomic::Ordering,
    ) -> GuestMemoryResult<T> {
        Ok(self.whole(false)?.load(addr.0 as usize, order)?)
    }
}

impl fmt::Debug for SlotRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SlotRegion").field(&self.0).finish()
    }
}
