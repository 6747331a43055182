//! The seam a backend plugs into: something outside the crate that must
//! follow every slot change, such as a KVM VM (feature `kvm`).
//!
//! Layer 4: it names changes in the vocabulary's words and refusals in the
//! errors' (`Error::Backend`), and knows nothing of the map or of memory.
//!
//! Modeled on the kernel's prepare / commit steps. For one writer call or one
//! batch, the writer calls, in this order:
//!
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
pub trait Backend: Send {
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

/// The default backend: no hooks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBackend;

impl Backend for NoBackend {}
