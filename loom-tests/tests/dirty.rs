//! Model 12: the dirty bitmap (`src/memory/dirty.rs`). Marking is a
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
