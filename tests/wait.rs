//! Wait strategies: the writer's grace-period wait and the zap binner's
//! waiting vCPUs pause through the embedder's `Wait`, and a long wait is
//! reported through `Wait::stalled`, naming the reader that holds the writer
//! up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use memslots::{
    Change, Config, Flags, Memslots, Region, SlotKey, Stall, Wait, ZapBinner, FIXED_MTRR_GFNS, STALL_STEPS,
};

/// What a [`Recorder`] saw.
#[derive(Default)]
struct Log {
    pauses: AtomicU64,
    stalls: Mutex<Vec<(Option<u64>, u32)>>,
    /// Set when `stalled` names `watched`.
    watched_stalled: AtomicBool,
    /// The reader id (+ 1) whose stall sets `watched_stalled`; 0 watches
    /// `None` (a vCPU waiting for a zap).
    watched: AtomicU64,
}

/// A wait strategy that counts and records, and spins briefly (yielding now
/// and then) so that a stall arrives quickly.
#[derive(Clone, Default)]
struct Recorder(Arc<Log>);

impl Wait for Recorder {
    fn pause(&self, step: u32) {
        self.0.pauses.fetch_add(1, SeqCst);
        if step % 1024 == 1023 {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }

    fn stalled(&self, stall: &Stall) {
        self.0.stalls.lock().unwrap().push((stall.reader, stall.steps));
        let watched = self.0.watched.load(SeqCst);
        if stall.reader.map_or(0, |id| id + 1) == watched {
            self.0.watched_stalled.store(true, SeqCst);
        }
    }
}

/// Waits until `cond` holds, failing the test after a minute.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// The stalls are reported at `STALL_STEPS` and at each doubling after.
fn check_stall_steps(stalls: &[(Option<u64>, u32)]) {
    assert!(!stalls.is_empty());
    for (i, &(_, steps)) in stalls.iter().enumerate() {
        assert_eq!(u64::from(steps), u64::from(STALL_STEPS) << i, "stall {i} of {stalls:?}");
    }
}

#[test]
#[cfg_attr(miri, ignore = "takes 2^16 wait steps")]
fn a_stalled_writer_names_the_reader_it_waits_for() {
    let recorder = Recorder::default();
    let log = recorder.0.clone();
    let slots = Memslots::with_wait(Config::default(), recorder).unwrap();
    let mut w = slots.writer().unwrap();
    let key = SlotKey { id: 0, as_id: 0 };
    w.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 0x10, hva: 0x7f00_0000_0000, flags: Flags::empty() })
        .unwrap();
    // Nobody held the writer up: no stall so far.
    assert!(log.stalls.lock().unwrap().is_empty());

    // Another reader, idle, must not be named; nor a reader that is gone,
    // whose epoch word the next reader reuses: ids are never reused.
    let _idle = slots.device_reader();
    let gone = slots.device_reader();
    let gone_id = gone.id();
    drop(gone);
    let reader = slots.device_reader();
    let id = reader.id();
    assert_ne!(id, gone_id, "a new reader took the id of one that is gone");
    log.watched.store(id + 1, SeqCst);
    let pinned = AtomicBool::new(false);
    let (change, held_until) = thread::scope(|s| {
        let (log, pinned) = (&log, &pinned);
        let holder = s.spawn(move || {
            let view = reader.pin();
            let generation = view.generation();
            pinned.store(true, SeqCst);
            // Hold the view until the writer reports that it waits for us.
            wait_for("the stall report", || log.watched_stalled.load(SeqCst));
            assert_eq!(view.generation(), generation);
            assert!(view.gfn_to_slot(5).is_some_and(|s| s.flags().is_empty()), "the view changed under us");
            let pauses = log.pauses.load(SeqCst);
            drop(view);
            pauses
        });
        wait_for("the reader's view", || pinned.load(SeqCst));
        let change = w.set_flags(key, Flags::LOG_DIRTY_PAGES);
        (change, holder.join().unwrap())
    });
    assert_eq!(change, Ok(Change::FlagsChanged));
    let stalls = log.stalls.lock().unwrap().clone();
    let pauses = log.pauses.load(SeqCst);
    println!("{pauses} pauses; stalls {stalls:?}; the reader let go after {held_until} pauses");
    assert!(stalls.iter().all(|&(reader, _)| reader == Some(id)), "a stall named another reader: {stalls:?}");
    check_stall_steps(&stalls);
    assert!(held_until >= u64::from(STALL_STEPS) && pauses >= held_until);
    // The change is visible once the writer returns.
    assert_eq!(slots.reader().pin().gfn_to_slot(5).map(|s| s.flags()), Some(Flags::LOG_DIRTY_PAGES));
}

#[test]
fn an_unhindered_writer_reports_no_stall() {
    let recorder = Recorder::default();
    let log = recorder.0.clone();
    let slots = Memslots::with_wait(Config::default(), recorder).unwrap();
    let mut w = slots.writer().unwrap();
    let reader = slots.reader();
    for i in 0..if cfg!(miri) { 4 } else { 200 } {
        let region = Region { id: 0, as_id: 0, base_gfn: i, npages: 1, hva: 0x1000, flags: Flags::empty() };
        assert_eq!(w.create(region), Ok(Change::Created));
        assert!(reader.pin().gfn_to_slot(i).is_some());
        assert_eq!(w.delete(region.key()), Ok(Change::Deleted));
    }
    assert!(log.stalls.lock().unwrap().is_empty());
}

#[test]
#[cfg_attr(miri, ignore = "takes 2^16 wait steps")]
fn a_waiting_vcpu_pauses_through_the_binners_wait() {
    let recorder = Recorder::default();
    let log = recorder.0.clone();
    log.watched.store(0, SeqCst); // vCPU waits are reported with `None`
    let binner = ZapBinner::with_wait(recorder);
    let zaps: Mutex<Vec<(&str, std::ops::Range<u64>)>> = Mutex::new(Vec::new());
    let zapping = AtomicBool::new(false);
    thread::scope(|s| {
        // vCPU A zaps slowly: until the wait of B has been reported stalled.
        let a = s.spawn(|| {
            binner.zap_or_wait(0x1000..0x1001, |r| {
                zaps.lock().unwrap().push(("A", r));
                zapping.store(true, SeqCst);
                wait_for("B's stall", || log.watched_stalled.load(SeqCst));
            });
        });
        wait_for("A's zap", || zapping.load(SeqCst));
        let pauses_before = log.pauses.load(SeqCst);
        // vCPU B's range came after A's pass took the bins: B waits for A,
        // then zaps its range itself.
        binner.zap_or_wait(0x2000..0x2001, |r| zaps.lock().unwrap().push(("B", r)));
        a.join().unwrap();
        let pauses = log.pauses.load(SeqCst) - pauses_before;
        println!("B paused {pauses} times");
        assert!(pauses >= u64::from(STALL_STEPS), "B paused only {pauses} times");
    });
    assert_eq!(*zaps.lock().unwrap(), [("A", 0x1000..0x1001), ("B", 0x2000..0x2001)]);
    assert_eq!(binner.passes(), 2);
    let stalls = log.stalls.lock().unwrap().clone();
    assert!(stalls.iter().all(|&(reader, _)| reader.is_none()), "{stalls:?}");
    check_stall_steps(&stalls);
}

#[test]
fn a_lone_vcpu_zaps_without_waiting() {
    let recorder = Recorder::default();
    let log = recorder.0.clone();
    let binner = ZapBinner::with_wait(recorder);
    let mut zapped = Vec::new();
    binner.zap_or_wait(0x10..0x20, |r| zapped.push(r));
    binner.zap_or_wait(5..5, |r| zapped.push(r)); // empty: nothing to wait for
    assert_eq!(zapped, vec![FIXED_MTRR_GFNS]); // the fixed-MTRR area as one entry
    assert_eq!(binner.passes(), 1);
    // Nothing to wait for: at most a few pauses, for a spin-lock
    // compare-exchange that fails spuriously (as miri makes it do).
    let pauses = log.pauses.load(SeqCst);
    assert!(pauses < 32, "a lone vCPU paused {pauses} times");
    assert!(log.stalls.lock().unwrap().is_empty());
}
