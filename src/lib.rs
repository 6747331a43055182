//! Guest memory slots in the manner of Linux KVM, as a library: the map from
//! guest physical memory to the host memory behind it, cut into numbered
//! slots, with wait-free lookups for vCPU threads and atomic O(log n) updates
//! by one memory-manager thread.
//!
//! "Wait-free" as the hardware allows it: a lookup under a view is loads and
//! plain stores only, but taking a view is one atomic exchange (a SeqCst swap
//! of the reader's own epoch word; [`View::repin`] makes one when the epoch
//! has moved), and a write through a view marks a dirty log with one atomic
//! `fetch_or` per bitmap word. On x86-64, and on AArch64 with the ARMv8.1 LSE
//! atomics, each of these is a single instruction, so every read-side call
//! finishes in a bounded number of its own steps: wait-free. On ARMv8.0
//! without LSE, and on other load-linked/store-conditional architectures
//! (32-bit Arm, POWER, MIPS), an atomic exchange is a retry loop that starts
//! again whenever its store-conditional fails: lock-free, not wait-free.
//! (Rust's `aarch64-unknown-linux-gnu` picks LSE at run time where the CPU
//! has it; `aarch64-unknown-none` needs `-C target-feature=+lse`.) On every
//! architecture the read side never takes a lock, never waits for the
//! writer, and never calls the allocator.
//!
//! Each address space keeps two slot sets. Readers look up in the active set;
//! the writer edits the inactive one, swaps, waits out a grace period (one
//! epoch word per registered reader; readers never wait, never allocate) and
//! brings the other set up to date. Both sets share one copy of each slot. Deleting or moving a
//! slot first publishes an INVALID copy, so no reader can use the old range
//! while the change is under way.
//!
//! ```
//! use memslots::{Config, Flags, Memslots, Region, SlotKey};
//!
//! let slots = Memslots::new(Config::default())?;
//! let mut writer = slots.writer()?;
//! writer.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 256, hva: 0x7f00_0000_0000, flags: Flags::empty() })?;
//! writer.move_to(SlotKey { id: 0, as_id: 0 }, 0x100)?;
//!
//! let vcpu = slots.reader(); // one per vCPU thread
//! let view = vcpu.pin();
//! assert_eq!(view.gfn_to_hva(0x101), Some(0x7f00_0000_1000));
//! assert!(view.gfn_to_slot(0x0).is_none());
//! assert_eq!(view.slots_in_gfn_range(0..0x1000).count(), 1);
//! # Ok::<(), memslots::Error>(())
//! ```
//!
//! # Threads and handles
//!
//! - [`Memslots`] is `Send + Sync + Clone`: every clone shares the map.
//! - A [`Writer<B>`](Writer) is always `Send` (every [`Backend`] is `Send`),
//!   and `Sync` exactly when its backend `B` is `Sync`. The default `Writer`
//!   (with [`NoBackend`]) is both; a writer whose backend holds a `Cell` or
//!   an `Rc` is `Send` only. A VMM keeps it in its memory manager; behind a
//!   `Mutex` it can be shared whatever its backend, since a mutex needs only
//!   `Send`. Its changes take `&mut self`.
//! - A [`Reader`] is `Send` but not `Sync`: build vCPU objects on one thread
//!   and move them to theirs.
//! - A [`View`] is neither `Send` nor `Sync`: it stays on the thread that
//!   took it. Do not hold one across `KVM_RUN` or any blocking call, nor on
//!   the writer's thread.
//! - [`Slot`], [`GpaCache`], [`GuestRam`], [`GuestRange`] and [`ZapBinner`]
//!   are `Send + Sync`; so are the plain values ([`Config`], [`Region`],
//!   [`UserMemoryRegion`], [`Error`], ...).
//!
//! How the writer waits for views to end is a [`Wait`] strategy the
//! embedder may choose.
//!
//! # Guest memory
//!
//! A slot made with [`Writer::create_owned`] (crate-owned [`GuestRam`], with
//! `std`) or [`Writer::create_raw`] (memory the embedder mapped) can be read
//! and written through a view: [`View::read`], [`View::write`],
//! [`View::read_obj`], [`View::write_obj`], across pages and slots, marking
//! dirty logs. Guest memory can change under the host at any time, so the
//! crate never makes Rust references into it: accesses of up to 8 bytes are
//! naturally aligned volatile loads and stores (an aligned `u64` is one
//! access, as the guest's own would be), larger ones use
//! `copy_nonoverlapping`, which may tear as it does between two vCPUs.
//! [`View::range`] gives a handle that outlives the view, for blocking I/O;
//! [`GpaCache`] keeps a translation between views.
//!
//! # When host memory may be unmapped
//!
//! Once the call that deletes a slot has returned ([`Writer::delete`], a
//! [`Writer::set_region`] of size 0, or a [`Batch`] that deletes it), no
//! reader can reach the slot through the map any more: the writer returns
//! only after a grace period. From then on the VMM may unmap the host memory
//! it registered for it. A [`Writer::move_to`] frees no host memory: the
//! moved slot keeps its host address and only its guest address changes, so
//! its host range stays in use. A host address a reader copied out of a view
//! is the reader's own to stop using.
//!
//! # Layers
//!
//! The crate is built in layers whose imports point down only (checked in
//! CI; `docs/architecture.md` has the picture):
//!
//! 1. `base`: gfn arithmetic, the loom shim for atomics, wait strategies;
//! 2. `vocab`: [`SlotKey`], [`Flags`], [`Region`], [`UserMemoryRegion`],
//!    [`Change`], [`SlotChange`] (and, on its own, the [`ZapBinner`]);
//! 3. `error`: [`Error`] and [`Error::errno`];
//! 4. [`backend`]: the [`Backend`] seam;
//! 5. `memory`: host memory ([`GuestRam`], the dirty bitmap, the copies);
//! 6. `map`: the slot map ([`Memslots`], [`Writer`], [`Reader`], [`View`]);
//! 7. `access`: guest access through a view ([`View::read`],
//!    [`GpaCache`], [`GuestRange`]);
//! 8. integrations: `kvm` (feature `kvm`) and `vm_memory` (feature
//!    `vm-memory`).
//!
//! # Features
//!
//! `std` (default) uses the standard library; without it the crate needs
//! only `core` and `alloc`. `vm-memory` (implies `std`) serves rust-vmm's
//! vm-memory traits from the slot map, for VMMs whose devices use them: see
//! `vm_memory`. `loom` is for model checking only.

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod access;
pub mod backend;
mod base;
mod error;
#[cfg(feature = "kvm")]
pub mod kvm;
mod map;
mod memory;
#[cfg(feature = "vm-memory")]
pub mod vm_memory;
mod vocab;
mod zap;

#[cfg(feature = "std")]
pub use access::GuestRange;
pub use access::{AccessError, AccessFailure, GpaCache};
pub use backend::{Backend, NoBackend};
pub use base::addr::{gfn_to_gpa, gpa_to_gfn, Gfn, Hva, GFN_LIMIT, MAX_SLOT_PAGES, PAGE_SHIFT, PAGE_SIZE};
pub use base::wait::{SpinThenYield, Stall, Wait, STALL_STEPS};
pub use error::Error;
#[cfg(all(feature = "kvm", target_arch = "x86_64"))]
pub use kvm::{Exit, KvmBackend, KvmWriter, Vcpu, VcpuGate};
#[cfg(loom)]
pub use map::LoomFault;
pub use map::{Batch, BatchError, Config, Lookup, Memslots, Reader, Slot, View, Writer, WriterRefused};
#[cfg(loom)]
#[doc(hidden)]
pub use memory::dirty::DirtyBitmap as LoomDirtyBitmap;
#[cfg(feature = "std")]
pub use memory::GuestRam;
pub use vocab::{Change, Flags, Region, SlotChange, SlotKey, UserMemoryRegion};
pub use zap::{ZapBinner, ZapBins, FIXED_MTRR_GFNS, FULL_ZAP};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

static_assertions::assert_impl_all!(Memslots: Send, Sync, Clone, core::fmt::Debug);
static_assertions::assert_impl_all!(Writer: Send, Sync, core::fmt::Debug);
static_assertions::assert_impl_all!(Writer<SendOnlyBackend>: Send);
static_assertions::assert_not_impl_any!(Writer<SendOnlyBackend>: Sync);
static_assertions::assert_impl_all!(Reader: Send, core::fmt::Debug);
static_assertions::assert_not_impl_any!(Reader: Sync);
static_assertions::assert_impl_all!(View<'static>: core::fmt::Debug);
static_assertions::assert_not_impl_any!(View<'static>: Send, Sync);
static_assertions::assert_impl_all!(Slot: Send, Sync, core::fmt::Debug);
static_assertions::assert_impl_all!(ZapBinner: Send, Sync, core::fmt::Debug);
static_assertions::assert_impl_all!(Config: Send, Sync, Copy, core::fmt::Debug);
static_assertions::assert_impl_all!(Region: Send, Sync, Copy, core::fmt::Debug);
static_assertions::assert_impl_all!(UserMemoryRegion: Send, Sync, Copy, core::fmt::Debug);
static_assertions::assert_impl_all!(Error: Send, Sync, Copy, core::fmt::Debug, core::fmt::Display);
static_assertions::assert_impl_all!(GpaCache: Send, Sync, core::fmt::Debug);
#[cfg(feature = "std")]
static_assertions::assert_impl_all!(GuestRam: Send, Sync, core::fmt::Debug);
#[cfg(feature = "std")]
static_assertions::assert_impl_all!(GuestRange: Send, Sync, core::fmt::Debug);

/// A backend that is `Send` but not `Sync` (it holds a `Cell`), for the
/// assertions above: the writer is `Sync` only with a `Sync` backend.
#[allow(dead_code)]
struct SendOnlyBackend(core::cell::Cell<u32>);

impl Backend for SendOnlyBackend {}
