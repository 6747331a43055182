//! Layer 7, guest access: reading and writing guest memory through a view
//! of the map (`view`), translations kept between views (`cache`), and
//! ranges a device holds across blocking I/O (`range`). It stands on the
//! map and on host memory; nothing below it imports it.

mod cache;
#[cfg(feature = "std")]
mod range;
mod view;

use core::fmt;

pub use cache::GpaCache;
#[cfg(feature = "std")]
pub use range::GuestRange;

/// Why a guest-memory access stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessFailure {
    /// A zero-length access.
    Empty,
    /// No slot holds the address: a hole.
    NotMapped,
    /// A slot holding the address is being deleted or moved (INVALID): the
    /// change is under way. Take a new view and retry, as KVM's fault path
    /// does; once the change is published the address is in the slot's new
    /// place, or a hole.
    Changing,
    /// A write to a `READONLY` slot.
    ReadOnly,
    /// The slot was made from a host address number only
    /// ([`Writer::create`](crate::Writer::create)); the crate cannot reach
    /// its memory.
    NoHostMemory,
    /// The access runs past the end of a [`GuestRange`](crate::GuestRange)
    /// or [`GpaCache`](crate::GpaCache) range, or a cached range past the
    /// top of the guest address space. (The top page of the guest address
    /// space can never be in a slot, so a [`View::read`](crate::View::read) running off the
    /// top stops there with [`AccessFailure::NotMapped`].)
    PastEnd,
}

/// A guest-memory access that did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessError {
    /// The first guest address not accessed.
    pub gpa: u64,
    /// Bytes copied before it (a write may have changed them already).
    pub done: usize,
    /// Why.
    pub failure: AccessFailure,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.failure {
            AccessFailure::Empty => "empty access",
            AccessFailure::NotMapped => "no slot",
            AccessFailure::Changing => "slot being deleted or moved; retry",
            AccessFailure::ReadOnly => "read-only slot",
            AccessFailure::NoHostMemory => "slot without host memory",
            AccessFailure::PastEnd => "past the end of the guest address space",
        };
        write!(f, "guest access stopped at {:#x} after {} bytes: {why}", self.gpa, self.done)
    }
}

impl core::error::Error for AccessError {}

/// Checks a request for `len` bytes at `offset` of a window of `size`
/// bytes (a [`GpaCache`] range, a [`GuestRange`]): not empty, and inside.
fn check_window(offset: usize, len: usize, size: usize) -> Result<(), AccessFailure> {
    if len == 0 {
        return Err(AccessFailure::Empty);
    }
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(AccessFailure::PastEnd);
    }
    Ok(())
}
