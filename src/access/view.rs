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
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use std::sync::Arc;
    /// use memslots::{Config, Flags, GuestRam, Memslots, SlotKey};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// // Two one-page slots side by side: gfn 0x10 and gfn 0x11.
    /// for id in 0..2 {
    ///     let page = Arc::new(GuestRam::new(4096)?);
    ///     writer.create_owned(SlotKey { id, as_id: 0 }, 0x10 + u64::from(id), Flags::empty(), page)?;
    /// }
    /// let vcpu = slots.reader();
    /// let view = vcpu.pin();
    /// view.write(0x10_ffe, b"abcd")?; // two bytes in each slot
    /// let mut buf = [0; 4];
    /// view.read(0x10_ffe, &mut buf)?;
    /// assert_eq!(&buf, b"abcd");
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use std::sync::Arc;
    /// use memslots::{AccessFailure, Config, Flags, GuestRam, Memslots, SlotKey};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let key = SlotKey { id: 0, as_id: 0 };
    /// let rom = SlotKey { id: 1, as_id: 0 };
    /// writer.create_owned(key, 0x10, Flags::LOG_DIRTY_PAGES, Arc::new(GuestRam::new(2 << 12)?))?;
    /// writer.create_owned(rom, 0x20, Flags::READONLY, Arc::new(GuestRam::new(4096)?))?;
    /// let vcpu = slots.reader();
    /// {
    ///     let view = vcpu.pin();
    ///     view.write(0x11_000, b"page 1")?;
    ///     let refused = view.write(0x20_000, b"rom").err().map(|e| e.failure);
    ///     assert_eq!(refused, Some(AccessFailure::ReadOnly));
    /// }
    /// assert_eq!(writer.get_dirty_log(key)?, [1 << 1]);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use std::sync::Arc;
    /// use memslots::{Config, Flags, GuestRam, Memslots, SlotKey};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// writer.create_owned(SlotKey { id: 0, as_id: 0 }, 0x10, Flags::empty(), Arc::new(GuestRam::new(4096)?))?;
    /// let vcpu = slots.reader();
    /// let view = vcpu.pin();
    /// view.write_obj(0x10_008, 0x1234_5678_u32)?; // one aligned 4-byte store
    /// assert_eq!(view.read_obj::<u32>(0x10_008)?, 0x1234_5678);
    /// view.write_obj(0x10_100, [1_u16, 2, 3])?; // any `bytemuck::Pod` value
    /// assert_eq!(view.read_obj::<[u16; 3]>(0x10_100)?, [1, 2, 3]);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`View::read`].
    pub fn read_obj<T: bytemuck::Pod>(&self, gpa: u64) -> Result<T, AccessError> {
        let mut value = T::zeroed();
        self.read(gpa, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Writes a plain-old-data value at `gpa`. A value of 2, 4 or 8 bytes at
    /// an address aligned to its size is written in one access. The
    /// [`View::read_obj`] docs show both.
    ///
    /// # Errors
    /// As [`View::write`].
    pub fn write_obj<T: bytemuck::Pod>(&self, gpa: u64, value: T) -> Result<(), AccessError> {
        self.write(gpa, bytemuck::bytes_of(&value))
    }

    /// Marks `gfn` dirty, for memory the host touched by other means (a
    /// device's DMA, a raw pointer). Returns whether a dirty log took it:
    /// false when no usable slot holds `gfn` or its slot does not log.
    ///
    /// ```
    /// use memslots::{Config, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let logged = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::LOG_DIRTY_PAGES };
    /// writer.create(logged)?;
    /// writer.create(Region { id: 1, base_gfn: 0x100, hva: 0x7f00_1000_0000, flags: Flags::empty(), ..logged })?;
    /// let vcpu = slots.reader();
    /// {
    ///     let view = vcpu.pin();
    ///     assert!(view.mark_page_dirty(3)); // a device wrote gfn 3 by DMA
    ///     assert!(!view.mark_page_dirty(0x100)); // this slot does not log
    ///     assert!(!view.mark_page_dirty(0x50)); // a hole
    /// }
    /// assert_eq!(writer.get_dirty_log(logged.key())?, [1 << 3]);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn mark_page_dirty(&self, gfn: Gfn) -> bool {
        let Some(slot) = self.gfn_to_slot(gfn) else { return false };
        let Some(log) = slot.dirty_log() else { return false };
        log.mark(gfn - slot.base_gfn(), 1);
        true
    }
}
