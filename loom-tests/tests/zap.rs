//! Model 5: the zap binner's guarantee. When `zap_or_wait` returns, zaps that
//! started after the call began have covered the caller's range, in every
//! interleaving, including a range added just as a zapper finishes its pass.
#![cfg(loom)]

use std::ops::Range;

use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use memslots::ZapBinner;

struct Shared {
    binner: ZapBinner,
    clock: AtomicUsize,
    /// Each zap with the logical time it started.
    log: Mutex<Vec<(Range<u64>, usize)>>,
}

fn call(shared: &Shared, range: Range<u64>) {
    let began = shared.clock.fetch_add(1, SeqCst);
    shared.binner.zap_or_wait(range.clone(), |zap| {
        let at = shared.clock.fetch_add(1, SeqCst);
        shared.log.lock().unwrap().push((zap, at));
    });
    let log = shared.log.lock().unwrap();
    let mut after: Vec<Range<u64>> = log.iter().filter(|z| z.1 > began).map(|z| z.0.clone()).collect();
    after.sort_by_key(|r| r.start);
    let mut reached = range.start;
    for z in after {
        if z.start <= reached {
            reached = reached.max(z.end);
        }
    }
    assert!(reached >= range.end, "model: {range:?} returned before a covering zap that started after it: {:?}", *log);
}

fn run(ranges: &'static [Range<u64>]) {
    let shared = Arc::new(Shared { binner: ZapBinner::new(), clock: AtomicUsize::new(0), log: Mutex::new(Vec::new()) });
    let others: Vec<_> = ranges[1..]
        .iter()
        .map(|range| {
            let shared = shared.clone();
            loom::thread::spawn(move || call(&shared, range.clone()))
        })
        .collect();
    call(&shared, ranges[0].clone());
    for t in others {
        t.join().unwrap();
    }
}

/// Two vCPUs, one in the fixed-MTRR area. Preemption bound 4.
#[test]
fn two_vcpus() {
    loom_tests::check(4, || run(&[0x10..0x20, 0x1000..0x1010]));
}

/// Two vCPUs whose ranges merge. Preemption bound 4.
#[test]
fn two_vcpus_merging() {
    loom_tests::check(4, || run(&[0x1000..0x1010, 0x1008..0x1020]));
}

/// Three vCPUs. Preemption bound 1 (bound 2 runs for over 10 minutes).
#[test]
fn three_vcpus() {
    loom_tests::check(1, || run(&[0x10..0x20, 0x1000..0x1010, 0x2000..0x2010]));
}
