//! Layer 6, the slot map: per address space two slot sets, wait-free
//! readers, one writer. It stands on host memory (what a slot holds), the
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
pub use reader::{Reader, View};
pub use slot::Slot;
pub use writer::Writer;

use crate::backend::{Backend, NoBackend};
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

impl Memslots {
    /// An empty slot map whose writer waits with [`SpinThenYield`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no address space or no slot.
    pub fn new(config: Config) -> Result<Memslots, Error> {
        Memslots::with_wait(config, SpinThenYield)
    }

    /// An empty slot map whose writer waits for grace periods with `wait`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no address space or no slot.
    pub fn with_wait(config: Config, wait: impl Wait + 'static) -> Result<Memslots, Error> {
        if config.address_spaces == 0 || config.max_slots == 0 {
            return Err(Error::InvalidConfig);
        }
        let spaces = (0..config.address_spaces).map(AddressSpace::new).collect();
        Ok(Memslots { inner: Arc::new(Inner::new(spaces, config, Box::new(wait))) })
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.inner.config
    }

    /// The writer.
    ///
    /// # Errors
    /// [`Error::WriterBusy`] while another writer is alive;
    /// [`Error::Poisoned`] after a writer panicked in the middle of a change.
    pub fn writer(&self) -> Result<Writer, Error> {
        self.writer_with(NoBackend)
    }

    /// The writer, with `backend` following every change.
    ///
    /// # Errors
    /// As for [`Memslots::writer`].
    pub fn writer_with<B: Backend>(&self, backend: B) -> Result<Writer<B>, Error> {
        // Acquire: pairs with the Release store when the previous writer
        // dropped, so its edits to the inactive sets are visible.
        self.inner
            .writer_taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| Error::WriterBusy)?;
        let writer = Writer::new(self.inner.clone(), backend);
        // Relaxed: ordered by the Acquire above (see `Engine::run`).
        if self.inner.poisoned.load(Ordering::Relaxed) {
            return Err(Error::Poisoned);
        }
        Ok(writer)
    }

    /// A reader for a vCPU thread, with its own last-used-slot cache.
    /// Registering it may allocate; its lookups never do.
    pub fn reader(&self) -> Reader {
        Reader::new(self.inner.clone(), true)
    }

    /// A reader for a device or VM-wide thread: its own last-used slot, and
    /// behind it the set's shared one, which device readers read on a miss
    /// and fill, while it is empty, with a slot that proved hot (two lookups
    /// in a row).
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

/// Formats an iterator as a list.
pub(crate) struct DebugList<I>(pub(crate) I);

impl<I: Iterator<Item = T> + Clone, T: fmt::Debug> fmt::Debug for DebugList<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.clone()).finish()
    }
}
