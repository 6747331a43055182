//! Guest memory slots in the manner of Linux KVM, as a library: the map from
//! guest physical memory to the host memory behind it, cut into numbered
//! slots, with wait-free lookups for vCPU threads and atomic O(log n) updates
//! by one memory-manager thread.
//!
//! Each address space keeps two slot sets. Readers look up in the active set;
//! the writer edits the inactive one, swaps, waits out a grace period
//! (crossbeam-epoch, with the crate's own collector) and brings the other set
//! up to date. Both sets share one copy of each slot. Deleting or moving a
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
//! Features: `std` (default) uses the standard library; without it the crate
//! needs only `core` and `alloc`.

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod addr;
mod error;
mod gfn_index;
mod interval;
mod plan;
mod reader;
mod set;
mod slot;
mod space;
mod sync;
mod writer;
mod zap;

use alloc::boxed::Box;
use alloc::sync::Arc;

use crossbeam_epoch::Collector;

pub use addr::{gfn_to_gpa, gpa_to_gfn, Gfn, Hva, GFN_LIMIT, MAX_SLOT_PAGES, PAGE_SHIFT, PAGE_SIZE};
pub use error::Error;
pub use plan::Change;
pub use reader::{Reader, View};
pub use slot::{Flags, Region, Slot, SlotKey};
pub use writer::Writer;
pub use zap::{ZapBinner, ZapBins, FIXED_MTRR_GFNS, FULL_ZAP};

use plan::Limits;
use space::AddressSpace;
use sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The shape of a VM's slot map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Independent guest address spaces; x86 has 2 (normal and SMM).
    pub address_spaces: u16,
    /// Slot ids per address space are `0..max_slots`; x86 KVM allows 32764.
    pub max_slots: u16,
    /// The most pages all slots together may hold.
    pub max_total_pages: u64,
}

impl Default for Config {
    /// x86: two address spaces of 32764 slots, no limit on total pages.
    fn default() -> Config {
        Config { address_spaces: 2, max_slots: 32764, max_total_pages: u64::MAX }
    }
}

/// The slot map of one VM. Cloning it is cheap and shares the map.
#[derive(Clone)]
pub struct Memslots {
    inner: Arc<Inner>,
}

/// State shared by the writer and the readers.
pub(crate) struct Inner {
    // Declared first, so dropped first: dropping the collector runs the
    // still-pending deferred closures, which store into `grace_done`.
    pub(crate) collector: Collector,
    pub(crate) grace_done: AtomicU64,
    pub(crate) spaces: Box<[AddressSpace]>,
    pub(crate) limits: Limits,
    pub(crate) writer_taken: AtomicBool,
    /// Pages in all slots; only the writer uses it.
    pub(crate) total_pages: AtomicU64,
    /// Slot objects allocated and not yet freed.
    pub(crate) slot_objects: AtomicUsize,
}

impl Memslots {
    /// An empty slot map.
    pub fn new(config: Config) -> Result<Memslots, Error> {
        if config.address_spaces == 0 || config.max_slots == 0 {
            return Err(Error::InvalidConfig);
        }
        let spaces = (0..config.address_spaces).map(AddressSpace::new).collect();
        let inner = Inner {
            collector: Collector::new(),
            grace_done: AtomicU64::new(0),
            spaces,
            limits: Limits {
                address_spaces: config.address_spaces,
                max_slots: config.max_slots,
                max_total_pages: config.max_total_pages,
            },
            writer_taken: AtomicBool::new(false),
            total_pages: AtomicU64::new(0),
            slot_objects: AtomicUsize::new(0),
        };
        Ok(Memslots { inner: Arc::new(inner) })
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        let limits = &self.inner.limits;
        Config {
            address_spaces: limits.address_spaces,
            max_slots: limits.max_slots,
            max_total_pages: limits.max_total_pages,
        }
    }

    /// The writer, or [`Error::WriterBusy`] while another one is alive.
    pub fn writer(&self) -> Result<Writer, Error> {
        // Acquire: pairs with the Release store when the previous writer
        // dropped, so its edits to the inactive sets are visible.
        self.inner
            .writer_taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| Error::WriterBusy)?;
        Ok(Writer::new(self.inner.clone()))
    }

    /// A reader for a vCPU thread, with its own last-used-slot cache.
    pub fn reader(&self) -> Reader {
        Reader::new(self.inner.clone(), true)
    }

    /// A reader for a device or VM-wide thread: lookups go through the set's
    /// shared last-used slot.
    pub fn device_reader(&self) -> Reader {
        Reader::new(self.inner.clone(), false)
    }

    /// Slot objects currently allocated. Between updates this is the number
    /// of slots: both sets share one copy of each.
    pub fn slot_objects(&self) -> usize {
        // Relaxed: a statistic.
        self.inner.slot_objects.load(Ordering::Relaxed)
    }

    /// Pages in all slots of all address spaces.
    pub fn total_pages(&self) -> u64 {
        // Relaxed: a statistic.
        self.inner.total_pages.load(Ordering::Relaxed)
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
                // SAFETY: the id is in `second`, so it names a live slot.
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

static_assertions::assert_impl_all!(Memslots: Send, Sync);
static_assertions::assert_not_impl_any!(Reader: Send, Sync);
static_assertions::assert_not_impl_any!(Writer: Send, Sync);
