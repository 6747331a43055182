//! Batches and the backend seam (issue #12): the exact order of backend
//! hooks for single calls and batches, refusals and validation errors at
//! every position leaving everything as before, the rules of the evolving
//! state inside a batch, the number of swaps per address space, atomicity
//! under concurrent readers of both kinds, and batches of a thousand
//! operations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use memslots::{
    Backend, Batch, BatchError, Change, Config, Error, Flags, Memslots, Reader, Region, SlotChange, SlotKey,
    UserMemoryRegion, Writer, GFN_LIMIT, PAGE_SHIFT,
};

/// The generation bit that marks a read during a swap (`View::generation`).
const GEN_UPDATE_IN_PROGRESS: u64 = 1 << 63;

/// How far generations move per swap: the number of address spaces.
const STEP: u64 = 2;

fn key(as_id: u16, id: u16) -> SlotKey {
    SlotKey { id, as_id }
}

fn hva_of(as_id: u16, id: u16) -> u64 {
    0x1000_0000_0000 + (u64::from(as_id) << 44) + (u64::from(id) << 28)
}

fn region(as_id: u16, id: u16, base_gfn: u64, npages: u64) -> Region {
    Region { id, as_id, base_gfn, npages, hva: hva_of(as_id, id), flags: Flags::empty() }
}

fn raw(r: Region) -> UserMemoryRegion {
    UserMemoryRegion::try_from(r).expect("a valid region")
}

fn new_map() -> Memslots {
    Memslots::new(Config::default()).expect("default config")
}

// ---------------------------------------------------------------------------
// Operations, as data, so tests can build the same batch many times.

#[derive(Clone, Copy, Debug)]
enum Op {
    Create(Region),
    Delete(SlotKey),
    Move(SlotKey, u64),
    Flags(SlotKey, Flags),
    Set(UserMemoryRegion),
}

impl Op {
    fn push<B: Backend>(self, batch: &mut Batch<'_, B>) {
        match self {
            Op::Create(r) => batch.create(r),
            Op::Delete(k) => batch.delete(k),
            Op::Move(k, g) => batch.move_to(k, g),
            Op::Flags(k, f) => batch.set_flags(k, f),
            Op::Set(r) => batch.set_region(r),
        };
    }

    fn key(self) -> SlotKey {
        match self {
            Op::Create(r) => r.key(),
            Op::Delete(k) | Op::Move(k, _) | Op::Flags(k, _) => k,
            Op::Set(r) => r.key(),
        }
    }
}

fn commit<B: Backend>(w: &mut Writer<B>, ops: &[Op]) -> Result<Vec<Change>, BatchError> {
    let mut batch = w.batch();
    for op in ops {
        op.push(&mut batch);
    }
    assert_eq!(batch.len(), ops.len());
    assert_eq!(batch.is_empty(), ops.is_empty());
    batch.commit()
}

// ---------------------------------------------------------------------------
// A recording backend.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Prepare,
    Abort,
    Invalidated,
    Commit,
}

#[derive(Default)]
struct Recorder {
    /// Every hook call, in order.
    events: Vec<(Hook, SlotChange)>,
    /// The backend's own idea of the slots: a change is applied on prepare
    /// and reverted on abort.
    model: BTreeMap<SlotKey, Region>,
    /// Refuse the n-th prepare from now (counting from 0) with this code.
    refuse: Option<(usize, i32)>,
    /// Device readers, one per address space: at every hook, what readers
    /// see of the change's address space is recorded in `seen`.
    probe: Vec<Reader>,
    seen: Vec<Vec<Region>>,
}

impl Recorder {
    fn probing(slots: &Memslots) -> Recorder {
        let probe = (0..slots.config().address_spaces)
            .map(|as_id| {
                let mut r = slots.device_reader();
                r.set_address_space(as_id).expect("address space exists");
                r
            })
            .collect();
        Recorder { probe, ..Recorder::default() }
    }

    fn record(&mut self, hook: Hook, change: &SlotChange) {
        self.events.push((hook, *change));
        if let Some(reader) = self.probe.get(usize::from(change.key.as_id)) {
            let view = reader.pin();
            self.seen.push(view.slots().map(|s| *s.region()).collect());
        }
    }

    fn clear(&mut self) {
        self.events.clear();
        self.seen.clear();
    }
}

fn apply_change(model: &mut BTreeMap<SlotKey, Region>, change: &SlotChange) {
    match change.new {
        Some(new) => model.insert(change.key, new),
        None => model.remove(&change.key),
    };
}

fn revert_change(model: &mut BTreeMap<SlotKey, Region>, change: &SlotChange) {
    match change.old {
        Some(old) => model.insert(change.key, old),
        None => model.remove(&change.key),
    };
}

impl Backend for Recorder {
    fn prepare(&mut self, change: &SlotChange) -> Result<(), i32> {
        self.record(Hook::Prepare, change);
        if let Some((n, code)) = self.refuse {
            if n == 0 {
                self.refuse = None;
                return Err(code);
            }
            self.refuse = Some((n - 1, code));
        }
        apply_change(&mut self.model, change);
        Ok(())
    }

    fn abort(&mut self, change: &SlotChange) {
        self.record(Hook::Abort, change);
        revert_change(&mut self.model, change);
    }

    fn invalidated(&mut self, change: &SlotChange) {
        self.record(Hook::Invalidated, change);
    }

    fn commit(&mut self, change: &SlotChange) {
        self.record(Hook::Commit, change);
    }
}

// ---------------------------------------------------------------------------
// Snapshots of everything a failed call must leave alone.

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// Per address space: the generation and the slots by id.
    spaces: Vec<(u64, Vec<Region>)>,
    /// Per address space and slot: lookups of the first and last frame
    /// through a long-lived vCPU reader (its cache) and a device reader.
    lookups: Vec<Option<Region>>,
    total_pages: u64,
    slot_objects: usize,
}

/// Long-lived readers of both kinds for every address space, so that
/// snapshots also go through the caches filled before a change.
struct Readers(Vec<(Reader, Reader)>);

impl Readers {
    fn new(slots: &Memslots) -> Readers {
        Readers(
            (0..slots.config().address_spaces)
                .map(|as_id| {
                    let (mut vcpu, mut dev) = (slots.reader(), slots.device_reader());
                    vcpu.set_address_space(as_id).expect("address space exists");
                    dev.set_address_space(as_id).expect("address space exists");
                    (vcpu, dev)
                })
                .collect(),
        )
    }

    fn snapshot(&self, slots: &Memslots) -> Snapshot {
        let mut spaces = Vec::new();
        let mut lookups = Vec::new();
        for (vcpu, dev) in &self.0 {
            let (v, d) = (vcpu.pin(), dev.pin());
            assert_eq!(v.generation(), d.generation(), "both readers see the same set");
            let regions: Vec<Region> = d.slots().map(|s| *s.region()).collect();
            assert_eq!(regions, v.slots().map(|s| *s.region()).collect::<Vec<_>>());
            for r in &regions {
                for gfn in [r.base_gfn, r.end_gfn() - 1, r.base_gfn.wrapping_sub(1), r.end_gfn()] {
                    let (a, b) = (v.gfn_to_slot(gfn).map(|s| *s.region()), d.gfn_to_slot(gfn).map(|s| *s.region()));
                    assert_eq!(a, b, "vCPU and device lookups of gfn {gfn:#x}");
                    assert_eq!(v.gfn_to_hva(gfn), b.map(|s| s.hva + ((gfn - s.base_gfn) << PAGE_SHIFT)));
                    lookups.push(a);
                }
            }
            spaces.push((d.generation(), regions));
        }
        Snapshot { spaces, lookups, total_pages: slots.total_pages(), slot_objects: slots.slot_objects() }
    }
}

fn generations(slots: &Memslots) -> Vec<u64> {
    (0..slots.config().address_spaces)
        .map(|as_id| {
            let mut r = slots.device_reader();
            r.set_address_space(as_id).expect("address space exists");
            let g = r.pin().generation();
            g
        })
        .collect()
}

fn layout(slots: &Memslots, as_id: u16) -> Vec<Region> {
    let mut r = slots.device_reader();
    r.set_address_space(as_id).expect("address space exists");
    let v = r.pin();
    v.slots().map(|s| *s.region()).collect()
}

/// `layout` with `change` applied (`new` replaces `old`, by id).
fn with_change(mut layout: Vec<Region>, change: &SlotChange) -> Vec<Region> {
    layout.retain(|r| r.key() != change.key);
    layout.extend(change.new);
    layout.sort_by_key(|r| r.id);
    layout
}

fn with_changes<'c>(layout: Vec<Region>, changes: impl IntoIterator<Item = &'c SlotChange>) -> Vec<Region> {
    changes.into_iter().fold(layout, with_change)
}

fn without(mut layout: Vec<Region>, keys: &[SlotKey]) -> Vec<Region> {
    layout.retain(|r| !keys.contains(&r.key()));
    layout
}

// ---------------------------------------------------------------------------
// 1a. The exact order of hook calls.

fn created(r: Region) -> SlotChange {
    SlotChange { key: r.key(), old: None, new: Some(r) }
}

fn changed(old: Region, new: Region) -> SlotChange {
    SlotChange { key: old.key(), old: Some(old), new: Some(new) }
}

fn deleted(r: Region) -> SlotChange {
    SlotChange { key: r.key(), old: Some(r), new: None }
}

type Single = (Result<Change, Error>, Vec<(Hook, SlotChange)>, Vec<Vec<Region>>);

/// A single call: its result, the hook calls it made, and what readers saw
/// at each of them.
fn single(w: &mut Writer<Recorder>, call: impl FnOnce(&mut Writer<Recorder>) -> Result<Change, Error>) -> Single {
    w.backend_mut().clear();
    let result = call(w);
    let b = w.backend_mut();
    (result, std::mem::take(&mut b.events), std::mem::take(&mut b.seen))
}

#[test]
fn single_calls_run_hooks_in_documented_order() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::probing(&slots)).expect("writer");
    use Hook::*;

    // Create: prepare (readers see nothing yet), commit (readers see it).
    let r1 = region(0, 1, 0x100, 0x100);
    let (res, ev, seen) = single(&mut w, |w| w.create(r1));
    assert_eq!(res, Ok(Change::Created));
    assert_eq!(ev, [(Prepare, created(r1)), (Commit, created(r1))]);
    assert_eq!(seen, [vec![], vec![r1]]);

    // Flags: prepare, commit; no invalidation.
    let r1d = Region { flags: Flags::LOG_DIRTY_PAGES, ..r1 };
    let (res, ev, seen) = single(&mut w, |w| w.set_flags(r1.key(), Flags::LOG_DIRTY_PAGES));
    assert_eq!(res, Ok(Change::FlagsChanged));
    assert_eq!(ev, [(Prepare, changed(r1, r1d)), (Commit, changed(r1, r1d))]);
    assert_eq!(seen, [vec![r1], vec![r1d]]);

    // Move: prepare, invalidated (the slot reads as absent), commit.
    let r1m = Region { base_gfn: 0x400, ..r1d };
    let (res, ev, seen) = single(&mut w, |w| w.move_to(r1.key(), 0x400));
    assert_eq!(res, Ok(Change::Moved));
    let c = changed(r1d, r1m);
    assert_eq!(ev, [(Prepare, c), (Invalidated, c), (Commit, c)]);
    assert_eq!(seen, [vec![r1d], vec![], vec![r1m]]);

    // Delete: prepare, invalidated, commit.
    let (res, ev, seen) = single(&mut w, |w| w.delete(r1.key()));
    assert_eq!(res, Ok(Change::Deleted));
    let c = deleted(r1m);
    assert_eq!(ev, [(Prepare, c), (Invalidated, c), (Commit, c)]);
    assert_eq!(seen, [vec![r1m], vec![], vec![]]);

    // set_region: create, flags, move, identical, delete; in address space 1.
    let r7 = region(1, 7, 0x2000, 0x10);
    let (res, ev, seen) = single(&mut w, |w| w.set_region(raw(r7)));
    assert_eq!(res, Ok(Change::Created));
    assert_eq!(ev, [(Prepare, created(r7)), (Commit, created(r7))]);
    assert_eq!(seen, [vec![], vec![r7]]);

    let r7d = Region { flags: Flags::LOG_DIRTY_PAGES, ..r7 };
    let (res, ev, _) = single(&mut w, |w| w.set_region(raw(r7d)));
    assert_eq!(res, Ok(Change::FlagsChanged));
    assert_eq!(ev, [(Prepare, changed(r7, r7d)), (Commit, changed(r7, r7d))]);

    let r7m = Region { base_gfn: 0x3000, ..r7d };
    let (res, ev, seen) = single(&mut w, |w| w.set_region(raw(r7m)));
    assert_eq!(res, Ok(Change::Moved));
    let c = changed(r7d, r7m);
    assert_eq!(ev, [(Prepare, c), (Invalidated, c), (Commit, c)]);
    assert_eq!(seen, [vec![r7d], vec![], vec![r7m]]);

    // Moving and re-flagging in one set_region is a move.
    let r7mf = Region { base_gfn: 0x3800, flags: Flags::empty(), ..r7m };
    let (res, ev, _) = single(&mut w, |w| w.set_region(raw(r7mf)));
    assert_eq!(res, Ok(Change::Moved));
    let c = changed(r7m, r7mf);
    assert_eq!(ev, [(Prepare, c), (Invalidated, c), (Commit, c)]);

    // Identical re-sets and no-op calls: no hook, no new generation.
    let before = generations(&slots);
    let (res, ev, _) = single(&mut w, |w| w.set_region(raw(r7mf)));
    assert_eq!((res, ev), (Ok(Change::Unchanged), vec![]));
    let (res, ev, _) = single(&mut w, |w| w.set_flags(r7.key(), Flags::empty()));
    assert_eq!((res, ev), (Ok(Change::Unchanged), vec![]));
    let (res, ev, _) = single(&mut w, |w| w.move_to(r7.key(), 0x3800));
    assert_eq!((res, ev), (Ok(Change::Unchanged), vec![]));
    assert_eq!(generations(&slots), before);

    // Refused calls: no hook.
    let (res, ev, _) = single(&mut w, |w| w.delete(key(0, 99)));
    assert_eq!(res, Err(Error::NoSuchSlot { key: key(0, 99) }));
    assert_eq!(ev, []);
    let (res, ev, _) = single(&mut w, |w| w.create(Region { id: 8, ..r7mf }));
    assert_eq!(res, Err(Error::Overlap { key: key(1, 8), with: r7.key() }));
    assert_eq!(ev, []);

    // Delete through set_region (size 0).
    let (res, ev, seen) = single(&mut w, |w| w.set_region(UserMemoryRegion { memory_size: 0, ..raw(r7mf) }));
    assert_eq!(res, Ok(Change::Deleted));
    let c = deleted(r7mf);
    assert_eq!(ev, [(Prepare, c), (Invalidated, c), (Commit, c)]);
    assert_eq!(seen, [vec![r7mf], vec![], vec![]]);
    assert_eq!(generations(&slots), [before[0], before[1] + 2 * STEP]);
}

/// Slots in both address spaces for the mixed batch: 1..=4 and 20, 21.
fn mixed_setup(w: &mut Writer<impl Backend>) {
    for as_id in 0..2 {
        for id in 1..=4 {
            w.create(region(as_id, id, u64::from(id) * 0x100, 0x100)).expect("setup");
        }
    }
    w.create(region(0, 20, 0x8000, 0x100)).expect("setup");
    w.create(region(0, 21, 0x8100, 0x100)).expect("setup");
}

/// Eight operations with eight net changes across both address spaces, in a
/// scrambled order, with moves into ranges other operations freed.
fn mixed_ops() -> Vec<Op> {
    let flags_11 = Region { flags: Flags::LOG_DIRTY_PAGES, ..region(1, 3, 0x300, 0x100) };
    vec![
        Op::Create(region(0, 10, 0x1000, 0x80)),      // 0
        Op::Set(raw(flags_11)),                       // 1: flags 1:3
        Op::Move(key(0, 2), 0x2000),                  // 2
        Op::Delete(key(1, 1)),                        // 3
        Op::Flags(key(0, 3), Flags::LOG_DIRTY_PAGES), // 4
        Op::Delete(key(0, 1)),                        // 5
        Op::Move(key(1, 2), 0x100),                   // 6: into 1:1's range
        Op::Create(region(1, 10, 0x200, 0x80)),       // 7: into 1:2's range
    ]
}

/// The net changes of `mixed_ops`, in the documented backend order: deletes,
/// moves, flags, creates; within each, by key.
fn mixed_order() -> Vec<SlotChange> {
    let r = |as_id, id: u16| region(as_id, id, u64::from(id) * 0x100, 0x100);
    let dirty = |r: Region| Region { flags: Flags::LOG_DIRTY_PAGES, ..r };
    vec![
        deleted(r(0, 1)),
        deleted(r(1, 1)),
        changed(r(0, 2), Region { base_gfn: 0x2000, ..r(0, 2) }),
        changed(r(1, 2), Region { base_gfn: 0x100, ..r(1, 2) }),
        changed(r(0, 3), dirty(r(0, 3))),
        changed(r(1, 3), dirty(r(1, 3))),
        created(region(0, 10, 0x1000, 0x80)),
        created(region(1, 10, 0x200, 0x80)),
    ]
}

#[test]
fn mixed_batch_runs_hooks_in_documented_order() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::probing(&slots)).expect("writer");
    mixed_setup(&mut w);
    let old = [layout(&slots, 0), layout(&slots, 1)];
    let gens = generations(&slots);
    w.backend_mut().clear();

    let changes = commit(&mut w, &mixed_ops()).expect("valid batch");
    use Change::*;
    assert_eq!(changes, [Created, FlagsChanged, Moved, Deleted, FlagsChanged, Deleted, Moved, Created]);

    let order = mixed_order();
    let removed: Vec<SlotKey> = order[..4].iter().map(|c| c.key).collect();
    let mut want = Vec::new();
    want.extend(order.iter().map(|c| (Hook::Prepare, *c)));
    want.extend(order[..4].iter().map(|c| (Hook::Invalidated, *c)));
    want.extend(order.iter().map(|c| (Hook::Commit, *c)));
    assert_eq!(w.backend().events, want);

    // What readers saw at each hook: the old layout at prepare; at
    // invalidated the old one without the deleted and moved slots (nothing
    // of the batch published yet); the whole new layout at commit.
    let new: Vec<Vec<Region>> =
        (0..2).map(|a| with_changes(old[a].clone(), order.iter().filter(|c| c.key.as_id == a as u16))).collect();
    let seen = &w.backend().seen;
    for (i, (hook, change)) in w.backend().events.iter().enumerate() {
        let a = usize::from(change.key.as_id);
        let want = match hook {
            Hook::Prepare => old[a].clone(),
            Hook::Invalidated => without(old[a].clone(), &removed),
            Hook::Commit => new[a].clone(),
            Hook::Abort => unreachable!("nothing refused"),
        };
        assert_eq!(seen[i], want, "event {i}: {hook:?} {change:?}");
    }
    assert_eq!([layout(&slots, 0), layout(&slots, 1)].to_vec(), new);
    assert_eq!(generations(&slots), [gens[0] + 2 * STEP, gens[1] + 2 * STEP]);
    // The backend's model follows the map.
    let model: Vec<Region> = w.backend().model.values().copied().collect();
    let mut all: Vec<Region> = new.concat();
    all.sort_by_key(|r| r.key());
    assert_eq!(model, all);
}

// ---------------------------------------------------------------------------
// 1b. Refusals and validation errors at every position.

#[test]
fn backend_refusal_at_every_position_changes_nothing() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    mixed_setup(&mut w);
    let readers = Readers::new(&slots);
    let ops = mixed_ops();
    let order = mixed_order();
    assert_eq!(order.len(), 8);
    let index_of = |k: SlotKey| ops.iter().rposition(|op| op.key() == k).expect("every change has an op");

    for i in 0..order.len() {
        let before = readers.snapshot(&slots);
        let model_before = w.backend().model.clone();
        w.backend_mut().clear();
        let code = -100 - i as i32;
        w.backend_mut().refuse = Some((i, code));
        let err = commit(&mut w, &ops).expect_err("refused");
        assert_eq!(err, BatchError { index: Some(index_of(order[i].key)), error: Error::Backend { code } }, "at {i}");
        assert_eq!(
            err.to_string(),
            format!("batch operation {}: the backend refused the change (code {code})", err.index.unwrap())
        );

        // Prepares up to the refused one, then aborts of the earlier ones in
        // reverse order, and nothing else.
        let mut want: Vec<(Hook, SlotChange)> = order[..=i].iter().map(|c| (Hook::Prepare, *c)).collect();
        want.extend(order[..i].iter().rev().map(|c| (Hook::Abort, *c)));
        assert_eq!(w.backend().events, want, "refused at {i}");
        assert_eq!(w.backend().model, model_before, "backend model after refusal at {i}");
        assert_eq!(readers.snapshot(&slots), before, "state after refusal at {i}");
    }

    // The same batch goes through afterwards.
    let before = readers.snapshot(&slots);
    w.backend_mut().clear();
    commit(&mut w, &ops).expect("accepted");
    let after = readers.snapshot(&slots);
    assert_ne!(after, before);
    let mut all: Vec<Region> = after.spaces.iter().flat_map(|(_, s)| s.clone()).collect();
    all.sort_by_key(|r| r.key());
    assert_eq!(w.backend().model.values().copied().collect::<Vec<_>>(), all);
    assert_eq!(after.total_pages, all.iter().map(|r| r.npages).sum::<u64>());
    assert_eq!(after.slot_objects, all.len());
}

#[test]
fn backend_refusal_names_last_operation_on_the_slot() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    mixed_setup(&mut w);
    let before = Readers::new(&slots).snapshot(&slots);
    // Net changes: move 0:2 (prepared first), create 0:11.
    let ops = [
        Op::Move(key(0, 2), 0x3000),
        Op::Create(region(0, 11, 0x4000, 1)),
        Op::Flags(key(0, 2), Flags::LOG_DIRTY_PAGES),
    ];
    w.backend_mut().refuse = Some((0, 7));
    assert_eq!(commit(&mut w, &ops), Err(BatchError { index: Some(2), error: Error::Backend { code: 7 } }));
    w.backend_mut().refuse = Some((1, 8));
    assert_eq!(commit(&mut w, &ops), Err(BatchError { index: Some(1), error: Error::Backend { code: 8 } }));
    assert_eq!(Readers::new(&slots).snapshot(&slots), before);

    // A single call goes through the same path: refused with the backend's
    // code, no abort (nothing else was prepared), nothing changed.
    w.backend_mut().clear();
    w.backend_mut().refuse = Some((0, 9));
    assert_eq!(w.move_to(key(0, 2), 0x3000), Err(Error::Backend { code: 9 }));
    let r2 = region(0, 2, 0x200, 0x100);
    assert_eq!(w.backend().events, [(Hook::Prepare, changed(r2, Region { base_gfn: 0x3000, ..r2 }))]);
    assert_eq!(Readers::new(&slots).snapshot(&slots), before);
}

/// Operations that fail at any position of `mixed_ops`, whatever ran
/// before them, with the error each gets.
fn bad_ops() -> Vec<(Op, Error)> {
    let r20 = region(0, 20, 0x8000, 0x100);
    vec![
        (Op::Delete(key(0, 99)), Error::NoSuchSlot { key: key(0, 99) }),
        (Op::Create(region(0, 30, 0x80ff, 1)), Error::Overlap { key: key(0, 30), with: key(0, 20) }),
        (Op::Move(key(0, 20), 0x8080), Error::Overlap { key: key(0, 20), with: key(0, 21) }),
        (Op::Flags(key(0, 20), Flags::READONLY), Error::ReadonlyToggle { key: key(0, 20) }),
        (Op::Flags(key(0, 20), Flags::from_bits_retain(0x100)), Error::UnknownFlags { bits: 0x100 }),
        (Op::Create(region(0, 32764, 0x9_0000, 1)), Error::InvalidSlotId { id: 32764 }),
        (Op::Create(region(2, 1, 0x9_0000, 1)), Error::InvalidAddressSpace { as_id: 2 }),
        (Op::Create(region(0, 30, 0x9_0000, 0)), Error::EmptySlot),
        (Op::Create(r20), Error::SlotExists { key: key(0, 20) }),
        (Op::Move(key(0, 20), GFN_LIMIT - 0x80), Error::GpaWraps),
        (
            Op::Set(UserMemoryRegion { guest_phys_addr: 0x8000_0800, ..raw(r20) }),
            Error::UnalignedGpa { gpa: 0x8000_0800 },
        ),
        (Op::Set(raw(Region { npages: 0x80, ..r20 })), Error::Resize { key: key(0, 20) }),
        (Op::Set(raw(Region { hva: r20.hva + 0x1000, ..r20 })), Error::HvaChange { key: key(0, 20) }),
        (
            Op::Set(UserMemoryRegion { memory_size: 0, ..raw(region(0, 31, 0, 1)) }),
            Error::NoSuchSlot { key: key(0, 31) },
        ),
    ]
}

#[test]
fn validation_error_at_every_position_changes_nothing() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    mixed_setup(&mut w);
    let readers = Readers::new(&slots);
    let ops = mixed_ops();
    let before = readers.snapshot(&slots);
    let model = w.backend().model.clone();
    w.backend_mut().clear();
    for (bad, error) in bad_ops() {
        for i in 0..=ops.len() {
            let mut batch = ops.clone();
            batch.insert(i, bad);
            assert_eq!(commit(&mut w, &batch), Err(BatchError { index: Some(i), error }), "{bad:?} at {i}");
            assert_eq!(w.backend().events, [], "no hook for {bad:?} at {i}");
            assert_eq!(readers.snapshot(&slots), before, "state after {bad:?} at {i}");
        }
    }
    assert_eq!(w.backend().model, model);
    // The valid batch still goes through.
    commit(&mut w, &ops).expect("valid batch");
}

#[test]
fn view_held_by_writer_thread_refuses_whole_batch() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    mixed_setup(&mut w);
    let readers = Readers::new(&slots);
    let before = readers.snapshot(&slots);
    w.backend_mut().clear();
    let reader = slots.reader();
    let view = reader.pin();
    assert_eq!(commit(&mut w, &mixed_ops()), Err(BatchError { index: None, error: Error::ViewHeldByWriterThread }));
    drop(view);
    assert_eq!(w.backend().events, []);
    assert_eq!(readers.snapshot(&slots), before);
    commit(&mut w, &mixed_ops()).expect("view dropped");
}

// ---------------------------------------------------------------------------
// 1c. The evolving state inside a batch; no-ops; swaps per address space.

#[test]
fn batch_reuses_deleted_id_and_freed_ranges() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    mixed_setup(&mut w);
    let readers = Readers::new(&slots);
    // Without the delete, the create of the same id is refused...
    let r1 = region(0, 1, 0x5000, 0x40);
    assert_eq!(
        commit(&mut w, &[Op::Create(r1)]),
        Err(BatchError { index: Some(0), error: Error::SlotExists { key: r1.key() } })
    );
    // ...and moving into an occupied range too.
    assert_eq!(
        commit(&mut w, &[Op::Move(key(0, 4), 0x100)]),
        Err(BatchError { index: Some(0), error: Error::Overlap { key: key(0, 4), with: key(0, 1) } })
    );
    // Order matters: a move into a range freed only by a later operation
    // fails at the move.
    assert_eq!(
        commit(
            &mut w,
            &[Op::Create(region(0, 12, 0x9000, 1)), Op::Move(key(0, 4), 0x200), Op::Move(key(0, 2), 0x6000)]
        ),
        Err(BatchError { index: Some(1), error: Error::Overlap { key: key(0, 4), with: key(0, 2) } })
    );

    let changes = commit(
        &mut w,
        &[
            Op::Delete(key(0, 1)),
            Op::Create(r1),                          // reuses id 1
            Op::Move(key(0, 4), 0x100),              // into 0:1's old range
            Op::Move(key(0, 2), 0x6000),             // frees 0x200..0x300
            Op::Move(key(0, 3), 0x200),              // into 0:2's old range
            Op::Create(region(0, 40, 0x300, 0x100)), // into 0:3's old range
        ],
    )
    .expect("valid batch");
    use Change::*;
    assert_eq!(changes, [Deleted, Created, Moved, Moved, Moved, Created]);
    let want = vec![
        r1,
        region(0, 2, 0x6000, 0x100),
        region(0, 3, 0x200, 0x100),
        region(0, 4, 0x100, 0x100),
        region(0, 20, 0x8000, 0x100),
        region(0, 21, 0x8100, 0x100),
        region(0, 40, 0x300, 0x100),
    ];
    let snap = readers.snapshot(&slots);
    assert_eq!(snap.spaces[0].1, want);
    assert_eq!(snap.total_pages, want.iter().chain(&snap.spaces[1].1).map(|r| r.npages).sum::<u64>());
    assert_eq!(snap.slot_objects, want.len() + snap.spaces[1].1.len());
}

#[test]
fn operations_of_one_batch_may_not_overlap_each_other() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    mixed_setup(&mut w);
    let readers = Readers::new(&slots);
    let before = readers.snapshot(&slots);
    w.backend_mut().clear();
    let a = region(0, 10, 0x5000, 0x100);
    let cases: Vec<(Vec<Op>, BatchError)> = vec![
        (
            vec![Op::Flags(key(0, 3), Flags::LOG_DIRTY_PAGES), Op::Create(a), Op::Create(region(0, 11, 0x50ff, 0x10))],
            BatchError { index: Some(2), error: Error::Overlap { key: key(0, 11), with: key(0, 10) } },
        ),
        (
            vec![Op::Create(a), Op::Move(key(0, 4), 0x4f80)],
            BatchError { index: Some(1), error: Error::Overlap { key: key(0, 4), with: key(0, 10) } },
        ),
        (
            vec![Op::Move(key(0, 4), 0x5000), Op::Create(a)],
            BatchError { index: Some(1), error: Error::Overlap { key: key(0, 10), with: key(0, 4) } },
        ),
        (
            vec![Op::Create(a), Op::Create(Region { base_gfn: 0x6000, ..a })],
            BatchError { index: Some(1), error: Error::SlotExists { key: key(0, 10) } },
        ),
        (
            vec![Op::Delete(key(0, 4)), Op::Delete(key(0, 4))],
            BatchError { index: Some(1), error: Error::NoSuchSlot { key: key(0, 4) } },
        ),
        (
            vec![Op::Delete(key(0, 4)), Op::Move(key(0, 4), 0x5000)],
            BatchError { index: Some(1), error: Error::NoSuchSlot { key: key(0, 4) } },
        ),
        // The same range in the two address spaces is no overlap; the
        // second create of the same key is.
        (
            vec![Op::Create(a), Op::Create(region(1, 10, 0x5000, 0x100)), Op::Create(region(1, 11, 0x5080, 1))],
            BatchError { index: Some(2), error: Error::Overlap { key: key(1, 11), with: key(1, 10) } },
        ),
    ];
    for (ops, err) in cases {
        assert_eq!(commit(&mut w, &ops), Err(err), "{ops:?}");
        assert_eq!(w.backend().events, []);
        assert_eq!(readers.snapshot(&slots), before, "{ops:?}");
    }
}

#[test]
fn batches_that_cancel_out_publish_nothing() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    mixed_setup(&mut w);
    let readers = Readers::new(&slots);
    let before = readers.snapshot(&slots);
    w.backend_mut().clear();
    let r4 = region(0, 4, 0x400, 0x100);
    use Change::*;
    let cases: Vec<(Vec<Op>, Vec<Change>)> = vec![
        (vec![], vec![]),
        (vec![Op::Create(region(0, 10, 0x5000, 0x10)), Op::Delete(key(0, 10))], vec![Created, Deleted]),
        (vec![Op::Move(key(0, 4), 0x5000), Op::Move(key(0, 4), 0x400)], vec![Moved, Moved]),
        (vec![Op::Move(key(0, 4), 0x5000), Op::Move(key(0, 4), 0x6000), Op::Set(raw(r4))], vec![Moved, Moved, Moved]),
        (
            vec![Op::Flags(key(1, 3), Flags::LOG_DIRTY_PAGES), Op::Flags(key(1, 3), Flags::empty())],
            vec![FlagsChanged, FlagsChanged],
        ),
        (vec![Op::Delete(key(0, 4)), Op::Create(r4)], vec![Deleted, Created]),
        (vec![Op::Set(raw(r4)), Op::Flags(key(0, 4), Flags::empty()), Op::Move(key(0, 4), 0x400)], vec![Unchanged; 3]),
        (
            vec![
                Op::Create(region(1, 10, 0x5000, 0x10)),
                Op::Move(key(0, 1), 0x7000),
                Op::Flags(key(0, 2), Flags::LOG_DIRTY_PAGES),
                Op::Move(key(0, 1), 0x100),
                Op::Delete(key(1, 10)),
                Op::Set(raw(region(0, 2, 0x200, 0x100))),
            ],
            vec![Created, Moved, FlagsChanged, Moved, Deleted, FlagsChanged],
        ),
    ];
    for (ops, changes) in cases {
        assert_eq!(commit(&mut w, &ops), Ok(changes), "{ops:?}");
        assert_eq!(w.backend().events, [], "no hook for {ops:?}");
        assert_eq!(readers.snapshot(&slots), before, "nothing published for {ops:?}");
    }

    // A batch dropped without commit changes nothing, and the writer goes on.
    {
        let mut batch = w.batch();
        batch.delete(key(0, 1)).create(region(0, 10, 0x5000, 0x10)).move_to(key(0, 2), 0x6000);
        assert_eq!(batch.len(), 3);
        drop(batch);
    }
    assert_eq!(w.backend().events, []);
    assert_eq!(readers.snapshot(&slots), before);
    assert_eq!(w.delete(key(0, 1)), Ok(Change::Deleted));
}

/// Every index of each address space's active set agrees with its slots by
/// id: the gfn and host ranges over everything yield each slot once, and a
/// lookup of each slot's first and last gfn finds it.
fn indexes_agree(slots: &Memslots) {
    for as_id in 0..slots.config().address_spaces {
        let mut r = slots.reader();
        r.set_address_space(as_id).expect("address space exists");
        let view = r.pin();
        let sorted = |mut v: Vec<Region>| {
            v.sort_by_key(|r| r.id);
            v
        };
        let by_id: Vec<Region> = view.slots().map(|s| *s.region()).collect();
        let by_gfn = sorted(view.slots_in_gfn_range(0..GFN_LIMIT).map(|s| *s.region()).collect());
        let by_hva = sorted(view.slots_in_hva_range(0..u64::MAX).map(|s| *s.region()).collect());
        assert_eq!(by_gfn, by_id, "gfn index of address space {as_id}");
        assert_eq!(by_hva, by_id, "hva index of address space {as_id}");
        for r in &by_id {
            for gfn in [r.base_gfn, r.end_gfn() - 1] {
                assert_eq!(view.gfn_to_slot(gfn).map(|s| *s.region()), Some(*r), "lookup of gfn {gfn:#x}");
            }
        }
    }
}

/// A batch's last operation is validated with the others but applied to the
/// sets only when the batch is published: batches that end on a slot an
/// earlier operation made, moved or re-flagged leave both sets of every
/// address space whole, and one slot object per slot.
#[test]
fn batches_ending_on_a_slot_they_touched_leave_both_sets_whole() {
    let (x, y) = (key(0, 2), key(0, 10));
    let cases: Vec<Vec<Op>> = vec![
        vec![Op::Move(x, 0x5000), Op::Delete(x)],
        vec![Op::Move(x, 0x5000), Op::Flags(x, Flags::LOG_DIRTY_PAGES)],
        vec![Op::Move(x, 0x5000), Op::Move(x, 0x6000)],
        vec![Op::Flags(x, Flags::LOG_DIRTY_PAGES), Op::Move(x, 0x6000)],
        vec![Op::Delete(x), Op::Create(region(0, 2, 0x6000, 0x10))],
        vec![Op::Create(region(0, 10, 0x5000, 0x10)), Op::Move(y, 0x6000)],
        vec![Op::Create(region(0, 10, 0x5000, 0x10)), Op::Delete(y)],
        vec![Op::Create(region(1, 10, 0x5000, 0x10)), Op::Delete(x)],
        vec![Op::Delete(x), Op::Move(key(1, 2), 0x6000)],
    ];
    for ops in cases {
        let slots = new_map();
        let mut w = slots.writer().expect("writer");
        mixed_setup(&mut w);
        commit(&mut w, &ops).unwrap_or_else(|e| panic!("{ops:?}: {e:?}"));
        indexes_agree(&slots);
        // Changes elsewhere publish the other sets, caught up by now.
        for as_id in 0..2 {
            w.create(region(as_id, 30, 0x9000, 1)).expect("a free range");
        }
        indexes_agree(&slots);
        for as_id in 0..2 {
            w.delete(key(as_id, 30)).expect("just made");
        }
        indexes_agree(&slots);
        let count = |as_id| {
            let mut r = slots.reader();
            r.set_address_space(as_id).expect("address space exists");
            let n = r.pin().slots().count();
            n
        };
        assert_eq!(slots.slot_objects(), count(0) + count(1), "{ops:?}");
    }
}

#[test]
fn swaps_per_touched_address_space() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    mixed_setup(&mut w);
    let mut g = generations(&slots);
    assert_eq!(g[0] % STEP, 0);
    assert_eq!(g[1] % STEP, 1);
    let mut check = |w: &mut Writer<Recorder>, ops: &[Op], swaps: [u64; 2]| {
        commit(w, ops).expect("valid batch");
        let now = generations(&slots);
        assert_eq!(now, [g[0] + swaps[0] * STEP, g[1] + swaps[1] * STEP], "{ops:?}");
        g = now;
    };
    // Deletes in address space 0: the invalidation swap and the final one.
    check(
        &mut w,
        &[Op::Delete(key(0, 1)), Op::Create(region(0, 10, 0x5000, 1)), Op::Flags(key(0, 3), Flags::LOG_DIRTY_PAGES)],
        [2, 0],
    );
    // No delete or move: one swap.
    check(
        &mut w,
        &[
            Op::Create(region(0, 11, 0x5001, 1)),
            Op::Flags(key(0, 3), Flags::empty()),
            Op::Create(region(0, 12, 0x5002, 1)),
            Op::Delete(key(0, 12)),
        ],
        [1, 0],
    );
    // A move in space 0, creates in space 1.
    check(
        &mut w,
        &[Op::Create(region(1, 10, 0x5000, 1)), Op::Move(key(0, 2), 0x6000), Op::Create(region(1, 11, 0x5001, 1))],
        [2, 1],
    );
    // Moves and deletes in both: two swaps each, however many operations.
    let mut ops: Vec<Op> = (0..50).map(|i| Op::Create(region(1, 100 + i, 0x10_000 + u64::from(i), 1))).collect();
    ops.extend([
        Op::Delete(key(1, 1)),
        Op::Move(key(0, 4), 0x7000),
        Op::Delete(key(0, 10)),
        Op::Move(key(1, 2), 0x100),
    ]);
    check(&mut w, &ops, [2, 2]);
    // Flags only, space 1.
    check(
        &mut w,
        &[Op::Flags(key(1, 3), Flags::LOG_DIRTY_PAGES), Op::Flags(key(1, 4), Flags::LOG_DIRTY_PAGES)],
        [0, 1],
    );
    // Single calls: a create is one swap, a move two.
    check(&mut w, &[Op::Create(region(0, 13, 0x5003, 1))], [1, 0]);
    check(&mut w, &[Op::Move(key(0, 13), 0x5004)], [2, 0]);
}

#[test]
fn total_pages_limit_follows_the_batch() {
    let config = Config::new(2, 64).with_max_total_pages(0x300);
    let slots = Memslots::new(config).expect("config");
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    commit(&mut w, &[Op::Create(region(0, 1, 0x100, 0x100)), Op::Create(region(1, 1, 0x100, 0x200))]).expect("setup");
    let readers = Readers::new(&slots);
    let before = readers.snapshot(&slots);
    assert_eq!(before.total_pages, 0x300);
    w.backend_mut().clear();
    let limit = Error::TotalPagesExceeded { limit: 0x300 };
    // Full: a create fails, also after a create and delete that cancel out...
    let r = region(0, 2, 0x1000, 0x80);
    assert_eq!(commit(&mut w, &[Op::Create(r)]), Err(BatchError { index: Some(0), error: limit }));
    assert_eq!(
        commit(&mut w, &[Op::Delete(key(0, 1)), Op::Create(region(0, 1, 0x100, 0x100)), Op::Create(r)]),
        Err(BatchError { index: Some(2), error: limit })
    );
    // ...and a second create that only fits without the first.
    assert_eq!(
        commit(
            &mut w,
            &[Op::Delete(key(1, 1)), Op::Create(region(1, 2, 0x1000, 0x100)), Op::Create(region(1, 3, 0x2000, 0x101))]
        ),
        Err(BatchError { index: Some(2), error: limit })
    );
    assert_eq!(w.backend().events, []);
    assert_eq!(readers.snapshot(&slots), before);
    // Pages freed earlier in the batch can be used later in it.
    let changes = commit(
        &mut w,
        &[
            Op::Delete(key(1, 1)),
            Op::Create(region(1, 2, 0x1000, 0x100)),
            Op::Create(region(1, 3, 0x2000, 0x80)),
            Op::Create(r),
        ],
    )
    .expect("fits");
    assert_eq!(changes, [Change::Deleted, Change::Created, Change::Created, Change::Created]);
    assert_eq!(slots.total_pages(), 0x300);
    // A refused batch leaves the total as it was.
    w.backend_mut().refuse = Some((1, 5));
    assert_eq!(
        commit(&mut w, &[Op::Delete(key(0, 2)), Op::Delete(key(1, 3))]),
        Err(BatchError { index: Some(1), error: Error::Backend { code: 5 } })
    );
    assert_eq!(slots.total_pages(), 0x300);
    assert_eq!(
        commit(&mut w, &[Op::Create(region(0, 3, 0x3000, 1))]),
        Err(BatchError { index: Some(0), error: Error::TotalPagesExceeded { limit: 0x300 } })
    );
}

/// A net change that replaces a slot by a different one of the same id
/// (delete, then create of the same id with another size, host address or
/// READONLY) is a deletion: it must go through the invalidation swap and
/// the backend's `invalidated`, and must not be presented to the backend
/// as a flags change or as "unchanged".
#[test]
fn recreated_id_is_invalidated() {
    let slots = new_map();
    let mut w = slots.writer_with(Recorder::default()).expect("writer");
    let r = region(0, 1, 0x100, 0x100);
    let variants = [
        ("smaller", Region { npages: 0x80, ..r }),
        ("new hva", Region { hva: r.hva + 0x1000_0000, ..r }),
        ("readonly", Region { flags: Flags::READONLY, ..r }),
    ];
    let mut failures = Vec::new();
    for (what, new) in variants {
        w.create(r).expect("setup");
        let g = generations(&slots);
        w.backend_mut().clear();
        let changes = commit(&mut w, &[Op::Delete(r.key()), Op::Create(new)]).expect("valid batch");
        assert_eq!(changes, [Change::Deleted, Change::Created]);
        assert_eq!(layout(&slots, 0), [new], "{what}");
        let c = changed(r, new);
        let events = w.backend().events.clone();
        let invalidated = |(hook, change): &(Hook, SlotChange)| {
            *hook == Hook::Invalidated && change.key == r.key() && change.old == Some(r)
        };
        if !events.iter().any(invalidated) {
            failures.push(format!("{what}: no invalidated hook for the deleted slot; hooks {events:?}"));
        }
        for (_, change) in events.iter().filter(|(hook, change)| *hook == Hook::Prepare && change.key == r.key()) {
            if matches!(change.kind(), Change::Unchanged | Change::FlagsChanged) {
                failures.push(format!("{what}: the backend sees the delete + create as {:?}", change.kind()));
            }
        }
        assert!(events.contains(&(Hook::Prepare, c)) || events.iter().any(|(_, change)| change.new == Some(new)));
        if generations(&slots)[0] != g[0] + 2 * STEP {
            failures.push(format!("{what}: {} swaps instead of 2", (generations(&slots)[0] - g[0]) / STEP));
        }
        w.delete(r.key()).expect("cleanup");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// 1d. Atomicity under concurrent readers.

/// gfns the readers check, all in address space 0.
const WINDOW: std::ops::Range<u64> = 0x1000..0x1400;
/// A slot outside the window that no batch touches.
fn static_slot() -> Region {
    region(0, 0, 0x0, 0x100)
}

/// A batch and its inverse, applied alternately, and the layouts of address
/// space 0 they go through.
struct Scenario {
    forward: Vec<Op>,
    backward: Vec<Op>,
    old: Vec<Region>,
    new: Vec<Region>,
    /// Deleted and moved by `forward` / `backward`: absent during the
    /// invalidation swap.
    removed_forward: Vec<SlotKey>,
    removed_backward: Vec<SlotKey>,
    /// For the split: the one host address each gfn of the window ever maps
    /// to.
    fixed_hva: Option<fn(u64) -> u64>,
}

impl Scenario {
    /// Two slots move together; the first moves into the range the second
    /// frees.
    fn move_two() -> Scenario {
        let (a, b) = (region(0, 1, 0x1000, 0x100), region(0, 2, 0x1100, 0x100));
        let (a2, b2) = (Region { base_gfn: 0x1100, ..a }, Region { base_gfn: 0x1280, ..b });
        Scenario {
            forward: vec![Op::Move(b.key(), b2.base_gfn), Op::Move(a.key(), a2.base_gfn)],
            backward: vec![Op::Move(a.key(), a.base_gfn), Op::Move(b.key(), b.base_gfn)],
            old: vec![static_slot(), a, b],
            new: vec![static_slot(), a2, b2],
            removed_forward: vec![a.key(), b.key()],
            removed_backward: vec![a.key(), b.key()],
            fixed_hva: None,
        }
    }

    /// One slot splits into two halves that map the same bytes; the inverse
    /// merges them.
    fn split_merge() -> Scenario {
        let whole = region(0, 1, 0x1000, 0x400);
        let lo = Region { id: 2, npages: 0x200, ..whole };
        let hi = Region { id: 3, base_gfn: 0x1200, npages: 0x200, hva: whole.hva + (0x200 << PAGE_SHIFT), ..whole };
        Scenario {
            forward: vec![Op::Delete(whole.key()), Op::Create(lo), Op::Create(hi)],
            backward: vec![Op::Delete(hi.key()), Op::Delete(lo.key()), Op::Create(whole)],
            old: vec![static_slot(), whole],
            new: vec![static_slot(), lo, hi],
            removed_forward: vec![whole.key()],
            removed_backward: vec![lo.key(), hi.key()],
            fixed_hva: Some(|gfn| hva_of(0, 1) + ((gfn - 0x1000) << PAGE_SHIFT)),
        }
    }

    /// The layout a view of generation `generation` must show, `base` being
    /// the generation of the old layout before the first batch: each batch
    /// is two swaps, the first its invalidation.
    fn expected(&self, base: u64, generation: u64) -> Result<(Vec<Region>, usize), String> {
        let g = generation & !GEN_UPDATE_IN_PROGRESS;
        if g < base || !(g - base).is_multiple_of(STEP) {
            return Err(format!("generation {generation:#x} does not follow {base}"));
        }
        let swaps = (g - base) / STEP;
        let batches = swaps / 2;
        Ok(match (swaps % 2, batches % 2) {
            (0, 0) => (self.old.clone(), 0),
            (0, _) => (self.new.clone(), 1),
            (_, 0) => (without(self.old.clone(), &self.removed_forward), 2),
            (_, _) => (without(self.new.clone(), &self.removed_backward), 2),
        })
    }
}

/// One view per iteration until `stop`: the layout, every gfn of the window
/// and the range queries must match what the view's generation names.
/// Returns how many views showed the old, new and invalidation layouts.
fn watch(reader: &Reader, sc: &Scenario, base: u64, stop: &AtomicBool) -> Result<[u64; 3], String> {
    let mut seen = [0u64; 3];
    loop {
        // Read the flag before the view, so the last view is taken after
        // the writer's last batch.
        let last = stop.load(Ordering::Acquire);
        let view = reader.pin();
        let (want, kind) = sc.expected(base, view.generation())?;
        seen[kind] += 1;
        let got: Vec<Region> = view.slots().map(|s| *s.region()).collect();
        if got != want {
            return Err(format!("generation {:#x}: slots {got:?}, want {want:?}", view.generation()));
        }
        let in_window: Vec<Region> = view.slots_in_gfn_range(WINDOW).map(|s| *s.region()).collect();
        let mut want_window: Vec<Region> =
            want.iter().filter(|r| r.base_gfn < WINDOW.end && r.end_gfn() > WINDOW.start).copied().collect();
        want_window.sort_by_key(|r| r.base_gfn);
        if in_window != want_window {
            return Err(format!("window: {in_window:?}, want {want_window:?}"));
        }
        for gfn in WINDOW.start - 1..=WINDOW.end {
            let slot = want.iter().find(|r| (r.base_gfn..r.end_gfn()).contains(&gfn));
            let hva = view.gfn_to_hva(gfn);
            let want_hva = slot.map(|r| r.hva + ((gfn - r.base_gfn) << PAGE_SHIFT));
            if hva != want_hva || view.gfn_to_slot(gfn).map(|s| s.region()) != slot {
                return Err(format!("gfn {gfn:#x}: hva {hva:x?}, want {want_hva:x?} ({kind})"));
            }
            if let (Some(fixed), Some(hva)) = (sc.fixed_hva, hva) {
                if hva != fixed(gfn) {
                    return Err(format!("gfn {gfn:#x} maps {hva:#x}, not {:#x}", fixed(gfn)));
                }
            }
        }
        if view.gfn_to_hva(0x80) != Some(static_slot().hva + (0x80 << PAGE_SHIFT)) {
            return Err("the untouched slot is not found".into());
        }
        drop(view);
        if last {
            return Ok(seen);
        }
    }
}

fn atomic_under_readers(sc: Scenario) {
    let run = if cfg!(miri) { Duration::ZERO } else { Duration::from_secs(1) };
    let min_batches = if cfg!(miri) { 4 } else { 20 };
    let slots = new_map();
    let mut w = slots.writer().expect("writer");
    let mut setup: Vec<Op> = sc.old.iter().map(|r| Op::Create(*r)).collect();
    setup.push(Op::Create(region(1, 1, 0x1000, 0x400))); // space 1 is never touched again
    commit(&mut w, &setup).expect("setup");
    let base = generations(&slots)[0];
    let base1 = generations(&slots)[1];
    let sc = Arc::new(sc);
    let stop = Arc::new(AtomicBool::new(false));

    let (tx, rx) = mpsc::channel();
    for vcpu in [true, false] {
        let reader = if vcpu { slots.reader() } else { slots.device_reader() };
        let (sc, stop, tx) = (sc.clone(), stop.clone(), tx.clone());
        std::thread::spawn(move || {
            let result = watch(&reader, &sc, base, &stop);
            if result.is_err() {
                stop.store(true, Ordering::Release);
            }
            let _ = tx.send((vcpu, result));
        });
    }
    let (wtx, wrx) = mpsc::channel();
    {
        let (sc, stop) = (sc.clone(), stop.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut batches = 0u64;
            while !stop.load(Ordering::Acquire) && (start.elapsed() < run || batches < min_batches) {
                let ops = if batches.is_multiple_of(2) { &sc.forward } else { &sc.backward };
                if let Err(e) = commit(&mut w, ops) {
                    let _ = wtx.send(Err(format!("batch {batches}: {e}")));
                    stop.store(true, Ordering::Release);
                    return;
                }
                batches += 1;
            }
            stop.store(true, Ordering::Release);
            let _ = wtx.send(Ok(batches));
        });
    }
    // Generous: miri runs thousands of times slower.
    let patience = Duration::from_secs(if cfg!(miri) { 3600 } else { 30 });
    let deadline = run + patience;
    let batches = wrx.recv_timeout(deadline).expect("the writer finishes in time").expect("the writer's batches");
    let mut total = [0u64; 3];
    for _ in 0..2 {
        let (vcpu, seen) = rx.recv_timeout(patience).expect("the readers finish in time");
        let seen = seen.unwrap_or_else(|e| panic!("{} reader: {e}", if vcpu { "vCPU" } else { "device" }));
        assert!(seen.iter().sum::<u64>() > 0);
        (0..3).for_each(|i| total[i] += seen[i]);
    }
    assert!(batches >= min_batches);
    eprintln!("{batches} batches; views of the old, new, invalidation layouts: {total:?}");
    let g = generations(&slots);
    assert_eq!(g, [base + batches * 2 * STEP, base1], "two swaps per batch, none in space 1");
    let want = if batches.is_multiple_of(2) { &sc.old } else { &sc.new };
    assert_eq!(&layout(&slots, 0), want);
    assert_eq!(slots.slot_objects(), want.len() + 1);
    if !cfg!(miri) {
        assert!(total[0] > 0 && total[1] > 0, "readers saw both layouts: {total:?}");
    }
}

#[test]
fn readers_see_two_slots_move_together() {
    atomic_under_readers(Scenario::move_two());
}

#[test]
fn readers_see_split_and_merge_at_once() {
    atomic_under_readers(Scenario::split_merge());
}

// ---------------------------------------------------------------------------
// 1e. Batches of a thousand operations.

/// Batches of 1000 operations (20 under miri, with a fiftieth of the
/// existing slots).
fn thousand_ops(existing: u16) {
    let (k, existing): (u16, u16) = if cfg!(miri) { (20, existing / 50) } else { (1000, existing) };
    let slots = new_map();
    let mut w = slots.writer().expect("writer");
    let at = |id: u16| region(0, id, u64::from(id) * 0x10, 0x10);
    let setup: Vec<Op> = (0..existing).map(|id| Op::Create(at(id))).collect();
    commit(&mut w, &setup).expect("setup");
    let mut want: BTreeMap<u16, Region> = (0..existing).map(|id| (id, at(id))).collect();
    let readers = Readers::new(&slots);
    let check = |want: &BTreeMap<u16, Region>| {
        let snap = readers.snapshot(&slots);
        assert_eq!(snap.spaces[0].1, want.values().copied().collect::<Vec<_>>());
        assert_eq!(snap.total_pages, want.len() as u64 * 0x10);
        assert_eq!(snap.slot_objects, want.len());
        // Lookups beyond the ends of each slot were compared in the
        // snapshot; every slot is found by its own gfns too.
        let r = slots.reader();
        let v = r.pin();
        for region in want.values() {
            assert_eq!(v.gfn_to_slot(region.base_gfn + 7).map(|s| *s.region()), Some(*region));
        }
    };
    let g = generations(&slots);

    // k creates after the existing slots.
    let creates: Vec<Op> = (existing..existing + k).map(|id| Op::Create(at(id))).collect();
    assert_eq!(commit(&mut w, &creates).expect("creates"), vec![Change::Created; usize::from(k)]);
    want.extend((existing..existing + k).map(|id| (id, at(id))));
    check(&want);
    assert_eq!(generations(&slots), [g[0] + STEP, g[1]]);

    // k moves of slots spread over the map to free space high up.
    let n = existing + k;
    let moved: Vec<u16> = (0..n).step_by(usize::from(n / k)).take(usize::from(k)).collect();
    assert_eq!(moved.len(), usize::from(k));
    let high = |id: u16| 0x100_0000 + u64::from(id) * 0x20;
    let moves: Vec<Op> = moved.iter().map(|&id| Op::Move(key(0, id), high(id))).collect();
    assert_eq!(commit(&mut w, &moves).expect("moves"), vec![Change::Moved; usize::from(k)]);
    for &id in &moved {
        want.get_mut(&id).expect("exists").base_gfn = high(id);
    }
    check(&want);
    assert_eq!(generations(&slots), [g[0] + 3 * STEP, g[1]]);

    // k moves, each into the range the one before it freed: slot i goes
    // to where slot i - 1 was; the first into the gap of the last.
    let mut chain: Vec<Op> = Vec::new();
    let last_free = high(moved[moved.len() - 1]) + 0x10;
    chain.push(Op::Move(key(0, moved[0]), last_free));
    for pair in moved.windows(2) {
        chain.push(Op::Move(key(0, pair[1]), high(pair[0])));
    }
    let changes = commit(&mut w, &chain).expect("chained moves");
    assert_eq!(changes, vec![Change::Moved; usize::from(k)]);
    want.get_mut(&moved[0]).expect("exists").base_gfn = last_free;
    for pair in moved.windows(2) {
        want.get_mut(&pair[1]).expect("exists").base_gfn = high(pair[0]);
    }
    check(&want);
    assert_eq!(generations(&slots), [g[0] + 5 * STEP, g[1]]);
}

#[test]
fn thousand_operation_batches_509_slots() {
    thousand_ops(509);
}

#[test]
fn thousand_operation_batches_4000_slots() {
    thousand_ops(4000);
}

/// A backend that applies each change at once, as KVM's one-slot ioctl
/// does, and refuses one that would overlap a slot it has (`EEXIST`).
#[derive(Default)]
struct OneAtATime {
    slots: BTreeMap<SlotKey, Region>,
}

impl Backend for OneAtATime {
    fn prepare(&mut self, change: &SlotChange) -> Result<(), i32> {
        let mut next = self.slots.clone();
        next.remove(&change.key);
        if let Some(new) = change.new {
            let overlaps =
                |r: &Region| r.as_id == new.as_id && r.base_gfn < new.end_gfn() && new.base_gfn < r.end_gfn();
            if next.values().any(overlaps) {
                return Err(libc::EEXIST);
            }
            next.insert(change.key, new);
        }
        self.slots = next;
        Ok(())
    }
}

/// Two slots deleted and made again with the same ids and memory at each
/// other's guest addresses: KVM takes that order of ioctls, so the batch
/// succeeds, and a backend applying the changes one at a time never sees
/// two slots overlap. The same holds for three slots in a ring, and for
/// explicit moves through a free place.
#[test]
fn slots_trading_places_reach_a_one_at_a_time_backend_without_overlap() {
    let slots = Memslots::new(Config::default()).expect("config");
    let mut w = slots.writer_with(OneAtATime::default()).expect("writer");
    let at = |id: u16, base_gfn: u64| Region { base_gfn, ..region(0, id, 0, 0x10) };
    for id in 1..=3 {
        w.create(at(id, u64::from(id) * 0x100)).expect("setup");
    }
    let mut batch = w.batch();
    batch.delete(key(0, 1)).delete(key(0, 2)).create(at(1, 0x200)).create(at(2, 0x100));
    batch.commit().expect("delete, delete, create, create: KVM takes it");
    let ring = [at(1, 0x300), at(2, 0x200), at(3, 0x100)];
    let mut batch = w.batch();
    batch.delete(key(0, 1)).delete(key(0, 2)).delete(key(0, 3));
    for r in ring {
        batch.create(r);
    }
    batch.commit().expect("a ring of three");
    // Slots 1 and 3 trade places by moves through a free place.
    let mut batch = w.batch();
    batch.move_to(key(0, 1), 0x1000).move_to(key(0, 3), 0x300).move_to(key(0, 1), 0x100);
    batch.commit().expect("moves through a free place");
    let want = [at(1, 0x100), at(2, 0x200), at(3, 0x300)];
    let reader = slots.reader();
    let mut seen: Vec<Region> = reader.pin().slots().map(|s| *s.region()).collect();
    seen.sort_by_key(|r| r.id);
    assert_eq!(seen, want);
    assert_eq!(w.backend().slots.values().copied().collect::<Vec<_>>(), want, "the backend followed");
}
