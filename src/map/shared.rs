//! The state the writer and the readers share.

use alloc::boxed::Box;

use crate::base::sync::{AtomicBool, AtomicU64, AtomicUsize};
use crate::base::wait::Wait;
use crate::map::epoch::Epochs;
use crate::map::space::AddressSpace;
use crate::map::Config;

/// Everything behind a `Memslots`; readers and the writer each hold an `Arc`.
pub(crate) struct Inner {
    pub(crate) epochs: Epochs,
    pub(crate) spaces: Box<[AddressSpace]>,
    pub(crate) config: Config,
    pub(crate) wait: Box<dyn Wait>,
    /// Whether a writer handle is alive (invariant 7).
    pub(crate) writer_taken: AtomicBool,
    /// A writer unwound in the middle of a change: the sets may be out of
    /// step, so no writer may change them again.
    pub(crate) poisoned: AtomicBool,
    /// Pages in all slots; only the writer changes it.
    pub(crate) total_pages: AtomicU64,
    /// Slot objects allocated and not yet freed.
    pub(crate) slot_objects: AtomicUsize,
    /// A number no other map of this process has, for caches that must not
    /// be used with another map's views.
    pub(crate) id: u64,
}

/// The source of map ids. A plain `core` atomic even under loom: it numbers
/// maps and orders nothing.
static NEXT_ID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

impl Inner {
    pub(crate) fn new(spaces: Box<[AddressSpace]>, config: Config, wait: Box<dyn Wait>) -> Inner {
        Inner {
            epochs: Epochs::new(),
            spaces,
            config,
            wait,
            writer_taken: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            total_pages: AtomicU64::new(0),
            slot_objects: AtomicUsize::new(0),
            id: NEXT_ID.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The generation of each address space's active set.
    pub(crate) fn generations(&self) -> impl Iterator<Item = u64> + Clone + '_ {
        self.spaces.iter().map(AddressSpace::generation)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No reader or writer is left (each holds an `Arc<Inner>`): free every
        // slot once, whether one set or both hold it.
        for space in self.spaces.iter_mut() {
            let [first, second] = space.sets_mut();
            // SAFETY: `&mut self`: nothing else can reach the sets.
            let (first, second) = unsafe { (first.deref(), second.deref()) };
            for slot in second.slot_ptrs() {
                // SAFETY: the id is in `second`, so it names a live slot
                // (invariant 6).
                let id = unsafe { slot.get() }.id();
                if first.ptr_by_id(id) != Some(slot) {
                    // SAFETY: only `second` holds it, and nothing else can.
                    unsafe { slot.free() };
                }
            }
            for slot in first.slot_ptrs() {
                // SAFETY: no set, cache or reader can reach it any more.
                unsafe { slot.free() };
            }
        }
    }
}
