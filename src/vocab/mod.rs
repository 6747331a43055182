//! Layer 2, the vocabulary: the types every layer above names a slot and a
//! change with. Only the base lies below it.

pub(crate) mod change;
pub(crate) mod slot;

pub use change::{Change, SlotChange};
pub use slot::{Flags, Region, SlotKey, UserMemoryRegion};
