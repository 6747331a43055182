//! Model-based test: random sequences of valid and invalid operations on
//! several address spaces, single calls and batches (valid and refused ones),
//! applied to the crate and to the reference model in `common/model.rs`.
//! After every step every query must agree.

mod common;

use common::agree::{apply, batch_ops, check, Item, Op};
use common::model::Model;
use memslots::{Config, Flags, Memslots, Region, SlotKey, UserMemoryRegion, GFN_LIMIT};
use proptest::prelude::*;

const CONFIG: Config = Config::new(2, 8).with_max_total_pages(2000);
const HVA: u64 = 0x10_0000_0000;
/// 65 pages below the top of the host address space.
const TOP_HVA: u64 = 0u64.wrapping_sub(65 * 4096);

fn key() -> impl Strategy<Value = SlotKey> {
    (0u16..10, prop_oneof![9 => 0u16..2, 1 => 2u16..4]).prop_map(|(id, as_id)| SlotKey { id, as_id })
}

/// Mostly a small gfn; a share at the top of the range: bases from which a
/// slot of up to 64 pages ends at or just past the last allowed gfn
/// (`GFN_LIMIT - 1`), `GFN_LIMIT` itself, and the largest gfns.
fn gfn() -> impl Strategy<Value = u64> {
    prop_oneof![
        20 => 0u64..300,
        3 => (GFN_LIMIT - 80)..(GFN_LIMIT + 2),
        1 => (u64::MAX - 2)..=u64::MAX,
        1 => any::<u64>(),
    ]
}

fn npages() -> impl Strategy<Value = u64> {
    prop_oneof![20 => 0u64..64, 1 => Just(memslots::MAX_SLOT_PAGES + 1), 1 => 1000u64..1500]
}

fn hva() -> impl Strategy<Value = u64> {
    // Few distinct host addresses, so host ranges overlap often.
    // The last two: a range that wraps, and one that fits just below the
    // top of the host space for up to 64 pages.
    prop_oneof![
        20 => (0u64..16).prop_map(|i| HVA + i * 0x8000),
        1 => Just(HVA + 8),
        1 => Just(0xffff_ffff_ffff_f000),
        1 => Just(TOP_HVA),
    ]
}

fn flags() -> impl Strategy<Value = Flags> {
    (0u32..4).prop_map(|bits| Flags::from_bits(bits).unwrap())
}

/// Raw flag bits for `set_region`: mostly known ones, sometimes unknown.
fn raw_flags() -> impl Strategy<Value = Flags> {
    prop_oneof![8 => 0u32..5, 1 => any::<u32>()].prop_map(Flags::from_bits_retain)
}

/// KVM's packed `slot` field: mostly `(as_id << 16) | id` with small parts,
/// sometimes any value (ids and address spaces far out of range).
fn raw_slot() -> impl Strategy<Value = u32> {
    prop_oneof![8 => (0u32..10, 0u32..3).prop_map(|(id, as_id)| (as_id << 16) | id), 1 => any::<u32>()]
}

/// Range probes `(start gfn, length)`: mostly where the slots are, a share
/// at the top of the range.
fn probe() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        6 => (0u64..320, 0u64..80),
        1 => ((GFN_LIMIT - 80)..(GFN_LIMIT + 2), 0u64..80),
        1 => ((u64::MAX - 80)..=u64::MAX, 0u64..80),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), gfn(), npages(), hva(), flags()).prop_map(|(k, base_gfn, npages, hva, flags)| {
            Op::Create(Region { id: k.id, as_id: k.as_id, base_gfn, npages, hva, flags })
        }),
        2 => key().prop_map(Op::Delete),
        3 => (key(), gfn()).prop_map(|(k, g)| Op::Move(k, g)),
        2 => (key(), flags()).prop_map(|(k, f)| Op::SetFlags(k, f)),
        4 => (raw_slot(), gfn(), npages(), hva(), raw_flags(), 0u64..3).prop_map(
            |(slot, gfn, npages, hva, flags, skew)| Op::SetRegion(UserMemoryRegion {
                slot,
                flags,
                guest_phys_addr: gfn.wrapping_mul(4096).wrapping_add(skew * 0x800),
                memory_size: npages.wrapping_mul(4096).wrapping_add(skew * 0x10),
                userspace_addr: hva,
            })
        ),
    ]
}

/// A slot position for the items of a batch (taken modulo the slot count).
fn pick() -> impl Strategy<Value = usize> {
    0usize..8
}

/// Mostly a gfn where a small slot fits, sometimes any of `gfn()`.
fn near_gfn() -> impl Strategy<Value = u64> {
    prop_oneof![6 => 0u64..300, 1 => gfn()]
}

/// Flags to toggle: mostly `LOG_DIRTY_PAGES` or none, sometimes `READONLY`
/// too (refused).
fn toggle() -> impl Strategy<Value = Flags> {
    prop_oneof![6 => Just(Flags::LOG_DIRTY_PAGES), 2 => Just(Flags::empty()), 1 => flags()]
}

/// A create that passes on its own unless it meets another slot.
fn fair_region() -> impl Strategy<Value = Region> {
    (0u16..8, prop_oneof![9 => 0u16..2, 1 => 0u16..3], 0u64..300, 1u64..64, hva(), flags())
        .prop_map(|(id, as_id, base_gfn, npages, hva, flags)| Region { id, as_id, base_gfn, npages, hva, flags })
}

/// One entry of a batch: creates that mostly pass and any operation;
/// deletes, moves, flag changes and raw calls on existing slots; and pairs
/// that reuse an id, cancel out, fill a freed range or overlap.
fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        5 => fair_region().prop_map(|r| Item::Op(Op::Create(r))),
        4 => op().prop_map(Item::Op),
        2 => pick().prop_map(Item::Delete),
        3 => (pick(), near_gfn()).prop_map(|(pick, gfn)| Item::Move(pick, gfn)),
        2 => (pick(), toggle()).prop_map(|(pick, toggle)| Item::ToggleFlags(pick, toggle)),
        2 => (pick(), proptest::option::weighted(0.8, near_gfn())).prop_map(|(pick, gfn)| Item::Raw(pick, gfn)),
        2 => (
            pick(),
            prop_oneof![3 => Just(0u64), 1 => 0u64..80],
            proptest::option::weighted(0.3, hva()),
            proptest::option::weighted(0.3, npages()),
        )
            .prop_map(|(pick, shift, hva, npages)| Item::Reuse { pick, shift, hva, npages }),
        2 => (pick(), near_gfn()).prop_map(|(pick, gfn)| Item::MoveBack { pick, gfn }),
        1 => (pick(), toggle()).prop_map(|(pick, toggle)| Item::FlagsBack { pick, toggle }),
        1 => fair_region().prop_map(Item::CreateDelete),
        3 => (pick(), proptest::option::of(near_gfn()), proptest::option::weighted(0.7, pick()), 0u16..10)
            .prop_map(|(from, away, into, id)| Item::Fill { from, away, into, id }),
        2 => (fair_region(), 0u16..10, 0u64..80).prop_map(|(region, id, shift)| Item::Overlap { region, id, shift }),
    ]
}

/// A step of the test: a single call, or a batch of up to 8 operations
/// built from its items on the state the steps before left.
#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    Batch(Vec<Item>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => op().prop_map(Step::Op),
        1 => prop_oneof![1 => Just(Vec::new()), 12 => proptest::collection::vec(item(), 1..8)].prop_map(Step::Batch),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config(1024))]

    #[test]
    fn crate_agrees_with_the_model(
        steps in proptest::collection::vec(step(), 1..60),
        probes in proptest::collection::vec(probe(), 4),
    ) {
        let slots = Memslots::new(CONFIG).unwrap();
        let mut w = slots.writer().unwrap();
        let mut readers = [slots.reader(), slots.device_reader()];
        let mut m = Model::new(CONFIG);
        for step in &steps {
            let op = match step {
                Step::Op(op) => op.clone(),
                Step::Batch(items) => Op::Batch(batch_ops(&m, items, 8)),
            };
            apply(&mut w, &mut m, &op).map_err(TestCaseError::fail)?;
            check(&slots, &mut readers, &m, &probes, HVA)
                .map_err(|e| TestCaseError::fail(format!("after {op:?}: {e}")))?;
        }
    }
}
