//! The zap-range binner: binning rules, a model comparison, and a stress
//! test of the guarantee with a recording zapper.

// Literal ranges are the test data here.
#![allow(clippy::reversed_empty_ranges, clippy::single_range_in_vec_init)]

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;

use memslots::{ZapBinner, ZapBins, FIXED_MTRR_GFNS, FULL_ZAP, GFN_LIMIT};
use proptest::prelude::*;

mod common;

use common::zap_model::ZapModel;

fn zaps(bins: &ZapBins) -> Vec<Range<u64>> {
    bins.zaps().collect()
}

fn bins_of(ranges: &[Range<u64>]) -> ZapBins {
    let mut bins = ZapBins::new();
    for r in ranges {
        bins.add(r.clone());
    }
    bins
}

#[test]
fn empty_bins_zap_nothing() {
    let mut bins = ZapBins::new();
    assert!(bins.is_empty());
    bins.add(5..5);
    bins.add(9..3);
    bins.add(GFN_LIMIT..u64::MAX);
    assert!(bins.is_empty());
    assert_eq!(zaps(&bins), []);
}

#[test]
fn fixed_ranges_share_one_entry_gaps_included() {
    let bins = bins_of(&[0x00..0x10, 0xc0..0xc4, 0xff..0x100]);
    assert_eq!(zaps(&bins), [FIXED_MTRR_GFNS]);
    // A range crossing 1 MiB: the fixed part joins the fixed entry.
    let bins = bins_of(&[0xf0..0x180]);
    assert_eq!(zaps(&bins), [FIXED_MTRR_GFNS, 0x100..0x180]);
}

#[test]
fn ranges_merge_and_stay_sorted() {
    let bins = bins_of(&[0x5000..0x6000, 0x1000..0x2000, 0x3000..0x4000]);
    assert_eq!(zaps(&bins), [0x1000..0x2000, 0x3000..0x4000, 0x5000..0x6000]);
    // Adjacent ranges merge; a range bridging several swallows them.
    let bins = bins_of(&[0x1000..0x2000, 0x2000..0x2800, 0x3000..0x4000, 0x5000..0x6000, 0x2800..0x5000]);
    assert_eq!(zaps(&bins), [0x1000..0x6000]);
}

#[test]
fn covered_ranges_are_dropped() {
    let once = bins_of(&[0x1000..0x9000]);
    let again = bins_of(&[0x1000..0x9000, 0x2000..0x3000, 0x1000..0x9000, 0x8fff..0x9000]);
    assert_eq!(once, again);
}

#[test]
fn the_sixteenth_range_falls_back_to_a_full_zap() {
    let ranges: Vec<Range<u64>> = (0..15u64).map(|i| 0x1000 * (i + 1)..0x1000 * (i + 1) + 1).collect();
    let mut bins = bins_of(&ranges);
    bins.add(0x0..0x4); // the fixed entry is extra
    assert_eq!(zaps(&bins).len(), 16);
    assert!(!bins.is_full());
    bins.add(0x1000 + 1..0x1000 + 2); // merges: still fits
    assert!(!bins.is_full());
    bins.add(0x10_0000..0x10_0001); // a 16th variable range
    assert!(bins.is_full());
    assert_eq!(zaps(&bins), [FULL_ZAP]);
    bins.add(0x50..0x60);
    assert_eq!(zaps(&bins), [FULL_ZAP]);
}

proptest! {
    #![proptest_config(common::proptest_config(256))]
    #[test]
    fn bins_agree_with_the_model(ranges in proptest::collection::vec((0u64..0x400, 0u64..0x40), 0..40)) {
        let mut bins = ZapBins::new();
        let mut model = ZapModel::default();
        for (start, len) in ranges {
            bins.add(start..start + len);
            model.add(start..start + len);
            prop_assert_eq!(zaps(&bins), model.zaps());
            prop_assert_eq!(bins.is_full(), model.full);
        }
    }
}

#[test]
fn every_call_returns_after_a_covering_zap_that_started_after_it() {
    // Each zap as (range, logical start time, completed).
    let log: Mutex<Vec<(Range<u64>, u64, bool)>> = Mutex::new(Vec::new());
    let clock = AtomicU64::new(0);
    let binner = ZapBinner::new();
    let calls_per_thread = if cfg!(miri) { 60 } else { 20_000u64 };
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (log, clock, binner) = (&log, &clock, &binner);
            s.spawn(move || {
                let mut seed = t + 1;
                for _ in 0..calls_per_thread {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let start = (seed >> 33) % 0x3000;
                    let range = start..start + 1 + (seed >> 20) % 0x80;
                    let began = clock.fetch_add(1, SeqCst);
                    binner.zap_or_wait(range.clone(), |zap| {
                        let index = {
                            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                            log.push((zap, clock.fetch_add(1, SeqCst), false));
                            log.len() - 1
                        };
                        (0..200).for_each(|_| std::hint::spin_loop()); // the zap takes a while
                        log.lock().unwrap_or_else(|e| e.into_inner())[index].2 = true;
                    });
                    // The completed zaps that started after `began` must cover
                    // the range.
                    let log = log.lock().unwrap();
                    let first = log.partition_point(|z| z.1 <= began);
                    let mut covering: Vec<Range<u64>> =
                        log[first..].iter().filter(|z| z.2).map(|z| z.0.clone()).collect();
                    covering.sort_by_key(|r| r.start);
                    let mut reached = range.start;
                    for z in covering {
                        if z.start <= reached {
                            reached = reached.max(z.end);
                        }
                    }
                    assert!(reached >= range.end, "{range:?} returned before a zap after {began} covered it");
                }
            });
        }
    });
    let zaps = log.lock().unwrap().len();
    println!("{} calls, {zaps} zaps", 3 * calls_per_thread);
    assert!(zaps > 0);
}
