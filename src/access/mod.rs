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
///
/// ```
/// use memslots::{AccessFailure, Config, Flags, Memslots, Region};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// // A slot from a bare host address translates, but the crate cannot reach its memory.
/// writer.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
/// let vcpu = slots.reader();
/// let view = vcpu.pin();
/// let failure = |gpa, len| view.read(gpa, &mut vec![0; len]).err().map(|e| e.failure);
/// assert_eq!(failure(0x1000, 8), Some(AccessFailure::NoHostMemory));
/// assert_eq!(failure(0x10_0000, 8), Some(AccessFailure::NotMapped));
/// assert_eq!(failure(0x1000, 0), Some(AccessFailure::Empty));
/// # Ok::<(), memslots::Error>(())
/// ```
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
///
/// ```
/// # #[cfg(feature = "std")] {
/// use std::sync::Arc;
/// use memslots::{AccessError, AccessFailure, Config, Flags, GuestRam, Memslots, SlotKey};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// // One page at gfn 0x10, then a hole.
/// writer.create_owned(SlotKey { id: 0, as_id: 0 }, 0x10, Flags::empty(), Arc::new(GuestRam::new(4096)?))?;
/// let vcpu = slots.reader();
/// let view = vcpu.pin();
/// let error = view.write(0x10_ff8, &[0xab; 16]).err().expect("runs into the hole");
/// assert_eq!(error, AccessError { gpa: 0x11_000, done: 8, failure: AccessFailure::NotMapped });
/// assert_eq!(view.read_obj::<u64>(0x10_ff8)?, u64::from_ne_bytes([0xab; 8])); // the first 8 bytes landed
/// assert_eq!(error.to_string(), "guest access stopped at 0x11000 after 8 bytes: no slot");
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
