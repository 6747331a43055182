//! Every writer operation, every error variant, and the reader queries.
//! Each refused request is checked to leave the whole state untouched.

use memslots::{Change, Config, Error, Flags, Memslots, Region, SlotKey, Writer, MAX_SLOT_PAGES};

const HVA: u64 = 0x7f00_0000_0000;

fn region(id: u16, as_id: u16, base_gfn: u64, npages: u64) -> Region {
    Region { id, as_id, base_gfn, npages, hva: HVA + (u64::from(id) << 32), flags: Flags::empty() }
}

fn key(id: u16, as_id: u16) -> SlotKey {
    SlotKey { id, as_id }
}

/// Everything a caller can observe: per address space its generation and its
/// slots, plus the slot-object and page counters.
#[derive(Debug, PartialEq)]
struct Snapshot {
    spaces: Vec<(u64, Vec<Region>)>,
    slot_objects: usize,
    total_pages: u64,
}

fn snapshot(slots: &Memslots) -> Snapshot {
    let mut reader = slots.device_reader();
    let spaces = (0..slots.config().address_spaces)
        .map(|as_id| {
            reader.set_address_space(as_id).unwrap();
            let view = reader.pin();
            (view.generation(), view.slots().map(|s| *s.region()).collect())
        })
        .collect();
    Snapshot { spaces, slot_objects: slots.slot_objects(), total_pages: slots.total_pages() }
}

/// A map with slots 0 (gfn 0x0..0x100) and 1 (gfn 0x200..0x300, READONLY)
/// in address space 0 and slot 0 (gfn 0xa0..0xc0) in address space 1.
fn populated() -> (Memslots, Writer) {
    let slots = Memslots::new(Config { max_total_pages: 1 << 20, ..Config::default() }).unwrap();
    let mut w = slots.writer().unwrap();
    w.create(region(0, 0, 0, 0x100)).unwrap();
    w.create(Region { flags: Flags::READONLY, ..region(1, 0, 0x200, 0x100) }).unwrap();
    w.create(region(0, 1, 0xa0, 0x20)).unwrap();
    (slots, w)
}

/// Runs a refused request and checks the error and that nothing changed.
fn refused<T: std::fmt::Debug>(slots: &Memslots, expected: Error, op: impl FnOnce() -> Result<T, Error>) {
    let before = snapshot(slots);
    assert_eq!(op().unwrap_err(), expected);
    assert_eq!(snapshot(slots), before, "state changed by a refused request ({expected})");
}

#[test]
fn create_and_look_up() {
    let (slots, _w) = populated();
    let vcpu = slots.reader();
    let view = vcpu.pin();
    let s = view.gfn_to_slot(0x250).unwrap();
    assert_eq!(s.key(), key(1, 0));
    assert_eq!(s.flags(), Flags::READONLY);
    assert_eq!(view.gfn_to_hva(0x201), Some(HVA + (1 << 32) + 0x1000));
    assert_eq!(view.gfn_to_slot(0x100), None);
    assert_eq!(view.gfn_to_slot(0x1ff), None);
    assert_eq!(view.gfn_to_slot(0x300), None);
    assert_eq!(view.slot_by_id(1).map(|s| s.base_gfn()), Some(0x200));
    assert!(view.slot_by_id(2).is_none());
    assert_eq!(slots.slot_objects(), 3);
    assert_eq!(slots.total_pages(), 0x220);
}

#[test]
fn delete_removes_the_slot() {
    let (slots, mut w) = populated();
    w.delete(key(0, 0)).unwrap();
    let reader = slots.reader();
    let view = reader.pin();
    assert!(view.gfn_to_slot(0x10).is_none());
    assert!(view.slot_by_id(0).is_none());
    assert_eq!(view.slots().count(), 1);
    assert_eq!(slots.slot_objects(), 2);
    assert_eq!(slots.total_pages(), 0x120);
}

#[test]
fn move_keeps_size_hva_and_flags() {
    let (slots, mut w) = populated();
    // Overlapping only its own old range is allowed.
    w.move_to(key(1, 0), 0x280).unwrap();
    let reader = slots.reader();
    let view = reader.pin();
    let s = view.gfn_to_slot(0x37f).unwrap();
    assert_eq!(*s.region(), Region { base_gfn: 0x280, flags: Flags::READONLY, ..region(1, 0, 0, 0x100) });
    assert!(view.gfn_to_slot(0x27f).is_none());
    assert_eq!(slots.slot_objects(), 3);
}

#[test]
fn set_flags_changes_only_flags() {
    let (slots, mut w) = populated();
    w.set_flags(key(0, 0), Flags::LOG_DIRTY_PAGES).unwrap();
    let reader = slots.reader();
    let view = reader.pin();
    assert_eq!(
        *view.gfn_to_slot(5).unwrap().region(),
        Region { flags: Flags::LOG_DIRTY_PAGES, ..region(0, 0, 0, 0x100) }
    );
    assert_eq!(slots.slot_objects(), 3);
}

#[test]
fn set_region_has_kvm_meaning() {
    let slots = Memslots::new(Config::default()).unwrap();
    let mut w = slots.writer().unwrap();
    assert_eq!(w.set_region(3, 0, 0x10_0000, 0x4000, HVA, 0), Ok(Change::Created));
    assert_eq!(w.set_region(3, 0, 0x10_0000, 0x4000, HVA, 0), Ok(Change::Unchanged));
    assert_eq!(w.set_region(3, 0, 0x10_0000, 0x4000, HVA, 1), Ok(Change::FlagsChanged));
    assert_eq!(w.set_region(3, 0, 0x20_0000, 0x4000, HVA, 1), Ok(Change::Moved));
    let reader = slots.reader();
    let view = reader.pin();
    assert_eq!(view.gfn_to_hva(0x201), Some(HVA + 0x1000));
    drop(view);
    assert_eq!(w.set_region(3, 0, 0, 0, 0, 0), Ok(Change::Deleted));
    assert_eq!(slots.reader().pin().slots().count(), 0);
    assert_eq!(slots.slot_objects(), 0);
}

#[test]
fn identical_parameters_do_not_swap() {
    let (slots, mut w) = populated();
    let before = snapshot(&slots);
    assert_eq!(w.set_region(0, 0, 0, 0x100 * 4096, HVA, 0), Ok(Change::Unchanged));
    w.move_to(key(0, 0), 0).unwrap();
    w.set_flags(key(1, 0), Flags::READONLY).unwrap();
    assert_eq!(snapshot(&slots), before);
}

#[test]
fn generations_are_unique_across_address_spaces() {
    let slots = Memslots::new(Config { address_spaces: 3, ..Config::default() }).unwrap();
    let mut w = slots.writer().unwrap();
    let generation = |as_id| {
        let mut r = slots.device_reader();
        r.set_address_space(as_id).unwrap();
        let g = r.pin().generation();
        g
    };
    assert_eq!([generation(0), generation(1), generation(2)], [0, 1, 2]);
    w.create(region(0, 1, 0, 1)).unwrap(); // one swap
    assert_eq!(generation(1), 4);
    w.delete(key(0, 1)).unwrap(); // two swaps: INVALID, then the final state
    assert_eq!(generation(1), 10);
    assert_eq!([generation(0), generation(2)], [0, 2]);
}

#[test]
fn smm_reader_sees_address_space_one() {
    let (slots, _w) = populated();
    let mut vcpu = slots.reader();
    assert!(vcpu.pin().gfn_to_slot(0xa0).is_some_and(|s| s.as_id() == 0));
    vcpu.set_smm(true).unwrap();
    let view = vcpu.pin();
    assert_eq!(view.address_space(), 1);
    assert_eq!(view.gfn_to_slot(0xb0).map(|s| s.key()), Some(key(0, 1)));
    assert!(view.gfn_to_slot(0x210).is_none());
    drop(view);
    let one = Memslots::new(Config { address_spaces: 1, ..Config::default() }).unwrap();
    assert_eq!(one.reader().set_smm(true), Err(Error::InvalidAddressSpace { as_id: 1 }));
}

#[test]
fn caches_follow_updates() {
    let (slots, mut w) = populated();
    let vcpu = slots.reader();
    let device = slots.device_reader();
    for reader in [&vcpu, &device] {
        assert_eq!(reader.pin().gfn_to_slot(0x10).map(|s| s.base_gfn()), Some(0));
        assert_eq!(reader.pin().gfn_to_slot(0x10).map(|s| s.base_gfn()), Some(0));
    }
    w.move_to(key(0, 0), 0x1000).unwrap();
    for reader in [&vcpu, &device] {
        let view = reader.pin();
        assert!(view.gfn_to_slot(0x10).is_none(), "a cache handed out a moved slot");
        assert_eq!(view.gfn_to_slot(0x1010).map(|s| s.base_gfn()), Some(0x1000));
        assert_eq!(view.gfn_to_slot(0x1011).map(|s| s.base_gfn()), Some(0x1000));
    }
    w.delete(key(0, 0)).unwrap();
    for reader in [&vcpu, &device] {
        assert!(reader.pin().gfn_to_slot(0x1010).is_none(), "a cache handed out a deleted slot");
    }
}

#[test]
fn a_view_is_a_snapshot_and_repin_refreshes_it() {
    let (slots, w) = populated();
    let device = slots.device_reader();
    let view = device.pin();
    let generation = view.generation();
    // The writer would wait for this view, so change the map from another
    // thread and let the view go first.
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut w2 = slots.writer();
            while w2.is_err() {
                std::thread::yield_now();
                w2 = slots.writer();
            }
            w2.unwrap().delete(key(0, 0)).unwrap();
        });
        drop(w);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(view.gfn_to_slot(0x10).is_some(), "the view changed under the guard");
        // Repinning lets the writer's first grace period end; the writer needs
        // more than one, so the view is dropped before waiting for it.
        let view = view.repin();
        drop(view);
        writer.join().unwrap();
        let view = device.pin();
        assert!(view.gfn_to_slot(0x10).is_none());
        assert_ne!(view.generation(), generation);
    });
}

#[test]
fn gfn_range_yields_exactly_the_intersecting_slots() {
    let slots = Memslots::new(Config::default()).unwrap();
    let mut w = slots.writer().unwrap();
    for (id, base) in [(0, 0x10), (1, 0x20), (2, 0x40)] {
        w.create(region(id, 0, base, 0x10)).unwrap();
    }
    let reader = slots.reader();
    let view = reader.pin();
    let ids = |start, end| view.slots_in_gfn_range(start..end).map(|s| s.id()).collect::<Vec<_>>();
    assert_eq!(ids(0, 0x10), []);
    assert_eq!(ids(0, 0x11), [0]);
    assert_eq!(ids(0x1f, 0x21), [0, 1]);
    assert_eq!(ids(0x30, 0x40), []);
    assert_eq!(ids(0x15, 0x100), [0, 1, 2]);
    assert_eq!(ids(0x4f, 0x50), [2]);
    assert_eq!(ids(0x50, 0x40), []);
}

#[test]
fn hva_range_finds_overlapping_host_ranges() {
    let slots = Memslots::new(Config::default()).unwrap();
    let mut w = slots.writer().unwrap();
    // Two slots alias the same host memory; a third sits after it.
    w.create(Region { hva: HVA, ..region(0, 0, 0, 0x10) }).unwrap();
    w.create(Region { hva: HVA + 0x8000, ..region(1, 0, 0x100, 0x10) }).unwrap();
    w.create(Region { hva: HVA + 0x20000, ..region(2, 0, 0x200, 0x1) }).unwrap();
    let reader = slots.reader();
    let view = reader.pin();
    let ids = |lo, hi| view.slots_in_hva_range(lo..hi).map(|s| s.id()).collect::<Vec<_>>();
    assert_eq!(ids(HVA + 0x9000, HVA + 0xa000), [0, 1]);
    assert_eq!(ids(HVA + 0x10000, HVA + 0x18000), [1]);
    assert_eq!(ids(HVA + 0x18000, HVA + 0x20000), []);
    assert_eq!(ids(0, u64::MAX), [0, 1, 2]);
}

#[test]
fn drop_frees_every_slot_object() {
    let (slots, w) = populated();
    let reader = slots.reader();
    assert_eq!(slots.slot_objects(), 3);
    drop(w);
    drop(reader);
    drop(slots); // Freed once each; Miri and sanitizers check the rest.
}

#[test]
fn error_invalid_config() {
    assert_eq!(Memslots::new(Config { address_spaces: 0, ..Config::default() }).err(), Some(Error::InvalidConfig));
    assert_eq!(Memslots::new(Config { max_slots: 0, ..Config::default() }).err(), Some(Error::InvalidConfig));
}

#[test]
fn error_writer_busy() {
    let (slots, w) = populated();
    refused(&slots, Error::WriterBusy, || slots.writer().map(drop));
    drop(w);
    assert!(slots.writer().is_ok());
}

#[test]
fn error_unknown_flags() {
    let (slots, mut w) = populated();
    refused(&slots, Error::UnknownFlags { bits: 4 }, || w.set_region(9, 0, 0x1000_0000, 0x1000, HVA, 4));
    refused(&slots, Error::UnknownFlags { bits: 1 << 16 }, || w.set_region(0, 0, 0, 0x100000, HVA, 1 << 16));
    assert_eq!(Flags::from_bits(8), None);
}

#[test]
fn error_readonly_toggle() {
    let (slots, mut w) = populated();
    refused(&slots, Error::ReadonlyToggle { key: key(1, 0) }, || w.set_flags(key(1, 0), Flags::empty()));
    refused(&slots, Error::ReadonlyToggle { key: key(0, 0) }, || w.set_flags(key(0, 0), Flags::READONLY));
}

#[test]
fn error_unaligned() {
    let (slots, mut w) = populated();
    refused(&slots, Error::UnalignedSize { size: 0x1800 }, || w.set_region(9, 0, 0x1000_0000, 0x1800, HVA, 0));
    refused(&slots, Error::UnalignedGpa { gpa: 0x1000_0800 }, || w.set_region(9, 0, 0x1000_0800, 0x1000, HVA, 0));
    refused(&slots, Error::UnalignedHva { hva: HVA + 8 }, || w.set_region(9, 0, 0x1000_0000, 0x1000, HVA + 8, 0));
    refused(&slots, Error::UnalignedHva { hva: 1 }, || w.create(Region { hva: 1, ..region(9, 0, 0x10000, 1) }));
}

#[test]
fn error_wraps() {
    let (slots, mut w) = populated();
    refused(&slots, Error::GpaWraps, || w.set_region(9, 0, u64::MAX - 0xfff, 0x2000, HVA, 0));
    refused(&slots, Error::HvaWraps, || w.set_region(9, 0, 0x1000_0000, 0x2000, u64::MAX - 0xfff, 0));
    refused(&slots, Error::GpaWraps, || w.create(region(9, 0, 1 << 52, 1)));
    refused(&slots, Error::GpaWraps, || w.move_to(key(0, 0), u64::MAX - 1));
}

#[test]
fn error_slot_too_large() {
    let (slots, mut w) = populated();
    let npages = MAX_SLOT_PAGES + 1;
    refused(&slots, Error::SlotTooLarge { npages }, || w.set_region(9, 0, 0, npages << 12, 0, 0));
    refused(&slots, Error::SlotTooLarge { npages: u64::MAX }, || w.create(region(9, 0, 0x10000, u64::MAX)));
}

#[test]
fn error_empty_slot() {
    let (slots, mut w) = populated();
    refused(&slots, Error::EmptySlot, || w.create(region(9, 0, 0x10000, 0)));
}

#[test]
fn error_total_pages_exceeded() {
    let (slots, mut w) = populated();
    let limit = 1 << 20;
    refused(&slots, Error::TotalPagesExceeded { limit }, || w.create(region(9, 0, 0x10000, limit - 0x220 + 1)));
    w.create(region(9, 0, 0x10000, limit - 0x220)).unwrap();
    assert_eq!(slots.total_pages(), limit);
}

#[test]
fn error_invalid_slot_id_and_address_space() {
    let (slots, mut w) = populated();
    refused(&slots, Error::InvalidSlotId { id: 32764 }, || w.create(region(32764, 0, 0x10000, 1)));
    refused(&slots, Error::InvalidSlotId { id: 1 << 16 }, || w.set_region(1 << 16, 0, 0, 0x1000, 0, 0));
    refused(&slots, Error::InvalidAddressSpace { as_id: 2 }, || w.create(region(9, 2, 0x10000, 1)));
    refused(&slots, Error::InvalidAddressSpace { as_id: 7 }, || w.set_region(0, 7, 0, 0x1000, 0, 0));
    refused(&slots, Error::InvalidAddressSpace { as_id: 2 }, || w.delete(key(0, 2)));
}

#[test]
fn error_no_such_slot() {
    let (slots, mut w) = populated();
    for op in [0, 1, 2, 3] {
        refused(&slots, Error::NoSuchSlot { key: key(7, 0) }, || match op {
            0 => w.delete(key(7, 0)),
            1 => w.move_to(key(7, 0), 0x5000),
            2 => w.set_flags(key(7, 0), Flags::LOG_DIRTY_PAGES),
            _ => w.set_region(7, 0, 0, 0, 0, 0).map(drop),
        });
    }
}

#[test]
fn error_slot_exists() {
    let (slots, mut w) = populated();
    refused(&slots, Error::SlotExists { key: key(0, 0) }, || w.create(region(0, 0, 0x10000, 1)));
}

#[test]
fn error_resize_and_hva_change() {
    let (slots, mut w) = populated();
    refused(&slots, Error::Resize { key: key(0, 0) }, || w.set_region(0, 0, 0, 0x101 * 4096, HVA, 0));
    refused(&slots, Error::HvaChange { key: key(0, 0) }, || w.set_region(0, 0, 0, 0x100 * 4096, HVA + 4096, 0));
}

#[test]
fn error_overlap_names_the_colliding_slot() {
    let (slots, mut w) = populated();
    let with = key(1, 0);
    refused(&slots, Error::Overlap { key: key(9, 0), with }, || w.create(region(9, 0, 0x2ff, 1)));
    refused(&slots, Error::Overlap { key: key(9, 0), with: key(0, 0) }, || w.create(region(9, 0, 0xff, 0x200)));
    refused(&slots, Error::Overlap { key: key(0, 0), with }, || w.move_to(key(0, 0), 0x150));
    // The same range in the other address space is free.
    w.create(region(9, 1, 0x200, 1)).unwrap();
}
