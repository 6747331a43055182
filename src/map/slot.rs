//! Slots: one contiguous guest range backed by one contiguous host range.

use core::ops::Range;

use alloc::sync::Arc;

use crate::base::addr::{Gfn, Hva, PAGE_SHIFT};
use crate::memory::backing::Backing;
use crate::memory::dirty::DirtyBitmap;
use crate::vocab::{Flags, Region, SlotKey};

/// A slot as readers see it. Immutable once readers can reach it: a change
/// makes a new `Slot`. Views hand out `&Slot`s that live as long as the
/// view.
///
/// ```
/// use memslots::{Config, Flags, Memslots, Region, SlotKey};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// let rom = Region { id: 4, as_id: 0, base_gfn: 0x100, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::READONLY };
/// writer.create(rom)?;
/// let vcpu = slots.reader();
/// let view = vcpu.pin();
/// let slot = view.gfn_to_slot(0x105).expect("created above");
/// assert_eq!((slot.key(), slot.id(), slot.as_id()), (SlotKey { id: 4, as_id: 0 }, 4, 0));
/// assert_eq!(*slot.region(), rom);
/// assert_eq!((slot.base_gfn(), slot.npages(), slot.end_gfn()), (0x100, 16, 0x110));
/// assert_eq!(slot.gfns(), 0x100..0x110);
/// assert_eq!(slot.hva_range(), 0x7f00_0000_0000..0x7f00_0001_0000);
/// assert_eq!(slot.gfn_to_hva(0x101), Some(0x7f00_0000_1000));
/// assert!(slot.contains(0x10f) && !slot.contains(0x110));
/// assert_eq!(slot.flags(), Flags::READONLY);
/// assert!(!slot.is_invalid());
/// assert!(!slot.has_host_memory()); // made from a bare host address
/// # Ok::<(), memslots::Error>(())
/// ```
#[derive(Debug)]
pub struct Slot {
    region: Region,
    /// Being deleted or moved: in the sets, but no lookup returns it.
    invalid: bool,
    /// What stands behind the host addresses.
    backing: Backing,
    /// The dirty log, while the slot has `LOG_DIRTY_PAGES`.
    dirty: Option<Arc<DirtyBitmap>>,
    /// Under loom, a tracked cell that readers read whenever a slot is
    /// handed out and the writer writes before freeing it, so the model
    /// checker reports any reader access that is not ordered before the free.
    #[cfg(loom)]
    liveness: crate::base::sync::UnsafeCell<()>,
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        (self.region, self.invalid) == (other.region, other.invalid)
    }
}

impl Eq for Slot {}

impl Slot {
    fn new(region: Region, invalid: bool, backing: Backing, dirty: Option<Arc<DirtyBitmap>>) -> Slot {
        Slot {
            region,
            invalid,
            backing,
            dirty,
            #[cfg(loom)]
            liveness: crate::base::sync::UnsafeCell::new(()),
        }
    }

    /// A new slot; it logs dirty pages from the start if its flags say so.
    pub(crate) fn created(region: Region, backing: Backing) -> Slot {
        let dirty = region.flags.contains(Flags::LOG_DIRTY_PAGES).then(|| Arc::new(DirtyBitmap::new(region.npages)));
        Slot::new(region, false, backing, dirty)
    }

    /// The slot that replaces this one as `region` (a move or a flags
    /// change): the same memory, and the same dirty log while
    /// `LOG_DIRTY_PAGES` stays set, as KVM keeps it (bits name pages by their
    /// offset in the slot, so after a move they name the pages at the new
    /// guest address).
    pub(crate) fn successor(&self, region: Region) -> Slot {
        let logging = region.flags.contains(Flags::LOG_DIRTY_PAGES);
        let dirty = logging.then(|| self.dirty.clone().unwrap_or_else(|| Arc::new(DirtyBitmap::new(region.npages))));
        Slot::new(region, false, self.backing.clone(), dirty)
    }

    /// Whether this slot can stand for `old` moved or re-flagged: the same
    /// host memory, size and READONLY. A new slot that took the id of a
    /// deleted one is not a successor unless all of these match.
    pub(crate) fn is_successor_of(&self, old: &Slot) -> bool {
        let (new, prev) = (&self.region, &old.region);
        new.hva == prev.hva
            && new.npages == prev.npages
            && new.flags.contains(Flags::READONLY) == prev.flags.contains(Flags::READONLY)
            && self.backing.same_as(&old.backing)
    }

    /// The INVALID copy published while this slot is deleted or moved.
    pub(crate) fn invalid_copy(&self) -> Slot {
        Slot::new(self.region, true, Backing::Address, None)
    }

    /// What stands behind the host addresses.
    #[cfg(feature = "std")]
    pub(crate) fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The dirty log, if the slot logs dirty pages.
    pub(crate) fn dirty_log(&self) -> Option<&Arc<DirtyBitmap>> {
        self.dirty.as_ref()
    }

    /// Whether the guest-memory accessors can reach the slot's host memory
    /// (it was made with `create_owned` or `create_raw`, not from a bare
    /// host address).
    pub fn has_host_memory(&self) -> bool {
        self.backing.accessible()
    }

    /// Marks a read of the slot by a reader (a no-op outside loom).
    #[inline(always)]
    pub(crate) fn touch(&self) {
        #[cfg(loom)]
        drop(self.liveness.get());
    }

    /// The slot's description.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The slot id.
    pub fn id(&self) -> u16 {
        self.region.id
    }

    /// The address space.
    pub fn as_id(&self) -> u16 {
        self.region.as_id
    }

    /// The slot's key.
    pub fn key(&self) -> SlotKey {
        self.region.key()
    }

    /// The first guest frame.
    #[inline(always)]
    pub fn base_gfn(&self) -> Gfn {
        self.region.base_gfn
    }

    /// The number of pages.
    #[inline(always)]
    pub fn npages(&self) -> u64 {
        self.region.npages
    }

    /// One past the last guest frame.
    pub fn end_gfn(&self) -> Gfn {
        self.region.end_gfn()
    }

    /// The guest frames of the slot.
    pub fn gfns(&self) -> Range<Gfn> {
        self.region.base_gfn..self.end_gfn()
    }

    /// The host address backing the first frame.
    #[inline(always)]
    pub fn hva(&self) -> Hva {
        self.region.hva
    }

    /// The host addresses backing the slot.
    pub fn hva_range(&self) -> Range<Hva> {
        self.region.hva..self.region.hva + (self.region.npages << PAGE_SHIFT)
    }

    /// The slot's flags.
    pub fn flags(&self) -> Flags {
        self.region.flags
    }

    /// Whether `gfn` falls inside the slot.
    #[inline(always)]
    pub fn contains(&self, gfn: Gfn) -> bool {
        gfn.wrapping_sub(self.region.base_gfn) < self.region.npages
    }

    /// The host address of `gfn`, if the slot holds it.
    #[inline(always)]
    pub fn gfn_to_hva(&self, gfn: Gfn) -> Option<Hva> {
        let offset = gfn.wrapping_sub(self.region.base_gfn);
        (offset < self.region.npages).then(|| self.region.hva + (offset << PAGE_SHIFT))
    }

    /// Whether the slot is the INVALID copy published while it is being
    /// deleted or moved. No lookup returns such a slot;
    /// [`View::slots_in_hva_range`](crate::View::slots_in_hva_range) does,
    /// as KVM's walk of host ranges does, because the old host range stays
    /// mapped to the guest until the change's flush.
    #[inline(always)]
    pub fn is_invalid(&self) -> bool {
        self.invalid
    }
}

/// A pointer to a slot object shared by both sets of an address space.
///
/// The writer allocates slot objects and frees them once no set or cache can
/// hand them out and a grace period has passed (invariant 3 in the `map`
/// module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotPtr(core::ptr::NonNull<Slot>);

// SAFETY: a slot is immutable while shared (invariant 3), so the pointer may be
// sent to and used from any thread; `Slot` itself is `Send + Sync`.
unsafe impl Send for SlotPtr {}
// SAFETY: as above.
unsafe impl Sync for SlotPtr {}

impl SlotPtr {
    pub(crate) fn alloc(slot: Slot) -> SlotPtr {
        let boxed = alloc::boxed::Box::new(slot);
        SlotPtr(core::ptr::NonNull::from(alloc::boxed::Box::leak(boxed)))
    }

    /// The pointer to a slot the caller holds.
    #[inline(always)]
    pub(crate) fn of(slot: &Slot) -> SlotPtr {
        SlotPtr(core::ptr::NonNull::from(slot))
    }

    #[inline(always)]
    pub(crate) fn from_raw(ptr: *mut Slot) -> Option<SlotPtr> {
        core::ptr::NonNull::new(ptr).map(SlotPtr)
    }

    #[inline(always)]
    pub(crate) fn as_raw(self) -> *mut Slot {
        self.0.as_ptr()
    }

    /// # Safety
    /// The slot must stay allocated for `'a`: it is reachable from a set the
    /// caller holds (in a view, or as the writer).
    #[inline(always)]
    pub(crate) unsafe fn get<'a>(self) -> &'a Slot {
        // SAFETY: allocated by `alloc` and, per the caller, not freed yet.
        unsafe { self.0.as_ref() }
    }

    /// # Safety
    /// No set and no cache can hand the slot out any more, and a grace period
    /// has passed since that became true; the pointer is not used again.
    pub(crate) unsafe fn free(self) {
        // SAFETY: allocated by `alloc` as a Box; per the caller no reference
        // to it remains.
        let slot = unsafe { alloc::boxed::Box::from_raw(self.0.as_ptr()) };
        #[cfg(loom)]
        drop(slot.liveness.get_mut());
        drop(slot);
    }
}

// SAFETY: under loom the liveness cell is only read through tracked shared
// accesses and written once, by the writer, when nothing can reach the slot.
#[cfg(loom)]
unsafe impl Sync for Slot {}

static_assertions::assert_impl_all!(Slot: Send, Sync);
