//! A slot's dirty log behind vm-memory's `Bitmap` interface: byte offsets
//! from vm-memory, page bits in the log.

use core::fmt;

use ::vm_memory::bitmap::{Bitmap, BitmapSlice, WithBitmapSlice};

use crate::base::addr::PAGE_SHIFT;
use crate::memory::dirty::DirtyBitmap;

/// The dirty log of a slot with `LOG_DIRTY_PAGES`, as vm-memory's
/// [`Bitmap`]: offsets are bytes from the slot's first byte, and marking a
/// byte marks its page in the log that
/// [`Writer::get_dirty_log`](crate::Writer::get_dirty_log) harvests.
#[repr(transparent)]
pub struct DirtyLog(DirtyBitmap);

impl DirtyLog {
    /// The log of a slot, as a bitmap.
    #[inline]
    pub(super) fn of(log: &DirtyBitmap) -> &DirtyLog {
        // SAFETY: V1: `DirtyLog` is a transparent wrapper of `DirtyBitmap`.
        unsafe { &*(log as *const DirtyBitmap).cast::<DirtyLog>() }
    }
}

impl<'a> WithBitmapSlice<'a> for DirtyLog {
    type S = DirtySlice<'a>;
}

impl Bitmap for DirtyLog {
    #[inline]
    fn mark_dirty(&self, offset: usize, len: usize) {
        // Pages past the slot are ignored by the log.
        self.0.mark_bytes(offset as u64, len as u64);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.0.is_marked(offset as u64 >> PAGE_SHIFT)
    }

    #[inline]
    fn slice_at(&self, offset: usize) -> DirtySlice<'_> {
        DirtySlice { log: Some(self), base: offset }
    }
}

impl fmt::Debug for DirtyLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The part of a slot's dirty log from byte `base` on: what a region's
/// `bitmap()` and its `VolatileSlice`s carry. Empty (nothing marked, nothing
/// dirty) for a slot that does not log dirty pages.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirtySlice<'a> {
    log: Option<&'a DirtyLog>,
    base: usize,
}

impl<'a> DirtySlice<'a> {
    /// The whole log of a slot, or the empty slice for a slot without one.
    #[inline]
    pub(super) fn whole(log: Option<&'a DirtyLog>) -> DirtySlice<'a> {
        DirtySlice { log, base: 0 }
    }
}

impl<'a> WithBitmapSlice<'_> for DirtySlice<'a> {
    type S = DirtySlice<'a>;
}

impl BitmapSlice for DirtySlice<'_> {}

impl<'a> Bitmap for DirtySlice<'a> {
    #[inline]
    fn mark_dirty(&self, offset: usize, len: usize) {
        if let Some(log) = self.log {
            log.mark_dirty(self.base.saturating_add(offset), len);
        }
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.log.is_some_and(|log| log.dirty_at(self.base.saturating_add(offset)))
    }

    #[inline]
    fn slice_at(&self, offset: usize) -> DirtySlice<'a> {
        DirtySlice { log: self.log, base: self.base.saturating_add(offset) }
    }
}
