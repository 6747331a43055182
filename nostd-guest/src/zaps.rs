//! Zap requests through the shared [`ZapBinner`](memslots::ZapBinner),
//! checked: every range a vCPU asked for must be inside a range some zapper
//! zapped by the time the call returns.

use core::ops::Range;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memslots::Gfn;

use crate::shared::Shared;

/// Room for every zap of a run (the writer's deletes and moves, the
/// reader's requests).
const CAPACITY: usize = 2048;

/// Every range zapped so far, by either vCPU.
struct ZapLog {
    ranges: [(AtomicU64, AtomicU64); CAPACITY],
    len: AtomicUsize,
}

static LOG: ZapLog =
    ZapLog { ranges: [const { (AtomicU64::new(0), AtomicU64::new(0)) }; CAPACITY], len: AtomicUsize::new(0) };

impl ZapLog {
    fn record(&self, gfns: Range<Gfn>) {
        // Relaxed: the binner orders passes; the entries are published by
        // the Release that ends the pass.
        let at = self.len.fetch_add(1, Ordering::Relaxed);
        let Some((start, end)) = self.ranges.get(at) else { panic!("zap log full") };
        // Relaxed: as above.
        start.store(gfns.start, Ordering::Relaxed);
        end.store(gfns.end, Ordering::Relaxed);
    }

    fn covers(&self, gfns: &Range<Gfn>) -> bool {
        // Relaxed: `zap_or_wait` returned, so the pass that covers `gfns`
        // ended with a Release its Acquire saw; its entries are visible.
        let len = self.len.load(Ordering::Relaxed).min(CAPACITY);
        self.ranges[..len]
            .iter()
            .any(|(start, end)| start.load(Ordering::Relaxed) <= gfns.start && gfns.end <= end.load(Ordering::Relaxed))
    }
}

/// Asks for `gfns` to be zapped, maybe zapping other vCPUs' ranges too;
/// returns whether a completed zap covers `gfns`.
pub fn zap(shared: &Shared, gfns: Range<Gfn>) -> bool {
    shared.binner.zap_or_wait(gfns.clone(), |zapped| LOG.record(zapped));
    LOG.covers(&gfns)
}

/// Zap passes run so far, by either vCPU.
pub fn passes(shared: &Shared) -> u64 {
    shared.binner.passes()
}
