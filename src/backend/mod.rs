//! The seam a backend plugs into: something outside the crate that must
//! follow every slot change, such as a KVM VM (feature `kvm`).
//!
//! Layer 4: it names changes in the vocabulary's words and refusals in the
//! errors' (`Error::Backend`), and knows nothing of the map or of memory.
//!
//! Modeled on the kernel's prepare / commit steps. For one writer call or one
//! batch, the writer calls, in this order:
//!
//! 0. [`Backend::begin`] once, with the number of net changes, after the
//!    whole call or batch has been validated and right before the first
//!    `prepare`.
//! 1. [`Backend::prepare`] once per net change, after the whole call or
//!    batch has been validated and before anything is published. The order
//!    is: every delete, then every move, then every flags change, then every
//!    create; within a kind, by slot key, except that a move comes after the
//!    moves that free the range it moves into, so that a backend applying
//!    the changes one at a time (KVM) never sees two slots overlap. Moves
//!    that trade places in a cycle (two slots swapping guest addresses) have
//!    no such order: one move of each cycle comes as a delete where the
//!    cycle is reached and a create after all other moves, as the ioctls a
//!    VMM would make; it is a slot whose dirty log does not go across where
//!    the cycle has one (`LOG_DIRTY_PAGES` missing on either side), so a
//!    kernel keeps the log of every slot it can. If `prepare` refuses a
//!    change, the
//!    writer calls [`Backend::abort`] for every change already prepared in
//!    this call, in reverse order, publishes nothing, and returns
//!    [`Error::Backend`](crate::Error::Backend).
//! 2. [`Backend::invalidated`] once per deleted or moved slot, after the swap
//!    that made those slots INVALID and the grace period after it: no reader
//!    can reach their old ranges any more (where KVM flushes them).
//! 3. [`Backend::commit`] once per net change, in the order of step 1, after
//!    the swap that published the batch and the grace period after it.
//!
//! A change that changes nothing (an identical re-set, or batch operations
//! that cancel out) calls no hook. [`NoBackend`] does nothing and costs
//! nothing.

pub use crate::vocab::SlotChange;

/// Something that follows every slot change; see the [module docs](self) for
/// the exact order of calls.
///
/// The hooks run on the writer's thread, inside the writer call, while no
/// view of that thread is held. A hook that panics poisons the slot map (see
/// [`Error::Poisoned`](crate::Error::Poisoned)): readers keep a consistent
/// published layout, and every later writer call is refused.
///
/// A backend is `Send`, so the writer can move between threads; the writer
/// is `Sync` only if its backend is too.
///
/// A backend that records every call, and refuses slots in address space 1:
///
/// ```
/// use memslots::{Backend, Change, Config, Error, Flags, Memslots, Region, SlotChange};
///
/// #[derive(Default)]
/// struct Recorder(Vec<(&'static str, Change)>);
///
/// impl Backend for Recorder {
///     fn prepare(&mut self, change: &SlotChange) -> Result<(), i32> {
///         self.0.push(("prepare", change.kind()));
///         if change.key.as_id == 1 {
///             return Err(28); // ENOSPC, say
///         }
///         Ok(())
///     }
///     fn abort(&mut self, change: &SlotChange) {
///         self.0.push(("abort", change.kind()));
///     }
///     fn invalidated(&mut self, change: &SlotChange) {
///         self.0.push(("invalidated", change.kind()));
///     }
///     fn commit(&mut self, change: &SlotChange) {
///         self.0.push(("commit", change.kind()));
///     }
/// }
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer_with(Recorder::default())?;
/// let dimm = Region { id: 0, as_id: 0, base_gfn: 0x100, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// writer.create(dimm)?;
/// writer.move_to(dimm.key(), 0x200)?;
/// use Change::*;
/// assert_eq!(
///     writer.backend().0,
///     [("prepare", Created), ("commit", Created), ("prepare", Moved), ("invalidated", Moved), ("commit", Moved)]
/// );
///
/// // A refusal: what was prepared is aborted, in reverse, and nothing is published.
/// writer.backend_mut().0.clear();
/// let mut batch = writer.batch();
/// batch.delete(dimm.key()).create(Region { as_id: 1, ..dimm });
/// assert_eq!(batch.commit().map_err(|e| e.error), Err(Error::Backend { code: 28 }));
/// assert_eq!(writer.backend().0, [("prepare", Deleted), ("prepare", Created), ("abort", Deleted)]);
/// assert_eq!(slots.reader().pin().gfn_to_slot(0x200).map(|s| s.id()), Some(0));
/// # Ok::<(), Error>(())
/// ```
pub trait Backend: Send {
    /// The writer is about to prepare `changes` net changes (at least one)
    /// for one call or batch, so a backend that applies them one at a time
    /// knows whether more than one follows, and which `prepare` is the last
    /// (KVM applies a single change atomically, and holds its vCPUs only
    /// across several).
    fn begin(&mut self, changes: usize) {
        let _ = changes;
    }

    /// Sees a validated change before anything is published; an `Err`
    /// refuses it, with a code the writer returns in
    /// [`Error::Backend`](crate::Error::Backend) (the `kvm` backend returns
    /// the errno).
    ///
    /// # Errors
    /// The backend's refusal.
    fn prepare(&mut self, change: &SlotChange) -> Result<(), i32> {
        let _ = change;
        Ok(())
    }

    /// Undoes a `prepare` of the same call, after a later one was refused.
    fn abort(&mut self, change: &SlotChange) {
        let _ = change;
    }

    /// The deleted or moved slot's old range is unreachable by readers.
    fn invalidated(&mut self, change: &SlotChange) {
        let _ = change;
    }

    /// The change is published and no reader sees the old state any more.
    fn commit(&mut self, change: &SlotChange) {
        let _ = change;
    }
}

/// The default backend: no hooks. [`Writer`](crate::Writer) is
/// `Writer<NoBackend>`.
///
/// ```
/// use memslots::{Config, Memslots, NoBackend, Writer};
///
/// let slots = Memslots::new(Config::default())?;
/// let writer: Writer<NoBackend> = slots.writer()?;
/// assert_eq!(core::mem::size_of_val(writer.backend()), 0);
/// drop(writer);
/// let _same: Writer = slots.writer_with(NoBackend)?;
/// # Ok::<(), memslots::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBackend;

impl Backend for NoBackend {}
