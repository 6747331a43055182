//! Model-based test: random sequences of valid and invalid operations on
//! several address spaces, applied to the crate and to the reference model in
//! `common/model.rs`. After every step every query must agree.

mod common;

use common::agree::{apply, check, Op};
use common::model::Model;
use memslots::{Config, Flags, Memslots, Region, SlotKey};
use proptest::prelude::*;

const CONFIG: Config = Config { address_spaces: 2, max_slots: 8, max_total_pages: 2000 };
const HVA: u64 = 0x10_0000_0000;

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

proptest! {
    #![proptest_config(common::proptest_config(1024))]

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
            apply(&mut w, &mut m, op).map_err(TestCaseError::fail)?;
            check(&slots, &mut readers, &m, &probes, HVA).map_err(TestCaseError::fail)?;
        }
    }
}
