//! Guest RAM the crate owns: an anonymous private mapping, reserved lazily
//! (`MAP_NORESERVE`) and aligned to 2 MiB so transparent huge pages can back
//! it.

use core::fmt;
use core::ptr::NonNull;

use crate::base::addr::PAGE_SIZE;
use crate::error::Error;

/// The alignment of guest RAM: one x86 huge page.
const HUGE_PAGE: usize = 2 << 20;

/// Anonymous guest RAM, zero-filled, unmapped when the last reference goes.
///
/// Give it to [`Writer::create_owned`](crate::Writer::create_owned) inside
/// an `Arc`; the slot keeps a reference, so the crate unmaps the memory only
/// after the slot has left both sets and the grace period has passed (and
/// after every [`GuestRange`](crate::GuestRange) taken on it has dropped).
///
/// ```
/// use std::sync::Arc;
/// use memslots::{Config, Error, Flags, GuestRam, Memslots, SlotKey};
///
/// let ram = Arc::new(GuestRam::new(2 << 20)?); // 2 MiB, reserved lazily
/// assert_eq!(ram.len(), 2 << 20);
/// assert_eq!(ram.as_ptr() as usize % (2 << 20), 0); // huge-page aligned
/// assert_eq!(GuestRam::new(100).err(), Some(Error::UnalignedSize { size: 100 }));
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// writer.create_owned(SlotKey { id: 0, as_id: 0 }, 0, Flags::empty(), ram.clone())?;
/// assert_eq!(slots.total_pages(), 512);
/// writer.delete(SlotKey { id: 0, as_id: 0 })?;
/// assert_eq!(Arc::strong_count(&ram), 1); // the slot let go of it
/// # Ok::<(), Error>(())
/// ```
pub struct GuestRam {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the crate only
// touches it through raw pointers with the rules of the `memory` module.
unsafe impl Send for GuestRam {}
// SAFETY: as above.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Maps `len` bytes (a non-zero multiple of the page size) of zeroed
    /// memory, 2 MiB aligned.
    ///
    /// # Errors
    /// [`Error::UnalignedSize`] for a length that is zero or not page
    /// aligned; [`Error::MapFailed`] with the errno when `mmap` fails.
    pub fn new(len: usize) -> Result<GuestRam, Error> {
        if len == 0 || !(len as u64).is_multiple_of(PAGE_SIZE) {
            return Err(Error::UnalignedSize { size: len as u64 });
        }
        let ptr = map(len)?;
        Ok(GuestRam { ptr, len })
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: guest RAM has at least one
    /// page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        unmap(self.ptr, self.len);
    }
}

impl fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestRam").field("addr", &self.ptr).field("len", &self.len).finish()
    }
}

/// Maps `len` bytes at a 2 MiB boundary: maps 2 MiB more, then unmaps the
/// slack on both sides.
#[cfg(not(miri))]
fn map(len: usize) -> Result<NonNull<u8>, Error> {
    let errno = || Error::MapFailed { errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0) };
    let padded = len.checked_add(HUGE_PAGE).ok_or(Error::MapFailed { errno: libc::ENOMEM })?;
    // SAFETY: an anonymous private mapping at an address the kernel picks
    // touches no existing memory.
    let raw = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            padded,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(errno());
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let (head, tail) = (aligned - start, padded - (aligned - start) - len);
    // SAFETY: both ranges lie inside the mapping just made and outside the
    // part kept; nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        // Advice only: the kernel may back the range with huge pages.
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    NonNull::new(aligned as *mut u8).ok_or(Error::MapFailed { errno: libc::ENOMEM })
}

#[cfg(not(miri))]
fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: `ptr..ptr + len` is the mapping `map` made, and its owner is
    // being dropped, so nothing refers to it any more.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

/// Under miri, which has no `mmap`: the global allocator, same alignment.
#[cfg(miri)]
fn map(len: usize) -> Result<NonNull<u8>, Error> {
    let layout = std::alloc::Layout::from_size_align(len, HUGE_PAGE).map_err(|_| Error::MapFailed { errno: 12 })?;
    // SAFETY: the layout has a non-zero size.
    NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).ok_or(Error::MapFailed { errno: 12 })
}

#[cfg(miri)]
fn unmap(ptr: NonNull<u8>, len: usize) {
    let layout = std::alloc::Layout::from_size_align(len, HUGE_PAGE).expect("made by `map`");
    // SAFETY: allocated by `map` with this layout.
    unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
}
