//! The single writer: each call is a batch of one operation, validated and
//! published by the engine (`commit`).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::addr::Gfn;
use crate::backend::{Backend, NoBackend};
use crate::error::Error;
use crate::map::batch::{Batch, BatchError, Op};
use crate::map::commit::Engine;
use crate::map::plan::Change;
use crate::map::shared::Inner;
use crate::map::slot::{Flags, Region, SlotKey, UserMemoryRegion};
use crate::sync::Ordering;

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
/// The writer is `Send` and `Sync`: it can live in a VMM's memory manager
/// behind a mutex, and its changes take `&mut self`.
///
/// [`Memslots::writer`]: crate::Memslots::writer
/// [`Memslots::writer_with`]: crate::Memslots::writer_with
pub struct Writer<B: Backend = NoBackend> {
    inner: Arc<Inner>,
    backend: B,
}

impl<B: Backend> Writer<B> {
    pub(crate) fn new(inner: Arc<Inner>, backend: B) -> Writer<B> {
        Writer { inner, backend }
    }

    /// Adds a slot.
    ///
    /// # Errors
    /// [`Error::InvalidAddressSpace`] or [`Error::InvalidSlotId`] for a key
    /// out of range, [`Error::EmptySlot`] for zero pages,
    /// [`Error::SlotExists`] if the id is taken, and otherwise the errors of
    /// [`Writer::set_region`].
    pub fn create(&mut self, region: Region) -> Result<Change, Error> {
        self.one(Op::Create(region))
    }

    /// Removes a slot. Readers stop seeing it before the call returns.
    ///
    /// # Errors
    /// [`Error::NoSuchSlot`] for an unknown key (and the key-range errors of
    /// [`Writer::create`]); the whole-call errors of [`Writer::set_region`].
    pub fn delete(&mut self, key: SlotKey) -> Result<Change, Error> {
        self.one(Op::Delete(key))
    }

    /// Moves a slot to `base_gfn`, keeping its size, host address and flags.
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

    /// A batch of changes that readers see at once; see [`Batch`].
    pub fn batch(&mut self) -> Batch<'_, B> {
        Batch::new(self)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to change its own state (not the slots).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    fn one(&mut self, op: Op) -> Result<Change, Error> {
        match self.run(&[op]) {
            Ok(changes) => Ok(changes[0]),
            Err(BatchError { error, .. }) => Err(error),
        }
    }

    pub(crate) fn run(&mut self, ops: &[Op]) -> Result<Vec<Change>, BatchError> {
        Engine::new(&self.inner, &mut self.backend).run(ops)
    }
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
