//! Guest ranges a device can hold across blocking I/O.

use alloc::sync::Arc;
use core::fmt;

use crate::access::{check_window, AccessError, AccessFailure};
use crate::map::View;
use crate::memory::copy;
use crate::memory::dirty::DirtyBitmap;
use crate::memory::ram::GuestRam;
use crate::vocab::Flags;

/// A piece of guest RAM in one slot, taken under a view with
/// [`View::range`], that stays valid after the view ends: it holds a
/// reference to the slot's [`GuestRam`], so a virtio device can `preadv`
/// into it without holding a view across the blocking call.
///
/// If the slot is deleted (or moved) while the handle lives, reads and
/// writes through it still land in the same host memory, which is no longer
/// (or no longer there in) guest memory, and the memory is freed when the
/// last handle drops. This is what KVM does with a page pinned by
/// `get_user_pages`. Writes through the handle mark the slot's dirty log as
/// it was when the handle was taken.
///
/// ```
/// use std::sync::Arc;
/// use memslots::{Config, Flags, GuestRam, Memslots, SlotKey};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// let key = SlotKey { id: 0, as_id: 0 };
/// writer.create_owned(key, 0x100, Flags::LOG_DIRTY_PAGES, Arc::new(GuestRam::new(4 << 12)?))?;
/// let vcpu = slots.reader();
/// let buffer = vcpu.pin().range(0x10_1000, 512)?; // the view ends here
/// assert_eq!((buffer.len(), buffer.is_writable()), (512, true));
/// // A blocking read would fill it now, with no view held; say it read this:
/// buffer.write(0, b"sector 0")?;
/// let mut head = [0; 8];
/// buffer.read(0, &mut head)?;
/// assert_eq!(&head, b"sector 0");
/// assert_eq!(vcpu.pin().read_obj::<[u8; 8]>(0x10_1000)?, *b"sector 0");
/// assert_eq!(writer.get_dirty_log(key)?, [1 << 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct GuestRange {
    ram: Arc<GuestRam>,
    /// Bytes from the start of `ram`.
    offset: usize,
    len: usize,
    /// The slot's dirty log and the page of the slot at which `ram` starts.
    dirty: Option<Arc<DirtyBitmap>>,
    writable: bool,
}

impl GuestRange {
    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty (never: ranges have at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host address of the first byte, for I/O system calls. The memory
    /// stays mapped while the handle lives; the guest may change it at any
    /// time, so do not make Rust references into it. Writes made through
    /// this pointer are not in the dirty log until [`GuestRange::mark_dirty`].
    pub fn as_ptr(&self) -> *mut u8 {
        // The offset lies inside the mapping (checked when taken).
        self.ram.as_ptr().wrapping_add(self.offset)
    }

    /// Whether the slot was writable when the handle was taken.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Copies bytes from `offset` in the range into `buf`.
    ///
    /// # Errors
    /// [`AccessFailure::PastEnd`] if `offset + buf.len()` passes the end of
    /// the range, [`AccessFailure::Empty`] for an empty `buf`; `gpa` in the
    /// error is the offset.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), AccessError> {
        self.check(offset, buf.len(), false)?;
        // SAFETY: checked inside the range, which is mapped while `ram`
        // lives.
        unsafe { copy::from_guest(self.as_ptr().add(offset), buf) };
        Ok(())
    }

    /// Copies `buf` to `offset` in the range and marks the pages written.
    ///
    /// # Errors
    /// As [`GuestRange::read`], and [`AccessFailure::ReadOnly`] for a range of
    /// a READONLY slot.
    pub fn write(&self, offset: usize, buf: &[u8]) -> Result<(), AccessError> {
        self.check(offset, buf.len(), true)?;
        // SAFETY: as in `read`; the slot was writable.
        unsafe { copy::to_guest(self.as_ptr().add(offset), buf) };
        self.mark(offset, buf.len());
        Ok(())
    }

    /// Marks the whole range dirty, after writing it through
    /// [`GuestRange::as_ptr`].
    pub fn mark_dirty(&self) {
        self.mark(0, self.len);
    }

    fn check(&self, offset: usize, len: usize, write: bool) -> Result<(), AccessError> {
        let fail = |failure| AccessError { gpa: offset as u64, done: 0, failure };
        check_window(offset, len, self.len).map_err(fail)?;
        if write && !self.writable {
            return Err(fail(AccessFailure::ReadOnly));
        }
        Ok(())
    }

    fn mark(&self, offset: usize, len: usize) {
        if let Some(log) = &self.dirty {
            log.mark_bytes((self.offset + offset) as u64, len as u64);
        }
    }
}

impl fmt::Debug for GuestRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestRange")
            .field("host", &self.as_ptr())
            .field("len", &self.len)
            .field("writable", &self.writable)
            .field("logs_dirty", &self.dirty.is_some())
            .finish()
    }
}

impl View<'_> {
    /// A handle to `len` bytes of guest RAM at `gpa` that outlives the view
    /// (see [`GuestRange`]). The range must lie in one slot made with
    /// [`Writer::create_owned`](crate::Writer::create_owned).
    ///
    /// # Errors
    /// [`AccessFailure::Empty`], [`AccessFailure::NotMapped`],
    /// [`AccessFailure::Changing`] (retry with a new view),
    /// [`AccessFailure::PastEnd`] (the range leaves its slot; `done` says
    /// how many bytes the slot holds), [`AccessFailure::NoHostMemory`] for a
    /// slot whose memory the crate does not own.
    ///
    /// The [`GuestRange`] docs show one taken and used.
    pub fn range(&self, gpa: u64, len: usize) -> Result<GuestRange, AccessError> {
        let fail = |done, failure| AccessError { gpa, done, failure };
        if len == 0 {
            return Err(fail(0, AccessFailure::Empty));
        }
        let segment = self.segment(gpa, len, false).map_err(|failure| fail(0, failure))?;
        if segment.len < len {
            return Err(fail(segment.len, AccessFailure::PastEnd));
        }
        let ram = segment.slot.backing().owned().ok_or(fail(0, AccessFailure::NoHostMemory))?;
        Ok(GuestRange {
            ram: ram.clone(),
            offset: segment.offset as usize,
            len,
            dirty: segment.slot.dirty_log().cloned(),
            writable: !segment.slot.flags().contains(Flags::READONLY),
        })
    }
}
