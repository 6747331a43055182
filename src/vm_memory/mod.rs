//! rust-vmm's vm-memory traits served by the slot map (feature `vm-memory`,
//! against vm-memory 0.18), so that a VMM whose devices reach guest memory
//! through [`GuestAddressSpace`] (virtio-queue, vhost-user back ends) can
//! switch to memslots without rewriting them.
//!
//! - [`GuestMemorySlots`] is the [`GuestAddressSpace`]: `Send + Sync +
//!   Clone`, one per VM (or per address space), handed to every device.
//! - [`GuestAddressSpace::memory`] returns a [`SlotSnapshot`]: a view of the
//!   map pinned on the calling thread's own reader. It dereferences to a
//!   [`SlotMemory`], a [`GuestMemoryBackend`] whose `find_region` is the
//!   map's lookup (index and last-used cache) and whose `iter` yields the
//!   slots in guest-address order. vm-memory's blanket implementations then
//!   give it [`GuestMemory`](::vm_memory::GuestMemory) and
//!   [`Bytes<GuestAddress>`](::vm_memory::Bytes).
//! - Each slot is a [`SlotRegion`] ([`GuestMemoryRegion`], with
//!   `get_host_address`, `get_slice` and the byte accessors of
//!   [`GuestMemoryRegionBytes`](::vm_memory::GuestMemoryRegionBytes)). A slot
//!   made with [`Writer::create`](crate::Writer::create) (a host address
//!   number only) is a region whose accesses fail with
//!   `HostAddressNotAvailable`; give guest memory with
//!   [`Writer::create_owned`](crate::Writer::create_owned) or
//!   [`Writer::create_raw`](crate::Writer::create_raw).
//!
//! ```
//! use std::sync::Arc;
//! use memslots::vm_memory::GuestMemorySlots;
//! use memslots::{Config, Flags, GuestRam, Memslots, SlotKey};
//! use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend};
//!
//! let slots = Memslots::new(Config::default())?;
//! let mut writer = slots.writer()?;
//! let ram = Arc::new(GuestRam::new(2 << 20)?);
//! writer.create_owned(SlotKey { id: 0, as_id: 0 }, 0x100, Flags::empty(), ram)?;
//!
//! let space = GuestMemorySlots::new(slots.clone()); // Send + Sync: give it to devices
//! let mem = space.memory(); // pins this thread's reader
//! mem.write_obj(0xfeed_u64, GuestAddress(0x10_0ff8))?;
//! assert_eq!(mem.read_obj::<u64>(GuestAddress(0x10_0ff8))?, 0xfeed);
//! assert_eq!(mem.num_regions(), 1);
//! drop(mem); // before the writer's next change can complete
//! writer.move_to(SlotKey { id: 0, as_id: 0 }, 0x400)?;
//! assert_eq!(space.memory().read_obj::<u64>(GuestAddress(0x40_0ff8))?, 0xfeed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Rules that differ from `GuestMemoryAtomic`
//!
//! `GuestMemoryAtomic::memory()` loads an `Arc` of an immutable region list:
//! a guard may go to any thread and live for ever, keeping old regions
//! mapped. Here a snapshot is an epoch pin, which is what keeps `memory()`
//! wait-free and lets the writer know when old memory is unreachable:
//!
//! - **A snapshot stays on the thread that took it** (`SlotSnapshot` is
//!   neither `Send` nor `Sync`, and neither is a descriptor chain holding
//!   one). Each thread that calls `memory()` gets its own reader, registered
//!   on its first call (that call allocates; later ones do not).
//! - **Hold it for one batch of work**, then drop it: every change of the
//!   [`Writer`](crate::Writer) waits until the snapshots taken before it are
//!   dropped. Do not keep one in a device's state or across a blocking call
//!   (`epoll_wait`, a read from a socket, `KVM_RUN`); for blocking I/O into
//!   guest memory take a [`GuestRange`](crate::GuestRange) through
//!   [`SlotMemory::view`]. A snapshot on the writer's own thread makes the
//!   writer refuse to start a change
//!   ([`Error::ViewHeldByWriterThread`](crate::Error::ViewHeldByWriterThread)).
//!   A leaked snapshot (`mem::forget`) stalls the writer for good: the
//!   thread's record and its reader leak with it.
//! - **All snapshots of one handle (and its clones) alive on one thread
//!   share one layout.** A clone, or a `memory()` call while the thread
//!   already holds a snapshot of that handle, returns the layout of the
//!   snapshot already held (the writer cannot finish a change meanwhile
//!   anyway); the next `memory()` after the thread dropped them all sees the
//!   current layout. Handles made separately with [`GuestMemorySlots::new`]
//!   have readers of their own, and their snapshots may show different
//!   layouts at the same time.
//! - A thread keeps its reader (and through it the map) after the last
//!   clone of a `GuestMemorySlots` is dropped, until it exits or takes its
//!   first snapshot of a handle it has not used before (which clears the
//!   records of dropped handles).
//! - `READONLY` binds the guest (and this crate's own
//!   [`View::write`](crate::View::write)), as `KVM_MEM_READONLY` does:
//!   vm-memory's backend interface has no permissions, so device writes
//!   through it reach a `READONLY` slot, as the VMM's own writes to the
//!   mapping of a KVM read-only slot do.
//!
//! # Dirty pages
//!
//! A region's bitmap ([`GuestMemoryRegion::B`] is [`DirtyLog`]) is the
//! slot's own dirty log, the one [`Writer::get_dirty_log`] harvests, at page
//! granularity. Tracked: every write vm-memory makes through a
//! `VolatileSlice` of a slot with `LOG_DIRTY_PAGES` (`write`, `write_slice`,
//! `write_obj`, `store`, `read_volatile_from`, virtio-queue's `Writer` and
//! used-ring updates). Not tracked: writes through `get_host_address` or a
//! slice's raw pointer (`ptr_guard_mut`) until the caller marks them with
//! `region.bitmap().mark_dirty(..)`, as vm-memory requires of every backend;
//! writes to a slot without `LOG_DIRTY_PAGES` (its bitmap is empty and
//! `dirty_at` is false); and writes made under a snapshot taken before
//! logging was switched on (the switch returns only after those snapshots
//! are dropped, so only writes during the `set_flags` call itself).
//!
//! [`Writer::get_dirty_log`]: crate::Writer::get_dirty_log
//! [`GuestAddressSpace`]: ::vm_memory::GuestAddressSpace
//! [`GuestAddressSpace::memory`]: ::vm_memory::GuestAddressSpace::memory
//! [`GuestMemoryBackend`]: ::vm_memory::GuestMemoryBackend
//! [`GuestMemoryRegion`]: ::vm_memory::GuestMemoryRegion
//! [`GuestMemoryRegion::B`]: ::vm_memory::GuestMemoryRegion::B
//!
//! # Invariants
//!
//! The `unsafe` code of this module relies on these, and cites them as V1
//! to V3 (with the `map` module's invariants 1 to 8).
//!
//! - V1. [`SlotRegion`] and [`DirtyLog`] are `#[repr(transparent)]`
//!   wrappers of a [`Slot`](crate::Slot) and of a slot's dirty bitmap: a
//!   reference to the inner value may be reinterpreted as one to the
//!   wrapper, with the same lifetime.
//! - V2. The `View<'static>` in a [`SlotMemory`] borrows the reader of the
//!   per-thread record that holds it; the lifetime is erased because both
//!   live in one `Rc` allocation, whose address does not change. The view is
//!   dropped before the reader: it exists only while a snapshot of that
//!   record is alive, every snapshot holds an `Rc` of the record, and the
//!   record declares the view before the reader.
//! - V3. A record's view cell is written only when its snapshot count is
//!   zero (taking the first snapshot, dropping the last), so no reference
//!   handed out through a snapshot can see the write; while the count is
//!   not zero the cell holds a view.

mod bitmap;
mod memory;
mod region;
mod space;

pub use bitmap::{DirtyLog, DirtySlice};
pub use memory::SlotMemory;
pub use region::SlotRegion;
pub use space::{GuestMemorySlots, SlotSnapshot};

static_assertions::assert_impl_all!(GuestMemorySlots: Send, Sync, Clone, core::fmt::Debug);
static_assertions::assert_impl_all!(SlotSnapshot: Clone, core::fmt::Debug);
static_assertions::assert_not_impl_any!(SlotSnapshot: Send, Sync);
static_assertions::assert_not_impl_any!(SlotMemory: Send, Sync);
