//! Dirty logging: concurrent writers against a harvester (every page written
//! is reported exactly once over all harvests), and the rules of the log
//! across flag changes, moves, `mark_page_dirty`, `clear_dirty_log` and
//! `peek_dirty_log`.

mod common;

use common::rng::Rng;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use memslots::{
    Change, Config, Error, Flags, GpaCache, GuestRam, Memslots, Reader, Region, SlotKey, UserMemoryRegion, Writer,
    PAGE_SIZE,
};

const PAGE: u64 = PAGE_SIZE;
const KEY: SlotKey = SlotKey { id: 0, as_id: 0 };
const BASE: u64 = 0x100;
/// Writer threads, each with its own vCPU reader.
const THREADS: u64 = 3;

fn config() -> Config {
    Config::new(1, 8)
}

/// A map with one owned slot of `npages` at `BASE`.
fn setup(npages: u64, flags: Flags) -> (Memslots, Writer, Arc<GuestRam>) {
    let slots = Memslots::new(config()).unwrap();
    let mut w = slots.writer().unwrap();
    let ram = Arc::new(GuestRam::new((npages * PAGE) as usize).unwrap());
    assert_eq!(w.create_owned(KEY, BASE, flags, ram.clone()), Ok(Change::Created));
    (slots, w, ram)
}

fn pages_of(bitmap: &[u64]) -> BTreeSet<u64> {
    let mut pages = BTreeSet::new();
    for (word, bits) in bitmap.iter().enumerate() {
        for bit in 0..64 {
            if bits >> bit & 1 == 1 {
                pages.insert(word as u64 * 64 + bit);
            }
        }
    }
    pages
}

fn bitmap_of(npages: u64, pages: &[u64]) -> Vec<u64> {
    let mut words = vec![0u64; npages.div_ceil(64) as usize];
    for &page in pages {
        words[(page / 64) as usize] |= 1 << (page % 64);
    }
    words
}

/// Slot pages in the concurrent tests.
fn npages() -> u64 {
    if cfg!(miri) {
        48
    } else {
        16384
    }
}

/// Writes page `page` of the slot once, in the way `way` picks, through a
/// view whose slot 0 is at `base` (the pages the write touches are exactly
/// `page`). Returns false if the slot was not there (being moved).
fn write_page(reader: &Reader, rng: &mut Rng, page: u64, way: u64) -> bool {
    let view = reader.pin();
    let Some(base) = view.slot_by_id(KEY.id).map(|slot| slot.base_gfn()) else { return false };
    let start = (base + page) * PAGE;
    let offset = rng.below(PAGE - 16);
    let gpa = start + offset;
    match way % 5 {
        0 => view.write_obj(gpa, rng.next()).is_ok(),
        1 => {
            let len = 1 + rng.below(PAGE - offset) as usize;
            view.write(gpa, &vec![page as u8; len]).is_ok()
        }
        2 => {
            let mut cache = GpaCache::new(start, PAGE as usize).unwrap();
            view.write_cached(&mut cache, offset as usize, &[1; 16]).is_ok()
        }
        3 => view.mark_page_dirty(base + page),
        _ => {
            let Ok(range) = view.range(start, PAGE as usize) else { return false };
            // The handle outlives the view: the write marks the slot's log
            // after the view ended.
            drop(view);
            range.write(offset as usize, &[2; 8]).is_ok()
        }
    }
}

/// Writer threads write each of their pages exactly once (a page of every
/// `THREADS + 1` is never written), while the writer handle harvests in a
/// loop and, if `moves`, moves the slot between two places between
/// harvests. Returns how many times each page was reported, and the pages
/// written.
fn race(moves: bool) -> (Vec<u32>, BTreeSet<u64>, u64) {
    let npages = npages();
    let (slots, mut w, _ram) = setup(npages, Flags::LOG_DIRTY_PAGES);
    let readers: Vec<Reader> = (0..THREADS).map(|_| slots.reader()).collect();
    let finished = AtomicUsize::new(0);
    let started = AtomicBool::new(false);
    let mut counts = vec![0u32; npages as usize];
    let mut count = |bitmap: Vec<u64>| {
        assert_eq!(bitmap.len() as u64, npages.div_ceil(64));
        let pages = pages_of(&bitmap);
        for &page in &pages {
            counts[page as usize] += 1;
        }
        !pages.is_empty()
    };
    let (mut nonempty, mut moved) = (0, 0u64);
    let written = std::thread::scope(|s| {
        let (finished, started) = (&finished, &started);
        let writers: Vec<_> = readers
            .into_iter()
            .enumerate()
            .map(|(t, reader)| {
                s.spawn(move || {
                    let mut rng = Rng(t as u64 + 1);
                    let mut mine: Vec<u64> = (0..npages).filter(|p| p % (THREADS + 1) == t as u64).collect();
                    rng.shuffle(&mut mine);
                    // Start together with the harvester.
                    while !started.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                    for (i, &page) in mine.iter().enumerate() {
                        while !write_page(&reader, &mut rng, page, i as u64) {
                            std::thread::yield_now();
                        }
                        // Give the harvester (two cores, four threads) room
                        // to run between writes.
                        if i % 64 == 63 {
                            std::thread::yield_now();
                        }
                    }
                    // Release: pairs with the harvester's Acquire load, so
                    // its last harvest comes after every mark.
                    finished.fetch_add(1, Ordering::Release);
                    mine
                })
            })
            .collect();
        let mut round = 0u64;
        started.store(true, Ordering::Release);
        while finished.load(Ordering::Acquire) < THREADS as usize {
            nonempty += u64::from(count(w.get_dirty_log(KEY).unwrap()));
            round += 1;
            if moves && round.is_multiple_of(4) {
                moved += 1;
                let to = if moved % 2 == 1 { 2 * BASE + npages } else { BASE };
                assert_eq!(w.move_to(KEY, to), Ok(Change::Moved));
            }
            if cfg!(miri) {
                std::thread::yield_now();
            }
        }
        let written: BTreeSet<u64> = writers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        written
    });
    nonempty += u64::from(count(w.get_dirty_log(KEY).unwrap()));
    println!("{} pages written, {nonempty} non-empty harvests, {moved} moves", written.len());
    (counts, written, nonempty)
}

fn check_once(counts: &[u32], written: &BTreeSet<u64>) {
    for (page, &n) in counts.iter().enumerate() {
        let want = u32::from(written.contains(&(page as u64)));
        assert_eq!(n, want, "page {page} reported {n} times, written {want} times");
    }
    assert_eq!(written.len() as u64, npages() - npages() / (THREADS + 1));
}

#[test]
fn concurrent_writes_are_harvested_exactly_once() {
    let (counts, written, nonempty) = race(false);
    check_once(&counts, &written);
    assert!(cfg!(miri) || nonempty > 1, "the harvests never overlapped the writes");
}

/// As above, while the slot also moves back and forth: the log moves with
/// it, bits by page offset in the slot.
#[test]
fn concurrent_writes_during_moves_are_harvested_exactly_once() {
    let (counts, written, _) = race(true);
    check_once(&counts, &written);
}

#[test]
fn unchanged_flags_keep_the_bits() {
    let (slots, mut w, _ram) = setup(70, Flags::LOG_DIRTY_PAGES);
    let reader = slots.reader();
    reader.pin().write_obj((BASE + 3) * PAGE, 1u8).unwrap();
    // The same flags again: nothing changes, the bit stays.
    assert_eq!(w.set_flags(KEY, Flags::LOG_DIRTY_PAGES), Ok(Change::Unchanged));
    let region = UserMemoryRegion {
        slot: KEY.kvm_slot(),
        flags: Flags::LOG_DIRTY_PAGES,
        guest_phys_addr: BASE * PAGE,
        memory_size: 70 * PAGE,
        userspace_addr: reader.pin().gfn_to_hva(BASE).unwrap(),
    };
    assert_eq!(w.set_region(region), Ok(Change::Unchanged));
    assert_eq!(w.get_dirty_log(KEY), Ok(bitmap_of(70, &[3])));
    // A batch turning logging off and on again leaves the slot as it was,
    // and publishes nothing: the bits marked before it stay.
    reader.pin().write_obj((BASE + 69) * PAGE, 1u8).unwrap();
    let mut batch = w.batch();
    batch.set_flags(KEY, Flags::empty()).set_flags(KEY, Flags::LOG_DIRTY_PAGES);
    batch.commit().unwrap();
    assert_eq!(w.get_dirty_log(KEY), Ok(bitmap_of(70, &[69])));
}

/// A change that keeps LOG_DIRTY_PAGES (with today's two flags only a move
/// can: READONLY cannot toggle) carries the bitmap: a bit set before the
/// change is harvested after it. Through `set_region` as well.
#[test]
fn a_change_keeping_the_log_carries_the_bitmap() {
    let (slots, mut w, ram) = setup(70, Flags::LOG_DIRTY_PAGES);
    let reader = slots.reader();
    reader.pin().write_obj((BASE + 65) * PAGE + 8, 1u64).unwrap();
    let region = UserMemoryRegion {
        slot: KEY.kvm_slot(),
        flags: Flags::LOG_DIRTY_PAGES,
        guest_phys_addr: 0x1000 * PAGE,
        memory_size: 70 * PAGE,
        userspace_addr: ram.as_ptr() as u64,
    };
    assert_eq!(w.set_region(region), Ok(Change::Moved));
    assert_eq!(w.peek_dirty_log(KEY), Ok(bitmap_of(70, &[65])));
    assert_eq!(w.get_dirty_log(KEY), Ok(bitmap_of(70, &[65])));
    // A READONLY slot that logs keeps its log across a move too.
    let ro = Arc::new(GuestRam::new(PAGE as usize).unwrap());
    let ro_key = SlotKey { id: 1, as_id: 0 };
    w.create_owned(ro_key, 0x10, Flags::READONLY | Flags::LOG_DIRTY_PAGES, ro).unwrap();
    assert!(reader.pin().mark_page_dirty(0x10));
    assert_eq!(w.move_to(ro_key, 0x20), Ok(Change::Moved));
    assert_eq!(w.get_dirty_log(ro_key), Ok(vec![1]));
}

#[test]
fn clearing_the_flag_drops_the_log_and_setting_it_starts_empty() {
    let (slots, mut w, _ram) = setup(10, Flags::LOG_DIRTY_PAGES);
    let reader = slots.reader();
    reader.pin().write_obj((BASE + 2) * PAGE, 1u32).unwrap();
    assert_eq!(w.set_flags(KEY, Flags::empty()), Ok(Change::FlagsChanged));
    let disabled = Err(Error::DirtyLogDisabled { key: KEY });
    assert_eq!(w.get_dirty_log(KEY), disabled);
    assert_eq!(w.peek_dirty_log(KEY), disabled);
    assert_eq!(w.clear_dirty_log(KEY, 0, &[1]), Err(Error::DirtyLogDisabled { key: KEY }));
    // Writes while not logging mark nothing; mark_page_dirty says so.
    reader.pin().write_obj((BASE + 4) * PAGE, 1u32).unwrap();
    assert!(!reader.pin().mark_page_dirty(BASE + 5));
    assert_eq!(w.set_flags(KEY, Flags::LOG_DIRTY_PAGES), Ok(Change::FlagsChanged));
    assert_eq!(w.peek_dirty_log(KEY), Ok(vec![0]), "a new log starts empty");
    reader.pin().write_obj((BASE + 7) * PAGE, 1u32).unwrap();
    assert_eq!(w.get_dirty_log(KEY), Ok(bitmap_of(10, &[7])));
}

#[test]
fn a_move_keeps_the_bits_by_page_offset() {
    let (slots, mut w, _ram) = setup(130, Flags::LOG_DIRTY_PAGES);
    let reader = slots.reader();
    for page in [0, 63, 64, 129] {
        reader.pin().write_obj((BASE + page) * PAGE + 100, page).unwrap();
    }
    assert_eq!(w.move_to(KEY, 0x1000), Ok(Change::Moved));
    // Bits name pages by their offset in the slot, now at the new place.
    reader.pin().write_obj((0x1000 + 5) * PAGE, 1u8).unwrap();
    assert_eq!(w.get_dirty_log(KEY), Ok(bitmap_of(130, &[0, 5, 63, 64, 129])));
    assert_eq!(reader.pin().read_obj::<u64>((0x1000 + 129) * PAGE + 100), Ok(129), "the data moved too");
    // Moving back and forth within a batch keeps them as well.
    reader.pin().write_obj((0x1000 + 1) * PAGE, 1u8).unwrap();
    let mut batch = w.batch();
    batch.move_to(KEY, 0x2000).move_to(KEY, 0x3000);
    assert_eq!(batch.commit().map_err(|e| e.error), Ok(vec![Change::Moved, Change::Moved]));
    assert_eq!(w.get_dirty_log(KEY), Ok(bitmap_of(130, &[1])));
}

#[test]
fn mark_page_dirty() {
    let slots = Memslots::new(config()).unwrap();
    let mut w = slots.writer().unwrap();
    let hva = 0x7f00_0000_0000;
    let logging = Region { id: 0, as_id: 0, base_gfn: 0x10, npages: 100, hva, flags: Flags::LOG_DIRTY_PAGES };
    let quiet = Region { id: 1, as_id: 0, base_gfn: 0x80, npages: 4, hva: hva + (1 << 30), flags: Flags::empty() };
    w.create(logging).unwrap();
    w.create(quiet).unwrap();
    let vcpu = slots.reader();
    let device = slots.device_reader();
    assert!(vcpu.pin().mark_page_dirty(0x10));
    assert!(device.pin().mark_page_dirty(0x10 + 99));
    assert!(vcpu.pin().mark_page_dirty(0x10 + 64));
    assert!(vcpu.pin().mark_page_dirty(0x10 + 64), "marking twice is one bit");
    assert!(!vcpu.pin().mark_page_dirty(0x80), "a slot that does not log");
    assert!(!vcpu.pin().mark_page_dirty(0x10 + 100), "a hole");
    assert!(!vcpu.pin().mark_page_dirty(u64::MAX), "far out");
    assert_eq!(w.get_dirty_log(logging.key()), Ok(bitmap_of(100, &[0, 64, 99])));
    assert_eq!(w.get_dirty_log(logging.key()), Ok(vec![0, 0]), "harvested");
    assert_eq!(w.get_dirty_log(quiet.key()), Err(Error::DirtyLogDisabled { key: quiet.key() }));
}

#[test]
fn clear_dirty_log_clears_exactly_the_mask() {
    let npages = 200; // 4 words, the last one partly used
    let slots = Memslots::new(config()).unwrap();
    let mut w = slots.writer().unwrap();
    let region =
        Region { id: 0, as_id: 0, base_gfn: BASE, npages, hva: 0x7f00_0000_0000, flags: Flags::LOG_DIRTY_PAGES };
    w.create(region).unwrap();
    let reader = slots.reader();
    let dirty: Vec<u64> = (0..npages).filter(|p| p % 3 == 0 || p % 7 == 0).collect();
    for &page in &dirty {
        assert!(reader.pin().mark_page_dirty(BASE + page));
    }
    let all = bitmap_of(npages, &dirty);
    assert_eq!(w.peek_dirty_log(KEY), Ok(all.clone()));
    assert_eq!(w.peek_dirty_log(KEY), Ok(all.clone()), "peek does not clear");

    // Words 1 and 2: clear some bits, and bits that are not set.
    let mask = [0xf0f0_f0f0_f0f0_f0f0u64, u64::MAX];
    assert_eq!(w.clear_dirty_log(KEY, 64, &mask), Ok(()));
    let want = vec![all[0], all[1] & !mask[0], 0, all[3]];
    assert_eq!(w.peek_dirty_log(KEY), Ok(want.clone()));
    // The last word, with mask bits past the slot's end (harmless).
    assert_eq!(w.clear_dirty_log(KEY, 192, &[0b1001 | (1 << 63)]), Ok(()));
    let want = vec![want[0], want[1], 0, want[3] & !0b1001];
    assert_eq!(w.peek_dirty_log(KEY), Ok(want.clone()));
    // An empty mask clears nothing.
    assert_eq!(w.clear_dirty_log(KEY, 0, &[]), Ok(()));
    assert_eq!(w.clear_dirty_log(KEY, 0, &[0, 0]), Ok(()));
    assert_eq!(w.peek_dirty_log(KEY), Ok(want.clone()));

    // Bad ranges change nothing.
    let range = Err(Error::DirtyLogRange { key: KEY });
    for (first, mask) in [
        (1u64, vec![u64::MAX]),
        (63, vec![u64::MAX]),
        (65, vec![]),
        (0, vec![u64::MAX; 5]),
        (64, vec![u64::MAX; 4]),
        (256, vec![u64::MAX]),
        (1 << 20, vec![u64::MAX]),
        (u64::MAX - 63, vec![u64::MAX]),
        (u64::MAX, vec![]),
    ] {
        assert_eq!(w.clear_dirty_log(KEY, first, &mask), range, "first page {first}, {} words", mask.len());
    }
    assert_eq!(w.peek_dirty_log(KEY), Ok(want.clone()));
    // get takes what is left, then the log is empty.
    assert_eq!(w.get_dirty_log(KEY), Ok(want));
    assert_eq!(w.peek_dirty_log(KEY), Ok(vec![0; 4]));
}

#[test]
fn dirty_log_calls_on_missing_slots() {
    let slots = Memslots::new(config()).unwrap();
    let mut w = slots.writer().unwrap();
    let missing = SlotKey { id: 3, as_id: 0 };
    assert_eq!(w.get_dirty_log(missing), Err(Error::NoSuchSlot { key: missing }));
    assert_eq!(w.peek_dirty_log(missing), Err(Error::NoSuchSlot { key: missing }));
    assert_eq!(w.clear_dirty_log(missing, 0, &[1]), Err(Error::NoSuchSlot { key: missing }));
    let bad_id = SlotKey { id: 8, as_id: 0 };
    assert_eq!(w.get_dirty_log(bad_id), Err(Error::InvalidSlotId { id: 8 }));
    let bad_space = SlotKey { id: 0, as_id: 1 };
    assert_eq!(w.get_dirty_log(bad_space), Err(Error::InvalidAddressSpace { as_id: 1 }));
    // A deleted slot's log is gone with it.
    let ram = Arc::new(GuestRam::new(PAGE as usize).unwrap());
    w.create_owned(KEY, 0, Flags::LOG_DIRTY_PAGES, ram).unwrap();
    slots.reader().pin().write_obj(0, 1u8).unwrap();
    w.delete(KEY).unwrap();
    assert_eq!(w.get_dirty_log(KEY), Err(Error::NoSuchSlot { key: KEY }));
}

/// Writes that span pages mark every page they touch, and only those; a
/// write that stops early marks only what it wrote.
#[test]
fn writes_mark_the_pages_they_touch() {
    let (slots, mut w, _ram) = setup(4, Flags::LOG_DIRTY_PAGES);
    let reader = slots.reader();
    reader.pin().write((BASE + 1) * PAGE - 1, &[1, 2]).unwrap();
    assert_eq!(w.get_dirty_log(KEY), Ok(vec![0b11]));
    reader.pin().write((BASE + 1) * PAGE, &vec![0; 2 * PAGE as usize]).unwrap();
    assert_eq!(w.get_dirty_log(KEY), Ok(vec![0b110]));
    // Runs off the slot's end into the hole: pages 3 marked, nothing else.
    let end = (BASE + 4) * PAGE;
    assert!(reader.pin().write(end - 2, &[0; 8]).is_err());
    assert_eq!(w.get_dirty_log(KEY), Ok(vec![0b1000]));
    // Reads mark nothing.
    let mut buf = [0; 64];
    reader.pin().read(BASE * PAGE, &mut buf).unwrap();
    reader.pin().read_obj::<u64>(BASE * PAGE).unwrap();
    assert_eq!(w.get_dirty_log(KEY), Ok(vec![0]));
}
