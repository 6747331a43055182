//! The crate against the reference model: one operation (or one batch of
//! them) applied to both, and every query compared on the state that
//! results. Shared by the proptest model test and the fuzz targets.

use memslots::{BatchError, Change, Error, Flags, Memslots, Reader, Region, SlotKey, UserMemoryRegion, Writer};

use super::model::Model;

/// One writer request, as either the typed calls or the raw ioctl-style one,
/// or a batch of them.
#[derive(Clone, Debug)]
pub enum Op {
    Create(Region),
    Delete(SlotKey),
    Move(SlotKey, u64),
    SetFlags(SlotKey, Flags),
    /// Raw fields: `slot` packs `(as_id << 16) | id`, `flags` may carry
    /// unknown bits.
    SetRegion(UserMemoryRegion),
    /// `Writer::batch` with these operations, committed; none of them may be
    /// a batch itself.
    Batch(Vec<Op>),
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($context:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!("{}: crate {:?}, model {:?}", format_args!($($context)+), got, want));
        }
    }};
}

/// Applies `op` (a single call or a batch) to both; their results must be
/// equal.
pub fn apply(w: &mut Writer, m: &mut Model, op: &Op) -> Result<(), String> {
    match op {
        Op::Batch(ops) => run_batch(w, m, ops).map(drop),
        _ => run(w, m, op).map(drop),
    }
}

/// Applies the single call `op` to both; their results must be equal, and
/// the crate's is returned. A batch is refused: see [`run_batch`].
pub fn run(w: &mut Writer, m: &mut Model, op: &Op) -> Result<Result<Change, Error>, String> {
    let (got, want) = match *op {
        Op::Create(r) => (w.create(r), m.create(r)),
        Op::Delete(k) => (w.delete(k), m.delete(k)),
        Op::Move(k, g) => (w.move_to(k, g), m.move_to(k, g)),
        Op::SetFlags(k, f) => (w.set_flags(k, f), m.set_flags(k, f)),
        Op::SetRegion(r) => (w.set_region(r), m.set_region(r)),
        Op::Batch(_) => return Err(format!("{op:?}: a batch goes through run_batch")),
    };
    ensure_eq!(got, want, "{op:?}");
    Ok(got)
}

/// Commits `ops` as one batch of the crate and of the model; their results
/// (the changes of every operation, or the index and error of the first
/// refused one) must be equal, and the crate's is returned. Nested batches
/// are refused.
pub fn run_batch(w: &mut Writer, m: &mut Model, ops: &[Op]) -> Result<Result<Vec<Change>, BatchError>, String> {
    let mut batch = w.batch();
    for op in ops {
        match *op {
            Op::Create(r) => batch.create(r),
            Op::Delete(k) => batch.delete(k),
            Op::Move(k, g) => batch.move_to(k, g),
            Op::SetFlags(k, f) => batch.set_flags(k, f),
            Op::SetRegion(r) => batch.set_region(r),
            Op::Batch(_) => return Err(format!("batch {ops:?}: nested batch")),
        };
    }
    ensure_eq!(batch.len(), ops.len(), "batch {ops:?}: operations collected");
    let got = batch.commit();
    let want = m.batch(ops).map_err(|(index, error)| BatchError { index, error });
    ensure_eq!(got, want, "batch {ops:?}");
    Ok(got)
}

/// One entry of a generated batch: an operation as is, or one or two that
/// name slots by position among those present when the entry is reached
/// (`pick` modulo their number; no operation when there are none). Picked
/// slots make batches mostly valid, reuse ids, fill freed ranges and cancel
/// out far more often than random operations would.
#[derive(Clone, Debug)]
pub enum Item {
    Op(Op),
    Delete(usize),
    Move(usize, u64),
    /// Sets the slot's flags to its own with these toggled (toggling
    /// `READONLY` is refused).
    ToggleFlags(usize, Flags),
    /// `set_region` with the slot's own fields at `gfn`, or with size 0 (a
    /// delete) for `None`.
    Raw(usize, Option<u64>),
    /// Deletes the slot, then creates one with its id: the same region, or
    /// `shift` pages higher, with other memory (`hva`) or another size.
    Reuse {
        pick: usize,
        shift: u64,
        hva: Option<u64>,
        npages: Option<u64>,
    },
    /// Moves the slot to `gfn` and back: a cancelling pair.
    MoveBack {
        pick: usize,
        gfn: u64,
    },
    /// Toggles the slot's flags, then sets its old flags again: a
    /// cancelling pair.
    FlagsBack {
        pick: usize,
        toggle: Flags,
    },
    /// Creates the slot, then deletes it: a cancelling pair.
    CreateDelete(Region),
    /// Frees the range of slot `from` (deletes it, or moves it to `away`),
    /// then moves slot `into` (picked after the first operation) to where
    /// `from` was, or creates slot `id` there.
    Fill {
        from: usize,
        away: Option<u64>,
        into: Option<usize>,
        id: u16,
    },
    /// Creates `region`, then slot `id` of the same size and address space
    /// `shift` pages higher: they overlap when `shift < npages`.
    Overlap {
        region: Region,
        id: u16,
        shift: u64,
    },
}

/// The operations of a batch built from `items` on the state of `m`, at
/// most `max` of them. The slots an item picks are those of a scratch copy
/// of the model to which the operations before have been applied by the
/// single-call rules (a refused one changes nothing there).
pub fn batch_ops(m: &Model, items: &[Item], max: usize) -> Vec<Op> {
    fn pick(m: &Model, i: usize) -> Option<Region> {
        (!m.slots.is_empty()).then(|| m.slots[i % m.slots.len()])
    }
    let mut scratch = m.clone();
    let mut ops = Vec::new();
    let mut push = |scratch: &mut Model, op: Op| {
        if ops.len() < max {
            // Refusals are part of the test: the scratch state stays as is.
            let _ = scratch.single(&op);
            ops.push(op);
        }
    };
    for item in items {
        let some: Vec<Op> = match *item {
            Item::Op(ref op) => vec![op.clone()],
            Item::CreateDelete(r) => vec![Op::Create(r), Op::Delete(r.key())],
            Item::Overlap { region, id, shift } => {
                let base_gfn = region.base_gfn.wrapping_add(shift);
                vec![Op::Create(region), Op::Create(Region { id, base_gfn, ..region })]
            }
            Item::Delete(i) => pick(&scratch, i).map(|r| Op::Delete(r.key())).into_iter().collect(),
            Item::Move(i, gfn) => pick(&scratch, i).map(|r| Op::Move(r.key(), gfn)).into_iter().collect(),
            Item::ToggleFlags(i, toggle) => {
                pick(&scratch, i).map(|r| Op::SetFlags(r.key(), r.flags ^ toggle)).into_iter().collect()
            }
            Item::Raw(i, gfn) => pick(&scratch, i)
                .map(|r| {
                    Op::SetRegion(UserMemoryRegion {
                        slot: r.key().kvm_slot(),
                        flags: r.flags,
                        guest_phys_addr: gfn.unwrap_or(r.base_gfn).wrapping_mul(4096),
                        memory_size: if gfn.is_some() { r.npages.wrapping_mul(4096) } else { 0 },
                        userspace_addr: r.hva,
                    })
                })
                .into_iter()
                .collect(),
            Item::Reuse { pick: i, shift, hva, npages } => match pick(&scratch, i) {
                Some(r) => {
                    let base_gfn = r.base_gfn.wrapping_add(shift);
                    let (hva, npages) = (hva.unwrap_or(r.hva), npages.unwrap_or(r.npages));
                    vec![Op::Delete(r.key()), Op::Create(Region { base_gfn, hva, npages, ..r })]
                }
                None => Vec::new(),
            },
            Item::MoveBack { pick: i, gfn } => match pick(&scratch, i) {
                Some(r) => vec![Op::Move(r.key(), gfn), Op::Move(r.key(), r.base_gfn)],
                None => Vec::new(),
            },
            Item::FlagsBack { pick: i, toggle } => match pick(&scratch, i) {
                Some(r) => vec![Op::SetFlags(r.key(), r.flags ^ toggle), Op::SetFlags(r.key(), r.flags)],
                None => Vec::new(),
            },
            Item::Fill { from, away, into, id } => {
                if let Some(a) = pick(&scratch, from) {
                    push(&mut scratch, away.map_or(Op::Delete(a.key()), |g| Op::Move(a.key(), g)));
                    // The second operation picks among the slots the first left.
                    match into.and_then(|i| pick(&scratch, i)) {
                        Some(b) => push(&mut scratch, Op::Move(b.key(), a.base_gfn)),
                        None => push(&mut scratch, Op::Create(Region { id, ..a })),
                    }
                }
                Vec::new()
            }
        };
        for op in some {
            push(&mut scratch, op);
        }
    }
    ops
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
