//! Guest memory: what stands behind a slot (owned RAM, raw registrations,
//! or only an address), dirty logging, and the accessors that read and
//! write guest memory through a view.
//!
//! The lower modules (`backing`, `dirty`, `ram`) know nothing of the slot
//! map, which stores them in its slots; the accessors above them work
//! through the map's views.

mod access;
pub(crate) mod backing;
mod cache;
mod copy;
#[cfg(not(loom))]
pub(crate) mod dirty;
#[cfg(loom)]
pub mod dirty;
#[cfg(feature = "std")]
mod ram;
#[cfg(feature = "std")]
mod range;

pub use access::{AccessError, AccessFailure};
pub use cache::GpaCache;
#[cfg(feature = "std")]
pub use ram::GuestRam;
#[cfg(feature = "std")]
pub use range::GuestRange;
