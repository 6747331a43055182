//! Dirty-page bitmaps: one bit per page of a slot with `LOG_DIRTY_PAGES`.
//!
//! Marking is a `fetch_or` of one word; harvesting swaps each word with zero,
//! so a bit set while the harvest runs lands either in this harvest or in the
//! next, never in both and never nowhere.
//!
//! A bit also carries the write it marks: a writer marks after it wrote the
//! page, with Release, and the harvester takes (or clears) the bit with
//! Acquire before it copies the page, so a copy made after taking a bit sees
//! at least the write that set it. A write after the take sets the bit again
//! for the next round.

use alloc::vec::Vec;
use core::fmt;

use crate::base::addr::PAGE_SHIFT;
use crate::base::sync::{AtomicU64, Ordering};

/// The dirty bits of one slot, shared by every slot object that carries the
/// slot's log (a flags change that keeps logging, a move).
///
/// Public only under `--cfg loom`, for the loom suite.
pub struct DirtyBitmap {
    words: alloc::boxed::Box<[AtomicU64]>,
    pages: u64,
}

impl DirtyBitmap {
    #[allow(missing_docs)]
    pub fn new(pages: u64) -> DirtyBitmap {
        let words = pages.div_ceil(64) as usize;
        DirtyBitmap { words: (0..words).map(|_| AtomicU64::new(0)).collect(), pages }
    }

    /// Marks pages `first..first + count` (clamped to the slot), after the
    /// caller wrote them.
    #[inline]
    pub fn mark(&self, first: u64, count: u64) {
        // Release: pairs with the Acquire of `take`, `peek` and `clear`, so
        // a harvester that sees a bit also sees the write before it.
        self.mark_with(first, count, Ordering::Release);
    }

    /// The mark the loom suite must catch: Relaxed, so a harvester may see
    /// the bit and copy the page as it was before the write.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn mark_relaxed(&self, first: u64, count: u64) {
        self.mark_with(first, count, Ordering::Relaxed);
    }

    #[inline]
    fn mark_with(&self, first: u64, count: u64, order: Ordering) {
        let end = first.saturating_add(count).min(self.pages);
        let mut page = first;
        while page < end {
            let (word, bit) = ((page / 64) as usize, page % 64);
            let run = (64 - bit).min(end - page);
            let mask = if run == 64 { u64::MAX } else { ((1u64 << run) - 1) << bit };
            // `order`: see `mark`; the harvest's swap (the same word's
            // modification order) takes the bit exactly once.
            self.words[word].fetch_or(mask, order);
            page += run;
        }
    }

    /// Marks the pages holding bytes `offset..offset + len` of the slot
    /// (pages past the slot are ignored; nothing for `len == 0`): the one
    /// place a byte range written by the host becomes page bits.
    #[inline]
    pub(crate) fn mark_bytes(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset >> PAGE_SHIFT;
        let last = offset.saturating_add(len - 1) >> PAGE_SHIFT;
        self.mark(first, last - first + 1);
    }

    /// Returns the bitmap and clears it, word by word; copy the pages after.
    pub fn take(&self) -> Vec<u64> {
        // Acquire: pairs with the Release of `mark`, so the copies the
        // caller makes next see the writes behind the bits; the swap is
        // atomic with the marks of its word.
        self.take_with(Ordering::Acquire)
    }

    /// The harvest the loom suite must catch: Relaxed, so the copy after it
    /// may miss the write behind a bit it took.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn take_relaxed(&self) -> Vec<u64> {
        self.take_with(Ordering::Relaxed)
    }

    fn take_with(&self, order: Ordering) -> Vec<u64> {
        self.words.iter().map(|word| word.swap(0, order)).collect()
    }

    /// The broken harvest the loom suite must catch: a load, then a store of
    /// zero, which loses a bit marked between the two.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn take_load_then_store(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|word| {
                // Relaxed: as in `take`; what breaks is the gap between the
                // load and the store, which no ordering closes.
                let bits = word.load(Ordering::Relaxed);
                word.store(0, Ordering::Relaxed);
                bits
            })
            .collect()
    }

    /// Returns the bitmap without clearing it.
    pub(crate) fn peek(&self) -> Vec<u64> {
        // Acquire: pairs with the Release of `mark`, as in `take`.
        self.words.iter().map(|word| word.load(Ordering::Acquire)).collect()
    }

    /// Whether `page` is marked (false past the slot).
    #[cfg(feature = "vm-memory")]
    pub(crate) fn is_marked(&self, page: u64) -> bool {
        let word = self.words.get(usize::try_from(page / 64).unwrap_or(usize::MAX));
        // Relaxed: a snapshot of one bit.
        word.is_some_and(|word| word.load(Ordering::Relaxed) >> (page % 64) & 1 == 1)
    }

    /// Clears the bits of `mask` for the pages from `first_page` on (bit `i`
    /// of `mask[j]` is page `first_page + 64 * j + i`), as
    /// `KVM_CLEAR_DIRTY_LOG` does. `first_page` is a multiple of 64.
    pub(crate) fn clear(&self, first_page: u64, mask: &[u64]) {
        let first_word = (first_page / 64) as usize;
        for (word, bits) in self.words.iter().skip(first_word).zip(mask) {
            // Acquire: pairs with the Release of `mark`, so a copy made
            // after the clear sees every write whose bit it cleared (copy
            // after clearing, as with KVM's manual protection); a bit set
            // concurrently and not in the mask survives.
            word.fetch_and(!bits, Ordering::Acquire);
        }
    }

    /// Pages covered.
    pub(crate) fn pages(&self) -> u64 {
        self.pages
    }
}

impl fmt::Debug for DirtyBitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a snapshot for display.
        let dirty: u32 = self.words.iter().map(|w| w.load(Ordering::Relaxed).count_ones()).sum();
        f.debug_struct("DirtyBitmap").field("pages", &self.pages).field("dirty", &dirty).finish()
    }
}
