//! `Debug` output of the public types: useful content (generations, slot
//! counts, reader ids, flag names), and formatting never waits for the
//! writer or a reader.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use memslots::{Change, Config, Flags, Memslots, Region, SlotKey, Wait, ZapBinner};

fn has(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        thread::yield_now();
    }
}

const REGION: Region = Region {
    id: 3,
    as_id: 0,
    base_gfn: 0x100,
    npages: 0x10,
    hva: 0x7f00_0000_0000,
    flags: Flags::LOG_DIRTY_PAGES.union(Flags::READONLY),
};

#[test]
fn debug_output_says_what_matters() {
    let slots = Memslots::new(Config::default()).unwrap();
    let mut w = slots.writer().unwrap();
    w.create(REGION).unwrap();
    // One swap in address space 0 (generations step by 2 from 0 and 1).
    has(
        &format!("{slots:?}"),
        &["Memslots", "max_slots: 32764", "generations: [2, 1]", "slot_objects: 1", "total_pages: 16"],
    );
    has(&format!("{w:?}"), &["Writer", "generations: [2, 1]", "slot_objects: 1", "total_pages: 16"]);

    let vcpu = slots.reader();
    let mut device = slots.device_reader();
    device.set_smm(true).unwrap();
    has(&format!("{vcpu:?}"), &["Reader", &format!("id: {}", vcpu.id()), "vcpu", "address_space: 0", "views: 0"]);
    has(&format!("{device:?}"), &["Reader", &format!("id: {}", device.id()), "device", "address_space: 1"]);

    let view = vcpu.pin();
    has(&format!("{view:?}"), &["View", &format!("reader: {}", vcpu.id()), "generation: 2", "slots: 1"]);
    has(&format!("{vcpu:?}"), &["views: 1"]);
    let smm_view = device.pin();
    has(&format!("{smm_view:?}"), &["address_space: 1", "generation: 1", "slots: 0"]);

    let slot = view.gfn_to_slot(0x105).unwrap();
    has(&format!("{slot:?}"), &["Slot", "id: 3", "base_gfn: 256", "npages: 16", "LOG_DIRTY_PAGES", "READONLY"]);
    drop((view, smm_view));

    has(&format!("{:?}", Flags::READONLY), &["READONLY"]);
    has(&format!("{:?}", Flags::LOG_DIRTY_PAGES | Flags::READONLY), &["LOG_DIRTY_PAGES", "READONLY"]);
    has(&format!("{:?}", Flags::from_bits_retain(0x11)), &["LOG_DIRTY_PAGES", "0x10"]);
    assert!(!format!("{:?}", Flags::empty()).contains("READONLY"));
    has(&format!("{:?}", SlotKey { id: 3, as_id: 1 }), &["id: 3", "as_id: 1"]);

    let binner = ZapBinner::new();
    has(&format!("{binner:?}"), &["ZapBinner", "passes: 0", "zapping: false"]);
    binner.zap_or_wait(0x1000..0x2000, |_| {});
    has(&format!("{binner:?}"), &["passes: 1"]);

    // Without slots and readers, and with a changed configuration.
    let empty = Memslots::new(Config::new(3, 7).with_max_total_pages(99)).unwrap();
    has(
        &format!("{empty:?}"),
        &["address_spaces: 3", "max_slots: 7", "max_total_pages: 99", "generations: [0, 1, 2]", "slot_objects: 0"],
    );
}

/// Counts pauses, so the test can tell the writer is waiting.
#[derive(Clone, Default)]
struct Pauses(Arc<AtomicU64>);

impl Wait for Pauses {
    fn pause(&self, _step: u32) {
        self.0.fetch_add(1, SeqCst);
        thread::yield_now();
    }
}

#[test]
fn formatting_does_not_wait_for_the_writer_or_readers() {
    let pauses = Pauses::default();
    let slots = Memslots::with_wait(Config::default(), pauses.clone()).unwrap();
    let mut w = slots.writer().unwrap();
    w.create(REGION).unwrap();
    let holder_reader = slots.reader();
    let holder_id = holder_reader.id();
    let (pinned, release) = (AtomicBool::new(false), AtomicBool::new(false));
    thread::scope(|s| {
        // A reader holds a view...
        let holder = s.spawn(|| {
            let reader = holder_reader;
            let view = reader.pin();
            pinned.store(true, SeqCst);
            wait_for("the release", || release.load(SeqCst));
            let text = format!("{view:?} {reader:?}");
            drop(view);
            text
        });
        wait_for("the view", || pinned.load(SeqCst));
        // ...so the writer, changing a slot, waits for it.
        let writer = s.spawn(|| w.set_flags(REGION.key(), Flags::READONLY));
        wait_for("the writer to wait", || pauses.0.load(SeqCst) > 100);
        // Formatting now, here and on another thread, returns.
        let generation = slots.device_reader().pin().generation();
        assert_eq!(generation, 4, "the writer has swapped once");
        let want = format!("generations: [{generation}, 1]");
        has(&format!("{slots:?}"), &["Memslots", &want, "slot_objects"]);
        let other = s.spawn(|| format!("{:?}", slots.clone()));
        let start = Instant::now();
        while !other.is_finished() {
            assert!(start.elapsed() < Duration::from_secs(60), "Debug blocked while the writer waits");
            thread::yield_now();
        }
        has(&other.join().unwrap(), &["Memslots", &want]);
        assert!(!writer.is_finished(), "the writer did not wait for the view");
        release.store(true, SeqCst);
        let held = holder.join().unwrap();
        has(&held, &["View", "generation: 2", &format!("id: {holder_id}"), "views: 1"]);
        assert_eq!(writer.join().unwrap(), Ok(Change::FlagsChanged));
    });
    has(&format!("{w:?}"), &["generations: [4, 1]", "slot_objects: 1"]);
}

#[test]
fn formatting_a_binner_does_not_wait_for_its_zapper() {
    let binner = ZapBinner::new();
    let (zapping, release) = (AtomicBool::new(false), AtomicBool::new(false));
    thread::scope(|s| {
        s.spawn(|| {
            binner.zap_or_wait(0x1000..0x2000, |_| {
                zapping.store(true, SeqCst);
                wait_for("the release", || release.load(SeqCst));
            })
        });
        wait_for("the zap", || zapping.load(SeqCst));
        has(&format!("{binner:?}"), &["zapping: true", "passes: 0"]);
        release.store(true, SeqCst);
    });
    has(&format!("{binner:?}"), &["zapping: false", "passes: 1"]);
}
