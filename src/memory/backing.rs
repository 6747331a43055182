//! What stands behind a slot's host addresses.

#[cfg(feature = "std")]
use alloc::sync::Arc;

#[cfg(feature = "std")]
use crate::memory::ram::GuestRam;

/// The host memory of a slot, as far as the crate may touch it.
#[derive(Clone, Debug, Default)]
pub(crate) enum Backing {
    /// A host address number only: the slot translates, and the accessors
    /// refuse it.
    #[default]
    Address,
    /// Memory the embedder mapped and vouched for
    /// ([`Writer::create_raw`](crate::Writer::create_raw)): mapped, and
    /// writable unless the slot is READONLY, until the delete of the slot
    /// returns.
    Raw,
    /// Guest RAM the crate owns; the slot holds a reference.
    #[cfg(feature = "std")]
    Owned(Arc<GuestRam>),
}

impl Backing {
    /// Whether the accessors may read and write the slot's host range.
    pub(crate) fn accessible(&self) -> bool {
        !matches!(self, Backing::Address)
    }

    /// Whether both stand for the same memory in the same way.
    pub(crate) fn same_as(&self, other: &Backing) -> bool {
        match (self, other) {
            (Backing::Address, Backing::Address) | (Backing::Raw, Backing::Raw) => true,
            #[cfg(feature = "std")]
            (Backing::Owned(a), Backing::Owned(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The owned RAM, for handles that outlive a view.
    #[cfg(feature = "std")]
    pub(crate) fn owned(&self) -> Option<&Arc<GuestRam>> {
        match self {
            Backing::Owned(ram) => Some(ram),
            _ => None,
        }
    }
}
