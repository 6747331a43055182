//! Binning of guest-frame ranges to zap, after a guest MTRR or CR0.CD change.
//!
//! [`ZapBins`] is the fixed-capacity bin set: 16 entries, no heap allocation.
//! One entry is reserved for the fixed-MTRR area (gfns `0x00..0x100`, below
//! 1 MiB): any range there marks the whole area, gaps included, so one zap
//! covers it. The other 15 entries stay sorted by start; overlapping or
//! adjacent ranges merge, and a range already covered adds nothing. When a
//! range fits nowhere, the bins fall back to one full zap.
//!
//! [`ZapBinner`] shares the bins between vCPUs: each calls
//! [`ZapBinner::zap_or_wait`]; one becomes the zapper and drains the bins,
//! the others wait until a pass that started after their range was added has
//! finished.

use core::ops::Range;

use core::fmt;

use crate::base::addr::{Gfn, GFN_LIMIT};
use crate::base::sync::{AtomicBool, AtomicU64, Ordering, UnsafeCell};
use crate::base::wait::{wait_until, SpinThenYield, Wait};

/// The fixed-MTRR area: the 64 KiB, 16 KiB and 4 KiB fixed ranges below 1 MiB.
pub const FIXED_MTRR_GFNS: Range<Gfn> = 0..0x100;

/// The range zapped when the bins overflow: every gfn.
pub const FULL_ZAP: Range<Gfn> = 0..GFN_LIMIT;

/// Entries besides the fixed-MTRR one.
const VARIABLE_ENTRIES: usize = 15;

/// Ranges waiting to be zapped, merged, in 16 fixed entries.
///
/// ```
/// use memslots::{ZapBins, FIXED_MTRR_GFNS, FULL_ZAP};
///
/// let mut bins = ZapBins::new();
/// bins.add(0x1000..0x1100);
/// bins.add(0x1100..0x1200); // adjacent: merged
/// bins.add(0xc0..0xc8); // in the fixed-MTRR area: the whole area
/// assert_eq!(bins.zaps().collect::<Vec<_>>(), [FIXED_MTRR_GFNS, 0x1000..0x1200]);
///
/// // Past the 15 other entries, the bins fall back to one full zap.
/// for i in 0..16 {
///     bins.add(0x10_0000 * (i + 1)..0x10_0000 * (i + 1) + 1);
/// }
/// assert!(bins.is_full());
/// assert_eq!(bins.zaps().collect::<Vec<_>>(), [FULL_ZAP]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZapBins {
    full: bool,
    fixed: bool,
    /// Sorted by start; neither overlapping nor adjacent.
    ranges: heapless::Vec<Range<Gfn>, VARIABLE_ENTRIES>,
}

impl ZapBins {
    /// Empty bins.
    pub const fn new() -> ZapBins {
        ZapBins { full: false, fixed: false, ranges: heapless::Vec::new() }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        !self.full && !self.fixed && self.ranges.is_empty()
    }

    /// Whether the bins overflowed into a full zap.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Adds `gfns` (an empty range adds nothing; ends are clamped to
    /// [`GFN_LIMIT`]).
    pub fn add(&mut self, gfns: Range<Gfn>) {
        let (mut start, mut end) = (gfns.start, gfns.end.min(GFN_LIMIT));
        if start >= end || self.full {
            return;
        }
        if start < FIXED_MTRR_GFNS.end {
            self.fixed = true;
            start = FIXED_MTRR_GFNS.end;
            if start >= end {
                return;
            }
        }
        // Entries from `first` to `last` (exclusive) overlap or touch the range.
        let first = self.ranges.partition_point(|r| r.end < start);
        let last = first + self.ranges[first..].partition_point(|r| r.start <= end);
        if first == last {
            if self.ranges.insert(first, start..end).is_err() {
                *self = ZapBins { full: true, ..ZapBins::new() };
            }
            return;
        }
        start = start.min(self.ranges[first].start);
        end = end.max(self.ranges[last - 1].end);
        self.ranges[first] = start..end;
        for _ in first + 1..last {
            self.ranges.remove(first + 1);
        }
    }

    /// The ranges to zap: the full range alone, or the fixed-MTRR area
    /// followed by the other entries in order of start.
    pub fn zaps(&self) -> impl Iterator<Item = Range<Gfn>> + '_ {
        let full = self.full.then_some(FULL_ZAP);
        let fixed = (self.fixed && !self.full).then_some(FIXED_MTRR_GFNS);
        full.into_iter().chain(fixed).chain(self.ranges.iter().cloned())
    }
}

/// Bins shared by vCPUs, drained by whichever of them gets there first.
///
/// Adding a range takes a short spin lock that is only ever held for a
/// bounded update of the 16 entries (never across a zap), so an add never
/// waits for a zap. Waiting uses the [`Wait`] strategy `W` and no OS
/// primitive, so it works without `std`.
///
/// ```
/// use std::sync::Mutex;
/// use memslots::ZapBinner;
///
/// let binner = ZapBinner::new(); // one per VM
/// let zapped = Mutex::new(Vec::new());
/// std::thread::scope(|s| {
///     for vcpu in 0..2_u64 {
///         let (binner, zapped) = (&binner, &zapped);
///         // Each vCPU returns once its range is zapped, by itself or by the other.
///         s.spawn(move || {
///             let gfns = 0x1000 * (vcpu + 1)..0x1000 * (vcpu + 1) + 0x10;
///             binner.zap_or_wait(gfns, |r| zapped.lock().expect("no zap panicked").push(r));
///         });
///     }
/// });
/// let mut zapped = zapped.into_inner().expect("no zap panicked");
/// zapped.sort_by_key(|r| r.start);
/// assert_eq!(zapped, [0x1000..0x1010, 0x2000..0x2010]);
/// assert!((1..=2).contains(&binner.passes())); // one pass may have served both
/// ```
pub struct ZapBinner<W: Wait = SpinThenYield> {
    locked: AtomicBool,
    state: UnsafeCell<State>,
    /// Whether a vCPU is draining the bins.
    zapping: AtomicBool,
    /// Passes finished; a pass's number is fixed when it takes the bins.
    passes_done: AtomicU64,
    wait: W,
}

/// A pass in progress; dropping it ends the pass, finished or unwinding.
struct Pass<'a, W: Wait> {
    binner: &'a ZapBinner<W>,
    /// At most the 16 entries of the bins.
    ranges: heapless::Vec<Range<Gfn>, { VARIABLE_ENTRIES + 1 }>,
    /// Ranges zapped so far.
    zapped: usize,
}

impl<W: Wait> Drop for Pass<'_, W> {
    fn drop(&mut self) {
        if self.zapped < self.ranges.len() {
            self.binner.with_state(|state| self.ranges[self.zapped..].iter().for_each(|r| state.bins.add(r.clone())));
        }
        // Release: pairs with the Acquire compare-exchange that takes
        // `zapping` in `zap_or_wait`, ordering passes one after another.
        self.binner.zapping.store(false, Ordering::Release);
    }
}

struct State {
    bins: ZapBins,
    /// Passes that have taken the bins so far.
    passes_started: u64,
}

// SAFETY: `state` is only accessed under the `locked` spin lock.
unsafe impl<W: Wait> Sync for ZapBinner<W> {}

impl Default for ZapBinner {
    fn default() -> Self {
        ZapBinner::new()
    }
}

impl ZapBinner {
    /// An empty binner whose waiters use [`SpinThenYield`].
    pub fn new() -> ZapBinner {
        ZapBinner::with_wait(SpinThenYield)
    }
}

impl<W: Wait> ZapBinner<W> {
    /// An empty binner whose waiters use `wait`.
    pub fn with_wait(wait: W) -> ZapBinner<W> {
        ZapBinner {
            locked: AtomicBool::new(false),
            state: UnsafeCell::new(State { bins: ZapBins::new(), passes_started: 0 }),
            zapping: AtomicBool::new(false),
            passes_done: AtomicU64::new(0),
            wait,
        }
    }

    /// Queues `gfns` and returns once a zap covering it has completed, one
    /// that started after this call began. The caller may become the zapper
    /// and call `zap` for every binned range, its own and other vCPUs'.
    ///
    /// A range added just as a zapper finishes its last pass is not lost: the
    /// caller waits for the number of the first pass that can see its range,
    /// not for "nobody is zapping", and drains the bins itself if nobody else
    /// does.
    pub fn zap_or_wait(&self, gfns: Range<Gfn>, mut zap: impl FnMut(Range<Gfn>)) {
        if gfns.start >= gfns.end.min(GFN_LIMIT) {
            return; // An empty range: nothing to wait for.
        }
        // The next pass to take the bins will carry this range.
        let pass = self.with_state(|state| {
            state.bins.add(gfns);
            state.passes_started + 1
        });
        wait_until(
            &self.wait,
            || None,
            || {
                // Acquire: pairs with the Release store of `passes_done` that
                // ends a pass (`drain`), so the zap happens before this call
                // returns.
                if self.passes_done.load(Ordering::Acquire) >= pass {
                    return true;
                }
                // Acquire: pairs with the Release store of `zapping` that ends
                // the previous zapper's pass (`Pass::drop`), ordering passes one
                // after another.
                if self.zapping.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    self.drain(&mut zap);
                    // Acquire: as above.
                    return self.passes_done.load(Ordering::Acquire) >= pass;
                }
                false
            },
        );
    }

    /// Passes run so far (a pass drains the bins and zaps every entry).
    pub fn passes(&self) -> u64 {
        // Relaxed: a statistic.
        self.passes_done.load(Ordering::Relaxed)
    }

    /// One pass: take the bins and zap them, then give up `zapping`. Only
    /// the holder of `zapping`.
    ///
    /// If `zap` panics, the pass hands the ranges it did not zap back to the
    /// bins and gives up `zapping` without finishing: the next caller's pass
    /// zaps them, and its higher number releases this pass's waiters.
    fn drain(&self, zap: &mut impl FnMut(Range<Gfn>)) {
        let (bins, pass) = self.with_state(|state| {
            state.passes_started += 1;
            (core::mem::take(&mut state.bins), state.passes_started)
        });
        let mut pass_guard = Pass { binner: self, ranges: bins.zaps().collect(), zapped: 0 };
        while let Some(range) = pass_guard.ranges.get(pass_guard.zapped) {
            zap(range.clone());
            pass_guard.zapped += 1;
        }
        // Release: pairs with the Acquire loads of `passes_done` in
        // `zap_or_wait`, publishing that this pass's zaps have completed.
        self.passes_done.store(pass, Ordering::Release);
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        wait_until(
            &self.wait,
            || None,
            || {
                // Acquire: pairs with the Release store that unlocks, below.
                self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
            },
        );
        let state = self.state.get_mut();
        // SAFETY: the spin lock is held; the reference ends with `f`.
        let result = f(unsafe { state.deref() });
        // Under loom, the end of the tracked access.
        #[allow(clippy::drop_non_drop)]
        drop(state);
        // Release: pairs with the Acquire compare-exchange that locks, above.
        self.locked.store(false, Ordering::Release);
        result
    }
}

impl<W: Wait> fmt::Debug for ZapBinner<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a snapshot for display; the bins themselves sit behind
        // the spin lock, which `Debug` does not take.
        f.debug_struct("ZapBinner")
            .field("zapping", &self.zapping.load(Ordering::Relaxed))
            .field("passes", &self.passes())
            .finish()
    }
}
