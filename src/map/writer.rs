//! The single writer: each call is a batch of one operation, validated and
//! published by the engine (`commit`).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::backend::{Backend, NoBackend};
use crate::base::addr::Gfn;
use crate::base::sync::Ordering;
use crate::error::Error;
use crate::map::commit::{Engine, Scratch};
use crate::map::op::{BatchError, Op};
use crate::map::shared::Inner;
use crate::memory::backing::Backing;
use crate::memory::dirty::DirtyBitmap;
use crate::vocab::{Change, Flags, Region, SlotKey, UserMemoryRegion};

/// The one handle that changes slots. Get it with [`Memslots::writer`] (or
/// [`Memslots::writer_with`] to plug in a [`Backend`]); dropping it lets
/// another be made.
///
/// Every method either applies its whole change or returns an error and
/// changes nothing. A change returns once both sets hold it, so it waits for
/// a grace period: every view taken before the change must end (or
/// [`repin`](crate::View::repin)). The wait uses the map's
/// [`Wait`](crate::Wait) strategy. A view held across a blocking call such as
/// `KVM_RUN` stalls the writer; a view held on the writer's own thread would
/// never end, so the writer refuses to start a change then
/// ([`Error::ViewHeldByWriterThread`], with `std`).
///
/// ```
/// use memslots::{Change, Config, Error, Flags, Memslots, Region};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// assert_eq!(slots.writer().err(), Some(Error::WriterBusy)); // one at a time
///
/// let ram = Region { id: 0, as_id: 0, base_gfn: 0, npages: 0x100, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// assert_eq!(writer.create(ram)?, Change::Created);
/// // A refused change changes nothing, and names the slot in the way.
/// let rom = Region { id: 1, base_gfn: 0x80, hva: 0x7f00_1000_0000, ..ram };
/// assert_eq!(writer.create(rom), Err(Error::Overlap { key: rom.key(), with: ram.key() }));
/// assert_eq!(slots.reader().pin().slots().count(), 1);
///
/// drop(writer);
/// let _writer = slots.writer()?; // the next one
/// # Ok::<(), memslots::Error>(())
/// ```
///
/// # Threads
///
/// A `Writer<B>` is always `Send` (every [`Backend`] is `Send`), and it is
/// `Sync` exactly when `B` is `Sync`: the default `Writer` (with
/// [`NoBackend`]) is both, while a writer whose backend holds a `Cell` or an
/// `Rc` is `Send` only. Its changes take `&mut self`. It can live in a VMM's
/// memory manager behind a `Mutex` whatever its backend, since a mutex needs
/// only `Send`:
///
/// ```
/// use std::cell::Cell;
/// use std::sync::Mutex;
/// use memslots::{Backend, Config, Flags, Memslots, Region, SlotChange};
///
/// /// Counts commits in a `Cell`: `Send`, not `Sync`.
/// struct Commits(Cell<u32>);
/// impl Backend for Commits {
///     fn commit(&mut self, _: &SlotChange) {
///         self.0.set(self.0.get() + 1);
///     }
/// }
///
/// let slots = Memslots::new(Config::default())?;
/// let writer = Mutex::new(slots.writer_with(Commits(Cell::new(0)))?);
/// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// std::thread::scope(|s| {
///     s.spawn(|| writer.lock().expect("no writer call panicked").create(region)).join().expect("no panic")
/// })?;
/// assert_eq!(writer.lock().expect("no writer call panicked").backend().0.get(), 1);
/// # Ok::<(), memslots::Error>(())
/// ```
///
/// [`Memslots::writer`]: crate::Memslots::writer
/// [`Memslots::writer_with`]: crate::Memslots::writer_with
pub struct Writer<B: Backend = NoBackend> {
    inner: Arc<Inner>,
    backend: B,
    scratch: Scratch,
}

impl<B: Backend> Writer<B> {
    pub(crate) fn new(inner: Arc<Inner>, backend: B) -> Writer<B> {
        Writer { inner, backend, scratch: Scratch::default() }
    }

    /// Adds a slot. The slot translates addresses only; the guest-memory
    /// accessors cannot reach a bare host address (see
    /// [`Writer::create_owned`] and [`Writer::create_raw`]).
    ///
    /// ```
    /// use memslots::{Change, Config, Error, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region = Region { id: 3, as_id: 0, base_gfn: 0x100, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// assert_eq!(writer.create(region)?, Change::Created);
    /// assert_eq!(slots.reader().pin().gfn_to_hva(0x101), Some(0x7f00_0000_1000));
    /// assert_eq!(writer.create(region), Err(Error::SlotExists { key: region.key() }));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidAddressSpace`] or [`Error::InvalidSlotId`] for a key
    /// out of range, [`Error::EmptySlot`] for zero pages,
    /// [`Error::SlotExists`] if the id is taken, and otherwise the errors of
    /// [`Writer::set_region`].
    pub fn create(&mut self, region: Region) -> Result<Change, Error> {
        self.one(Op::Create(region, Backing::Address))
    }

    /// Adds a slot backed by guest RAM the crate owns: `ram.len()` bytes at
    /// `base_gfn`, host address `ram.as_ptr()`. The slot keeps a reference
    /// to `ram`; the memory is unmapped only after the slot has left both
    /// sets, the grace period has passed, and every other reference (a
    /// [`GuestRange`](crate::GuestRange), the caller's) has dropped. The
    /// guest-memory accessors can reach the slot.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use std::sync::Arc;
    /// use memslots::{Config, Flags, GuestRam, Memslots, SlotKey};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let ram = Arc::new(GuestRam::new(4 << 12)?); // four pages
    /// writer.create_owned(SlotKey { id: 0, as_id: 0 }, 0x100, Flags::empty(), ram.clone())?;
    /// let vcpu = slots.reader();
    /// let view = vcpu.pin();
    /// assert_eq!(view.gfn_to_hva(0x100), Some(ram.as_ptr() as u64));
    /// view.write_obj(0x10_0010, 7_u32)?;
    /// assert_eq!(view.read_obj::<u32>(0x10_0010)?, 7);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Writer::create`].
    #[cfg(feature = "std")]
    pub fn create_owned(
        &mut self,
        key: SlotKey,
        base_gfn: Gfn,
        flags: Flags,
        ram: Arc<crate::memory::GuestRam>,
    ) -> Result<Change, Error> {
        let (region, backing) = owned_region(key, base_gfn, flags, ram);
        self.one(Op::Create(region, backing))
    }

    /// Adds a slot whose host memory the embedder mapped itself, for
    /// `no_std` hypervisors and memory a VMM maps on its own: unlike
    /// [`Writer::create`], the guest-memory accessors can reach it.
    ///
    /// # Safety
    /// `region.hva .. region.hva + region.npages * PAGE_SIZE` is mapped,
    /// readable, and writable unless `region.flags` has `READONLY`, from
    /// this call until the [`Writer::delete`] of the slot returns (or this
    /// call returns an error). The crate accesses it only through raw
    /// pointers, and the caller makes no Rust reference to it meanwhile.
    /// Memory of a READONLY slot may be mapped read-only: neither the
    /// crate's accessors nor its vm-memory adapter ever write it.
    ///
    /// ```
    /// use memslots::{Config, Flags, Memslots, Region, PAGE_SIZE};
    ///
    /// /// One page of memory the embedder owns, page aligned.
    /// #[repr(C, align(4096))]
    /// struct Page([u8; PAGE_SIZE as usize]);
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let page = Box::into_raw(Box::new(Page([0; PAGE_SIZE as usize])));
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0x10, npages: 1, hva: page as u64, flags: Flags::empty() };
    /// // SAFETY: `page` stays allocated until the slot's delete has returned,
    /// // and nothing makes a reference to it meanwhile.
    /// unsafe { writer.create_raw(region)? };
    /// {
    ///     let vcpu = slots.reader();
    ///     let view = vcpu.pin();
    ///     view.write_obj(0x10_008, 0xfeed_u64).expect("the page is in the slot");
    ///     assert_eq!(view.read_obj::<u64>(0x10_008), Ok(0xfeed));
    /// }
    /// writer.delete(region.key())?;
    /// // SAFETY: the delete has returned, so no reader can reach the page.
    /// let page = unsafe { Box::from_raw(page) };
    /// assert_eq!(page.0[8..16], 0xfeed_u64.to_ne_bytes());
    /// # Ok::<(), memslots::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Writer::create`].
    pub unsafe fn create_raw(&mut self, region: Region) -> Result<Change, Error> {
        self.one(Op::Create(region, Backing::Raw))
    }

    /// Removes a slot. Readers stop seeing it before the call returns, and
    /// once it has returned no reader can reach the slot's host range
    /// through the map: the VMM may unmap that memory.
    ///
    /// ```
    /// use memslots::{Change, Config, Error, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0x100, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(region)?;
    /// assert_eq!(writer.delete(region.key())?, Change::Deleted);
    /// assert!(slots.reader().pin().gfn_to_slot(0x100).is_none());
    /// assert_eq!(writer.delete(region.key()), Err(Error::NoSuchSlot { key: region.key() }));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSuchSlot`] for an unknown key (and the key-range errors of
    /// [`Writer::create`]); the whole-call errors of [`Writer::set_region`].
    pub fn delete(&mut self, key: SlotKey) -> Result<Change, Error> {
        self.one(Op::Delete(key))
    }

    /// Moves a slot to `base_gfn`, keeping its size, host address and flags.
    /// A move frees no host memory: only the guest address changes.
    ///
    /// ```
    /// use memslots::{Change, Config, Error, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let bar = Region { id: 0, as_id: 0, base_gfn: 0xe0000, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(bar)?;
    /// assert_eq!(writer.move_to(bar.key(), 0xf0000)?, Change::Moved);
    /// let vcpu = slots.reader();
    /// let view = vcpu.pin();
    /// let moved = view.slot_by_id(0).expect("moved, not deleted");
    /// assert_eq!((moved.base_gfn(), moved.hva()), (0xf0000, bar.hva));
    /// assert!(view.gfn_to_slot(0xe0000).is_none());
    /// drop(view); // never hold a view on the writer's thread across a change
    /// assert_eq!(writer.move_to(bar.key(), u64::MAX), Err(Error::GpaWraps));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSuchSlot`], [`Error::GpaWraps`] for a range past the top of
    /// the guest address space, [`Error::Overlap`] naming the slot in the
    /// way; the whole-call errors of [`Writer::set_region`].
    pub fn move_to(&mut self, key: SlotKey, base_gfn: Gfn) -> Result<Change, Error> {
        self.one(Op::Move(key, base_gfn))
    }

    /// Changes a slot's flags.
    ///
    /// ```
    /// use memslots::{Change, Config, Error, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(region)?;
    /// assert_eq!(writer.set_flags(region.key(), Flags::LOG_DIRTY_PAGES)?, Change::FlagsChanged);
    /// assert_eq!(writer.set_flags(region.key(), Flags::READONLY), Err(Error::ReadonlyToggle { key: region.key() }));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSuchSlot`], [`Error::UnknownFlags`],
    /// [`Error::ReadonlyToggle`] (`READONLY` cannot be toggled); the
    /// whole-call errors of [`Writer::set_region`].
    pub fn set_flags(&mut self, key: SlotKey, flags: Flags) -> Result<Change, Error> {
        self.one(Op::SetFlags(key, flags))
    }

    /// `KVM_SET_USER_MEMORY_REGION`: sets slot `region.slot` (address space
    /// in the upper 16 bits, id in the lower 16) to `memory_size` bytes at
    /// `guest_phys_addr`, backed from `userspace_addr`, with `flags`.
    ///
    /// A size of 0 deletes the slot; an existing slot at another guest
    /// address moves; other flags change the flags; identical parameters
    /// succeed and change nothing (no swap, no new generation).
    ///
    /// ```
    /// use memslots::{Change, Config, Error, Flags, Memslots, SlotKey, UserMemoryRegion};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let mut request = UserMemoryRegion {
    ///     slot: SlotKey { id: 2, as_id: 0 }.kvm_slot(),
    ///     flags: Flags::empty(),
    ///     guest_phys_addr: 0x10_0000,
    ///     memory_size: 0x10_0000,
    ///     userspace_addr: 0x7f00_0000_0000,
    /// };
    /// assert_eq!(writer.set_region(request)?, Change::Created);
    /// assert_eq!(writer.set_region(request)?, Change::Unchanged);
    /// request.guest_phys_addr = 0x20_0000;
    /// assert_eq!(writer.set_region(request)?, Change::Moved);
    /// request.memory_size = 0; // KVM's way to delete
    /// assert_eq!(writer.set_region(request)?, Change::Deleted);
    /// request.guest_phys_addr = 0x1234;
    /// assert_eq!(writer.set_region(request), Err(Error::UnalignedGpa { gpa: 0x1234 }));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// KVM's rules, in KVM's order: [`Error::UnknownFlags`];
    /// [`Error::UnalignedSize`], [`Error::UnalignedGpa`],
    /// [`Error::UnalignedHva`]; [`Error::HvaWraps`];
    /// [`Error::InvalidAddressSpace`], [`Error::InvalidSlotId`];
    /// [`Error::GpaWraps`], [`Error::SlotTooLarge`]; [`Error::NoSuchSlot`]
    /// for deleting an unknown slot; [`Error::TotalPagesExceeded`];
    /// [`Error::HvaChange`], [`Error::Resize`], [`Error::ReadonlyToggle`] for
    /// an existing slot; [`Error::Overlap`]. Then the whole-call errors:
    /// [`Error::ViewHeldByWriterThread`] for a change that would wait for
    /// the calling thread itself, [`Error::Backend`] when the backend
    /// refuses it, and [`Error::Poisoned`] after a writer panicked mid-change.
    pub fn set_region(&mut self, region: UserMemoryRegion) -> Result<Change, Error> {
        self.one(Op::SetRegion(region))
    }

    /// Returns the dirty pages of a slot that logs them and clears them, word
    /// by word with atomic swaps (`KVM_GET_DIRTY_LOG`): bit `i` of word `j`
    /// is page `64 * j + i` of the slot. A page marked while this runs is in
    /// this harvest or the next, never in both and never in neither.
    ///
    /// ```
    /// use memslots::{Config, Error, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region =
    ///     Region { id: 0, as_id: 0, base_gfn: 0x100, npages: 128, hva: 0x7f00_0000_0000, flags: Flags::LOG_DIRTY_PAGES };
    /// writer.create(region)?;
    /// {
    ///     let vcpu = slots.reader();
    ///     let view = vcpu.pin();
    ///     view.mark_page_dirty(0x102); // page 2 of the slot
    ///     view.mark_page_dirty(0x140); // page 64
    /// }
    /// assert_eq!(writer.get_dirty_log(region.key())?, [1 << 2, 1]);
    /// assert_eq!(writer.get_dirty_log(region.key())?, [0, 0]); // harvested once
    /// writer.set_flags(region.key(), Flags::empty())?;
    /// assert_eq!(writer.get_dirty_log(region.key()), Err(Error::DirtyLogDisabled { key: region.key() }));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSuchSlot`] (and the key-range errors), and
    /// [`Error::DirtyLogDisabled`] for a slot without `LOG_DIRTY_PAGES`.
    pub fn get_dirty_log(&mut self, key: SlotKey) -> Result<Vec<u64>, Error> {
        self.with_dirty_log(key, |log| log.take())
    }

    /// The dirty pages of a slot without clearing them, for KVM's manual
    /// dirty-log protection: peek, then [`Writer::clear_dirty_log`] the
    /// pages, then copy them. Copy after the clear, never before: a write
    /// between a copy and the clear would be cleared without being copied;
    /// a write after the clear marks the page again for the next round.
    ///
    /// ```
    /// use memslots::{Config, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 64, hva: 0x7f00_0000_0000, flags: Flags::LOG_DIRTY_PAGES };
    /// writer.create(region)?;
    /// let vcpu = slots.reader();
    /// vcpu.pin().mark_page_dirty(5);
    /// let dirty = writer.peek_dirty_log(region.key())?;
    /// assert_eq!(dirty, [1 << 5]);
    /// writer.clear_dirty_log(region.key(), 0, &dirty)?; // then copy page 5
    /// assert_eq!(writer.peek_dirty_log(region.key())?, [0]);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Writer::get_dirty_log`].
    pub fn peek_dirty_log(&mut self, key: SlotKey) -> Result<Vec<u64>, Error> {
        self.with_dirty_log(key, |log| log.peek())
    }

    /// Clears the dirty bits set in `mask` for the pages from `first_page`
    /// on (bit `i` of `mask[j]` is page `first_page + 64 * j + i`), as
    /// `KVM_CLEAR_DIRTY_LOG` does; bits marked meanwhile and not in `mask`
    /// stay.
    ///
    /// ```
    /// use memslots::{Config, Error, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 128, hva: 0x7f00_0000_0000, flags: Flags::LOG_DIRTY_PAGES };
    /// writer.create(region)?;
    /// let vcpu = slots.reader();
    /// vcpu.pin().mark_page_dirty(64);
    /// vcpu.pin().mark_page_dirty(65);
    /// writer.clear_dirty_log(region.key(), 64, &[1 << 1])?; // page 65 only
    /// assert_eq!(writer.peek_dirty_log(region.key())?, [0, 1]);
    /// let range = Err(Error::DirtyLogRange { key: region.key() });
    /// assert_eq!(writer.clear_dirty_log(region.key(), 32, &[1]), range); // not a multiple of 64
    /// assert_eq!(writer.clear_dirty_log(region.key(), 64, &[1, 1]), range); // past the slot
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Writer::get_dirty_log`], and [`Error::DirtyLogRange`] if
    /// `first_page` is not a multiple of 64 or the mask runs past the slot.
    pub fn clear_dirty_log(&mut self, key: SlotKey, first_page: u64, mask: &[u64]) -> Result<(), Error> {
        self.with_dirty_log(key, |log| {
            let words = log.pages().div_ceil(64);
            let fits = (mask.len() as u64).checked_add(first_page / 64).is_some_and(|end| end <= words);
            if !first_page.is_multiple_of(64) || !fits {
                return Err(Error::DirtyLogRange { key });
            }
            log.clear(first_page, mask);
            Ok(())
        })?
    }

    fn with_dirty_log<R>(&self, key: SlotKey, f: impl FnOnce(&DirtyBitmap) -> R) -> Result<R, Error> {
        self.inner.config.check_key(key)?;
        let (active, _) = self.inner.spaces[usize::from(key.as_id)].active();
        // SAFETY: only the one writer mutates sets (invariant 7), and this
        // is it, not mutating now.
        let set = unsafe { active.deref() };
        let slot = set.by_id(key.id).ok_or(Error::NoSuchSlot { key })?;
        slot.dirty_log().map(|log| f(log)).ok_or(Error::DirtyLogDisabled { key })
    }

    /// The backend.
    ///
    /// ```
    /// use memslots::{Backend, Config, Flags, Memslots, Region, SlotChange};
    ///
    /// /// Counts the changes published.
    /// struct Commits(u32);
    /// impl Backend for Commits {
    ///     fn commit(&mut self, _: &SlotChange) {
    ///         self.0 += 1;
    ///     }
    /// }
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer_with(Commits(0))?;
    /// writer.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
    /// assert_eq!(writer.backend().0, 1);
    /// writer.backend_mut().0 = 0;
    /// assert_eq!(writer.backend().0, 0);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to change its own state (not the slots); see
    /// [`Writer::backend`].
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    fn one(&mut self, op: Op) -> Result<Change, Error> {
        match self.engine().run(&[op]) {
            Ok(changes) => Ok(changes[0]),
            Err(BatchError { error, .. }) => Err(error),
        }
    }

    pub(crate) fn run(&mut self, ops: &[Op]) -> Result<Vec<Change>, BatchError> {
        #[cfg(loom)]
        if ops.len() > 1 && self.inner.epochs.faulty(crate::map::LoomFault::BatchOpByOp) {
            return ops.iter().map(|op| self.engine().run(core::slice::from_ref(op)).map(|c| c[0])).collect();
        }
        let changes = self.engine().run(ops).map(<[Change]>::to_vec);
        self.scratch.trim();
        changes
    }

    fn engine(&mut self) -> Engine<'_, B> {
        Engine::new(&self.inner, &mut self.backend, &mut self.scratch)
    }
}

/// The region and backing of a slot over owned guest RAM.
#[cfg(feature = "std")]
pub(crate) fn owned_region(
    key: SlotKey,
    base_gfn: Gfn,
    flags: Flags,
    ram: Arc<crate::memory::GuestRam>,
) -> (Region, Backing) {
    let region = Region {
        id: key.id,
        as_id: key.as_id,
        base_gfn,
        npages: ram.len() as u64 >> crate::PAGE_SHIFT,
        hva: ram.as_ptr().expose_provenance() as u64,
        flags,
    };
    (region, Backing::Owned(ram))
}

impl<B: Backend> Drop for Writer<B> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire compare-exchange in
        // `Memslots::writer`, handing the sets over to the next writer.
        self.inner.writer_taken.store(false, Ordering::Release);
    }
}

impl<B: Backend + fmt::Debug> fmt::Debug for Writer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a snapshot for display.
        f.debug_struct("Writer")
            .field("generations", &crate::map::DebugList(self.inner.generations()))
            .field("slot_objects", &self.inner.slot_objects.load(Ordering::Relaxed))
            .field("total_pages", &self.inner.total_pages.load(Ordering::Relaxed))
            .field("backend", &self.backend)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::map::commit::Scratch;
    use crate::{Change, Config, Flags, Memslots, Region, SlotKey};

    fn region(id: u16) -> Region {
        let base = u64::from(id) * 16;
        Region { id, as_id: 0, base_gfn: base, npages: 8, hva: 0x1000_0000 + base * 4096, flags: Flags::empty() }
    }

    /// The writer's buffers outlive a batch, so single changes allocate
    /// only slots, but a large batch does not leave them large.
    #[test]
    fn buffers_are_reused_and_trimmed() {
        let slots = Memslots::new(Config::default().with_address_spaces(1)).expect("config");
        let mut w = slots.writer().expect("writer");
        let mut batch = w.batch();
        for id in 0..500 {
            batch.create(region(id));
        }
        assert_eq!(batch.commit().expect("batch"), [Change::Created; 500]);
        assert!((1..=Scratch::KEEP).contains(&w.scratch.room()), "room for {}", w.scratch.room());
        let key = SlotKey { id: 7, as_id: 0 };
        assert_eq!(w.move_to(key, 100_000), Ok(Change::Moved));
        assert_eq!(w.delete(key), Ok(Change::Deleted));
        assert!((1..=Scratch::KEEP).contains(&w.scratch.room()));
        let view = slots.reader();
        let view = view.pin();
        assert_eq!(view.slots().count(), 499);
        assert!(view.gfn_to_slot(100_000).is_none() && view.gfn_to_slot(7 * 16).is_none());
    }
}
