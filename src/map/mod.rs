//! Layer 6, the slot map: per address space two slot sets, readers that
//! never wait (wait-free where an atomic exchange is one instruction: see
//! the crate docs), one writer. It stands on host memory (what a slot holds), the
//! backend seam (what the writer tells), the errors, the vocabulary and the
//! base.
//!
//! # Invariants
//!
//! The `unsafe` code of this module relies on these, and cites them by
//! number.
//!
//! 1. In one address space, slots never overlap in gfn space and ids are
//!    unique (the writer's validation, `plan`).
//! 2. Readers only read the active set of an address space, and only inside
//!    a view. The writer mutates a set only while it is inactive and a grace
//!    period has passed since it was last active: every view that could have
//!    loaded it has ended or moved on (`epoch`). The writer may also read
//!    the active set: besides the atomics of its shared last-used slot,
//!    nothing in a set changes but by the writer.
//! 3. A slot object reachable by readers is immutable. A change makes a new
//!    slot object; when the two sets agree they point to the same objects. A
//!    replaced slot is freed by the writer once no set and no cache can hand
//!    it out and a grace period has passed since then.
//! 4. Every swap gives the newly active set a new generation; a generation
//!    never repeats, and one read during a swap carries
//!    `GEN_UPDATE_IN_PROGRESS` and matches none. A reader's own last-used
//!    slot is filled only by a view of a published generation, and while it
//!    holds a slot every live view of the reader has that generation
//!    (`View::new` empties it otherwise), so a lookup uses it unchecked.
//! 5. A change that fails leaves every set, cache and generation exactly as
//!    before: validation runs before anything is published.
//! 6. A set holds only live slots: every pointer in its indexes and its
//!    last-used cache points to an allocated slot for as long as the set
//!    holds it (`Set::replace`'s contract).
//! 7. At most one `Writer` exists per map at a time (`Memslots::writer`), so
//!    only one thread ever edits sets, swaps or frees slots.
//! 8. Reader entries (the epoch words of `epoch`) are allocated when a reader
//!    registers and freed only when the map drops; an entry's link to the
//!    next is fixed before the entry is published, and each entry belongs to
//!    at most one `Reader` at a time.

mod batch;
mod commit;
mod epoch;
mod gfn_index;
mod hva_index;
mod node;
mod op;
mod order;
mod plan;
mod reader;
mod set;
mod shared;
mod slot;
mod space;
mod writer;

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;

pub use batch::Batch;
#[cfg(loom)]
pub use epoch::LoomFault;
pub use op::BatchError;
pub use reader::{Lookup, Reader, View};
pub use slot::Slot;
pub use writer::Writer;

use crate::backend::{Backend, NoBackend};
use crate::base::addr::GFN_LIMIT;
use crate::base::sync::Ordering;
use crate::base::wait::{SpinThenYield, Wait};
use crate::error::Error;
use shared::Inner;

/// The proptest settings of the index tests: 128 cases, or under miri 4
/// and no failure file (its isolation forbids writing one).
#[cfg(test)]
fn index_proptest_config() -> proptest::prelude::ProptestConfig {
    use proptest::prelude::ProptestConfig;
    if cfg!(miri) {
        ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::with_cases(128)
    }
}
use space::AddressSpace;

/// The shape of a VM's slot map.
///
/// Marked `#[non_exhaustive]` so that it can grow without breaking users:
/// build one with [`Config::new`] (or [`Config::default`]) and the `with_`
/// setters; the fields stay readable.
///
/// ```
/// use memslots::Config;
///
/// // One address space of 512 slots, guest physical addresses below 2^46.
/// let config = Config::new(1, 512).with_phys_addr_bits(46);
/// assert_eq!((config.address_spaces, config.max_slots, config.phys_addr_bits), (1, 512, 46));
/// assert_eq!(config.max_gfn_end(), 1 << (46 - 12));
///
/// // A slot past the width is refused, as KVM refuses it (EINVAL), and
/// // nothing changes; one that ends at the width is taken.
/// use memslots::{Error, Flags, Memslots, Region, SlotKey, GFN_LIMIT};
/// let slots = Memslots::new(config)?;
/// let mut writer = slots.writer()?;
/// let last = Region { id: 0, as_id: 0, base_gfn: (1 << 34) - 1, npages: 1, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// writer.create(last)?;
/// let past = Region { id: 1, base_gfn: 1 << 34, ..last };
/// let error = writer.create(past).unwrap_err();
/// assert_eq!(error, Error::BeyondPhysAddrWidth { key: SlotKey { id: 1, as_id: 0 }, bits: 46 });
/// assert_eq!(error.errno(), 22);
/// assert_eq!(slots.reader().pin().slots().count(), 1);
///
/// // Widths outside 13..=64 are refused; `max_gfn_end` never overflows.
/// assert_eq!(Memslots::new(Config::default().with_phys_addr_bits(65)).unwrap_err(), Error::InvalidConfig);
/// assert_eq!(Config::default().max_gfn_end(), GFN_LIMIT);
/// assert_eq!(Config::default().with_phys_addr_bits(200).max_gfn_end(), GFN_LIMIT);
/// assert_eq!(Config::default().with_phys_addr_bits(0).max_gfn_end(), 1);
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Independent guest address spaces; x86 has 2 (normal and SMM).
    pub address_spaces: u16,
    /// Slot ids per address space are `0..max_slots`; x86 KVM allows 32764.
    pub max_slots: u16,
    /// The most pages all slots together may hold.
    pub max_total_pages: u64,
    /// The width of a guest physical address, in bits: no slot may reach
    /// past `2^phys_addr_bits` (KVM on x86 refuses such a slot with
    /// `EINVAL`; with the `kvm` feature, `KvmBackend::kernel_config` sets
    /// the kernel's width). 64, the default, sets no limit beyond the address
    /// itself; values outside 13..=64 are refused by [`Memslots::new`].
    pub phys_addr_bits: u8,
}

impl Config {
    /// `address_spaces` address spaces of `max_slots` slot ids each, no
    /// limit on total pages and 64-bit guest physical addresses.
    pub const fn new(address_spaces: u16, max_slots: u16) -> Config {
        Config { address_spaces, max_slots, max_total_pages: u64::MAX, phys_addr_bits: 64 }
    }

    /// The same, with `address_spaces` address spaces.
    pub const fn with_address_spaces(self, address_spaces: u16) -> Config {
        Config { address_spaces, ..self }
    }

    /// The same, with `max_slots` slot ids per address space.
    pub const fn with_max_slots(self, max_slots: u16) -> Config {
        Config { max_slots, ..self }
    }

    /// The same, with at most `max_total_pages` pages in all slots.
    pub const fn with_max_total_pages(self, max_total_pages: u64) -> Config {
        Config { max_total_pages, ..self }
    }

    /// The same, with guest physical addresses of `phys_addr_bits` bits.
    pub const fn with_phys_addr_bits(self, phys_addr_bits: u8) -> Config {
        Config { phys_addr_bits, ..self }
    }

    /// One past the highest gfn a slot may hold: `2^(phys_addr_bits - 12)`
    /// (for 64 bits, the crate's [`GFN_LIMIT`](crate::GFN_LIMIT)).
    pub const fn max_gfn_end(&self) -> u64 {
        // Clamped so that no value of the public field can overflow: a
        // width past 64 bits is the crate's limit, one below a page is one
        // page (such configurations are refused by `Memslots::new`).
        let bits = if self.phys_addr_bits > 64 {
            64
        } else if self.phys_addr_bits < 12 {
            12
        } else {
            self.phys_addr_bits
        };
        GFN_LIMIT >> (64 - bits as u32)
    }

    fn is_valid(&self) -> bool {
        self.address_spaces > 0 && self.max_slots > 0 && matches!(self.phys_addr_bits, 13..=64)
    }
}

impl Default for Config {
    /// x86: two address spaces of 32764 slots, no limit on total pages,
    /// 64-bit guest physical addresses.
    fn default() -> Config {
        Config::new(2, 32764)
    }
}

/// The slot map of one VM. Cloning it is cheap and shares the map.
///
/// It hands out the one [`Writer`] and any number of [`Reader`]s, and
/// counts what the map holds.
///
/// ```
/// use memslots::{Config, Flags, Memslots, Region};
///
/// let slots = Memslots::new(Config::default())?;
/// assert_eq!(slots.config(), Config::default());
/// let vcpu = slots.reader(); // one per vCPU thread
/// let device = slots.device_reader(); // one per device or VM-wide thread
/// assert_eq!(slots.reader_words(), 2);
///
/// let mut writer = slots.writer()?;
/// let ram = Region { id: 0, as_id: 0, base_gfn: 0, npages: 0x100, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// let smram = Region { as_id: 1, base_gfn: 0xa0, npages: 0x20, hva: 0x7f00_1000_0000, ..ram };
/// writer.create(ram)?;
/// writer.create(smram)?;
/// assert_eq!(slots.total_pages(), 0x120);
/// assert_eq!(slots.slot_objects(), 2); // both sets share one copy of each slot
///
/// // A clone is the same map.
/// let clone = slots.clone();
/// assert_eq!(clone.total_pages(), 0x120);
/// assert_eq!(device.pin().gfn_to_hva(0xa1), Some(0x7f00_0000_0000 + 0xa1 * 4096));
/// assert_eq!(vcpu.pin().slots().count(), 1); // address space 0
/// # Ok::<(), memslots::Error>(())
/// ```
#[derive(Clone)]
pub struct Memslots {
    inner: Arc<Inner>,
}

impl Memslots {
    /// An empty slot map whose writer waits with [`SpinThenYield`].
    ///
    /// ```
    /// use memslots::{Config, Error, Memslots};
    ///
    /// assert!(Memslots::new(Config::new(1, 512)).is_ok());
    /// assert_eq!(Memslots::new(Config::new(0, 512)).err(), Some(Error::InvalidConfig));
    /// assert_eq!(Memslots::new(Config::default().with_phys_addr_bits(12)).err(), Some(Error::InvalidConfig));
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no address space or no slot, or a
    /// physical address width outside 13..=64 bits.
    pub fn new(config: Config) -> Result<Memslots, Error> {
        Memslots::with_wait(config, SpinThenYield)
    }

    /// An empty slot map whose writer waits for grace periods with `wait`
    /// (the [`Wait`] docs show one that counts its steps).
    ///
    /// ```
    /// use memslots::{Config, Memslots, Stall, Wait};
    ///
    /// /// Spins only, as a `no_std` hypervisor might, and logs long waits.
    /// struct Spin;
    /// impl Wait for Spin {
    ///     fn pause(&self, _step: u32) {
    ///         core::hint::spin_loop();
    ///     }
    ///     fn stalled(&self, stall: &Stall) {
    ///         eprintln!("writer waited {} steps for reader {:?}", stall.steps, stall.reader);
    ///     }
    /// }
    /// let slots = Memslots::with_wait(Config::default(), Spin)?;
    /// assert!(slots.writer().is_ok());
    /// # Ok::<(), memslots::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no address space or no slot, or a
    /// physical address width outside 13..=64 bits.
    pub fn with_wait(config: Config, wait: impl Wait + 'static) -> Result<Memslots, Error> {
        if !config.is_valid() {
            return Err(Error::InvalidConfig);
        }
        let spaces = (0..config.address_spaces).map(AddressSpace::new).collect();
        Ok(Memslots { inner: Arc::new(Inner::new(spaces, config, Box::new(wait))) })
    }

    /// The configuration.
    ///
    /// ```
    /// use memslots::{Config, Memslots};
    ///
    /// let slots = Memslots::new(Config::new(1, 512))?;
    /// assert_eq!((slots.config().address_spaces, slots.config().max_slots), (1, 512));
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn config(&self) -> Config {
        self.inner.config
    }

    /// The writer.
    ///
    /// # Errors
    /// [`Error::WriterBusy`] while another writer is alive;
    /// [`Error::Poisoned`] after a writer panicked in the middle of a change.
    pub fn writer(&self) -> Result<Writer, Error> {
        self.writer_with(NoBackend).map_err(Error::from)
    }

    /// The writer, with `backend` following every change.
    ///
    /// ```
    /// use memslots::{Backend, Config, Error, Memslots, SlotChange};
    ///
    /// struct Count(usize);
    /// impl Backend for Count {
    ///     fn commit(&mut self, _: &SlotChange) {
    ///         self.0 += 1;
    ///     }
    /// }
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let writer = slots.writer_with(Count(0))?;
    /// // A second writer is refused, and the backend comes back with the error.
    /// let refused = slots.writer_with(Count(7)).err().expect("one writer at a time");
    /// assert_eq!((refused.error, refused.backend.0), (Error::WriterBusy, 7));
    /// # drop(writer);
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// As for [`Memslots::writer`], with `backend` given back
    /// ([`WriterRefused`]; it converts into [`Error`] for `?`).
    pub fn writer_with<B: Backend>(&self, backend: B) -> Result<Writer<B>, WriterRefused<B>> {
        // Acquire: pairs with the Release store when the previous writer
        // dropped, so its edits to the inactive sets are visible.
        if self.inner.writer_taken.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Err(WriterRefused { error: Error::WriterBusy, backend });
        }
        // Relaxed: ordered by the Acquire above: a writer that unwound set
        // it before its Release handoff.
        if self.inner.poisoned.load(Ordering::Relaxed) {
            // Release: pairs with the next taker's Acquire compare-exchange,
            // as `Writer`'s drop does.
            self.inner.writer_taken.store(false, Ordering::Release);
            return Err(WriterRefused { error: Error::Poisoned, backend });
        }
        Ok(Writer::new(self.inner.clone(), backend))
    }

    /// A reader for a vCPU thread, with its own last-used-slot cache.
    /// Registering it may allocate; its lookups never do.
    ///
    /// ```
    /// use memslots::{Config, Memslots};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let vcpu = slots.reader();
    /// assert!(vcpu.is_vcpu());
    /// assert_eq!(vcpu.address_space(), 0);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn reader(&self) -> Reader {
        Reader::new(self.inner.clone(), true)
    }

    /// A reader for a device or VM-wide thread: its own last-used slot, and
    /// behind it the set's shared one, which device readers read on a miss
    /// and fill, while it is empty, with a slot that proved hot (two lookups
    /// in a row).
    ///
    /// ```
    /// use memslots::{Config, Memslots};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// assert!(!slots.device_reader().is_vcpu());
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn device_reader(&self) -> Reader {
        Reader::new(self.inner.clone(), false)
    }

    /// Slot objects currently allocated. Between updates this is the number
    /// of slots: both sets share one copy of each.
    ///
    /// ```
    /// use memslots::{Config, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(region)?;
    /// writer.move_to(region.key(), 0x100)?; // the old object is freed before this returns
    /// assert_eq!(slots.slot_objects(), 1);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn slot_objects(&self) -> usize {
        // Relaxed: a statistic.
        self.inner.slot_objects.load(Ordering::Relaxed)
    }

    /// Epoch words allocated for readers (one per reader alive at once, at
    /// most): a dropped reader's word is reused by the next reader made, and
    /// all are freed with the map.
    ///
    /// ```
    /// use memslots::{Config, Memslots};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// drop(slots.reader());
    /// let _vcpu = slots.reader(); // takes the dropped reader's word
    /// assert_eq!(slots.reader_words(), 1);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn reader_words(&self) -> usize {
        self.inner.epochs.entries()
    }

    /// Pages in all slots of all address spaces.
    ///
    /// ```
    /// use memslots::{Config, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(region)?;
    /// assert_eq!(slots.total_pages(), 16);
    /// writer.delete(region.key())?;
    /// assert_eq!(slots.total_pages(), 0);
    /// # Ok::<(), memslots::Error>(())
    /// ```
    pub fn total_pages(&self) -> u64 {
        // Relaxed: a statistic.
        self.inner.total_pages.load(Ordering::Relaxed)
    }

    /// Breaks the protocol on purpose, for the loom suite's negative
    /// controls. Only under `--cfg loom`.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn loom_inject(&self, fault: LoomFault) {
        self.inner.epochs.inject(fault);
    }
}

impl fmt::Debug for Memslots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memslots")
            .field("config", &self.config())
            .field("generations", &DebugList(self.inner.generations()))
            .field("slot_objects", &self.slot_objects())
            .field("total_pages", &self.total_pages())
            .field("readers", &self.inner.epochs)
            .finish()
    }
}

/// A writer refused by [`Memslots::writer_with`], with the backend it was
/// given: a backend that owns a VM's file descriptor is not dropped (and the
/// VM not closed) because the map was busy or poisoned.
pub struct WriterRefused<B> {
    /// [`Error::WriterBusy`] or [`Error::Poisoned`].
    pub error: Error,
    /// The backend, unused.
    pub backend: B,
}

impl<B> From<WriterRefused<B>> for Error {
    fn from(refused: WriterRefused<B>) -> Error {
        refused.error
    }
}

impl<B> fmt::Debug for WriterRefused<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterRefused").field("error", &self.error).finish_non_exhaustive()
    }
}

impl<B> fmt::Display for WriterRefused<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<B> core::error::Error for WriterRefused<B> {}

/// Formats an iterator as a list.
pub(crate) struct DebugList<I>(pub(crate) I);

impl<I: Iterator<Item = T> + Clone, T: fmt::Debug> fmt::Debug for DebugList<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.clone()).finish()
    }
}
