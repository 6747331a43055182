//! Layer 1, the base: guest-frame arithmetic (`addr`), the atomics and
//! cells every concurrent part takes through the loom shim (`sync`), and
//! how a thread waits for another (`wait`). Nothing here imports from the
//! rest of the crate.

pub(crate) mod addr;
pub(crate) mod sync;
pub(crate) mod wait;
