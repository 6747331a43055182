//! Reader handles (one per vCPU or device thread) and the views they take.

use alloc::sync::Arc;
use core::cell::Cell;
use core::fmt;
use core::ops::Range;
use core::ptr::NonNull;

use crate::base::addr::{Gfn, Hva, PAGE_SHIFT};
use crate::base::sync::ConstPtr;
use crate::error::Error;
use crate::map::epoch::{Entry, Epochs};
use crate::map::set::Set;
use crate::map::shared::Inner;
use crate::map::slot::{Slot, SlotPtr};
use crate::map::space::GEN_UPDATE_IN_PROGRESS;

/// A thread's handle for looking up slots: one per vCPU
/// ([`Memslots::reader`]) or per device thread ([`Memslots::device_reader`]).
///
/// Lookups happen on a [`View`] from [`Reader::pin`]. A reader is `Send` but
/// not `Sync`: a VMM may build it on one thread and move it to the vCPU
/// thread, and its views stay on the thread that takes them.
///
/// Making a reader registers it with the slot map (the only time the read
/// side may allocate); dropping it gives its registration back for reuse.
///
/// ```
/// use memslots::{Config, Flags, Memslots, Region};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// writer.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
///
/// // Built on this thread, moved to theirs.
/// let vcpus: Vec<_> = (0..2).map(|_| slots.reader()).collect();
/// std::thread::scope(|s| {
///     for vcpu in vcpus {
///         s.spawn(move || {
///             let view = vcpu.pin();
///             assert_eq!(view.gfn_to_hva(3), Some(0x7f00_0000_3000));
///         });
///     }
/// });
/// # Ok::<(), memslots::Error>(())
/// ```
///
/// [`Memslots::reader`]: crate::Memslots::reader
/// [`Memslots::device_reader`]: crate::Memslots::device_reader
pub struct Reader {
    inner: Arc<Inner>,
    /// This reader's epoch word; owned by this handle until it drops and
    /// kept alive by `inner`.
    entry: NonNull<Entry>,
    /// Views alive now; the epoch word is published by the first and
    /// cleared by the last.
    views: Cell<u32>,
    as_id: u16,
    /// The reader's own last-used slot: one pointer, so that filling it
    /// after a miss is one store and checking it needs nothing else.
    /// Filled only by views of `cache_generation`, and while it holds a
    /// slot every live view of the reader has that generation (see
    /// `View::new`, invariant 4).
    cache: Cell<Option<SlotPtr>>,
    /// A published generation, or `NO_GENERATION`.
    cache_generation: Cell<u64>,
    /// A device reader has offered the cached slot to the set's shared
    /// last-used slot (or found it there).
    cache_shared: Cell<bool>,
    /// Device readers also use the set's shared last-used slot.
    vcpu: bool,
}

// SAFETY: invariant 8: the entry is this reader's alone
// and only holds atomics; no view can be alive while the reader moves, since
// views borrow it. The `Cell`s make it `!Sync`, which keeps views on one
// thread.
unsafe impl Send for Reader {}

impl Reader {
    pub(crate) fn new(inner: Arc<Inner>, vcpu: bool) -> Reader {
        let entry = inner.epochs.register();
        Reader {
            inner,
            entry,
            views: Cell::new(0),
            as_id: 0,
            cache: Cell::new(None),
            cache_generation: Cell::new(NO_GENERATION),
            cache_shared: Cell::new(false),
            vcpu,
        }
    }

    #[inline(always)]
    fn entry(&self) -> &Entry {
        // SAFETY: invariant 8: entries live as long as the `Epochs` in
        // `inner`, which this reader keeps alive.
        unsafe { self.entry.as_ref() }
    }

    /// Takes a view of the active set of the reader's address space.
    ///
    /// A few loads and stores and one atomic exchange (for the reader's
    /// first view), no allocator call, never a wait for another thread:
    /// wait-free where the exchange is one instruction (x86-64, AArch64 with
    /// LSE), lock-free where it is a load-linked/store-conditional loop (see
    /// the crate docs). Until the view is dropped (or [`View::repin`]ned)
    /// the writer cannot finish a change, so do not hold a view across
    /// `KVM_RUN` or any other blocking call; look up many addresses under
    /// one view where you can.
    ///
    /// ```
    /// use memslots::{Config, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// writer.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
    /// let vcpu = slots.reader();
    /// {
    ///     let view = vcpu.pin(); // one view per exit...
    ///     let mapped = (0..32).filter(|&gfn| view.gfn_to_slot(gfn).is_some()).count(); // ...many lookups
    ///     assert_eq!(mapped, 16);
    /// } // the view ends here, so the writer need not wait for it
    /// writer.move_to(memslots::SlotKey { id: 0, as_id: 0 }, 0x100)?;
    /// # Ok::<(), memslots::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the reader already has `u32::MAX` views alive.
    #[inline(always)]
    pub fn pin(&self) -> View<'_> {
        let views = self.views.get();
        if views == 0 {
            self.inner.epochs.enter(self.entry());
        }
        // Views borrow the reader, so more than u32::MAX at once cannot
        // happen without leaking views.
        self.views.set(views.checked_add(1).expect("too many views of one reader"));
        View::new(Pin { reader: self })
    }

    /// The number naming this reader in [`Stall`](crate::Stall) reports:
    /// unique among the readers of this map for its whole life, never given
    /// to another reader, so a VMM that maps ids to vCPUs never kicks the
    /// wrong one.
    ///
    /// ```
    /// use memslots::{Config, Memslots};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let first = slots.reader();
    /// let id = first.id();
    /// drop(first);
    /// let second = slots.reader(); // takes the first one's epoch word...
    /// assert_ne!(second.id(), id); // ...but never its id
    /// assert_eq!(slots.reader_words(), 1);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    ///
    /// [`Stall`](crate::Stall) shows a stall report naming a reader.
    pub fn id(&self) -> u64 {
        self.entry().reader()
    }

    /// The place of this reader's epoch word in the map's list, which a
    /// later reader reuses once this one drops. Only under `--cfg loom`.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn loom_entry_index(&self) -> u32 {
        self.entry().index()
    }

    /// The address space lookups use.
    pub fn address_space(&self) -> u16 {
        self.as_id
    }

    /// Looks up in address space `as_id` from now on.
    ///
    /// ```
    /// use memslots::{Config, Error, Memslots};
    ///
    /// let slots = Memslots::new(Config::new(3, 512))?;
    /// let mut reader = slots.device_reader();
    /// reader.set_address_space(2)?;
    /// assert_eq!(reader.pin().address_space(), 2);
    /// assert_eq!(reader.set_address_space(3), Err(Error::InvalidAddressSpace { as_id: 3 }));
    /// assert_eq!(reader.address_space(), 2);
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidAddressSpace`] if the map has no such address space.
    pub fn set_address_space(&mut self, as_id: u16) -> Result<(), Error> {
        if as_id >= self.inner.config.address_spaces {
            return Err(Error::InvalidAddressSpace { as_id: as_id.into() });
        }
        self.as_id = as_id;
        Ok(())
    }

    /// Enters or leaves System Management Mode: a vCPU in SMM looks up in
    /// address space 1, where SMRAM lives.
    ///
    /// ```
    /// use memslots::{Config, Error, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?; // x86: normal and SMM
    /// let mut writer = slots.writer()?;
    /// let smram = Region { id: 0, as_id: 1, base_gfn: 0xa0, npages: 0x20, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(smram)?;
    /// let mut vcpu = slots.reader();
    /// assert!(vcpu.pin().gfn_to_slot(0xa0).is_none());
    /// vcpu.set_smm(true)?;
    /// assert_eq!(vcpu.pin().gfn_to_hva(0xa0), Some(smram.hva));
    ///
    /// let one_space = Memslots::new(Config::new(1, 512))?;
    /// assert_eq!(one_space.reader().set_smm(true), Err(Error::InvalidAddressSpace { as_id: 1 }));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidAddressSpace`] when entering SMM in a map with one
    /// address space.
    pub fn set_smm(&mut self, smm: bool) -> Result<(), Error> {
        self.set_address_space(u16::from(smm))
    }

    /// Whether this is a vCPU reader (one that does not share its
    /// last-used slot with other readers).
    pub fn is_vcpu(&self) -> bool {
        self.vcpu
    }

    #[inline(always)]
    fn release_view(&self) {
        let views = self.views.get() - 1;
        self.views.set(views);
        if views == 0 {
            Epochs::leave(self.entry());
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        Epochs::unregister(self.entry());
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("id", &self.id())
            .field("entry", &self.entry().index())
            .field("kind", &if self.is_vcpu() { "vcpu" } else { "device" })
            .field("address_space", &self.as_id)
            .field("views", &self.views.get())
            .finish()
    }
}

/// A consistent view of one address space: every lookup on it sees the same
/// set. Slots it returns live as long as the view.
///
/// A view leaked with `mem::forget` keeps the writer waiting until its
/// reader is dropped (the [`Wait`](crate::Wait) strategy's `stalled` hook
/// names the reader).
///
/// A view is neither `Send` nor `Sync`: it stays on the thread that took it.
///
/// ```
/// use memslots::{Config, Flags, Memslots, Region};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// let low = Region { id: 0, as_id: 0, base_gfn: 0, npages: 0xa0, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// let high = Region { id: 1, base_gfn: 0x100, npages: 0x100, hva: 0x7f00_1000_0000, ..low };
/// writer.create(low)?;
/// writer.create(high)?;
///
/// let vcpu = slots.reader();
/// let view = vcpu.pin();
/// assert_eq!(view.gfn_to_slot(0x150).map(|s| s.id()), Some(1));
/// assert_eq!(view.gfn_to_hva(0x101), Some(0x7f00_1000_1000));
/// assert!(view.gfn_to_slot(0xa0).is_none()); // a hole
/// assert_eq!(view.slots_in_gfn_range(0x90..0x101).map(|s| s.id()).collect::<Vec<_>>(), [0, 1]);
/// assert_eq!(view.slots_in_hva_range(0x7f00_1000_0000..0x7f00_1000_1000).map(|s| s.id()).collect::<Vec<_>>(), [1]);
/// assert_eq!(view.slot_by_id(0).map(|s| s.npages()), Some(0xa0));
/// assert_eq!(view.slots().count(), 2);
/// # Ok::<(), memslots::Error>(())
/// ```
pub struct View<'r> {
    // Declared first, so dropped before `pin` ends the view (under loom the
    // access is tracked and has a destructor).
    set: ConstPtr<Set>,
    generation: u64,
    /// The reader's kind, kept where a lookup loop holds it in a register.
    vcpu: bool,
    pin: Pin<'r>,
}

/// The reader's part of a view; dropping it ends the view.
struct Pin<'r> {
    reader: &'r Reader,
}

impl Drop for Pin<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.reader.release_view();
    }
}

impl<'r> View<'r> {
    /// The view of a reader that has just entered (or re-entered).
    ///
    /// Keeps the rule of the reader's cache: while it holds a slot, every
    /// live view of the reader has the cache's generation. The reader's
    /// only view takes the cache over for its generation, if that is a
    /// published one; a view of another generation beside others empties
    /// it and stops it being filled until the reader next has one view. So
    /// a lookup needs no generation check to use it.
    #[inline(always)]
    fn new(pin: Pin<'r>) -> View<'r> {
        let reader = pin.reader;
        let (set, generation) = reader.inner.spaces[usize::from(reader.as_id)].active();
        if generation != reader.cache_generation.get() {
            let alone = reader.views.get() == 1;
            let published = generation & GEN_UPDATE_IN_PROGRESS == 0;
            reader.cache.set(None);
            reader.cache_generation.set(if alone && published { generation } else { NO_GENERATION });
        }
        View { set, generation, vcpu: reader.vcpu, pin }
    }

    #[inline(always)]
    fn reader(&self) -> &'r Reader {
        self.pin.reader
    }

    #[inline(always)]
    fn set(&self) -> &Set {
        // The writer edits a set only a grace period after it stopped
        // being active, and that grace period waits for this view
        // (`View::new`; invariant 2).
        // SAFETY: as just said.
        unsafe { self.set.deref() }
    }

    /// Moves the view on to the current state. A device loop calls this at
    /// its quiescent points so the writer can make progress without the cost
    /// of a full unpin and pin: when nothing changed it is two loads.
    ///
    /// While the reader has other views alive, the writer keeps waiting for
    /// those; this view still moves to the current state.
    ///
    /// ```
    /// use memslots::{Config, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let device = slots.device_reader();
    /// let mut view = device.pin();
    /// std::thread::scope(|s| {
    ///     // The create waits for `view`, taken before it...
    ///     let create = s.spawn(move || {
    ///         writer.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })
    ///     });
    ///     // ...which the device loop moves on at its quiescent points.
    ///     while !create.is_finished() {
    ///         view = view.repin();
    ///     }
    ///     assert!(view.gfn_to_slot(0).is_some()); // the view is past the change
    ///     create.join().expect("the writer thread does not panic")
    /// })?;
    /// # Ok::<(), memslots::Error>(())
    /// ```
    #[inline(always)]
    pub fn repin(self) -> View<'r> {
        let View { set, pin, .. } = self;
        // End the access to the set before leaving it.
        #[allow(clippy::drop_non_drop)]
        drop(set);
        let reader = pin.reader;
        if reader.views.get() == 1 {
            reader.inner.epochs.reenter(reader.entry());
        }
        View::new(pin)
    }

    /// The generation of the viewed set. It changes with every published
    /// update; while an update is being published it may carry the top bit,
    /// and a value with that bit never matches a later generation.
    ///
    /// ```
    /// use memslots::{Change, Config, Flags, Memslots, Region, UserMemoryRegion};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let vcpu = slots.reader();
    /// let before = vcpu.pin().generation();
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(region)?;
    /// let after = vcpu.pin().generation();
    /// assert_ne!(after, before);
    /// // Setting the same parameters again publishes nothing.
    /// assert_eq!(writer.set_region(UserMemoryRegion::try_from(region)?)?, Change::Unchanged);
    /// assert_eq!(vcpu.pin().generation(), after);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation, if caches may be filled in it (invariant 4).
    pub(crate) fn cacheable_generation(&self) -> Option<u64> {
        (self.generation & GEN_UPDATE_IN_PROGRESS == 0).then_some(self.generation)
    }

    /// The number of the map the view belongs to (see `Inner::id`).
    pub(crate) fn map_id(&self) -> u64 {
        self.reader().inner.id
    }

    /// The address space of the view.
    pub fn address_space(&self) -> u16 {
        self.reader().as_id
    }

    /// The slot holding `gfn`; `None` for a hole and for a slot being
    /// deleted or moved (see [`View::lookup`] to tell the two apart). The
    /// type's example shows it beside the other queries.
    ///
    /// ```
    /// # use memslots::{Config, Flags, Memslots, Region};
    /// # let slots = Memslots::new(Config::default())?;
    /// # let mut writer = slots.writer()?;
    /// writer.create(Region { id: 7, as_id: 0, base_gfn: 0x100, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
    /// let vcpu = slots.reader();
    /// let view = vcpu.pin();
    /// assert_eq!(view.gfn_to_slot(0x10f).map(|slot| slot.id()), Some(7));
    /// assert!(view.gfn_to_slot(0x110).is_none());
    /// # Ok::<(), memslots::Error>(())
    /// ```
    #[inline(always)]
    pub fn gfn_to_slot(&self, gfn: Gfn) -> Option<&Slot> {
        self.hit(gfn)
    }

    /// What holds `gfn`: a usable slot, a slot being deleted or moved
    /// ([`Lookup::Changing`]: take a new view and retry, as KVM's fault
    /// path retries on an INVALID slot), or nothing. A miss costs a second
    /// search; a hit costs what [`View::gfn_to_slot`] does.
    ///
    /// ```
    /// use memslots::{Config, Flags, Lookup, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// writer.create(Region { id: 0, as_id: 0, base_gfn: 0x10, npages: 4, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
    /// let reader = slots.reader();
    /// let view = reader.pin();
    /// assert!(matches!(view.lookup(0x11), Lookup::Slot(s) if s.id() == 0));
    /// assert!(matches!(view.lookup(0x20), Lookup::Unmapped));
    /// # Ok::<(), memslots::Error>(())
    /// ```
    #[inline]
    pub fn lookup(&self, gfn: Gfn) -> Lookup<'_> {
        match self.hit(gfn) {
            Some(slot) => Lookup::Slot(slot),
            None if self.set().containing(gfn).is_some_and(Slot::is_invalid) => Lookup::Changing,
            None => Lookup::Unmapped,
        }
    }

    /// The host address backing `gfn`. This reads the reader's cache or
    /// the gfn index, and the first cache line of the slot object.
    ///
    /// ```
    /// # use memslots::{Config, Flags, Memslots, Region};
    /// # let slots = Memslots::new(Config::default())?;
    /// # let mut writer = slots.writer()?;
    /// writer.create(Region { id: 0, as_id: 0, base_gfn: 0x100, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
    /// let vcpu = slots.reader();
    /// assert_eq!(vcpu.pin().gfn_to_hva(0x102), Some(0x7f00_0000_2000));
    /// # Ok::<(), memslots::Error>(())
    /// ```
    #[inline(always)]
    pub fn gfn_to_hva(&self, gfn: Gfn) -> Option<Hva> {
        let slot = self.hit(gfn)?;
        Some(slot.hva() + ((gfn - slot.base_gfn()) << PAGE_SHIFT))
    }

    /// The usable slot holding `gfn`, through the reader's caches.
    ///
    /// Every reader first tries its own last-used slot. A device reader
    /// then tries the set's shared one, and offers its own slot to the
    /// shared one once that slot serves a second lookup in a row; the offer
    /// is taken only while the shared slot is empty. Device readers on other
    /// cores then only read its cache line, and it does not bounce between
    /// them; after a change, when every reader's own cache is stale, the
    /// shared slot (moved on by the writer) still answers.
    #[inline(always)]
    fn hit(&self, gfn: Gfn) -> Option<&Slot> {
        let set = self.set();
        let reader = self.reader();
        if let Some(cached) = reader.cache.get() {
            // The view's generation is the cache's (`View::new`,
            // invariant 4), so the slot was usable and came from the viewed
            // set, which is not edited while the view lives (invariant 2)
            // and holds only live slots (invariant 6).
            // SAFETY: as just said.
            let slot = unsafe { cached.get() };
            slot.touch();
            if slot.contains(gfn) {
                if !self.vcpu && !reader.cache_shared.get() {
                    set.offer_last_used(cached);
                    reader.cache_shared.set(true);
                }
                return Some(slot);
            }
        }
        if !self.vcpu {
            if let Some(slot) = set.last_used().filter(|slot| slot.contains(gfn)) {
                let slot = usable(slot)?;
                self.fill(slot, true);
                return Some(slot);
            }
        }
        let slot = set.lookup(gfn)?;
        self.fill(slot, false);
        Some(slot)
    }

    /// Keeps `slot` in the reader's own cache, if that belongs to this
    /// view's generation.
    #[inline(always)]
    fn fill(&self, slot: &Slot, shared: bool) {
        let reader = self.reader();
        if reader.cache_generation.get() == self.generation {
            reader.cache.set(Some(SlotPtr::of(slot)));
            if !self.vcpu {
                reader.cache_shared.set(shared);
            }
        }
    }

    /// Exactly the slots intersecting `gfns`, in gfn order (none for an
    /// empty range).
    ///
    /// ```
    /// # use memslots::{Config, Flags, Memslots, Region};
    /// # let slots = Memslots::new(Config::default())?;
    /// # let mut writer = slots.writer()?;
    /// for id in 0..4 {
    ///     let base_gfn = u64::from(id) * 0x10;
    ///     let hva = 0x7f00_0000_0000 + (base_gfn << 12);
    ///     writer.create(Region { id, as_id: 0, base_gfn, npages: 8, hva, flags: Flags::empty() })?;
    /// }
    /// let vcpu = slots.reader();
    /// let view = vcpu.pin();
    /// // Slots at 0x10..0x18 and 0x20..0x28; not the one ending at 0x08.
    /// let hit: Vec<u16> = view.slots_in_gfn_range(0x08..0x21).map(|slot| slot.id()).collect();
    /// assert_eq!(hit, [1, 2]);
    /// assert_eq!(view.slots_in_gfn_range(0x18..0x20).count(), 0); // a hole
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn slots_in_gfn_range(&self, gfns: Range<Gfn>) -> impl Iterator<Item = &Slot> + '_ {
        self.set().in_gfn_range(gfns).filter_map(usable)
    }

    /// The slots whose host range intersects `hvas`, by host address; for
    /// host-side invalidation (an `munmap`, a page migrating). None for an
    /// empty range. Slots being deleted or moved are included
    /// ([`Slot::is_invalid`]), as KVM's walk of host ranges visits them:
    /// their old range stays mapped to the guest until the change's flush
    /// ([`Backend::invalidated`](crate::Backend::invalidated)).
    ///
    /// ```
    /// # use memslots::{Config, Flags, Memslots, Region};
    /// # let slots = Memslots::new(Config::default())?;
    /// # let mut writer = slots.writer()?;
    /// // Two guest ranges may share host memory (an alias).
    /// let ram = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(ram)?;
    /// writer.create(Region { id: 1, base_gfn: 0x100, ..ram })?;
    /// let vcpu = slots.reader();
    /// let view = vcpu.pin();
    /// // The host unmaps one page: both guest ranges must drop it.
    /// assert_eq!(view.slots_in_hva_range(0x7f00_0000_3000..0x7f00_0000_4000).count(), 2);
    /// assert_eq!(view.slots_in_hva_range(0x7f00_0001_0000..0x7f00_0002_0000).count(), 0);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn slots_in_hva_range(&self, hvas: Range<Hva>) -> impl Iterator<Item = &Slot> + '_ {
        self.set().in_hva_range(hvas).inspect(|slot| slot.touch())
    }

    /// The slot with id `id` in the view's address space.
    ///
    /// ```
    /// # use memslots::{Config, Flags, Memslots, Region};
    /// # let slots = Memslots::new(Config::default())?;
    /// # let mut writer = slots.writer()?;
    /// writer.create(Region { id: 5, as_id: 0, base_gfn: 0x100, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
    /// let vcpu = slots.reader();
    /// let view = vcpu.pin();
    /// assert_eq!(view.slot_by_id(5).map(|slot| slot.base_gfn()), Some(0x100));
    /// assert!(view.slot_by_id(4).is_none());
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn slot_by_id(&self, id: u16) -> Option<&Slot> {
        self.set().by_id(id).and_then(usable)
    }

    /// Every usable slot of the view's address space, by id.
    ///
    /// ```
    /// # use memslots::{Config, Flags, Memslots, Region};
    /// # let slots = Memslots::new(Config::default())?;
    /// # let mut writer = slots.writer()?;
    /// writer.create(Region { id: 9, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
    /// writer.create(Region { id: 2, as_id: 0, base_gfn: 0x100, npages: 16, hva: 0x7f00_1000_0000, flags: Flags::empty() })?;
    /// let vcpu = slots.reader();
    /// let ids: Vec<u16> = vcpu.pin().slots().map(|slot| slot.id()).collect();
    /// assert_eq!(ids, [2, 9]);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn slots(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.set().slots().filter_map(usable)
    }
}

impl fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("reader", &self.reader().id())
            .field("address_space", &self.address_space())
            .field("generation", &self.generation)
            .field("slots", &self.slots().count())
            .finish()
    }
}

/// What a view holds at a gfn ([`View::lookup`]).
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'v> {
    /// A usable slot.
    Slot(&'v Slot),
    /// A slot being deleted or moved (INVALID): the change is under way.
    /// Take a new view and retry; once the change is published the gfn is
    /// in the slot's new place, or a hole.
    Changing,
    /// No slot: a hole in guest physical memory.
    Unmapped,
}

/// The reader's cache generation when no view may fill the cache: above any
/// generation a map reaches (it steps by at most 2^16 a swap).
const NO_GENERATION: u64 = u64::MAX;

/// A slot a lookup may return: not one being deleted or moved.
#[inline(always)]
fn usable(slot: &Slot) -> Option<&Slot> {
    slot.touch();
    (!slot.is_invalid()).then_some(slot)
}

#[cfg(test)]
mod tests {
    use crate::{Config, Flags, Memslots, Region};

    fn region(id: u16, base_gfn: u64) -> Region {
        Region { id, as_id: 0, base_gfn, npages: 4, hva: 0x10_0000 * (u64::from(id) + 1), flags: Flags::empty() }
    }

    /// The id of the slot in the active set's shared last-used slot.
    fn shared(reader: &super::Reader) -> Option<u16> {
        reader.pin().set().last_used().map(|slot| slot.id())
    }

    #[test]
    fn device_readers_share_only_slots_that_proved_hot() {
        let slots = Memslots::new(Config::default().with_address_spaces(1)).unwrap();
        let mut w = slots.writer().unwrap();
        w.create(region(0, 0)).unwrap();
        w.create(region(1, 8)).unwrap();
        let (a, b, vcpu) = (slots.device_reader(), slots.device_reader(), slots.reader());
        // A vCPU reader never touches the shared slot.
        for _ in 0..3 {
            assert_eq!(vcpu.pin().gfn_to_slot(1).map(|s| s.id()), Some(0));
        }
        assert_eq!(shared(&a), None);
        // One lookup fills only the reader's own cache; a second in a row
        // offers the slot.
        assert_eq!(a.pin().gfn_to_slot(1).map(|s| s.id()), Some(0));
        assert_eq!(shared(&a), None);
        assert_eq!(a.pin().gfn_to_slot(2).map(|s| s.id()), Some(0));
        assert_eq!(shared(&a), Some(0));
        // Misses elsewhere leave it alone, and so does another hot slot: the
        // shared slot is only filled while it is empty.
        assert_eq!(a.pin().gfn_to_slot(9).map(|s| s.id()), Some(1));
        assert_eq!(b.pin().gfn_to_slot(10).map(|s| s.id()), Some(1));
        assert_eq!(b.pin().gfn_to_slot(11).map(|s| s.id()), Some(1));
        assert_eq!(shared(&a), Some(0));
        // Another reader finds the hot slot there, and a change moves it off.
        assert_eq!(b.pin().gfn_to_hva(3), Some(0x10_0000 + 3 * 4096));
        w.move_to(region(0, 0).key(), 100).unwrap();
        assert_eq!(shared(&a), Some(0));
        assert_eq!(b.pin().gfn_to_slot(3).map(|s| s.id()), None);
        assert_eq!(b.pin().gfn_to_slot(101).map(|s| s.id()), Some(0));
        w.delete(region(0, 0).key()).unwrap();
        assert_eq!(shared(&a), None);
        // Emptied, it takes the next slot that proves hot.
        assert_eq!(b.pin().gfn_to_slot(9).map(|s| s.id()), Some(1));
        assert_eq!(b.pin().gfn_to_slot(9).map(|s| s.id()), Some(1));
        assert_eq!(shared(&a), Some(1));
    }

    /// One reader, two nested views of two generations (the writer published
    /// a move's INVALID step and waits for the outer view): each view
    /// answers from its own set however the lookups alternate, for both
    /// reader kinds, through both caches.
    #[test]
    fn nested_views_of_two_generations_keep_apart() {
        for vcpu in [true, false] {
            let slots = Memslots::new(Config::default().with_address_spaces(1)).unwrap();
            let mut w = slots.writer().unwrap();
            w.create(region(0, 0)).unwrap();
            let reader = if vcpu { slots.reader() } else { slots.device_reader() };
            let outer = reader.pin();
            let old = outer.generation();
            std::thread::scope(|s| {
                s.spawn(move || w.move_to(region(0, 0).key(), 100).unwrap());
                while slots.reader().pin().generation() == old {
                    std::thread::yield_now();
                }
                let inner = reader.pin();
                assert_ne!(inner.generation(), old);
                for _ in 0..3 {
                    assert_eq!(outer.gfn_to_slot(1).map(|s| s.id()), Some(0));
                    assert_eq!(outer.gfn_to_slot(2).map(|s| s.id()), Some(0));
                    assert_eq!(inner.gfn_to_slot(1).map(|s| s.id()), None, "vcpu {vcpu}");
                    assert_eq!(inner.gfn_to_hva(2), None, "vcpu {vcpu}");
                    assert_eq!(outer.gfn_to_slot(101).map(|s| s.id()), None);
                    assert_eq!(inner.gfn_to_slot(101).map(|s| s.id()), None);
                }
                drop(inner);
                drop(outer);
            });
            let view = reader.pin();
            assert_eq!(view.gfn_to_slot(1).map(|s| s.id()), None);
            assert_eq!(view.gfn_to_slot(101).map(|s| s.id()), Some(0));
        }
    }
}
