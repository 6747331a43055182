//! A slot as a vm-memory region.

use core::fmt;

use ::vm_memory::bitmap::{Bitmap, BS};
use ::vm_memory::{
    GuestAddress, GuestMemoryError, GuestMemoryRegion, GuestMemoryRegionBytes, GuestMemoryResult, GuestUsize,
    MemoryRegionAddress, VolatileSlice,
};

use crate::base::addr::PAGE_SHIFT;
use crate::map::Slot;
use crate::vm_memory::bitmap::{DirtyLog, DirtySlice};

/// A slot seen through vm-memory's [`GuestMemoryRegion`]: its guest range,
/// its host memory and its dirty log. Borrowed from a
/// [`SlotMemory`](crate::vm_memory::SlotMemory), so it lives as long as the
/// snapshot it came from.
#[repr(transparent)]
pub struct SlotRegion(Slot);

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
    /// checked lies inside it (or at its end).
    #[inline]
    fn host(&self, offset: u64) -> GuestMemoryResult<*mut u8> {
        if !self.0.has_host_memory() {
            return Err(GuestMemoryError::HostAddressNotAvailable);
        }
        // A slot's host range does not wrap (the writer's validation); the
        // provenance of the address was exposed when it was registered
        // (`GuestRam::as_ptr`, or the embedder's mapping for `create_raw`).
        Ok(core::ptr::with_exposed_provenance_mut((self.0.hva() + offset) as usize))
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
    /// for a slot without host memory.
    #[inline]
    fn get_host_address(&self, addr: MemoryRegionAddress) -> GuestMemoryResult<*mut u8> {
        let addr = self.check_address(addr).ok_or(GuestMemoryError::InvalidBackendAddress)?;
        self.host(addr.0)
    }

    /// `count` bytes of the region from `offset`, marking the slot's dirty
    /// log when written.
    ///
    /// # Errors
    /// `InvalidBackendAddress` when they do not lie in the region,
    /// `HostAddressNotAvailable` for a slot without host memory.
    #[inline]
    fn get_slice(
        &self,
        offset: MemoryRegionAddress,
        count: usize,
    ) -> GuestMemoryResult<VolatileSlice<'_, BS<'_, DirtyLog>>> {
        let end = offset.0.checked_add(count as u64).ok_or(GuestMemoryError::InvalidBackendAddress)?;
        if end > self.len() {
            return Err(GuestMemoryError::InvalidBackendAddress);
        }
        let host = self.host(offset.0)?;
        let bitmap = self.bitmap().slice_at(offset.0 as usize);
        // SAFETY: `with_bitmap`'s contract holds. `offset..end` lies in the
        // slot, whose host memory stays mapped while the snapshot this
        // region borrows from lives: the slot object (holding its
        // `GuestRam`) is freed only a grace period after no set can hand it
        // out, so after every view that reached it (map invariants 2 and 3),
        // and a `create_raw` mapping stays until the slot's delete returns,
        // which waits for the view (`Writer::create_raw`'s contract). The
        // crate never makes references into guest memory, so every other
        // access is volatile or a raw copy.
        Ok(unsafe { VolatileSlice::with_bitmap(host, count, bitmap, None) })
    }
}

impl GuestMemoryRegionBytes for SlotRegion {}

impl fmt::Debug for SlotRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SlotRegion").field(&self.0).finish()
    }
}
