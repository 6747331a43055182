//! What the fuzz targets share: the reference models and the comparison from
//! `tests/common/`, and generators that keep fuzzed values where slots live
//! (small gfns, a few host addresses) while still reaching the extremes.

#[path = "../../tests/common/agree.rs"]
pub mod agree;
#[path = "../../tests/common/model.rs"]
pub mod model;
#[path = "../../tests/common/zap_model.rs"]
pub mod zap_model;

use arbitrary::{Result, Unstructured};
use memslots::{Flags, Region, SlotKey, UserMemoryRegion, GFN_LIMIT, MAX_SLOT_PAGES};

use agree::{batch_ops, Item, Op};
use model::Model;

/// Host addresses of the generated slots: few of them, so hva ranges overlap.
pub const HVA: u64 = 0x10_0000_0000;

/// Mostly a small gfn; a share at the top of the range: just below
/// `GFN_LIMIT` (a slot of up to 64 pages from there ends at or past the last
/// allowed gfn, `GFN_LIMIT - 2`), `GFN_LIMIT` itself, the largest gfns; or
/// any value.
pub fn gfn(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=23u8)? {
        0 => GFN_LIMIT - 1,
        1 => GFN_LIMIT,
        2 => u.arbitrary()?,
        3..=5 => GFN_LIMIT - u.int_in_range(1..=80)?,
        6 => u64::MAX - u.int_in_range(0..=2)?,
        _ => u.int_in_range(0..=319)?,
    })
}

/// Mostly 0..64 pages (0 is refused), sometimes too many or over the
/// small-config page budget.
pub fn npages(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=19u8)? {
        0 => MAX_SLOT_PAGES + 1,
        1 => u.int_in_range(1000..=1500)?,
        _ => u.int_in_range(0..=63)?,
    })
}

/// 65 pages below the top of the host address space: slots of up to 64
/// pages fit there.
pub const TOP_HVA: u64 = 0u64.wrapping_sub(65 * 4096);

/// One of 16 page-aligned host addresses, or an unaligned or wrapping one,
/// or one at the top of the host space.
pub fn hva(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=20u8)? {
        0 => HVA + 8,
        1 => 0xffff_ffff_ffff_f000,
        2 => TOP_HVA,
        _ => HVA + u.int_in_range(0..=15u64)? * 0x8000,
    })
}

/// Slot ids 0..10 (8 and 9 are out of range for `max_slots = 8`); address
/// spaces up to one past `address_spaces`.
pub fn key(u: &mut Unstructured, address_spaces: u16) -> Result<SlotKey> {
    Ok(SlotKey { id: u.int_in_range(0..=9)?, as_id: u.int_in_range(0..=address_spaces)? })
}

pub fn flags(u: &mut Unstructured) -> Result<Flags> {
    Ok(Flags::from_bits(u.int_in_range(0..=3)?).expect("two known bits"))
}

/// Raw flag bits as an ioctl caller passes them: mostly known bits,
/// sometimes unknown ones, kept with `from_bits_retain`.
pub fn raw_flags(u: &mut Unstructured) -> Result<Flags> {
    let bits = if u.int_in_range(0..=7u8)? == 0 { u.arbitrary()? } else { u.int_in_range(0..=4)? };
    Ok(Flags::from_bits_retain(bits))
}

/// KVM's packed `slot` field for `key`, or sometimes any value.
pub fn raw_slot(u: &mut Unstructured, key: SlotKey) -> Result<u32> {
    Ok(if u.int_in_range(0..=7u8)? == 0 { u.arbitrary()? } else { key.kvm_slot() })
}

/// Any writer request, valid or not.
pub fn op(u: &mut Unstructured, address_spaces: u16) -> Result<Op> {
    let k = key(u, address_spaces)?;
    Ok(match u.int_in_range(0..=16u8)? {
        0..=5 => Op::Create(Region {
            id: k.id,
            as_id: k.as_id,
            base_gfn: gfn(u)?,
            npages: npages(u)?,
            hva: hva(u)?,
            flags: flags(u)?,
        }),
        6..=7 => Op::Delete(k),
        8..=10 => Op::Move(k, gfn(u)?),
        11..=12 => Op::SetFlags(k, flags(u)?),
        _ => {
            // Near-valid raw fields: the skew unaligns gpa or size.
            let skew = u.int_in_range(0..=2u64)?;
            Op::SetRegion(UserMemoryRegion {
                slot: raw_slot(u, k)?,
                flags: raw_flags(u)?,
                guest_phys_addr: gfn(u)?.wrapping_mul(4096).wrapping_add(skew * 0x800),
                memory_size: npages(u)?.wrapping_mul(4096).wrapping_add(skew * 0x10),
                userspace_addr: hva(u)?,
            })
        }
    })
}

/// A slot position for the items of a batch (taken modulo the slot count).
fn pick(u: &mut Unstructured) -> Result<usize> {
    u.int_in_range(0..=7)
}

/// Mostly a gfn where a small slot fits, sometimes any of [`gfn`].
pub fn near_gfn(u: &mut Unstructured) -> Result<u64> {
    Ok(if u.int_in_range(0..=6u8)? == 0 { gfn(u)? } else { u.int_in_range(0..=299)? })
}

/// Flags to toggle: mostly `LOG_DIRTY_PAGES` or none, sometimes
/// `READONLY` too (refused).
fn toggle(u: &mut Unstructured) -> Result<Flags> {
    Ok(match u.int_in_range(0..=8u8)? {
        0..=5 => Flags::LOG_DIRTY_PAGES,
        6..=7 => Flags::empty(),
        _ => flags(u)?,
    })
}

/// A create that passes on its own unless it meets another slot (or the
/// address space is the one past the last).
pub fn fair_region(u: &mut Unstructured, address_spaces: u16) -> Result<Region> {
    Ok(Region {
        id: u.int_in_range(0..=7)?,
        as_id: if u.int_in_range(0..=9u8)? == 0 { address_spaces } else { u.int_in_range(0..=address_spaces - 1)? },
        base_gfn: u.int_in_range(0..=299)?,
        npages: u.int_in_range(1..=63)?,
        hva: hva(u)?,
        flags: flags(u)?,
    })
}

/// One entry of a batch: creates that mostly pass and any operation;
/// deletes, moves, flag changes and raw calls on existing slots; and pairs
/// that reuse an id, cancel out, fill a freed range or overlap.
pub fn item(u: &mut Unstructured, address_spaces: u16) -> Result<Item> {
    Ok(match u.int_in_range(0..=28u8)? {
        0..=4 => Item::Op(Op::Create(fair_region(u, address_spaces)?)),
        5..=8 => Item::Op(op(u, address_spaces)?),
        9..=10 => Item::Delete(pick(u)?),
        11..=13 => Item::Move(pick(u)?, near_gfn(u)?),
        14..=15 => Item::ToggleFlags(pick(u)?, toggle(u)?),
        16..=17 => Item::Raw(pick(u)?, if u.int_in_range(0..=4u8)? == 0 { None } else { Some(near_gfn(u)?) }),
        18..=19 => Item::Reuse {
            pick: pick(u)?,
            shift: if u.int_in_range(0..=3u8)? == 0 { u.int_in_range(0..=79)? } else { 0 },
            hva: if u.int_in_range(0..=2u8)? == 0 { Some(hva(u)?) } else { None },
            npages: if u.int_in_range(0..=2u8)? == 0 { Some(npages(u)?) } else { None },
        },
        20..=21 => Item::MoveBack { pick: pick(u)?, gfn: near_gfn(u)? },
        22 => Item::FlagsBack { pick: pick(u)?, toggle: toggle(u)? },
        23 => Item::CreateDelete(fair_region(u, address_spaces)?),
        24..=26 => Item::Fill {
            from: pick(u)?,
            away: if u.arbitrary()? { Some(near_gfn(u)?) } else { None },
            into: if u.int_in_range(0..=2u8)? == 0 { None } else { Some(pick(u)?) },
            id: u.int_in_range(0..=9)?,
        },
        _ => Item::Overlap {
            region: fair_region(u, address_spaces)?,
            id: u.int_in_range(0..=9)?,
            shift: u.int_in_range(0..=79)?,
        },
    })
}

/// Any writer request on the state of `m`: mostly a single call, else a
/// batch of up to 8 operations (sometimes none) built from up to 7 items.
pub fn step(u: &mut Unstructured, address_spaces: u16, m: &Model) -> Result<Op> {
    if u.int_in_range(0..=3u8)? != 0 {
        return op(u, address_spaces);
    }
    let n = if u.int_in_range(0..=12u8)? == 0 { 0 } else { u.int_in_range(1..=7)? };
    let items = (0..n).map(|_| item(u, address_spaces)).collect::<Result<Vec<Item>>>()?;
    Ok(Op::Batch(batch_ops(m, &items, 8)))
}

/// Range probes `(start gfn, length)` for `agree::check`: mostly where the
/// slots are, a share at the top of the range.
pub fn probes(u: &mut Unstructured) -> Result<Vec<(u64, u64)>> {
    (0..4)
        .map(|_| {
            let start = match u.int_in_range(0..=7u8)? {
                0 => GFN_LIMIT - u.int_in_range(0..=80)?,
                1 => u64::MAX - u.int_in_range(0..=80)?,
                _ => u.int_in_range(0..=319)?,
            };
            Ok((start, u.int_in_range(0..=79)?))
        })
        .collect()
}
