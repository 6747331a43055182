//! Models 12 and 13: the dirty bitmap (`src/memory/dirty.rs`). Marking is a
//! `fetch_or` of one word; harvesting swaps each word with zero. A marker
//! thread marks pages while a harvester takes the bitmap twice; a final take
//! after both threads are done must leave every page marked once reported
//! exactly once over the three takes: none lost, none reported twice (a page
//! marked twice, by two threads, is reported once or twice).
//!
//! The negative control harvests with a load and then a store of zero
//! (`take_load_then_store`), which loses a bit marked between the two; loom
//! must find that interleaving.
#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::atomic::Ordering::Relaxed;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, negative_control};
use memslots::LoomDirtyBitmap;

/// Pages of the bitmap: two words, the second partly used.
const PAGES: u64 = 100;

/// How each harvest of the model takes the bitmap.
#[derive(Clone, Copy)]
enum Take {
    /// `take`: a swap with zero per word.
    Swap,
    /// The broken `take_load_then_store`.
    LoadThenStore,
}

fn take(log: &LoomDirtyBitmap, how: Take) -> Vec<u64> {
    match how {
        Take::Swap => log.take(),
        Take::LoadThenStore => log.take_load_then_store(),
    }
}

/// The model: `markers` threads each mark their list of `(first, count)`
/// runs while the model's thread harvests twice with `how`; then a final
/// `take`. Every page marked must be in exactly one of the three takes, and
/// no other page in any.
fn harvest(markers: &'static [&'static [(u64, u64)]], how: Take) {
    let log = Arc::new(LoomDirtyBitmap::new(PAGES));
    let threads: Vec<_> = markers
        .iter()
        .map(|&runs| {
            let log = log.clone();
            thread::spawn(move || {
                for &(first, count) in runs {
                    log.mark(first, count);
                }
            })
        })
        .collect();
    let first = take(&log, how);
    let second = take(&log, how);
    for t in threads {
        t.join().unwrap();
    }
    // After the join every mark happened before this take.
    let last = log.take();
    let mut reported = [0u32; PAGES as usize];
    for bitmap in [&first, &second, &last] {
        assert_eq!(bitmap.len(), PAGES.div_ceil(64) as usize, "model: bitmap length");
        for page in 0..PAGES {
            reported[page as usize] += (bitmap[(page / 64) as usize] >> (page % 64) & 1) as u32;
        }
        for bit in PAGES % 64..64 {
            assert_eq!(bitmap[(PAGES / 64) as usize] >> bit & 1, 0, "model: a bit past the last page");
        }
    }
    for page in 0..PAGES {
        // How many marks covered the page: one mark is reported exactly
        // once; several marks of one page at least once and at most once
        // each (a harvest between two marks reports it twice).
        let marks = markers.iter().flat_map(|runs| runs.iter()).filter(|&&(f, n)| page >= f && page < f + n).count();
        let got = reported[page as usize] as usize;
        assert!(
            (marks == 0 && got == 0) || (1..=marks).contains(&got),
            "model: page {page} marked {marks} time(s) but reported {got} time(s) (takes: {first:x?} {second:x?} {last:x?})",
        );
    }
}

/// One marker: a single page, then a run across the word boundary (pages
/// 62..66, two `fetch_or`s), then a page past the slot (clamped away).
const ONE_MARKER: &[&[(u64, u64)]] = &[&[(1, 1), (62, 4), (99, 10)]];

/// Two markers on the same words, both marking page 70.
const TWO_MARKERS: &[&[(u64, u64)]] = &[&[(1, 1), (70, 1)], &[(2, 1), (70, 2)]];

/// Model 12: one marker against two harvests. Preemption bound 8, which
/// is exhaustive here (147 executions, as many as with bound 20).
#[test]
fn model12_dirty_harvest_one_marker() {
    check(8, || harvest(ONE_MARKER, Take::Swap));
}

/// Model 12: two markers on the same words (and the same page) against two
/// harvests. Preemption bound 4 (about 2,600 executions; bound 8 takes
/// about 42,000 and 3 s).
#[test]
fn model12_dirty_harvest_two_markers() {
    check(4, || harvest(TWO_MARKERS, Take::Swap));
}

/// Negative control: the harvest loads a word and then stores zero; a mark
/// between the two is lost (reported zero times). Loom finds it in its
/// third execution: the harvester loads word 1, the marker sets pages 64
/// and 65, the harvester stores zero. Preemption bound 8, as the model.
#[test]
fn model12_negative_control_load_then_store() {
    negative_control("model12_negative_control_load_then_store", 8, || harvest(ONE_MARKER, Take::LoadThenStore));
}

/// How model 13 marks and harvests.
#[derive(Clone, Copy)]
enum Orders {
    /// `mark` (Release) and `take` (Acquire).
    Paired,
    /// Relaxed on both sides: the bit does not carry the write.
    Relaxed,
}

/// Model 13: the bit carries the write. A guest-memory writer stores a new
/// value in a page (a Relaxed atomic, as the crate's volatile copies are:
/// no ordering of their own) and then marks the page; the harvester takes
/// the bitmap and, for a page it took, copies the page. A copy made after
/// taking the bit must see the value written before the mark (or a newer
/// one): else the destination keeps the old page and the next round has no
/// bit for it, a lost dirty page. After both are done a final take and copy
/// must leave the destination equal to the source.
fn write_then_harvest(orders: Orders) {
    let log = Arc::new(LoomDirtyBitmap::new(1));
    let page = Arc::new(AtomicU64::new(0));
    let writer = {
        let (log, page) = (log.clone(), page.clone());
        thread::spawn(move || {
            for value in 1..=2 {
                page.store(value, Relaxed);
                match orders {
                    Orders::Paired => log.mark(0, 1),
                    Orders::Relaxed => log.mark_relaxed(0, 1),
                }
            }
        })
    };
    let take = |log: &LoomDirtyBitmap| match orders {
        Orders::Paired => log.take(),
        Orders::Relaxed => log.take_relaxed(),
    };
    let mut destination = 0;
    let mut marked_before = 0;
    if take(&log)[0] & 1 == 1 {
        destination = page.load(Relaxed);
        // The bit was set after value 1 at least was written.
        marked_before = 1;
    }
    assert!(destination >= marked_before, "model: a copy after taking the bit missed the write behind it");
    writer.join().unwrap();
    if take(&log)[0] & 1 == 1 {
        destination = page.load(Relaxed);
    }
    assert_eq!(destination, 2, "model: the destination lost the last write");
}

/// Model 13: a write, its mark, and the harvest's take and copy. Preemption
/// bound 4.
#[test]
fn model13_the_bit_carries_the_write() {
    check(4, || write_then_harvest(Orders::Paired));
}

/// Negative control: with Relaxed marks and takes, the harvester can take
/// the bit and copy the page as it was before the write behind it.
#[test]
fn model13_negative_control_relaxed() {
    negative_control("model13_negative_control_relaxed", 4, || write_then_harvest(Orders::Relaxed));
}
