//! The address-space handle and its snapshots: one reader per thread and
//! handle, found through a thread-local list, pinned by the first snapshot
//! and unpinned by the last.

use alloc::rc::Rc;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell, UnsafeCell};
use core::fmt;
use core::ops::Deref;

use ::vm_memory::GuestAddressSpace;

use crate::error::Error;
use crate::map::{Memslots, Reader, View};
use crate::vm_memory::memory::SlotMemory;

/// A guest address space over a slot map for the vm-memory traits: the
/// [`GuestAddressSpace`] a VMM hands to its devices instead of a
/// `GuestMemoryAtomic<GuestMemoryMmap>`. `Send + Sync`; clones share it.
///
/// [`memory`](GuestAddressSpace::memory) takes a [`SlotSnapshot`] on the
/// calling thread: one atomic exchange, wait-free where the hardware makes it
/// so (see the crate docs), and allocation-free after the thread's first
/// call. The rules for holding snapshots are in the
/// [module docs](crate::vm_memory#rules-that-differ-from-guestmemoryatomic).
#[derive(Clone)]
pub struct GuestMemorySlots {
    shared: Arc<Shared>,
}

/// What the clones of a handle share; threads name it by address.
struct Shared {
    slots: Memslots,
    as_id: u16,
}

impl GuestMemorySlots {
    /// The address space 0 of `slots`.
    pub fn new(slots: Memslots) -> GuestMemorySlots {
        GuestMemorySlots { shared: Arc::new(Shared { slots, as_id: 0 }) }
    }

    /// The address space `as_id` of `slots` (1 is SMM on x86).
    ///
    /// # Errors
    /// [`Error::InvalidAddressSpace`] if the map has no such address space.
    pub fn with_address_space(slots: Memslots, as_id: u16) -> Result<GuestMemorySlots, Error> {
        if as_id >= slots.config().address_spaces {
            return Err(Error::InvalidAddressSpace { as_id: as_id.into() });
        }
        Ok(GuestMemorySlots { shared: Arc::new(Shared { slots, as_id }) })
    }

    /// The slot map.
    pub fn slots(&self) -> &Memslots {
        &self.shared.slots
    }

    /// The address space snapshots show.
    pub fn address_space(&self) -> u16 {
        self.shared.as_id
    }

    /// This thread's record for the handle, registered on first use.
    #[inline]
    fn thread_reader(&self) -> Rc<ThreadReader> {
        let shared = &self.shared;
        let found = THREAD_READERS.try_with(|known| {
            let mut known = known.try_borrow_mut().ok()?;
            match known.iter().find(|entry| core::ptr::eq(entry.shared.as_ptr(), Arc::as_ptr(shared))) {
                Some(entry) => Some(entry.reader.clone()),
                None => Some(register(&mut known, shared)),
            }
        });
        // Without the list (the thread is exiting, or a drop run while the
        // list is being changed): a record for this snapshot alone.
        found.ok().flatten().unwrap_or_else(|| Rc::new(ThreadReader::new(shared)))
    }
}

/// Registers a reader for `shared` on this thread: its first snapshot.
#[cold]
fn register(known: &mut Vec<KnownHandle>, shared: &Arc<Shared>) -> Rc<ThreadReader> {
    // A dead handle's record keeps its map alive; drop it now.
    known.retain(|entry| entry.shared.strong_count() > 0);
    let reader = Rc::new(ThreadReader::new(shared));
    known.push(KnownHandle { shared: Arc::downgrade(shared), reader: reader.clone() });
    reader
}

impl GuestAddressSpace for GuestMemorySlots {
    type M = SlotMemory;
    type T = SlotSnapshot;

    /// A snapshot of the current layout, or of the layout of the snapshots
    /// this thread already holds.
    #[inline]
    fn memory(&self) -> SlotSnapshot {
        let reader = self.thread_reader();
        reader.enter();
        SlotSnapshot { reader }
    }
}

impl fmt::Debug for GuestMemorySlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestMemorySlots").field("address_space", &self.shared.as_id).finish_non_exhaustive()
    }
}

/// A handle this thread has used, with the thread's reader for it. The
/// `Weak` keeps the handle's allocation, so its address names no other
/// handle while the entry exists.
struct KnownHandle {
    shared: Weak<Shared>,
    reader: Rc<ThreadReader>,
}

std::thread_local! {
    static THREAD_READERS: RefCell<Vec<KnownHandle>> = const { RefCell::new(Vec::new()) };
}

/// One thread's reader for one handle, and the view its snapshots share
/// while any is alive.
struct ThreadReader {
    /// Declared before `reader`, which it borrows (V2); written only with
    /// no snapshot alive (V3).
    memory: UnsafeCell<Option<SlotMemory>>,
    snapshots: Cell<usize>,
    reader: Reader,
}

impl ThreadReader {
    fn new(shared: &Shared) -> ThreadReader {
        let mut reader = shared.slots.reader();
        // Cannot fail: the handle's address space was checked against this
        // map when the handle was made.
        let _ = reader.set_address_space(shared.as_id);
        ThreadReader { memory: UnsafeCell::new(None), snapshots: Cell::new(0), reader }
    }

    /// Counts a new snapshot; the first pins the reader.
    #[inline]
    fn enter(&self) {
        let snapshots = self.snapshots.get();
        if snapshots == 0 {
            let view = self.reader.pin();
            // SAFETY: V2: the view is stored beside its reader and dropped
            // before it.
            let view = unsafe { core::mem::transmute::<View<'_>, View<'static>>(view) };
            // SAFETY: V3: no snapshot is alive, so nothing borrows the cell.
            unsafe { *self.memory.get() = Some(SlotMemory::new(view)) };
        }
        // Each snapshot holds an `Rc` of this record, so the count stays
        // below the `Rc`'s strong count, which cannot overflow.
        self.snapshots.set(snapshots + 1);
    }

    /// Counts a dropped snapshot; the last ends the view.
    #[inline]
    fn leave(&self) {
        let snapshots = self.snapshots.get() - 1;
        self.snapshots.set(snapshots);
        if snapshots == 0 {
            // SAFETY: V3: the last snapshot is being dropped, so nothing
            // borrows the cell.
            unsafe { *self.memory.get() = None };
        }
    }
}

/// The guest memory one thread sees, from
/// [`GuestMemorySlots::memory`](GuestAddressSpace::memory): dereferences to
/// a [`SlotMemory`]. Cheap to clone; clones share the layout. Neither `Send`
/// nor `Sync`; while any snapshot is alive the map's writer cannot finish a
/// change, so drop it after each batch of work.
pub struct SlotSnapshot {
    reader: Rc<ThreadReader>,
}

impl Deref for SlotSnapshot {
    type Target = SlotMemory;

    #[inline]
    fn deref(&self) -> &SlotMemory {
        // SAFETY: V3: this snapshot is alive, so the cell holds a view and
        // is not written while the reference lives (it borrows `self`).
        let memory = unsafe { &*self.reader.memory.get() };
        memory.as_ref().unwrap_or_else(|| unreachable!("V3: a live snapshot has a view"))
    }
}

impl Clone for SlotSnapshot {
    #[inline]
    fn clone(&self) -> SlotSnapshot {
        let reader = self.reader.clone();
        reader.enter();
        SlotSnapshot { reader }
    }
}

impl Drop for SlotSnapshot {
    #[inline]
    fn drop(&mut self) {
        self.reader.leave();
    }
}

impl fmt::Debug for SlotSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SlotSnapshot").field(&**self).finish()
    }
}

#[cfg(test)]
mod tests {
    use ::vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryRegion};

    use super::GuestMemorySlots;
    use crate::{Config, Flags, Memslots, Region};

    /// Snapshots, clones and nested `memory()` calls dropped in every order,
    /// across changes and two handles (slots without host memory, so this
    /// also runs under miri): each snapshot keeps its layout while it lives,
    /// and a fresh one sees the current layout.
    #[test]
    fn snapshots_drop_in_any_order() {
        let slots = Memslots::new(Config::default().with_address_spaces(1)).unwrap();
        let mut w = slots.writer().unwrap();
        let region =
            |id: u16, base_gfn| Region { id, as_id: 0, base_gfn, npages: 1, hva: 0x1000, flags: Flags::empty() };
        let (a, b) = (GuestMemorySlots::new(slots.clone()), GuestMemorySlots::new(slots.clone()));
        for round in 0..4u16 {
            w.create(region(round, u64::from(round))).unwrap();
            let first = a.memory();
            let clone = first.clone();
            let nested = a.memory();
            let other = b.memory();
            for snapshot in [&first, &clone, &nested, &other] {
                assert_eq!(snapshot.regions().num_regions(), usize::from(round) + 1);
                let found = snapshot.regions().find_region(GuestAddress(u64::from(round) << 12));
                assert_eq!(found.map(|r| r.start_addr()), Some(GuestAddress(u64::from(round) << 12)));
            }
            // Drop orders rotate with the round.
            let mut held = [Some(first), Some(clone), Some(nested), Some(other)];
            for i in 0..held.len() {
                drop(held[(i + usize::from(round)) % 4].take());
            }
        }
        drop(a.clone());
        assert_eq!(b.memory().regions().num_regions(), 4);
    }
}
