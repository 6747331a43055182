//! Layer 5, host memory: what stands behind a slot's host addresses (owned
//! RAM, a raw registration, or only an address number), the dirty bitmap,
//! and the routines that copy to and from guest memory. It knows nothing of
//! the slot map, which stores these in its slots; the accessors that read
//! and write guest memory through a view are the layer above the map
//! (`access`).

pub(crate) mod backing;
pub(crate) mod copy;
#[cfg(not(loom))]
pub(crate) mod dirty;
#[cfg(loom)]
pub mod dirty;
#[cfg(feature = "std")]
pub(crate) mod ram;

#[cfg(feature = "std")]
pub use ram::GuestRam;
