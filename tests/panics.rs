//! User code that panics: a zap callback of `ZapBinner::zap_or_wait`, a
//! backend hook of the writer, and the writer's `Wait` strategy. The panic
//! reaches its own caller; nobody else hangs (every wait here runs on
//! another thread and is joined under a deadline); nothing is lost or torn.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use memslots::{
    Backend, BatchError, Change, Config, Error, Flags, Memslots, NoBackend, Region, SlotChange, SlotKey, SpinThenYield,
    UserMemoryRegion, Wait, Writer, WriterRefused, ZapBinner, FIXED_MTRR_GFNS, PAGE_SHIFT,
};

/// How long any thread of these tests may take before the test fails (miri
/// runs thousands of times slower).
const DEADLINE: Duration = Duration::from_secs(if cfg!(miri) { 3600 } else { 5 });

/// Runs `f` on another thread and returns its result, or fails the test
/// when it does not finish within `DEADLINE` (instead of hanging).
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE).unwrap_or_else(|e| panic!("{what}: no result within {DEADLINE:?} ({e})"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic>".to_string()
    }
}

// ---------------------------------------------------------------------------
// 2a. A zap callback that panics.

/// Counts the waiting steps of `zap_or_wait` callers (a caller only pauses
/// once its range is queued and another vCPU holds the pass, or the bins'
/// lock is contended), then waits like the default.
#[derive(Clone, Default)]
struct CountingWait(Arc<AtomicU32>);

impl Wait for CountingWait {
    fn pause(&self, step: u32) {
        self.0.fetch_add(1, Ordering::SeqCst);
        SpinThenYield.pause(step);
    }
}

/// Whether `ranges` cover every gfn of `want`.
fn covers(ranges: &[Range<u64>], want: &Range<u64>) -> bool {
    let mut at = want.start;
    loop {
        if at >= want.end {
            return true;
        }
        match ranges.iter().filter(|r| r.start <= at && at < r.end).map(|r| r.end).max() {
            Some(end) => at = end,
            None => return false,
        }
    }
}

type Zaps = Arc<Mutex<Vec<Range<u64>>>>;

/// vCPU A becomes the zapper and its callback panics on its first call
/// while vCPU B waits for an overlapping range: A's panic reaches A, B
/// completes, and B's pass zaps what A left.
#[test]
fn zap_panic_first_call_hands_ranges_to_waiter() {
    let waits = CountingWait::default();
    let binner = Arc::new(ZapBinner::with_wait(waits.clone()));
    let a_range = 0x1000..0x2000;
    let b_range = 0x1800..0x2800;
    let a_zaps: Zaps = Arc::default();
    let b_zaps: Zaps = Arc::default();

    let (zapping_tx, zapping_rx) = mpsc::channel();
    let (a_tx, a_rx) = mpsc::channel();
    {
        let (binner, a_zaps, waits) = (binner.clone(), a_zaps.clone(), waits.clone());
        let a_range = a_range.clone();
        std::thread::spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                binner.zap_or_wait(a_range, |r| {
                    a_zaps.lock().unwrap().push(r);
                    let _ = zapping_tx.send(());
                    // Hold the pass until B waits for it (or a while).
                    let start = Instant::now();
                    while waits.0.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(2) {
                        std::thread::yield_now();
                    }
                    panic!("zap failed on purpose");
                })
            }));
            let _ = a_tx.send(result.map_err(|p| panic_message(&*p)));
        });
    }
    zapping_rx.recv_timeout(DEADLINE).expect("A becomes the zapper");
    let (b_tx, b_rx) = mpsc::channel();
    {
        let (binner, b_zaps) = (binner.clone(), b_zaps.clone());
        let b_range = b_range.clone();
        std::thread::spawn(move || {
            binner.zap_or_wait(b_range, |r| b_zaps.lock().unwrap().push(r));
            let _ = b_tx.send(());
        });
    }
    // A's panic goes on to A's caller.
    let a = a_rx.recv_timeout(DEADLINE).expect("A returns (by unwinding)");
    assert_eq!(a, Err("zap failed on purpose".to_string()));
    // B does not hang, and its pass zapped A's range (A zapped nothing:
    // its first call panicked) and B's own.
    b_rx.recv_timeout(DEADLINE).expect("B completes after A's panic");
    assert!(waits.0.load(Ordering::SeqCst) > 0, "B waited for A's pass");
    let b_zaps = b_zaps.lock().unwrap().clone();
    assert!(covers(&b_zaps, &a_range), "A's unzapped range {a_range:x?} in B's zaps {b_zaps:x?}");
    assert!(covers(&b_zaps, &b_range), "B's range {b_range:x?} in B's zaps {b_zaps:x?}");
    assert_eq!(*a_zaps.lock().unwrap(), std::slice::from_ref(&a_range));

    // The pass was released: a later caller zaps its own range only.
    let later = 0x9000..0x9010;
    let zaps = within_deadline("a later caller", {
        let binner = binner.clone();
        let later = later.clone();
        move || {
            let mut zaps = Vec::new();
            binner.zap_or_wait(later, |r| zaps.push(r));
            zaps
        }
    });
    assert_eq!(zaps, [later]);
}

/// The zapper's callback panics; no other vCPU waits. The next caller
/// becomes the zapper and zaps every range of the failed pass that was not
/// zapped; a range already zapped before the panic need not come back.
fn zap_panic_then_next_caller(panic_on_call: usize) {
    let binner = Arc::new(ZapBinner::new());
    // The fixed-MTRR area and 0x100..0x3000: two ranges in one pass.
    let range = 0x80..0x3000;
    let mut first_pass = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        binner.zap_or_wait(range.clone(), |r| {
            first_pass.push(r);
            if first_pass.len() == panic_on_call {
                panic!("zap {panic_on_call} failed");
            }
        })
    }));
    let message = result.map_err(|p| panic_message(&*p));
    assert_eq!(message, Err(format!("zap {panic_on_call} failed")));
    assert_eq!(first_pass[..1], [FIXED_MTRR_GFNS]);
    assert_eq!(first_pass.len(), panic_on_call);
    // Not zapped: the range whose zap panicked and those after it.
    let all = [FIXED_MTRR_GFNS, 0x100..0x3000];
    let unzapped = &all[panic_on_call - 1..];

    let own = 0x5000..0x5010;
    let zaps = within_deadline("the next caller", {
        let binner = binner.clone();
        let own = own.clone();
        move || {
            let mut zaps = Vec::new();
            binner.zap_or_wait(own, |r| zaps.push(r));
            zaps
        }
    });
    for r in unzapped {
        assert!(covers(&zaps, r), "unzapped {r:x?} in the next pass {zaps:x?}");
    }
    assert!(covers(&zaps, &own));
    // Then nothing is left over.
    let zaps = within_deadline("a third caller", move || {
        let mut zaps = Vec::new();
        binner.zap_or_wait(0x6000..0x6001, |r| zaps.push(r));
        zaps
    });
    let third = 0x6000..0x6001;
    assert_eq!(zaps, std::slice::from_ref(&third), "only the third caller's own range is left");
}

#[test]
fn zap_panic_on_first_call_next_caller_zaps_everything() {
    zap_panic_then_next_caller(1);
}

#[test]
fn zap_panic_on_second_call_next_caller_zaps_the_rest() {
    zap_panic_then_next_caller(2);
}

// ---------------------------------------------------------------------------
// 2b. A backend hook that panics.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Prepare,
    Invalidated,
    Commit,
}

/// Panics in `hook`, once armed.
struct Panicking {
    armed: Option<Hook>,
}

impl Panicking {
    fn hit(&mut self, hook: Hook) {
        if self.armed == Some(hook) {
            self.armed = None;
            panic!("backend panics in {hook:?}");
        }
    }
}

impl Backend for Panicking {
    fn prepare(&mut self, _: &SlotChange) -> Result<(), i32> {
        self.hit(Hook::Prepare);
        Ok(())
    }

    fn invalidated(&mut self, _: &SlotChange) {
        self.hit(Hook::Invalidated);
    }

    fn commit(&mut self, _: &SlotChange) {
        self.hit(Hook::Commit);
    }
}

fn region(as_id: u16, id: u16, base_gfn: u64, npages: u64) -> Region {
    let hva = 0x1000_0000_0000 + (u64::from(as_id) << 44) + (u64::from(id) << 28);
    Region { id, as_id, base_gfn, npages, hva, flags: Flags::empty() }
}

fn key(as_id: u16, id: u16) -> SlotKey {
    SlotKey { id, as_id }
}

/// The layouts of address space 0 around the batch that panics.
struct Layouts {
    old: Vec<Region>,
    new: Vec<Region>,
    /// The old layout without the deleted and moved slots (the
    /// invalidation step).
    invalidating: Vec<Region>,
}

/// Slots 1..=4 in address space 0, and one in space 1.
fn setup(w: &mut Writer<Panicking>) -> Layouts {
    for id in 1..=4 {
        w.create(region(0, id, u64::from(id) * 0x100, 0x100)).expect("setup");
    }
    w.create(region(1, 1, 0x100, 0x100)).expect("setup");
    let r = |id: u16| region(0, id, u64::from(id) * 0x100, 0x100);
    Layouts {
        old: vec![r(1), r(2), r(3), r(4)],
        new: vec![
            Region { base_gfn: 0x1000, ..r(2) },
            Region { flags: Flags::LOG_DIRTY_PAGES, ..r(3) },
            r(4),
            region(0, 5, 0x100, 0x80),
        ],
        invalidating: vec![r(3), r(4)],
    }
}

/// Deletes slot 1, moves slot 2, re-flags slot 3, creates slot 5 where 1
/// was.
fn the_batch(w: &mut Writer<Panicking>) -> Result<Vec<Change>, BatchError> {
    let mut b = w.batch();
    b.delete(key(0, 1))
        .move_to(key(0, 2), 0x1000)
        .set_flags(key(0, 3), Flags::LOG_DIRTY_PAGES)
        .create(region(0, 5, 0x100, 0x80));
    b.commit()
}

/// The gfns the readers check: every one below 0x1200, or under miri (which
/// runs thousands of times slower) each slot edge of the layouts, with the
/// gfns on either side.
fn probe_gfns() -> impl Iterator<Item = u64> {
    let all = (!cfg!(miri)).then_some(0..0x1200u64);
    let edges = cfg!(miri)
        .then(|| (0..=0x1200u64 / 0x80).flat_map(|i| [i * 0x80, i * 0x80 + 1]).flat_map(|g| [g.saturating_sub(1), g]));
    all.into_iter().flatten().chain(edges.into_iter().flatten())
}

/// What a vCPU reader and a device reader see on another thread: the slots
/// of address space 0, each checked against gfn lookups (twice, the second
/// time through the caches) and against the range iterator.
fn seen_by_readers(slots: &Memslots) -> Vec<Vec<Region>> {
    let slots = slots.clone();
    within_deadline("readers after the panic", move || {
        let mut layouts = Vec::new();
        for reader in [slots.reader(), slots.device_reader()] {
            let view = reader.pin();
            let layout: Vec<Region> = view.slots().map(|s| *s.region()).collect();
            for _ in 0..2 {
                for gfn in probe_gfns() {
                    let want = layout.iter().find(|r| (r.base_gfn..r.end_gfn()).contains(&gfn));
                    assert_eq!(view.gfn_to_slot(gfn).map(|s| s.region()), want, "gfn {gfn:#x}");
                    let hva = want.map(|r| r.hva + ((gfn - r.base_gfn) << PAGE_SHIFT));
                    assert_eq!(view.gfn_to_hva(gfn), hva, "gfn {gfn:#x}");
                }
            }
            let mut by_gfn = layout.clone();
            by_gfn.sort_by_key(|r| r.base_gfn);
            assert_eq!(view.slots_in_gfn_range(0..u64::MAX).map(|s| *s.region()).collect::<Vec<_>>(), by_gfn);
            drop(view);
            layouts.push(layout);
        }
        layouts
    })
}

fn generations(slots: &Memslots) -> Vec<u64> {
    (0..2)
        .map(|as_id| {
            let mut r = slots.device_reader();
            r.set_address_space(as_id).expect("address space exists");
            let g = r.pin().generation();
            g
        })
        .collect()
}

/// Every kind of writer call is refused with `Poisoned`, and so is a new
/// writer once this one is gone; readers keep working meanwhile.
fn assert_poisoned(slots: &Memslots, mut w: Writer<Panicking>) {
    let before = (generations(slots), slots.total_pages(), slots.slot_objects());
    let r = region(0, 9, 0x8000, 1);
    assert_eq!(w.create(r), Err(Error::Poisoned));
    assert_eq!(w.delete(key(0, 4)), Err(Error::Poisoned));
    assert_eq!(w.move_to(key(0, 4), 0x9000), Err(Error::Poisoned));
    assert_eq!(w.set_flags(key(0, 4), Flags::LOG_DIRTY_PAGES), Err(Error::Poisoned));
    assert_eq!(w.set_region(UserMemoryRegion::try_from(r).expect("valid")), Err(Error::Poisoned));
    // Even calls that would change nothing.
    assert_eq!(w.set_flags(key(0, 4), Flags::empty()), Err(Error::Poisoned));
    assert_eq!(w.delete(key(0, 99)), Err(Error::Poisoned));
    assert_eq!(w.batch().commit(), Err(BatchError { index: None, error: Error::Poisoned }));
    let mut b = w.batch();
    b.create(r).delete(key(0, 4));
    assert_eq!(b.commit(), Err(BatchError { index: None, error: Error::Poisoned }));
    // Another writer while this one lives: busy.
    assert!(matches!(slots.writer(), Err(Error::WriterBusy)));
    drop(w);
    // Once it is gone: poisoned, every time, through both constructors.
    for _ in 0..3 {
        assert!(matches!(slots.writer(), Err(Error::Poisoned)));
        assert!(matches!(slots.writer_with(NoBackend), Err(WriterRefused { error: Error::Poisoned, .. })));
        assert!(matches!(
            slots.writer_with(Panicking { armed: None }),
            Err(WriterRefused { error: Error::Poisoned, .. })
        ));
    }
    assert_eq!(
        (generations(slots), slots.total_pages(), slots.slot_objects()),
        before,
        "nothing changed after the panic"
    );
}

/// Panics in `hook` during a batch (or a single move when `single`), then
/// checks what readers see and that the writer is poisoned. Returns the
/// layout readers settle on.
fn backend_panics(hook: Hook, single: bool) -> (Vec<Region>, Layouts) {
    let slots = Memslots::new(Config::default()).expect("config");
    let mut w = slots.writer_with(Panicking { armed: None }).expect("writer");
    let mut layouts = setup(&mut w);
    if single {
        let r2 = region(0, 2, 0x200, 0x100);
        layouts.new =
            vec![region(0, 1, 0x100, 0x100), Region { base_gfn: 0x1000, ..r2 }, layouts.old[2], layouts.old[3]];
        layouts.invalidating = vec![layouts.old[0], layouts.old[2], layouts.old[3]];
    }
    w.backend_mut().armed = Some(hook);
    let result = catch_unwind(AssertUnwindSafe(|| {
        if single {
            w.move_to(key(0, 2), 0x1000).map(|c| vec![c]).map_err(|e| BatchError { index: Some(0), error: e })
        } else {
            the_batch(&mut w)
        }
    }));
    let message = result.map(drop).map_err(|p| panic_message(&*p));
    assert_eq!(message, Err(format!("backend panics in {hook:?}")), "the panic reaches the writer's caller");

    let seen = seen_by_readers(&slots);
    assert_eq!(seen[0], seen[1], "vCPU and device readers see the same layout");
    let layout = seen[0].clone();
    // Space 1 was never touched.
    let mut r1 = slots.device_reader();
    r1.set_address_space(1).expect("space 1");
    assert_eq!(r1.pin().slots().map(|s| *s.region()).collect::<Vec<_>>(), [region(1, 1, 0x100, 0x100)]);
    drop(r1);

    assert_poisoned(&slots, w);
    // Readers are still fine after the writer is gone.
    assert_eq!(seen_by_readers(&slots)[0], layout);
    (layout, layouts)
}

#[test]
fn backend_panic_in_prepare_leaves_old_layout() {
    let (seen, layouts) = backend_panics(Hook::Prepare, false);
    assert_eq!(seen, layouts.old, "nothing was published before prepare");
}

#[test]
fn backend_panic_in_commit_leaves_new_layout() {
    let (seen, layouts) = backend_panics(Hook::Commit, false);
    assert_eq!(seen, layouts.new, "commit runs after the batch is published");
}

/// A panic in `invalidated` leaves readers on a published layout: at
/// least never a torn one (some changes of the batch but not others).
#[test]
fn backend_panic_in_invalidated_leaves_no_torn_layout() {
    for single in [false, true] {
        let (seen, layouts) = backend_panics(Hook::Invalidated, single);
        assert!(
            seen == layouts.old || seen == layouts.new || seen == layouts.invalidating,
            "single {single}: torn layout {seen:?}"
        );
    }
}

/// Stricter: readers end on all of the batch or none of it. The
/// invalidation layout is only allowed *during* the invalidation step, and
/// after a panic in `invalidated` that step never ends: the deleted and
/// moved slots would stay absent for good (a moved RAM slot vanishes from
/// the guest) with a writer that can no longer fix it.
#[test]
fn backend_panic_in_invalidated_leaves_old_or_new_layout() {
    for single in [false, true] {
        let (seen, layouts) = backend_panics(Hook::Invalidated, single);
        assert!(
            seen == layouts.old || seen == layouts.new,
            "single {single}: readers are stuck in the invalidation step: {seen:?} (old {:?}, new {:?})",
            layouts.old,
            layouts.new
        );
    }
}

/// A wait strategy that panics on its first pause once armed.
#[derive(Clone, Default)]
struct PanickingWait(Arc<std::sync::atomic::AtomicBool>);

impl Wait for PanickingWait {
    fn pause(&self, step: u32) {
        if self.0.swap(false, Ordering::SeqCst) {
            panic!("the wait strategy panics");
        }
        SpinThenYield.pause(step);
    }
}

/// A `Wait` that panics during the grace period after the INVALID swap
/// (held up by a view on another thread) leaves readers on the old layout,
/// not on the INVALID step with the deleted and moved slots gone for good.
#[test]
fn wait_panic_in_the_invalidation_grace_period_leaves_old_layout() {
    let armed = PanickingWait::default();
    let slots = Memslots::with_wait(Config::default(), armed.clone()).expect("config");
    let mut w = slots.writer_with(Panicking { armed: None }).expect("writer");
    let layouts = setup(&mut w);
    // A reader on another thread holds a view from before the batch, so the
    // writer must pause in the grace period after the INVALID swap.
    let (pinned_tx, pinned) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn({
        let slots = slots.clone();
        move || {
            let r = slots.reader();
            let view = r.pin();
            pinned_tx.send(()).expect("test waits");
            release_rx.recv().expect("test releases");
            drop(view);
        }
    });
    pinned.recv().expect("reader pinned");
    armed.0.store(true, Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(|| the_batch(&mut w)));
    let message = result.map(drop).map_err(|p| panic_message(&*p));
    assert_eq!(message, Err("the wait strategy panics".to_string()), "the panic reaches the writer's caller");
    release.send(()).expect("reader waits");
    reader.join().expect("reader");
    let seen = seen_by_readers(&slots);
    assert_eq!(seen[0], layouts.old, "readers are back on the layout before the batch");
    assert_eq!(seen[1], layouts.old);
    assert_poisoned(&slots, w);
}
