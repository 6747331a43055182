//! rust-vmm's vm-memory traits served by the slot map (feature `vm-memory`,
//! against vm-memory 0.18), so that a VMM whose devices reach guest memory
//! through [`GuestAddressSpace`] (virtio-queue, vhost-user back ends) can
//! switch to memslots without rewriting them.
//!
//! - [`GuestMemorySlots`] is the [`GuestAddressSpace`]: `Send + Sync +
//!   Clone`, one per VM (or per address space), handed to every device.
//! - [`GuestAddressSpace::memory`] returns a [`SlotSnapshot`]: a view of the
//!   map pinned on the calling thread's own reader. It dereferences to a
//!   [`SlotMemory`], the [`GuestMemory`] devices use, whose `get_slices` and
//!   `check_range` are told whether an access writes; vm-memory's blanket
//!   implementation gives it [`Bytes<GuestAddress>`](::vm_memory::Bytes).
//! - [`SlotMemory::regions`] (also its `physical_memory`) is a
//!   [`SlotRegions`], a [`GuestMemoryBackend`] whose `find_region` is the
//!   map's lookup (index and last-used cache) and whose `iter` yields the
//!   slots in guest-address order.
//! - Each slot is a [`SlotRegion`] ([`GuestMemoryRegion`], with
//!   `get_host_address`, `get_slice` and `Bytes<MemoryRegionAddress>`). A
//!   slot made with [`Writer::create`](crate::Writer::create) (a host
//!   address number only) is a region whose accesses fail with
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
//! assert_eq!(mem.regions().num_regions(), 1);
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
//! wait-free (as the crate docs qualify it: one atomic exchange) and lets the
//! writer know when old memory is unreachable:
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
//!
//! # `READONLY` slots
//!
//! A `READONLY` slot's host memory need only be readable (a ROM the VMM
//! mapped `PROT_READ` for [`Writer::create_raw`](crate::Writer::create_raw)),
//! so the adapter never writes it: where vm-memory says whether an access
//! writes, a write is refused and a read served; where it does not, the
//! slot is refused.
//!
//! - Refused with `IOError` (`PermissionDenied`): every write through
//!   [`SlotMemory`] (`write`, `write_slice`, `write_obj`, `store`,
//!   `read_volatile_from`, and `get_slices` with `Permissions::Write`, which
//!   is how virtio-queue's `Writer` and used-ring updates reach memory) and
//!   through a region's `Bytes`. A descriptor chain whose writable buffer
//!   lies in a `READONLY` slot gets no `Writer` (`Error::InvalidChain`), a
//!   queue whose used ring lies in one is not valid, and `check_range` with
//!   `Permissions::Write` is false there.
//! - Served: every read (`read`, `read_obj`, `load`, `write_volatile_to`,
//!   `get_slices` with `Permissions::Read`, virtio-queue's `Reader`).
//! - Refused on a `READONLY` slot whatever the access, because a caller may
//!   write through what they return: a region's `get_slice`,
//!   `as_volatile_slice` and `get_host_address`, and [`SlotRegions`]'s
//!   accessors, which go through them (`get_slice`, `get_slices`,
//!   `get_host_address`, and its blanket `Bytes`, reads too: read through
//!   [`SlotMemory`]). Code that knows it only reads takes
//!   [`Slot::hva`](crate::Slot::hva) from [`SlotRegion::slot`].
//!
//! ```
//! use std::sync::Arc;
//! use memslots::vm_memory::GuestMemorySlots;
//! use memslots::{Config, Flags, GuestRam, Memslots, SlotKey};
//! use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemory, Permissions};
//!
//! let slots = Memslots::new(Config::default())?;
//! let rom = Arc::new(GuestRam::new(2 << 20)?);
//! slots.writer()?.create_owned(SlotKey { id: 0, as_id: 0 }, 0xffe00, Flags::READONLY, rom)?;
//! let mem = GuestMemorySlots::new(slots).memory();
//! let reset_vector = GuestAddress(0xffff_fff0);
//! assert!(mem.write_obj(0xf4_u8, reset_vector).is_err());
//! assert!(!mem.check_range(reset_vector, 16, Permissions::Write));
//! assert_eq!(mem.read_obj::<u8>(reset_vector)?, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! vm-memory's `VolatileSlice` has no read-only form: a slice that
//! `get_slices` returned for `Permissions::Read` may be written, and over
//! read-only memory that write faults. Write only through slices asked for
//! with `Permissions::Write`, as virtio-queue does (with vm-memory's IOMMU
//! the same rule keeps a device inside its read-only mappings).
//!
//! Against KVM: a guest write to a `KVM_MEM_READONLY` slot exits to
//! userspace as MMIO, for the VMM to emulate or drop, but a device's write
//! goes through the VMM's own mapping, and crashes the VMM if that is
//! read-only. Here the device's write fails with an error instead, as a DMA
//! to ROM does behind an IOMMU; the device fails the request (or marks
//! itself broken). A VMM that emulates a writable ROM (flash) writes
//! through its own mapping, not through the adapter. The crate's own
//! [`View::write`](crate::View::write) refuses `READONLY` slots too.
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
//! [`GuestMemory`]: ::vm_memory::GuestMemory
//! [`GuestMemoryBackend`]: ::vm_memory::GuestMemoryBackend
//! [`GuestMemoryRegion`]: ::vm_memory::GuestMemoryRegion
//! [`GuestMemoryRegion::B`]: ::vm_memory::GuestMemoryRegion::B
//!
//! # Invariants
//!
//! The `unsafe` code of this module relies on these, and cites them as V1
//! to V4 (with the `map` module's invariants 1 to 8).
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
//! - V4. A slice or host address of a `READONLY` slot is made only for an
//!   access that does not write (`get_slices` and `check_range` of
//!   [`SlotMemory`] with permissions without `Write`, the region's `Bytes`
//!   reads), and handed only to code that reads through it (vm-memory's
//!   and virtio-queue's readers, a caller that asked for
//!   `Permissions::Read`); every path that may write checks the flag first.

mod bitmap;
mod memory;
mod region;
mod space;

pub use bitmap::{DirtyLog, DirtySlice};
pub use memory::{SlotMemory, SlotRegions};
pub use region::SlotRegion;
pub use space::{GuestMemorySlots, SlotSnapshot};

static_assertions::assert_impl_all!(GuestMemorySlots: Send, Sync, Clone, core::fmt::Debug);
static_assertions::assert_impl_all!(SlotSnapshot: Clone, core::fmt::Debug);
static_assertions::assert_not_impl_any!(SlotSnapshot: Send, Sync);
static_assertions::assert_not_impl_any!(SlotMemory: Send, Sync);
static_assertions::assert_not_impl_any!(SlotRegions: Send, Sync);
