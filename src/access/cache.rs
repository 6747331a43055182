//! Cached translations of a fixed guest range, like the kernel's
//! `gfn_to_hva_cache`: resolved once, resolved again only when the
//! generation changed.

use crate::access::{check_window, AccessError, AccessFailure};
use crate::map::View;
use crate::memory::copy;
use crate::memory::dirty::DirtyBitmap;
use crate::vocab::Flags;

/// A guest range of fixed address and length whose translation is kept
/// between accesses, for structures a VMM touches often (a steal-time page,
/// a virtio ring): [`View::read_cached`] and [`View::write_cached`] reuse it
/// while the view's generation is the one it was resolved in, and resolve it
/// again otherwise. A range that crosses slots is not cached: its accesses
/// take the general path every time.
///
/// ```
/// # #[cfg(feature = "std")] {
/// use std::sync::Arc;
/// use memslots::{AccessFailure, Config, Flags, GpaCache, GuestRam, Memslots, SlotKey};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// let key = SlotKey { id: 0, as_id: 0 };
/// writer.create_owned(key, 0x100, Flags::empty(), Arc::new(GuestRam::new(16 << 12)?))?;
/// // A vCPU's steal-time record: 64 bytes at a fixed guest address.
/// let mut steal = GpaCache::new(0x10_2000, 64)?;
/// let vcpu = slots.reader();
/// let mut buf = [0; 8];
/// {
///     let view = vcpu.pin();
///     view.write_cached(&mut steal, 8, &42_u64.to_ne_bytes())?; // resolves the translation
///     view.read_cached(&mut steal, 8, &mut buf)?; // reuses it
/// }
/// assert_eq!(u64::from_ne_bytes(buf), 42);
///
/// // After a change the next view resolves it again: here the slot moved away.
/// writer.move_to(key, 0x200)?;
/// let failure = vcpu.pin().read_cached(&mut steal, 8, &mut buf).err().map(|e| e.failure);
/// assert_eq!(failure, Some(AccessFailure::NotMapped));
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct GpaCache {
    gpa: u64,
    len: usize,
    /// The map and generation the translation is good for (invariant 4 of
    /// the `map` module); `None` until resolved.
    valid_in: Option<(u64, u64)>,
    /// The resolved range in one slot, or `None` when it crosses slots or
    /// has no host memory.
    fast: Option<Resolved>,
}

/// The translation of a cached range that lies in one slot.
#[derive(Clone, Copy, Debug)]
struct Resolved {
    /// Host address of the range's first byte.
    host: usize,
    writable: bool,
    /// The slot's dirty log (a `*const DirtyBitmap`, 0 for none), used
    /// only in the generation it was resolved in, while the slot is alive.
    dirty: usize,
    /// Bytes from the slot's first byte to the range's.
    slot_offset: u64,
}

impl GpaCache {
    /// A cache for `len` bytes at `gpa`; nothing is resolved yet.
    ///
    /// ```
    /// use memslots::{AccessFailure, GpaCache};
    ///
    /// let cache = GpaCache::new(0x1000, 64)?;
    /// assert_eq!((cache.gpa(), cache.len()), (0x1000, 64));
    /// assert_eq!(GpaCache::new(0x1000, 0).map(|_| ()).map_err(|e| e.failure), Err(AccessFailure::Empty));
    /// assert_eq!(GpaCache::new(u64::MAX, 2).map(|_| ()).map_err(|e| e.failure), Err(AccessFailure::PastEnd));
    /// # Ok::<(), memslots::AccessError>(())
    /// ```
    ///
    /// # Errors
    /// [`AccessFailure::Empty`] for a zero length, [`AccessFailure::PastEnd`]
    /// for a range past the top of the guest address space.
    pub fn new(gpa: u64, len: usize) -> Result<GpaCache, AccessError> {
        let fail = |failure| Err(AccessError { gpa, done: 0, failure });
        if len == 0 {
            return fail(AccessFailure::Empty);
        }
        if gpa.checked_add(len as u64 - 1).is_none() {
            return fail(AccessFailure::PastEnd);
        }
        Ok(GpaCache { gpa, len, valid_in: None, fast: None })
    }

    /// The guest address of the range.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// The length of the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty (never: a cached range has at least one
    /// byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks `offset..offset + len` against the range; returns its guest
    /// address.
    fn check(&self, offset: usize, len: usize) -> Result<u64, AccessError> {
        let gpa = self.gpa.wrapping_add(offset as u64);
        check_window(offset, len, self.len).map_err(|failure| AccessError { gpa, done: 0, failure })?;
        Ok(gpa)
    }
}

impl View<'_> {
    /// The cache's translation in this view, resolved again if the view's
    /// generation is not the one it was resolved in.
    fn resolve(&self, cache: &mut GpaCache) -> Option<Resolved> {
        let now = self.cacheable_generation().map(|generation| (self.map_id(), generation));
        if now.is_none() || cache.valid_in != now {
            let segment = self.segment(cache.gpa, cache.len, false).ok().filter(|s| s.len == cache.len);
            cache.fast = segment.map(|segment| Resolved {
                host: segment.host.expose_provenance(),
                writable: !segment.slot.flags().contains(Flags::READONLY),
                dirty: segment.slot.dirty_log().map_or(0, |log| (&**log as *const DirtyBitmap).expose_provenance()),
                slot_offset: segment.offset,
            });
            cache.valid_in = now;
        }
        cache.fast
    }

    /// Reads `buf.len()` bytes at `offset` in the cached range, through the
    /// cached translation when it is still valid. The [`GpaCache`] docs
    /// show it with [`View::write_cached`].
    ///
    /// # Errors
    /// [`AccessFailure::Empty`] or [`AccessFailure::PastEnd`] for a request
    /// outside the range; otherwise as [`View::read`].
    pub fn read_cached(&self, cache: &mut GpaCache, offset: usize, buf: &mut [u8]) -> Result<(), AccessError> {
        let gpa = cache.check(offset, buf.len())?;
        match self.resolve(cache) {
            // Resolved in this view's generation: the slot is in the viewed
            // set, its memory mapped while the view lives; the request fits.
            // SAFETY: `from_guest`'s contract, as just said.
            Some(fast) => unsafe { copy::from_guest(core::ptr::with_exposed_provenance(fast.host + offset), buf) },
            None => return self.read(gpa, buf),
        }
        Ok(())
    }

    /// Writes `buf` at `offset` in the cached range, through the cached
    /// translation when it is still valid, and marks the pages written.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use std::sync::Arc;
    /// use memslots::{AccessFailure, Config, Flags, GpaCache, GuestRam, Memslots, SlotKey};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let key = SlotKey { id: 0, as_id: 0 };
    /// writer.create_owned(key, 0x100, Flags::LOG_DIRTY_PAGES, Arc::new(GuestRam::new(4 << 12)?))?;
    /// let mut ring = GpaCache::new(0x10_1000, 16)?;
    /// let vcpu = slots.reader();
    /// {
    ///     let view = vcpu.pin();
    ///     view.write_cached(&mut ring, 0, &[1, 2, 3, 4])?;
    ///     let past = view.write_cached(&mut ring, 14, &[0; 4]).err().map(|e| e.failure);
    ///     assert_eq!(past, Some(AccessFailure::PastEnd)); // outside the cached range
    /// }
    /// assert_eq!(writer.get_dirty_log(key)?, [1 << 1]); // page 1 of the slot
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`View::read_cached`], and [`AccessFailure::ReadOnly`].
    pub fn write_cached(&self, cache: &mut GpaCache, offset: usize, buf: &[u8]) -> Result<(), AccessError> {
        let gpa = cache.check(offset, buf.len())?;
        let Some(fast) = self.resolve(cache).filter(|fast| fast.writable) else {
            return self.write(gpa, buf);
        };
        // SAFETY: as in `read_cached`; the slot is writable.
        unsafe { copy::to_guest(core::ptr::with_exposed_provenance_mut(fast.host + offset), buf) };
        if fast.dirty != 0 {
            // The dirty log of a slot in the viewed set (resolved in this
            // generation), which the slot keeps alive while the view lives.
            // SAFETY: as just said.
            let log = unsafe { &*core::ptr::with_exposed_provenance::<DirtyBitmap>(fast.dirty) };
            log.mark_bytes(fast.slot_offset + offset as u64, buf.len() as u64);
        }
        Ok(())
    }
}
