//! Model-based test: random sequences of valid and invalid operations on
//! several address spaces, applied to the crate and to the reference model in
//! `common/model.rs`. After every step every query must agree.

mod common;

use common::model::Model;
use memslots::{Config, Flags, Memslots, Reader, Region, SlotKey, Writer};
use proptest::prelude::*;

const CONFIG: Config = Config { address_spaces: 2, max_slots: 8, max_total_pages: 2000 };
const HVA: u64 = 0x10_0000_0000;

#[derive(Clone, Debug)]
enum Op {
    Create(Region),
    Delete(SlotKey),
    Move(SlotKey, u64),
    SetFlags(SlotKey, Flags),
    SetRegion { id: u32, as_id: u32, gpa: u64, size: u64, hva: u64, flags: u32 },
}

fn key() -> impl Strategy<Value = SlotKey> {
    (0u16..10, prop_oneof![9 => 0u16..2, 1 => 2u16..4]).prop_map(|(id, as_id)| SlotKey { id, as_id })
}

fn gfn() -> impl Strategy<Value = u64> {
    prop_oneof![20 => 0u64..300, 1 => Just((1 << 52) - 1), 1 => Just(1 << 52), 1 => any::<u64>()]
}

fn npages() -> impl Strategy<Value = u64> {
    prop_oneof![20 => 0u64..64, 1 => Just(memslots::MAX_SLOT_PAGES + 1), 1 => 1000u64..1500]
}

fn hva() -> impl Strategy<Value = u64> {
    // Few distinct host addresses, so host ranges overlap often.
    prop_oneof![20 => (0u64..16).prop_map(|i| HVA + i * 0x8000), 1 => Just(HVA + 8), 1 => Just(0xffff_ffff_ffff_f000)]
}

fn flags() -> impl Strategy<Value = Flags> {
    (0u32..4).prop_map(|bits| Flags::from_bits(bits).unwrap())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), gfn(), npages(), hva(), flags()).prop_map(|(k, base_gfn, npages, hva, flags)| {
            Op::Create(Region { id: k.id, as_id: k.as_id, base_gfn, npages, hva, flags })
        }),
        2 => key().prop_map(Op::Delete),
        3 => (key(), gfn()).prop_map(|(k, g)| Op::Move(k, g)),
        2 => (key(), flags()).prop_map(|(k, f)| Op::SetFlags(k, f)),
        4 => (0u32..10, 0u32..3, gfn(), npages(), hva(), 0u32..5, 0u64..3).prop_map(
            |(id, as_id, gfn, npages, hva, flags, skew)| Op::SetRegion {
                id,
                as_id,
                gpa: gfn.wrapping_mul(4096).wrapping_add(skew * 0x800),
                size: npages.wrapping_mul(4096).wrapping_add(skew * 0x10),
                hva,
                flags,
            }
        ),
    ]
}

fn apply(w: &mut Writer, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let (got, want) = match *op {
        Op::Create(r) => (w.create(r), m.create(r)),
        Op::Delete(k) => (w.delete(k), m.delete(k)),
        Op::Move(k, g) => (w.move_to(k, g), m.move_to(k, g)),
        Op::SetFlags(k, f) => (w.set_flags(k, f), m.set_flags(k, f)),
        Op::SetRegion { id, as_id, gpa, size, hva, flags } => {
            let got = w.set_region(id, as_id, gpa, size, hva, flags);
            let want = m.set_region(id, as_id, gpa, size, hva, flags);
            prop_assert_eq!(got, want);
            return Ok(());
        }
    };
    prop_assert_eq!(got, want);
    Ok(())
}

fn regions<'a>(it: impl Iterator<Item = &'a memslots::Slot>) -> Vec<Region> {
    it.map(|s| *s.region()).collect()
}

fn check(slots: &Memslots, readers: &mut [Reader], m: &Model, probes: &[(u64, u64)]) -> Result<(), TestCaseError> {
    prop_assert_eq!(slots.slot_objects(), m.slots.len());
    prop_assert_eq!(slots.total_pages(), m.slots.iter().map(|r| r.npages).sum::<u64>());
    for as_id in 0..CONFIG.address_spaces {
        let mut gfns = m.probe_gfns(as_id);
        gfns.extend(probes.iter().map(|p| p.0));
        for reader in readers.iter_mut() {
            reader.set_address_space(as_id).unwrap();
            let view = reader.pin();
            // Twice, so the second round goes through the caches.
            for _ in 0..2 {
                for &g in &gfns {
                    prop_assert_eq!(view.gfn_to_slot(g).map(|s| *s.region()), m.lookup(as_id, g), "gfn {:#x}", g);
                }
            }
            for id in 0..CONFIG.max_slots {
                let k = SlotKey { id, as_id };
                prop_assert_eq!(view.slot_by_id(id).map(|s| *s.region()), m.by_id(k));
            }
            let mut all = regions(view.slots());
            all.sort_by_key(|r| r.base_gfn);
            prop_assert_eq!(all, m.in_gfn_range(as_id, 0, u64::MAX));
            for &(start, len) in probes {
                let end = start.saturating_add(len);
                prop_assert_eq!(regions(view.slots_in_gfn_range(start..end)), m.in_gfn_range(as_id, start, end));
                let (lo, hi) = (HVA + start * 0x800, HVA + start * 0x800 + len * 0x400);
                prop_assert_eq!(regions(view.slots_in_hva_range(lo..hi)), m.in_hva_range(as_id, lo, hi));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn crate_agrees_with_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        probes in proptest::collection::vec((0u64..320, 0u64..80), 4),
    ) {
        let slots = Memslots::new(CONFIG).unwrap();
        let mut w = slots.writer().unwrap();
        let mut readers = [slots.reader(), slots.device_reader()];
        let mut m = Model::new(CONFIG);
        for op in &ops {
            apply(&mut w, &mut m, op)?;
            check(&slots, &mut readers, &m, &probes)?;
        }
    }
}
