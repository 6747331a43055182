//! The guest memory a snapshot shows: one view of the slot map as
//! vm-memory's `GuestMemoryBackend`.

use core::fmt;

use ::vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::base::addr::{GFN_LIMIT, PAGE_SHIFT};
use crate::map::View;
use crate::vm_memory::region::SlotRegion;

/// One layout of the slot map as vm-memory's [`GuestMemoryBackend`] (and
/// through vm-memory's blanket implementations `GuestMemory` and
/// `Bytes<GuestAddress>`). Reached only through a
/// [`SlotSnapshot`](crate::vm_memory::SlotSnapshot), on the thread that took
/// it.
pub struct SlotMemory {
    /// Really borrows the reader stored beside it (V2).
    view: View<'static>,
}

impl SlotMemory {
    /// Memory for a view whose reader outlives it (V2).
    #[inline]
    pub(super) fn new(view: View<'static>) -> SlotMemory {
        SlotMemory { view }
    }

    /// The view behind the snapshot, for the crate's own accessors: a
    /// [`GuestRange`](crate::GuestRange) to hold across blocking I/O,
    /// [`GpaCache`](crate::GpaCache)d reads, the generation.
    pub fn view(&self) -> &View<'_> {
        &self.view
    }
}

impl GuestMemoryBackend for SlotMemory {
    type R = SlotRegion;

    /// The slot holding `addr`, through the map's index and the thread's
    /// last-used-slot cache.
    #[inline]
    fn find_region(&self, addr: GuestAddress) -> Option<&SlotRegion> {
        self.view.gfn_to_slot(addr.0 >> PAGE_SHIFT).map(SlotRegion::of)
    }

    /// `find_region` and the offset in it, without checking the offset again.
    ///
    /// Not inlined: with the whole lookup inside it, vm-memory's generic
    /// slice iterator (which calls this for every access) grows past what
    /// the compiler inlines, and every `read_obj` then pays for calls and
    /// stores to the stack; kept out of line, the iterator inlines (figures
    /// in docs/design-notes.md).
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

impl fmt::Debug for SlotMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotMemory").field("view", &self.view).finish()
    }
}
