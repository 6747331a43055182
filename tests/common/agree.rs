//! The crate against the reference model: one operation applied to both, and
//! every query compared on the state that results. Shared by the proptest
//! model test and the fuzz targets.

use memslots::{Change, Error, Flags, Memslots, Reader, Region, SlotKey, UserMemoryRegion, Writer};

use super::model::Model;

/// One writer request, as either the typed calls or the raw ioctl-style one.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Create(Region),
    Delete(SlotKey),
    Move(SlotKey, u64),
    SetFlags(SlotKey, Flags),
    /// Raw fields: `slot` packs `(as_id << 16) | id`, `flags` may carry
    /// unknown bits.
    SetRegion(UserMemoryRegion),
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($context:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!("{}: crate {:?}, model {:?}", format_args!($($context)+), got, want));
        }
    }};
}

/// Applies `op` to both; their results must be equal.
pub fn apply(w: &mut Writer, m: &mut Model, op: &Op) -> Result<(), String> {
    run(w, m, op).map(drop)
}

/// Applies `op` to both; their results must be equal, and the crate's is
/// returned.
pub fn run(w: &mut Writer, m: &mut Model, op: &Op) -> Result<Result<Change, Error>, String> {
    let (got, want) = match *op {
        Op::Create(r) => (w.create(r), m.create(r)),
        Op::Delete(k) => (w.delete(k), m.delete(k)),
        Op::Move(k, g) => (w.move_to(k, g), m.move_to(k, g)),
        Op::SetFlags(k, f) => (w.set_flags(k, f), m.set_flags(k, f)),
        Op::SetRegion(r) => (w.set_region(r), m.set_region(r)),
    };
    ensure_eq!(got, want, "{op:?}");
    Ok(got)
}

fn regions<'a>(it: impl Iterator<Item = &'a memslots::Slot>) -> Vec<Region> {
    it.map(|s| *s.region()).collect()
}

/// Every query of every address space, through each reader, against the
/// model: gfn lookups at the model's slot edges and holes and at `probes`,
/// lookups by id, and gfn- and hva-range iteration over each probe
/// `(start, len)` (`start..start + len`, saturating), whose hva window is
/// `hva_base + start * 0x800` on. Each range is also queried reversed and
/// empty (`start..start`), which must yield nothing, and from `start` up to
/// `u64::MAX`.
pub fn check(
    slots: &Memslots,
    readers: &mut [Reader],
    m: &Model,
    probes: &[(u64, u64)],
    hva_base: u64,
) -> Result<(), String> {
    ensure_eq!(slots.slot_objects(), m.slots.len(), "live slot objects");
    ensure_eq!(slots.total_pages(), m.slots.iter().map(|r| r.npages).sum::<u64>(), "total pages");
    let config = m.config;
    for as_id in 0..config.address_spaces {
        let mut gfns = m.probe_gfns(as_id);
        gfns.extend(probes.iter().map(|p| p.0));
        // All ids when there are few, else the held ones and the edges.
        let mut ids: Vec<u16> = if config.max_slots <= 64 {
            (0..config.max_slots).collect()
        } else {
            m.slots.iter().map(|r| r.id).chain([0, 1, config.max_slots - 1]).collect()
        };
        ids.push(config.max_slots);
        for reader in readers.iter_mut() {
            reader.set_address_space(as_id).map_err(|e| format!("set_address_space({as_id}): {e}"))?;
            let view = reader.pin();
            // Twice, so the second round goes through the caches.
            for _ in 0..2 {
                for &g in &gfns {
                    ensure_eq!(view.gfn_to_slot(g).map(|s| *s.region()), m.lookup(as_id, g), "as {as_id} gfn {g:#x}");
                }
            }
            for &id in &ids {
                let key = SlotKey { id, as_id };
                ensure_eq!(view.slot_by_id(id).map(|s| *s.region()), m.by_id(key), "{key:?}");
            }
            let mut all = regions(view.slots());
            all.sort_by_key(|r| r.base_gfn);
            ensure_eq!(all, m.in_gfn_range(as_id, 0, u64::MAX), "as {as_id} all slots");
            for &(start, len) in probes {
                let end = start.saturating_add(len);
                let lo = hva_base.wrapping_add(start.wrapping_mul(0x800));
                let hi = lo.saturating_add(len.saturating_mul(0x400));
                // The range, reversed, empty, and open to the top.
                for (start, end, lo, hi) in [
                    (start, end, lo, hi),
                    (end, start, hi, lo),
                    (start, start, lo, lo),
                    (start, u64::MAX, lo, u64::MAX),
                ] {
                    ensure_eq!(
                        regions(view.slots_in_gfn_range(start..end)),
                        m.in_gfn_range(as_id, start, end),
                        "as {as_id} gfns {start:#x}..{end:#x}"
                    );
                    ensure_eq!(
                        regions(view.slots_in_hva_range(lo..hi)),
                        m.in_hva_range(as_id, lo, hi),
                        "as {as_id} hvas {lo:#x}..{hi:#x}"
                    );
                }
            }
        }
    }
    Ok(())
}
