//! Batches: several slot changes that readers see at once.

use alloc::vec::Vec;
use core::fmt;

use crate::backend::Backend;
use crate::base::addr::Gfn;
use crate::map::op::{BatchError, Op};
#[cfg(feature = "std")]
use crate::map::writer::owned_region;
use crate::map::writer::Writer;
use crate::memory::backing::Backing;
use crate::vocab::{Change, Flags, Region, SlotKey, UserMemoryRegion};

/// A list of slot changes that [`Batch::commit`] validates as a whole and
/// then publishes at once. Get one with [`Writer::batch`]; dropping it
/// without `commit` changes nothing.
///
/// Operations follow the rules of the single calls, checked against the
/// state as it evolves inside the batch: an operation may reuse the id an
/// earlier one deleted, or move a slot into a range an earlier one freed;
/// two operations of the batch may not overlap each other. Operations on one
/// slot that cancel out publish nothing for it: a slot whose logging is
/// turned off and on again keeps its dirty log then, while the same with a
/// move in between starts the log afresh, as the same single calls would.
///
/// # What readers see
///
/// Each address space the batch touches goes through at most two layouts
/// after the one before the batch, each published at once (one swap):
///
/// 1. Only if the batch deletes or moves a slot of that space (or gives an
///    id new memory): the layout before the batch with each such slot
///    INVALID. Its old range holds no usable slot: [`View::gfn_to_slot`]
///    finds nothing there, [`View::lookup`] and the guest-memory accessors
///    answer "changing, retry" ([`Lookup::Changing`],
///    [`AccessFailure::Changing`]), and [`View::slots_in_hva_range`] still
///    lists it. No create, move target or flag change of the batch is
///    visible yet.
/// 2. The final layout: every change of the batch.
///
/// So readers never see part of the batch's creates, moves and flag
/// changes without the rest, and a range the batch takes away answers
/// "changing" until the final layout, never "no slot". A batch of creates
/// and flag changes only goes from the layout before straight to the final
/// one. Address spaces swap one after another, so a reader of one space may
/// see its final layout shortly before a reader of another.
///
/// [`View::gfn_to_slot`]: crate::View::gfn_to_slot
/// [`View::lookup`]: crate::View::lookup
/// [`View::slots_in_hva_range`]: crate::View::slots_in_hva_range
/// [`Lookup::Changing`]: crate::Lookup::Changing
/// [`AccessFailure::Changing`]: crate::AccessFailure::Changing
///
/// ```
/// use memslots::{Config, Flags, Memslots, Region, SlotKey};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// let dimm = Region { id: 0, as_id: 0, base_gfn: 0x100, npages: 0x200, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// writer.create(dimm)?;
/// // Replace one DIMM by two halves: readers see the old slot, then its
/// // range changing (the INVALID step), then both halves; never one half.
/// let mut batch = writer.batch();
/// batch.delete(dimm.key());
/// batch.create(Region { npages: 0x100, ..dimm });
/// batch.create(Region { id: 1, base_gfn: 0x200, npages: 0x100, hva: dimm.hva + 0x10_0000, ..dimm });
/// batch.commit().map_err(|e| e.error)?;
/// assert_eq!(slots.reader().pin().slots().count(), 2);
/// # Ok::<(), memslots::Error>(())
/// ```
#[must_use = "a batch does nothing until it is committed"]
pub struct Batch<'w, B: Backend> {
    writer: &'w mut Writer<B>,
    ops: Vec<Op>,
}

impl<B: Backend> Writer<B> {
    /// A batch of changes that readers see at once; see [`Batch`].
    pub fn batch(&mut self) -> Batch<'_, B> {
        Batch { writer: self, ops: Vec::new() }
    }
}

impl<B: Backend> Batch<'_, B> {
    /// Adds a [`Writer::create`].
    pub fn create(&mut self, region: Region) -> &mut Self {
        self.push(Op::Create(region, Backing::Address))
    }

    /// Adds a [`Writer::create_owned`].
    #[cfg(feature = "std")]
    pub fn create_owned(
        &mut self,
        key: SlotKey,
        base_gfn: Gfn,
        flags: Flags,
        ram: alloc::sync::Arc<crate::memory::GuestRam>,
    ) -> &mut Self {
        let (region, backing) = owned_region(key, base_gfn, flags, ram);
        self.push(Op::Create(region, backing))
    }

    /// Adds a [`Writer::create_raw`].
    ///
    /// # Safety
    /// As for [`Writer::create_raw`], from the commit of the batch on.
    pub unsafe fn create_raw(&mut self, region: Region) -> &mut Self {
        self.push(Op::Create(region, Backing::Raw))
    }

    /// Adds a [`Writer::delete`].
    pub fn delete(&mut self, key: SlotKey) -> &mut Self {
        self.push(Op::Delete(key))
    }

    /// Adds a [`Writer::move_to`].
    pub fn move_to(&mut self, key: SlotKey, base_gfn: Gfn) -> &mut Self {
        self.push(Op::Move(key, base_gfn))
    }

    /// Adds a [`Writer::set_flags`].
    pub fn set_flags(&mut self, key: SlotKey, flags: Flags) -> &mut Self {
        self.push(Op::SetFlags(key, flags))
    }

    /// Adds a [`Writer::set_region`].
    pub fn set_region(&mut self, region: UserMemoryRegion) -> &mut Self {
        self.push(Op::SetRegion(region))
    }

    fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Operations collected so far.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was collected.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Validates every operation, then publishes the whole batch: per
    /// touched address space one swap that makes every deleted and moved
    /// slot INVALID (none without DELETE or MOVE), then one swap with every
    /// change, then the catch-up of the other set; two grace periods at
    /// most, however many operations. Returns what each operation did.
    ///
    /// # Errors
    /// The first operation that breaks a rule, with its index and the
    /// [`Error`](crate::Error) the single call would give; the backend's
    /// refusal ([`Error::Backend`](crate::Error::Backend)) with the index of
    /// the last operation on that slot;
    /// [`Error::ViewHeldByWriterThread`](crate::Error::ViewHeldByWriterThread)
    /// or [`Error::Poisoned`](crate::Error::Poisoned)
    /// without an index. Nothing changes then: sets, caches, generations
    /// and total pages are as before.
    pub fn commit(self) -> Result<Vec<Change>, BatchError> {
        self.writer.run(&self.ops)
    }
}

impl<B: Backend> fmt::Debug for Batch<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("ops", &self.ops).finish()
    }
}
