//! Every writer operation, every error variant, and the reader queries.
//! Each refused request is checked to leave the whole state untouched.

use memslots::{
    Change, Config, Error, Flags, Memslots, Region, SlotKey, UserMemoryRegion, Writer, GFN_LIMIT, MAX_SLOT_PAGES,
};

mod common;

use common::agree::{check, run, Op};
use common::model::Model;

const HVA: u64 = 0x7f00_0000_0000;

fn region(id: u16, as_id: u16, base_gfn: u64, npages: u64) -> Region {
    Region { id, as_id, base_gfn, npages, hva: HVA + (u64::from(id) << 32), flags: Flags::empty() }
}

fn key(id: u16, as_id: u16) -> SlotKey {
    SlotKey { id, as_id }
}

/// A `set_region` request for slot `id` of address space `as_id` (packed as
/// KVM packs them), with raw flag bits.
fn umr(id: u32, as_id: u32, gpa: u64, size: u64, hva: u64, flags: u32) -> UserMemoryRegion {
    UserMemoryRegion {
        slot: (as_id << 16) | id,
        flags: Flags::from_bits_retain(flags),
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: hva,
    }
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
    let slots = Memslots::new(Config::default().with_max_total_pages(1 << 20)).unwrap();
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
    assert_eq!(w.set_region(umr(3, 0, 0x10_0000, 0x4000, HVA, 0)), Ok(Change::Created));
    assert_eq!(w.set_region(umr(3, 0, 0x10_0000, 0x4000, HVA, 0)), Ok(Change::Unchanged));
    assert_eq!(w.set_region(umr(3, 0, 0x10_0000, 0x4000, HVA, 1)), Ok(Change::FlagsChanged));
    assert_eq!(w.set_region(umr(3, 0, 0x20_0000, 0x4000, HVA, 1)), Ok(Change::Moved));
    let reader = slots.reader();
    let view = reader.pin();
    assert_eq!(view.gfn_to_hva(0x201), Some(HVA + 0x1000));
    drop(view);
    assert_eq!(w.set_region(umr(3, 0, 0, 0, 0, 0)), Ok(Change::Deleted));
    assert_eq!(slots.reader().pin().slots().count(), 0);
    assert_eq!(slots.slot_objects(), 0);
}

#[test]
fn identical_parameters_do_not_swap() {
    let (slots, mut w) = populated();
    let before = snapshot(&slots);
    assert_eq!(w.set_region(umr(0, 0, 0, 0x100 * 4096, HVA, 0)), Ok(Change::Unchanged));
    w.move_to(key(0, 0), 0).unwrap();
    w.set_flags(key(1, 0), Flags::READONLY).unwrap();
    assert_eq!(snapshot(&slots), before);
}

#[test]
fn generations_are_unique_across_address_spaces() {
    let slots = Memslots::new(Config::default().with_address_spaces(3)).unwrap();
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
    let one = Memslots::new(Config::default().with_address_spaces(1)).unwrap();
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
    assert_eq!(ids(0, 0x10), [0u16; 0]);
    assert_eq!(ids(0, 0x11), [0]);
    assert_eq!(ids(0x1f, 0x21), [0, 1]);
    assert_eq!(ids(0x30, 0x40), [0u16; 0]);
    assert_eq!(ids(0x15, 0x100), [0, 1, 2]);
    assert_eq!(ids(0x4f, 0x50), [2]);
    assert_eq!(ids(0x50, 0x40), [0u16; 0]);
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
    assert_eq!(ids(HVA + 0x18000, HVA + 0x20000), [0u16; 0]);
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
    assert_eq!(Memslots::new(Config::default().with_address_spaces(0)).err(), Some(Error::InvalidConfig));
    assert_eq!(Memslots::new(Config::default().with_max_slots(0)).err(), Some(Error::InvalidConfig));
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
    refused(&slots, Error::UnknownFlags { bits: 4 }, || w.set_region(umr(9, 0, 0x1000_0000, 0x1000, HVA, 4)));
    refused(&slots, Error::UnknownFlags { bits: 1 << 16 }, || w.set_region(umr(0, 0, 0, 0x100000, HVA, 1 << 16)));
    // Only the unknown bits are reported, not the known ones beside them.
    refused(&slots, Error::UnknownFlags { bits: 4 }, || w.set_region(umr(9, 0, 0x1000_0000, 0x1000, HVA, 4 | 3)));
    refused(&slots, Error::UnknownFlags { bits: !3 }, || w.set_region(umr(0, 0, 0, 0x100000, HVA, u32::MAX)));
    // Unknown flags come first, before every other check.
    refused(&slots, Error::UnknownFlags { bits: 8 }, || w.set_region(umr(0xffff, 9, 1, 1, 1, 8 | 1)));
    // The typed calls refuse retained unknown bits too.
    let odd = Flags::from_bits_retain(Flags::LOG_DIRTY_PAGES.bits() | 0x100);
    refused(&slots, Error::UnknownFlags { bits: 0x100 }, || w.set_flags(key(0, 0), odd));
    refused(&slots, Error::UnknownFlags { bits: 0x100 }, || {
        w.create(Region { flags: odd, ..region(9, 0, 0x10000, 1) })
    });
    assert_eq!(Flags::from_bits(8), None);
    assert_eq!(Flags::from_bits(3), Some(Flags::LOG_DIRTY_PAGES | Flags::READONLY));
    assert_eq!(Flags::from_bits_retain(0x104).bits(), 0x104);
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
    refused(&slots, Error::UnalignedSize { size: 0x1800 }, || w.set_region(umr(9, 0, 0x1000_0000, 0x1800, HVA, 0)));
    refused(&slots, Error::UnalignedGpa { gpa: 0x1000_0800 }, || w.set_region(umr(9, 0, 0x1000_0800, 0x1000, HVA, 0)));
    refused(&slots, Error::UnalignedHva { hva: HVA + 8 }, || w.set_region(umr(9, 0, 0x1000_0000, 0x1000, HVA + 8, 0)));
    refused(&slots, Error::UnalignedHva { hva: 1 }, || w.create(Region { hva: 1, ..region(9, 0, 0x10000, 1) }));
}

#[test]
fn error_wraps() {
    let (slots, mut w) = populated();
    refused(&slots, Error::GpaWraps, || w.set_region(umr(9, 0, u64::MAX - 0xfff, 0x2000, HVA, 0)));
    refused(&slots, Error::HvaWraps, || w.set_region(umr(9, 0, 0x1000_0000, 0x2000, u64::MAX - 0xfff, 0)));
    refused(&slots, Error::GpaWraps, || w.create(region(9, 0, 1 << 52, 1)));
    refused(&slots, Error::GpaWraps, || w.move_to(key(0, 0), u64::MAX - 1));
    // gpa + size reaching 2^64 exactly wraps to 0 (KVM's `gpa + size < gpa`).
    refused(&slots, Error::GpaWraps, || w.set_region(umr(9, 0, 0u64.wrapping_sub(0x2000), 0x2000, HVA, 0)));
    refused(&slots, Error::GpaWraps, || w.create(region(9, 0, GFN_LIMIT - 1, 1)));
    refused(&slots, Error::GpaWraps, || w.move_to(key(0, 0), GFN_LIMIT - 0x100));
    refused(&slots, Error::HvaWraps, || w.set_region(umr(9, 0, 0x1000_0000, 0x2000, 0u64.wrapping_sub(0x2000), 0)));
}

#[test]
fn error_slot_too_large() {
    let (slots, mut w) = populated();
    let npages = MAX_SLOT_PAGES + 1;
    refused(&slots, Error::SlotTooLarge { npages }, || w.set_region(umr(9, 0, 0, npages << 12, 0, 0)));
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
    refused(&slots, Error::InvalidSlotId { id: 32764 }, || w.set_region(umr(32764, 0, 0, 0x1000, 0, 0)));
    refused(&slots, Error::InvalidSlotId { id: 0xffff }, || w.set_region(umr(0xffff, 1, 0, 0x1000, 0, 0)));
    refused(&slots, Error::InvalidAddressSpace { as_id: 2 }, || w.create(region(9, 2, 0x10000, 1)));
    refused(&slots, Error::InvalidAddressSpace { as_id: 7 }, || w.set_region(umr(0, 7, 0, 0x1000, 0, 0)));
    refused(&slots, Error::InvalidAddressSpace { as_id: 0xffff }, || {
        w.set_region(UserMemoryRegion { slot: 0xffff_0000, ..umr(0, 0, 0, 0x1000, 0, 0) })
    });
    refused(&slots, Error::InvalidAddressSpace { as_id: 2 }, || w.delete(key(0, 2)));
    // The slot id is checked first, before the other fields, as KVM's ioctl
    // does; the address space only after the alignment and wrap checks.
    refused(&slots, Error::InvalidSlotId { id: 0xffff }, || {
        w.set_region(UserMemoryRegion { slot: u32::MAX, ..umr(0, 0, 0, 0x1000, 0, 0) })
    });
    refused(&slots, Error::InvalidSlotId { id: 40000 }, || w.set_region(umr(40000, 2, 0, 0x1000, 0, 0)));
    refused(&slots, Error::InvalidSlotId { id: 40000 }, || w.set_region(umr(40000, 0, 1, 0x1000, 0, 0)));
    refused(&slots, Error::UnalignedGpa { gpa: 1 }, || w.set_region(umr(0, 2, 1, 0x1000, 0, 0)));
    refused(&slots, Error::InvalidSlotId { id: 32764 }, || w.create(region(32764, 2, 0x10000, 1)));
    refused(&slots, Error::InvalidSlotId { id: 32764 }, || w.delete(key(32764, 2)));
}

#[test]
fn set_region_splits_the_slot_field_as_kvm_does() {
    let slots = Memslots::new(Config::default()).unwrap();
    let mut w = slots.writer().unwrap();
    // Id 3 in address space 1: `(1 << 16) | 3`.
    let request = UserMemoryRegion {
        slot: (1 << 16) | 3,
        flags: Flags::LOG_DIRTY_PAGES,
        guest_phys_addr: 0x10_0000,
        memory_size: 0x4000,
        userspace_addr: HVA,
    };
    assert_eq!(request.key(), key(3, 1));
    assert_eq!(key(3, 1).kvm_slot(), (1 << 16) | 3);
    assert_eq!(UserMemoryRegion { slot: 0xffff_fffe, ..request }.key(), key(0xfffe, 0xffff));
    assert_eq!(w.set_region(request), Ok(Change::Created));
    let mut smm = slots.reader();
    assert!(smm.pin().slot_by_id(3).is_none(), "the slot landed in address space 0");
    smm.set_smm(true).unwrap();
    let view = smm.pin();
    let slot = view.slot_by_id(3).expect("slot 1:3");
    assert_eq!(
        *slot.region(),
        Region { id: 3, as_id: 1, base_gfn: 0x100, npages: 4, hva: HVA, flags: Flags::LOG_DIRTY_PAGES }
    );
    drop(view);
    // The region converts back to the same request.
    assert_eq!(UserMemoryRegion::try_from(*smm.pin().slot_by_id(3).unwrap().region()), Ok(request));
    assert_eq!(w.set_region(request), Ok(Change::Unchanged));
    assert_eq!(w.set_region(UserMemoryRegion { memory_size: 0, ..request }), Ok(Change::Deleted));
    assert_eq!(slots.slot_objects(), 0);
}

#[test]
fn region_to_request_conversion_checks_the_range() {
    let r = region(5, 1, 0x200, 0x10);
    assert_eq!(
        UserMemoryRegion::try_from(r),
        Ok(UserMemoryRegion {
            slot: (1 << 16) | 5,
            flags: Flags::empty(),
            guest_phys_addr: 0x20_0000,
            memory_size: 0x1_0000,
            userspace_addr: r.hva,
        })
    );
    let last = GFN_LIMIT - 1 - 0x10;
    assert!(UserMemoryRegion::try_from(region(5, 1, last, 0x10)).is_ok());
    assert_eq!(UserMemoryRegion::try_from(region(5, 1, last + 1, 0x10)), Err(Error::GpaWraps));
    assert_eq!(UserMemoryRegion::try_from(region(5, 1, u64::MAX, 1)), Err(Error::GpaWraps));
    let npages = MAX_SLOT_PAGES + 1;
    assert_eq!(UserMemoryRegion::try_from(region(5, 1, 0, npages)), Err(Error::SlotTooLarge { npages }));
}

#[test]
fn error_no_such_slot() {
    let (slots, mut w) = populated();
    for op in [0, 1, 2, 3] {
        refused(&slots, Error::NoSuchSlot { key: key(7, 0) }, || match op {
            0 => w.delete(key(7, 0)),
            1 => w.move_to(key(7, 0), 0x5000),
            2 => w.set_flags(key(7, 0), Flags::LOG_DIRTY_PAGES),
            _ => w.set_region(umr(7, 0, 0, 0, 0, 0)),
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
    refused(&slots, Error::Resize { key: key(0, 0) }, || w.set_region(umr(0, 0, 0, 0x101 * 4096, HVA, 0)));
    refused(&slots, Error::HvaChange { key: key(0, 0) }, || w.set_region(umr(0, 0, 0, 0x100 * 4096, HVA + 4096, 0)));
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

/// The last gfn a slot may hold: one past a slot's last gfn is at most
/// `GFN_LIMIT - 1`, so that its byte end stays below 2^64.
const LAST_GFN: u64 = GFN_LIMIT - 2;

/// Both kinds of reader, for address space `as_id`.
fn both_readers(slots: &Memslots, as_id: u16) -> [memslots::Reader; 2] {
    let mut readers = [slots.reader(), slots.device_reader()];
    for r in &mut readers {
        r.set_address_space(as_id).unwrap();
    }
    readers
}

fn ids<'a>(it: impl Iterator<Item = &'a memslots::Slot>) -> Vec<u16> {
    it.map(|s| s.id()).collect()
}

#[test]
fn a_slot_may_end_at_the_last_allowed_gfn() {
    let slots = Memslots::new(Config::default()).unwrap();
    let mut w = slots.writer().unwrap();
    let mut model = Model::new(slots.config());
    let npages = 0x10;
    let size = npages << 12;
    // The host range ends one page below the top of the host space too.
    let top_hva = 0u64.wrapping_sub(size + 0x1000);
    let top = Region { hva: top_hva, ..region(1, 0, GFN_LIMIT - 1 - npages, npages) };
    assert_eq!(top.end_gfn(), LAST_GFN + 1);
    let mut both = |op: Op| run(&mut w, &mut model, &op).unwrap();
    // One page more, from the same base or one higher, reaches 2^64.
    assert_eq!(both(Op::Create(Region { npages: npages + 1, ..top })), Err(Error::GpaWraps));
    assert_eq!(both(Op::Create(Region { base_gfn: top.base_gfn + 1, ..top })), Err(Error::GpaWraps));
    // So does a host range ending at 2^64.
    assert_eq!(both(Op::Create(Region { hva: 0u64.wrapping_sub(size), ..top })), Err(Error::HvaWraps));
    assert_eq!(both(Op::Create(top)), Ok(Change::Created));
    assert_eq!(both(Op::Create(region(0, 0, 0, 0x10))), Ok(Change::Created));
    // The same through the raw call, in address space 1.
    let gpa = (GFN_LIMIT - 1 - npages) << 12;
    assert_eq!(gpa.checked_add(size), Some(0u64.wrapping_sub(0x1000)));
    assert_eq!(both(Op::SetRegion(umr(1, 1, gpa + 0x1000, size, top_hva, 0))), Err(Error::GpaWraps));
    assert_eq!(both(Op::SetRegion(umr(1, 1, gpa, size + 0x1000, top_hva - 0x1000, 0))), Err(Error::GpaWraps));
    // Host wrap is checked before guest wrap.
    assert_eq!(both(Op::SetRegion(umr(1, 1, gpa, size + 0x1000, top_hva, 0))), Err(Error::HvaWraps));
    assert_eq!(both(Op::SetRegion(umr(1, 1, gpa, size, top_hva, 0))), Ok(Change::Created));
    // Moves: one up is refused, one down and back is fine.
    assert_eq!(both(Op::Move(key(1, 0), top.base_gfn + 1)), Err(Error::GpaWraps));
    assert_eq!(both(Op::Move(key(1, 0), u64::MAX)), Err(Error::GpaWraps));
    assert_eq!(both(Op::Move(key(1, 0), top.base_gfn - 1)), Ok(Change::Moved));
    assert_eq!(both(Op::Move(key(1, 0), top.base_gfn)), Ok(Change::Moved));
    assert_eq!(both(Op::SetFlags(key(1, 0), Flags::LOG_DIRTY_PAGES)), Ok(Change::FlagsChanged));
    let top = Region { flags: Flags::LOG_DIRTY_PAGES, ..top };
    assert_eq!(model.slots.len(), 3);
    assert_eq!(model.by_id(key(1, 0)), Some(top));
    assert_eq!(model.by_id(key(1, 1)).map(|r| r.end_gfn()), Some(LAST_GFN + 1));

    let low = region(0, 0, 0, 0x10);
    for reader in both_readers(&slots, 0) {
        let view = reader.pin();
        // Twice and in mixed order, so that the caches hold the top slot
        // when a gfn above it is looked up, and the low slot otherwise.
        for _ in 0..2 {
            for gfn in [LAST_GFN, u64::MAX, 5, GFN_LIMIT, top.base_gfn, LAST_GFN + 1, u64::MAX - 1, LAST_GFN] {
                let want = [low, top].into_iter().find(|r| r.base_gfn <= gfn && gfn < r.end_gfn());
                assert_eq!(view.gfn_to_slot(gfn).map(|s| *s.region()), want, "gfn {gfn:#x}, {reader:?}");
                let hva = want.map(|r| r.hva + ((gfn - r.base_gfn) << 12));
                assert_eq!(view.gfn_to_hva(gfn), hva, "gfn {gfn:#x}, {reader:?}");
            }
        }
        assert_eq!(view.gfn_to_hva(LAST_GFN), Some(0u64.wrapping_sub(0x2000)));
        assert_eq!(view.gfn_to_slot(top.base_gfn - 1), None);
        // Ranges open to the top.
        for (start, want) in [
            (0, vec![0, 1]),
            (0x10, vec![1]),
            (top.base_gfn - 1, vec![1]),
            (top.base_gfn, vec![1]),
            (LAST_GFN, vec![1]),
            (LAST_GFN + 1, vec![]),
            (GFN_LIMIT, vec![]),
            (u64::MAX - 1, vec![]),
            (u64::MAX, vec![]),
        ] {
            assert_eq!(ids(view.slots_in_gfn_range(start..u64::MAX)), want, "gfns {start:#x}.., {reader:?}");
        }
        assert_eq!(ids(view.slots_in_gfn_range(LAST_GFN..LAST_GFN + 1)), [1]);
        assert_eq!(ids(view.slots_in_gfn_range(LAST_GFN + 1..GFN_LIMIT)), [] as [u16; 0]);
        assert_eq!(ids(view.slots_in_gfn_range(0x10..top.base_gfn)), [] as [u16; 0]);
        let hva_end = top_hva + size;
        for (lo, want) in [
            (0, vec![0, 1]),
            (low.hva + 0x1000, vec![0, 1]),
            (top_hva, vec![1]),
            (hva_end - 1, vec![1]),
            (hva_end, vec![]),
            (u64::MAX - 1, vec![]),
            (u64::MAX, vec![]),
        ] {
            assert_eq!(ids(view.slots_in_hva_range(lo..u64::MAX)), want, "hvas {lo:#x}.., {reader:?}");
        }
    }
    // Address space 1 holds only the raw-made top slot.
    for reader in both_readers(&slots, 1) {
        let view = reader.pin();
        assert_eq!(view.gfn_to_slot(LAST_GFN).map(|s| s.key()), Some(key(1, 1)));
        assert_eq!(view.gfn_to_slot(u64::MAX), None);
        assert_eq!(ids(view.slots_in_gfn_range(LAST_GFN..u64::MAX)), [1]);
        assert_eq!(ids(view.slots_in_hva_range(top_hva + size - 1..u64::MAX)), [1]);
    }
    // And every query against the model, with probes at the top.
    let probes = [(LAST_GFN - 0x20, 0x40), (u64::MAX - 0x10, 0x10), (GFN_LIMIT - 1, 1), (0, u64::MAX)];
    check(&slots, &mut both_readers(&slots, 0), &model, &probes, 0).unwrap();
    check(&slots, &mut both_readers(&slots, 0), &model, &probes, top_hva).unwrap();
}

#[test]
fn empty_and_reversed_ranges_yield_nothing() {
    let (slots, _w) = populated();
    #[allow(clippy::reversed_empty_ranges)]
    let gfn_ranges = [
        5..5,
        6..5,
        0x250..0x210,
        0x250..0x250,
        0x300..0,
        u64::MAX..0,
        u64::MAX..u64::MAX,
        GFN_LIMIT..GFN_LIMIT - 5,
        LAST_GFN..LAST_GFN,
    ];
    let hva = HVA + (1 << 32); // slot 1's host range
    #[allow(clippy::reversed_empty_ranges)]
    let hva_ranges = [HVA..HVA, HVA + 0x2000..HVA + 0x1000, hva + 0x1000..hva + 0x1000, u64::MAX..0, u64::MAX..HVA];
    for as_id in 0..2 {
        for reader in both_readers(&slots, as_id) {
            let view = reader.pin();
            for r in gfn_ranges.clone() {
                assert_eq!(view.slots_in_gfn_range(r.clone()).count(), 0, "gfns {r:x?} in as {as_id}, {reader:?}");
            }
            for r in hva_ranges.clone() {
                assert_eq!(view.slots_in_hva_range(r.clone()).count(), 0, "hvas {r:x?} in as {as_id}, {reader:?}");
            }
            // Controls: the same places, as non-empty ranges, do hold slots.
            let gfn = if as_id == 0 { 5 } else { 0xa5 };
            assert_eq!(view.slots_in_gfn_range(gfn..gfn + 1).count(), 1);
            assert_eq!(view.slots_in_hva_range(HVA..HVA + 1).count(), 1);
        }
    }
    let view = both_readers(&slots, 0)[0].pin().slots_in_gfn_range(0x210..0x250).count();
    assert_eq!(view, 1);
    assert_eq!(ids(slots.reader().pin().slots_in_hva_range(hva..hva + 0x1000)), [1]);
}

#[test]
fn a_view_on_the_writer_thread_refuses_changes() {
    let (slots, mut w) = populated();
    let before = snapshot(&slots);
    let device = slots.device_reader();
    let mut smm = slots.reader();
    smm.set_smm(true).unwrap();
    // A view of either reader kind, of either address space, would make the
    // writer wait for its own thread.
    for view in [device.pin(), smm.pin()] {
        assert_eq!(w.create(region(9, 0, 0x1000, 1)), Err(Error::ViewHeldByWriterThread));
        assert_eq!(w.move_to(key(0, 0), 0x1000), Err(Error::ViewHeldByWriterThread));
        assert_eq!(w.delete(key(0, 0)), Err(Error::ViewHeldByWriterThread));
        assert_eq!(w.delete(key(0, 1)), Err(Error::ViewHeldByWriterThread));
        assert_eq!(w.set_flags(key(0, 0), Flags::LOG_DIRTY_PAGES), Err(Error::ViewHeldByWriterThread));
        assert_eq!(w.set_region(umr(0, 0, 0, 0, 0, 0)), Err(Error::ViewHeldByWriterThread));
        assert_eq!(w.set_region(umr(3, 1, 0x5000, 0x1000, HVA, 0)), Err(Error::ViewHeldByWriterThread));
        // Requests that change nothing still succeed, and bad ones get their
        // own error.
        assert_eq!(w.set_region(umr(0, 0, 0, 0x100 * 4096, HVA, 0)), Ok(Change::Unchanged));
        assert_eq!(w.move_to(key(0, 0), 0), Ok(Change::Unchanged));
        assert_eq!(w.set_flags(key(1, 0), Flags::READONLY), Ok(Change::Unchanged));
        assert_eq!(w.delete(key(7, 0)), Err(Error::NoSuchSlot { key: key(7, 0) }));
        assert_eq!(w.move_to(key(0, 0), 0x250), Err(Error::Overlap { key: key(0, 0), with: key(1, 0) }));
        // The view still sees the state it was taken in.
        assert_eq!(view.generation(), before.spaces[usize::from(view.address_space())].0);
        drop(view);
        assert_eq!(snapshot(&slots), before, "a refused change left a trace");
    }
    // A view of another map on this thread does not matter.
    let other = Memslots::new(Config::default()).unwrap();
    let other_reader = other.reader();
    let other_view = other_reader.pin();
    assert_eq!(w.set_flags(key(0, 0), Flags::LOG_DIRTY_PAGES), Ok(Change::FlagsChanged));
    drop(other_view);
    // With the views gone, every change goes through.
    assert_eq!(w.create(region(9, 0, 0x1000, 1)), Ok(Change::Created));
    assert_eq!(w.move_to(key(0, 0), 0x2000), Ok(Change::Moved));
    assert_eq!(w.delete(key(0, 1)), Ok(Change::Deleted));
    assert_eq!(w.set_region(umr(9, 0, 0, 0, 0, 0)), Ok(Change::Deleted));
    let view = device.pin();
    assert_eq!(view.slots().count(), 2);
    assert_eq!(view.gfn_to_slot(0x2005).map(|s| s.flags()), Some(Flags::LOG_DIRTY_PAGES));
    assert_ne!(view.generation(), before.spaces[0].0);
}
