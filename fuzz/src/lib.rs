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
use memslots::{Flags, Region, SlotKey, GFN_LIMIT, MAX_SLOT_PAGES};

use agree::Op;

/// Host addresses of the generated slots: few of them, so hva ranges overlap.
pub const HVA: u64 = 0x10_0000_0000;

/// Mostly a small gfn; sometimes the last valid one, the first invalid one,
/// or any value.
pub fn gfn(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=19u8)? {
        0 => GFN_LIMIT - 1,
        1 => GFN_LIMIT,
        2 => u.arbitrary()?,
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

/// One of 16 page-aligned host addresses, or an unaligned or wrapping one.
pub fn hva(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=19u8)? {
        0 => HVA + 8,
        1 => 0xffff_ffff_ffff_f000,
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
            Op::SetRegion {
                id: k.id.into(),
                as_id: k.as_id.into(),
                gpa: gfn(u)?.wrapping_mul(4096).wrapping_add(skew * 0x800),
                size: npages(u)?.wrapping_mul(4096).wrapping_add(skew * 0x10),
                hva: hva(u)?,
                flags: u.int_in_range(0..=4)?,
            }
        }
    })
}

/// Range probes `(start gfn, length)` for `agree::check`.
pub fn probes(u: &mut Unstructured) -> Result<Vec<(u64, u64)>> {
    (0..4).map(|_| Ok((u.int_in_range(0..=319)?, u.int_in_range(0..=79)?))).collect()
}
