//! Reading and writing guest memory through a view: segment by segment
//! across pages and slots, in the view's address space.

use crate::access::{AccessError, AccessFailure};
use crate::base::addr::{Gfn, PAGE_SHIFT};
use crate::map::{Lookup, Slot, View};
use crate::memory::copy;
use crate::vocab::Flags;

/// One piece of an access that lies in one slot.
pub(crate) struct Segment<'v> {
    pub(crate) slot: &'v Slot,
    /// The host address of the segment's first byte.
    pub(crate) host: *mut u8,
    /// Bytes from the slot's first byte.
    pub(crate) offset: u64,
    pub(crate) len: usize,
}

impl Segment<'_> {
    /// Marks the pages of the segment in the slot's dirty log, if any.
    pub(crate) fn mark_dirty(&self) {
        if let Some(log) = self.slot.dirty_log() {
            log.mark_bytes(self.offset, self.len as u64);
        }
    }
}

impl<'r> View<'r> {
    /// The slot piece holding `gpa`, at most `len` bytes long.
    pub(crate) fn segment(&self, gpa: u64, len: usize, write: bool) -> Result<Segment<'_>, AccessFailure> {
        let slot = match self.lookup(gpa >> PAGE_SHIFT) {
            Lookup::Slot(slot) => slot,
            Lookup::Changing => return Err(AccessFailure::Changing),
            Lookup::Unmapped => return Err(AccessFailure::NotMapped),
        };
        if write && slot.flags().contains(Flags::READONLY) {
            return Err(AccessFailure::ReadOnly);
        }
        if !slot.has_host_memory() {
            return Err(AccessFailure::NoHostMemory);
        }
        let offset = gpa - (slot.base_gfn() << PAGE_SHIFT);
        let left = (slot.npages() << PAGE_SHIFT) - offset;
        let len = usize::try_from(left).map_or(len, |left| left.min(len));
        // The host range of a slot with memory is mapped (the backing's
        // rules), so `hva + offset` is an address in it; its provenance was
        // exposed when the address was taken (`GuestRam::as_ptr`, or the
        // embedder's mapping for `create_raw`).
        let host = core::ptr::with_exposed_provenance_mut((slot.hva() + offset) as usize);
        Ok(Segment { slot, host, offset, len })
    }

    /// Runs `each` on every segment of `gpa..gpa + len`, in order, with its
    /// offset in the access.
    fn walk(
        &self,
        gpa: u64,
        len: usize,
        write: bool,
        mut each: impl FnMut(&Segment<'_>, usize),
    ) -> Result<(), AccessError> {
        if len == 0 {
            return Err(AccessError { gpa, done: 0, failure: AccessFailure::Empty });
        }
        let mut done = 0;
        while done < len {
            // No wrap: each earlier segment ended inside a slot, below 2^64.
            let at = gpa + done as u64;
            let fail = |failure| AccessError { gpa: at, done, failure };
            let segment = self.segment(at, len - done, write).map_err(fail)?;
            each(&segment, done);
            done += segment.len;
        }
        Ok(())
    }

    /// Copies guest memory at `gpa` into `buf`, across page and slot
    /// boundaries.
    ///
    /// # Errors
    /// [`AccessError`] naming the first address that could not be read and
    /// how many bytes were read before it: a hole or the end of the address
    /// space ([`AccessFailure::NotMapped`]), a slot being deleted or moved
    /// ([`AccessFailure::Changing`]: retry with a new view), a slot without
    /// host memory; a zero-length `buf` is [`AccessFailure::Empty`].
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        self.walk(gpa, buf.len(), false, |segment, at| {
            // SAFETY: the segment lies in a slot with host memory, which is
            // mapped while the view lives (the `memory` module's rules).
            unsafe { copy::from_guest(segment.host, &mut buf[at..at + segment.len]) }
        })
    }

    /// Copies `buf` into guest memory at `gpa`, across page and slot
    /// boundaries, and marks the pages written in dirty logs.
    ///
    /// # Errors
    /// As [`View::read`], and [`AccessFailure::ReadOnly`] at the first
    /// `READONLY` slot; the bytes before the failing address are written.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), AccessError> {
        self.walk(gpa, buf.len(), true, |segment, at| {
            // SAFETY: as in `read`; a slot that is not READONLY is writable.
            unsafe { copy::to_guest(segment.host, &buf[at..at + segment.len]) };
            segment.mark_dirty();
        })
    }

    /// Reads a plain-old-data value at `gpa`. A value of 2, 4 or 8 bytes at
    /// an address aligned to its size is read in one access.
    ///
    /// # Errors
    /// As [`View::read`].
    pub fn read_obj<T: bytemuck::Pod>(&self, gpa: u64) -> Result<T, AccessError> {
        let mut value = T::zeroed();
        self.read(gpa, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Writes a plain-old-data value at `gpa`. A value of 2, 4 or 8 bytes at
    /// an address aligned to its size is written in one access.
    ///
    /// # Errors
    /// As [`View::write`].
    pub fn write_obj<T: bytemuck::Pod>(&self, gpa: u64, value: T) -> Result<(), AccessError> {
        self.write(gpa, bytemuck::bytes_of(&value))
    }

    /// Marks `gfn` dirty, for memory the host touched by other means (a
    /// device's DMA, a raw pointer). Returns whether a dirty log took it:
    /// false when no usable slot holds `gfn` or its slot does not log.
    pub fn mark_page_dirty(&self, gfn: Gfn) -> bool {
        let Some(slot) = self.gfn_to_slot(gfn) else { return false };
        let Some(log) = slot.dirty_log() else { return false };
        log.mark(gfn - slot.base_gfn(), 1);
        true
    }
}
