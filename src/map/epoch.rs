//! Grace periods without a garbage collector: one cache-padded epoch word per
//! registered reader, in the manner of the kernel's SRCU and the left-right
//! crate.
//!
//! A reader entering a view publishes the global epoch it read in its word,
//! then loads the active set; leaving, it stores [`IDLE`]. The writer, after
//! swapping the active set, advances the global epoch and waits until every
//! word is idle or holds the new epoch. A reader that holds the new epoch read
//! it after the swap, so it can only have loaded the new set; an idle reader
//! will load the new set when it next enters. That wait is the grace period
//! of invariant 2 (see the `map` module docs).
//!
//! Why not crossbeam-epoch: its `pin` runs a collection every 128th call, and
//! the collection frees garbage-queue nodes the writer's thread allocated, so
//! readers call the allocator and can block on its lock behind the writer
//! (see docs/design-notes.md). A single writer that waits for its own grace
//! periods and frees what it unlinked itself needs no collector; here the
//! read side does a fixed amount of work and never calls the allocator.
//!
//! Reader entries are allocated when a reader registers (never on the read
//! path), reused by later registrations, and freed with the slot map; the
//! list only grows, so the writer can walk it without locks.

use alloc::boxed::Box;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use crossbeam_utils::CachePadded;

use crate::base::sync::{fence, thread_token, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use crate::base::wait::{wait_until, Wait};

/// A reader word's value outside any view.
const IDLE: u64 = 0;

/// One registered reader's published state, on its own cache line.
pub(crate) struct Entry {
    /// [`IDLE`], or the global epoch the reader read when it entered.
    state: AtomicU64,
    /// The [`thread_token`] of the thread that entered, so the writer can
    /// tell a view held on its own thread (which it would wait for forever).
    owner: AtomicUsize,
    /// Whether a reader handle owns the entry.
    claimed: AtomicBool,
    /// The id of the reader that owns the entry ([`crate::Reader::id`]):
    /// set when a reader claims it, never given to another reader.
    reader: AtomicU64,
    /// The entry's place in the list, counting from 0; fixed.
    index: u32,
    /// The next entry; fixed once the entry is in the list.
    next: *const CachePadded<Entry>,
}

impl Entry {
    /// The id of the reader that owns the entry, for [`crate::Stall`].
    pub(crate) fn reader(&self) -> u64 {
        // Relaxed: stored when the entry was claimed, before the owner
        // published any state; a writer reads it after its Acquire load of
        // the state, so it sees the id of the reader whose view it waits for
        // or of a later owner.
        self.reader.load(Ordering::Relaxed)
    }

    /// The entry's place in the list (entries are reused).
    pub(crate) fn index(&self) -> u32 {
        self.index
    }
}

/// Test switches that break the protocol on purpose, so the loom suite can
/// show that it catches each break (negative controls).
#[cfg(loom)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum LoomFault {
    /// The writer does not wait for readers at all.
    SkipGracePeriod,
    /// Readers publish their epoch without the fence before loading the set.
    PinWithoutFence,
    /// The writer reads the reader words without its fence after the swap.
    WriterWithoutFence,
    /// A batch is published operation by operation instead of at once.
    BatchOpByOp,
}

/// The global epoch and the list of reader entries.
pub(crate) struct Epochs {
    /// Advanced by the writer after each swap; starts at 1 (0 is [`IDLE`]).
    epoch: CachePadded<AtomicU64>,
    /// The newest entry; entries are never removed before `Epochs` drops.
    head: AtomicPtr<CachePadded<Entry>>,
    /// Entries allocated so far; the next entry's index.
    entries: AtomicUsize,
    /// Readers registered so far; the next reader's id. A u64 never wraps.
    registrations: AtomicU64,
    /// Not a loom atomic: set before the model's threads start, it configures
    /// the test and is not part of the protocol.
    #[cfg(loom)]
    fault: std::sync::Mutex<Option<LoomFault>>,
}

// Send and Sync from its fields, all atomics: the entries' raw links are
// inside the entries, which live as long as `Epochs` (invariant 8).
static_assertions::assert_impl_all!(Epochs: Send, Sync);

impl Epochs {
    pub(crate) fn new() -> Epochs {
        Epochs {
            epoch: CachePadded::new(AtomicU64::new(1)),
            head: AtomicPtr::new(ptr::null_mut()),
            entries: AtomicUsize::new(0),
            registrations: AtomicU64::new(0),
            #[cfg(loom)]
            fault: std::sync::Mutex::new(None),
        }
    }

    #[cfg(loom)]
    pub(crate) fn inject(&self, fault: LoomFault) {
        *self.fault.lock().unwrap() = Some(fault);
    }

    #[cfg(loom)]
    pub(crate) fn faulty(&self, fault: LoomFault) -> bool {
        *self.fault.lock().unwrap() == Some(fault)
    }

    /// Every entry, newest first.
    fn iter(&self) -> Entries<'_> {
        // Acquire: pairs with the Release compare-exchange in `claim`, so
        // an entry's fields are initialized when it is seen.
        Entries { next: self.head.load(Ordering::Acquire), epochs: PhantomData }
    }

    /// Claims an idle entry for a new reader, allocating one if none is free.
    /// Called when a reader handle is made, never on the read path.
    pub(crate) fn register(&self) -> NonNull<Entry> {
        let entry = self.claim();
        // Relaxed: only names the reader (see `Entry::reader`).
        let id = self.registrations.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `claim` returns an entry of this list, and entries live
        // until `Epochs` drops (invariant 8).
        let claimed = unsafe { entry.as_ref() };
        // Relaxed: see `Entry::reader`; published with the entry's state.
        claimed.reader.store(id, Ordering::Relaxed);
        // SeqCst: pairs with the writer's fence in `synchronize`. The entry
        // was pushed before this fence (by this thread, or by another before
        // this thread found it), so a writer whose walk of the list misses it
        // fenced before this fence, and then this reader's first load of the
        // active set sees the writer's swap (the rules for SeqCst fences; the
        // SeqCst exchange in `publish` alone would not order the push).
        fence(Ordering::SeqCst);
        entry
    }

    /// Finds a free entry or pushes a new one.
    fn claim(&self) -> NonNull<Entry> {
        for entry in self.iter() {
            // Acquire: pairs with the Release store in `unregister`, so the
            // previous owner's use of the entry is over.
            if entry.claimed.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return NonNull::from(entry);
            }
        }
        // Relaxed: only numbers the entry.
        let index = self.entries.fetch_add(1, Ordering::Relaxed) as u32;
        let entry = Entry {
            state: AtomicU64::new(IDLE),
            owner: AtomicUsize::new(0),
            claimed: AtomicBool::new(true),
            reader: AtomicU64::new(0),
            index,
            next: ptr::null(),
        };
        let new = Box::into_raw(Box::new(CachePadded::new(entry)));
        // Relaxed: the compare-exchange below checks the value.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `new` is not published yet; this thread owns it.
            unsafe { (&mut *new).next = head };
            // Release: pairs with the Acquire load in `iter`, publishing the
            // entry's fields. A writer that misses the push is ordered by the
            // fence in `register`.
            match self.head.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed) {
                // SAFETY: `new` is live until `Epochs` drops; from here on it
                // is only shared.
                Ok(_) => return NonNull::from(unsafe { &**new }),
                Err(current) => head = current,
            }
        }
    }

    /// Gives an entry back for reuse. Its reader is being dropped, so no
    /// view of it can be used any more (views borrow the reader; one that was
    /// leaked with `mem::forget` kept the entry busy until now).
    pub(crate) fn unregister(entry: &Entry) {
        Epochs::leave(entry);
        // Release: pairs with the Acquire compare-exchange in `claim`, so
        // this owner's use of the entry happens before the next owner's.
        entry.claimed.store(false, Ordering::Release);
    }

    /// Enters a view: publishes the current epoch in `entry`. The caller
    /// loads the active set after this returns, with a SeqCst load (see
    /// `AddressSpace::active`).
    #[inline(always)]
    pub(crate) fn enter(&self, entry: &Entry) {
        // Relaxed: published by the Release (SeqCst) store of the state below.
        entry.owner.store(thread_token(), Ordering::Relaxed);
        self.publish(entry);
    }

    /// Moves a view on: publishes the current epoch if it has advanced since
    /// the reader entered, so the writer waiting for it can go on. The caller
    /// reloads the active set after this returns.
    #[inline(always)]
    pub(crate) fn reenter(&self, entry: &Entry) {
        // Relaxed: both are this reader's own values or checked again below.
        if entry.state.load(Ordering::Relaxed) != self.epoch.load(Ordering::Relaxed) {
            self.publish(entry);
        }
    }

    /// Stores the current epoch in `entry` with a full barrier after it.
    #[inline(always)]
    fn publish(&self, entry: &Entry) {
        // Acquire: pairs with the Release store in `synchronize`; a reader
        // that reads the new epoch also sees the swap made before it.
        let epoch = self.epoch.load(Ordering::Acquire);
        #[cfg(loom)]
        {
            // Release: pairs with the Acquire load in `synchronize`, so the
            // reader's earlier accesses to the old set happen before the
            // writer edits it. SeqCst fence: pairs with the writer's fence in
            // `synchronize`; of the reader's load of the active set and the
            // writer's load of this word, at least one sees the other's
            // store (a store-buffering pattern with a fence on each side).
            entry.state.store(epoch, Ordering::Release);
            if !self.faulty(LoomFault::PinWithoutFence) {
                fence(Ordering::SeqCst);
            }
        }
        // The same, cheaper: a SeqCst read-modify-write followed by the
        // caller's SeqCst load of the active set is ordered against the
        // writer's SeqCst fence by the C++20 rules for SeqCst operations, and
        // on x86 it is one locked instruction instead of a store and an
        // mfence. Loom models SeqCst fences but not SeqCst accesses, so the
        // model checks the fenced form above.
        #[cfg(not(loom))]
        entry.state.swap(epoch, Ordering::SeqCst);
    }

    /// Leaves the view.
    #[inline(always)]
    pub(crate) fn leave(entry: &Entry) {
        // Release: pairs with the Acquire load in `synchronize`: the reader's
        // accesses to the set happen before the writer's next edit of it.
        entry.state.store(IDLE, Ordering::Release);
    }

    /// The grace period: called by the writer right after a swap, returns
    /// once no reader can still be in the set that was active before it.
    ///
    /// # Panics
    /// If a view is held on the calling thread: the wait would never end.
    pub(crate) fn synchronize(&self, wait: &dyn Wait) {
        #[cfg(loom)]
        if self.faulty(LoomFault::SkipGracePeriod) {
            return;
        }
        // Relaxed: only the writer stores the epoch.
        let next = self.epoch.load(Ordering::Relaxed) + 1;
        // Release: pairs with the Acquire load in `publish`.
        self.epoch.store(next, Ordering::Release);
        #[cfg(loom)]
        let fenced = !self.faulty(LoomFault::WriterWithoutFence);
        #[cfg(not(loom))]
        let fenced = true;
        if fenced {
            // SeqCst: pairs with the reader's SeqCst publication in `publish`
            // (see there), and orders the swap before the loads below.
            fence(Ordering::SeqCst);
        }
        let me = thread_token();
        for entry in self.iter() {
            wait_until(
                wait,
                || Some(entry.reader()),
                || {
                    // Acquire: pairs with the Release stores in `publish` and
                    // `leave`, so the reader's accesses to the old set happen
                    // before the writer's next edit.
                    let state = entry.state.load(Ordering::Acquire);
                    if state == IDLE || state == next {
                        return true;
                    }
                    // Relaxed: written before the state just read (Acquire).
                    assert!(
                        me == 0 || entry.owner.load(Ordering::Relaxed) != me,
                        "memslots: the writer waits for a view held on its own thread; drop it first"
                    );
                    false
                },
            );
        }
    }

    /// Whether the calling thread holds a view. Always false where threads
    /// cannot be told apart (`no_std`).
    pub(crate) fn held_on_this_thread(&self) -> bool {
        let me = thread_token();
        // Acquire: pairs with the Release stores in `publish`, so `owner` is
        // the one written with the state seen.
        me != 0
            && self
                .iter()
                .any(|entry| entry.state.load(Ordering::Acquire) != IDLE && entry.owner.load(Ordering::Relaxed) == me)
    }

    /// Entries allocated (readers alive now and reusable ones).
    pub(crate) fn entries(&self) -> usize {
        // Relaxed: a statistic.
        self.entries.load(Ordering::Relaxed)
    }
}

/// The entries of an `Epochs`, newest first.
struct Entries<'a> {
    next: *const CachePadded<Entry>,
    epochs: PhantomData<&'a Epochs>,
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        // `next` is null or an entry of the borrowed `Epochs`, which
        // frees entries only when it drops, and links are fixed before
        // publication (invariant 8).
        // SAFETY: as just said.
        let entry = unsafe { self.next.as_ref() }?;
        self.next = entry.next;
        Some(entry)
    }
}

impl fmt::Debug for Epochs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a snapshot for display.
        f.debug_struct("Epochs")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .field("entries", &self.entries())
            .finish()
    }
}

impl Drop for Epochs {
    fn drop(&mut self) {
        // Acquire: any ordering would do, `&mut self` excludes other threads.
        let mut next = self.head.load(Ordering::Acquire);
        while !next.is_null() {
            // SAFETY: `&mut self`: no reader is left (each holds the map), and
            // every entry came from `Box::into_raw` in `claim`.
            let entry = unsafe { Box::from_raw(next) };
            next = entry.next as *mut _;
        }
    }
}
