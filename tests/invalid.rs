//! What readers see of a slot while it is deleted or moved: its INVALID copy
//! is published first, and while it is, lookups and accessors answer
//! "changing, retry" (not "no slot"), and the walk of host ranges still
//! visits it, as KVM's does until the flush (`Backend::invalidated`).

use std::sync::Arc;

use memslots::{
    AccessFailure, Backend, Config, Flags, GpaCache, GuestRam, Lookup, Memslots, Reader, SlotChange, SlotKey, PAGE_SIZE,
};

const KEY: SlotKey = SlotKey { id: 1, as_id: 0 };
const BASE: u64 = 0x100;
const PAGES: u64 = 4;
const NEW_BASE: u64 = 0x400;
/// A gfn no slot ever holds.
const HOLE: u64 = 0x300;

/// What one reader saw of the slot's old range from inside `invalidated`.
#[derive(Debug, Default)]
struct Seen {
    lookup_changing: bool,
    gfn_to_slot_none: bool,
    read: Option<AccessFailure>,
    write: Option<AccessFailure>,
    cached: Option<AccessFailure>,
    range: Option<AccessFailure>,
    hole_unmapped: bool,
    hole_read: Option<AccessFailure>,
    /// `slots_in_hva_range` over the slot's host range: (id, INVALID).
    by_hva: Vec<(u16, bool)>,
    in_gfn_range: usize,
    in_slots: usize,
}

/// Looks at the slot's old range through both reader kinds while the
/// change is between its INVALID swap and its final swap.
struct Probe {
    readers: Vec<Reader>,
    hvas: std::ops::Range<u64>,
    seen: Vec<Seen>,
}

impl Backend for Probe {
    fn invalidated(&mut self, change: &SlotChange) {
        assert_eq!(change.key, KEY);
        for reader in &self.readers {
            let view = reader.pin();
            let gpa = BASE * PAGE_SIZE + 8;
            let mut buf = [0u8; 8];
            let failure = |r: Result<(), memslots::AccessError>| r.err().map(|e| e.failure);
            let mut cache = GpaCache::new(gpa, 8).expect("cache");
            self.seen.push(Seen {
                lookup_changing: matches!(view.lookup(BASE + 1), Lookup::Changing),
                gfn_to_slot_none: view.gfn_to_slot(BASE).is_none() && view.gfn_to_hva(BASE).is_none(),
                read: failure(view.read(gpa, &mut buf)),
                write: failure(view.write(gpa, &buf)),
                cached: failure(view.read_cached(&mut cache, 0, &mut buf)),
                range: view.range(gpa, 8).err().map(|e| e.failure),
                hole_unmapped: matches!(view.lookup(HOLE), Lookup::Unmapped),
                hole_read: failure(view.read(HOLE * PAGE_SIZE, &mut buf)),
                by_hva: view.slots_in_hva_range(self.hvas.clone()).map(|s| (s.id(), s.is_invalid())).collect(),
                in_gfn_range: view.slots_in_gfn_range(0..0x1000).count(),
                in_slots: view.slots().count(),
            });
        }
    }
}

fn during(change: impl FnOnce(&mut memslots::Writer<Probe>)) -> (Memslots, Vec<Seen>) {
    let slots = Memslots::new(Config::default().with_address_spaces(1)).expect("config");
    let ram = Arc::new(GuestRam::new((PAGES * PAGE_SIZE) as usize).expect("ram"));
    let hva = ram.as_ptr() as u64;
    let probe = Probe { readers: vec![slots.reader(), slots.device_reader()], hvas: hva..hva + 1, seen: Vec::new() };
    let mut w = slots.writer_with(probe).expect("writer");
    w.create_owned(KEY, BASE, Flags::empty(), ram).expect("create");
    // Warm both readers' caches on the slot, so a stale cache would show.
    for reader in &w.backend().readers {
        assert!(reader.pin().gfn_to_slot(BASE).is_some());
        assert!(reader.pin().gfn_to_slot(BASE).is_some());
    }
    change(&mut w);
    let seen = std::mem::take(&mut w.backend_mut().seen);
    drop(w);
    (slots, seen)
}

fn assert_changing(seen: &[Seen]) {
    assert_eq!(seen.len(), 2, "both readers looked during the change");
    for (kind, s) in ["vcpu", "device"].iter().zip(seen) {
        assert!(s.lookup_changing, "{kind}: lookup says changing: {s:?}");
        assert!(s.gfn_to_slot_none, "{kind}: no usable slot: {s:?}");
        assert_eq!(s.read, Some(AccessFailure::Changing), "{kind}");
        assert_eq!(s.write, Some(AccessFailure::Changing), "{kind}");
        assert_eq!(s.cached, Some(AccessFailure::Changing), "{kind}");
        assert_eq!(s.range, Some(AccessFailure::Changing), "{kind}");
        assert!(s.hole_unmapped, "{kind}: a hole is still a hole");
        assert_eq!(s.hole_read, Some(AccessFailure::NotMapped), "{kind}");
        assert_eq!(s.by_hva, [(KEY.id, true)], "{kind}: the host-range walk visits the INVALID slot");
        assert_eq!((s.in_gfn_range, s.in_slots), (0, 0), "{kind}: no usable slot in gfn walks");
    }
}

#[test]
fn a_deleted_slot_is_changing_until_the_delete_is_published() {
    let (slots, seen) = during(|w| {
        w.delete(KEY).expect("delete");
    });
    assert_changing(&seen);
    let view = slots.reader();
    let view = view.pin();
    assert!(matches!(view.lookup(BASE), Lookup::Unmapped));
    let mut buf = [0u8; 8];
    assert_eq!(view.read(BASE * PAGE_SIZE, &mut buf).map_err(|e| e.failure), Err(AccessFailure::NotMapped));
    assert_eq!(view.slots_in_hva_range(0..u64::MAX).count(), 0);
}

#[test]
fn a_moved_slot_is_changing_until_the_move_is_published() {
    let (slots, seen) = during(|w| {
        w.move_to(KEY, NEW_BASE).expect("move");
    });
    assert_changing(&seen);
    let reader = slots.reader();
    let view = reader.pin();
    assert!(matches!(view.lookup(BASE), Lookup::Unmapped));
    assert!(matches!(view.lookup(NEW_BASE), Lookup::Slot(s) if s.key() == KEY));
    assert_eq!(
        view.slots_in_hva_range(0..u64::MAX).map(|s| (s.id(), s.is_invalid())).collect::<Vec<_>>(),
        [(1, false)]
    );
    view.write_obj(NEW_BASE * PAGE_SIZE, 7u64).expect("the moved slot is writable");
}

/// Records, at each hook, what a reader sees at every gfn of a range.
struct Layouts {
    reader: Reader,
    gfns: std::ops::Range<u64>,
    /// Looks only once set (after the setup).
    armed: bool,
    seen: Vec<(&'static str, Vec<Option<u16>>, usize)>,
}

impl Layouts {
    /// Per gfn: `Some(id)` for a usable slot, `None` for changing; panics on
    /// a hole, which the batch below must never show in its range.
    fn look(&mut self, hook: &'static str) {
        if !self.armed {
            return;
        }
        let view = self.reader.pin();
        let at = self
            .gfns
            .clone()
            .map(|gfn| match view.lookup(gfn) {
                Lookup::Slot(slot) => Some(slot.id()),
                Lookup::Changing => None,
                Lookup::Unmapped => panic!("{hook}: gfn {gfn:#x} is a hole"),
            })
            .collect();
        self.seen.push((hook, at, view.slots().count()));
    }
}

impl Backend for Layouts {
    fn prepare(&mut self, _: &SlotChange) -> Result<(), i32> {
        self.look("prepare");
        Ok(())
    }

    fn invalidated(&mut self, _: &SlotChange) {
        self.look("invalidated");
    }

    fn commit(&mut self, _: &SlotChange) {
        self.look("commit");
    }
}

/// The batch docs' example: one DIMM replaced by two halves. Readers see
/// the old slot, then its whole range changing, then both halves: never one
/// half alone, never a hole.
#[test]
fn a_split_dimm_is_old_then_changing_then_both_halves() {
    let slots = Memslots::new(Config::default().with_address_spaces(1)).expect("config");
    let dimm =
        memslots::Region { id: 0, as_id: 0, base_gfn: 0x100, npages: 0x200, hva: 1 << 40, flags: Flags::empty() };
    let backend =
        Layouts { reader: slots.reader(), gfns: dimm.base_gfn..dimm.end_gfn(), armed: false, seen: Vec::new() };
    let mut w = slots.writer_with(backend).expect("writer");
    w.create(dimm).expect("create");
    w.backend_mut().armed = true;
    let mut batch = w.batch();
    batch.delete(dimm.key());
    batch.create(memslots::Region { npages: 0x100, ..dimm });
    batch.create(memslots::Region { id: 1, base_gfn: 0x200, npages: 0x100, hva: dimm.hva + (0x100 << 12), ..dimm });
    batch.commit().expect("commit");
    let old = vec![Some(0); 0x200];
    let changing = vec![None; 0x200];
    let halves: Vec<Option<u16>> = (0..0x200).map(|i| Some(if i < 0x100 { 0 } else { 1 })).collect();
    let seen = &w.backend().seen;
    // The delete is announced with the INVALID step, then a create per half.
    let hooks: Vec<&str> = seen.iter().map(|(hook, _, _)| *hook).collect();
    assert_eq!(hooks, ["prepare", "prepare", "prepare", "invalidated", "commit", "commit", "commit"]);
    for (hook, at, count) in seen {
        let want = match *hook {
            "prepare" => (&old, 1),
            "invalidated" => (&changing, 0),
            _ => (&halves, 2),
        };
        assert_eq!((at, *count), want, "at {hook}");
    }
}

/// A batch without deletes or moves has no INVALID step: creates and flag
/// changes appear together in one swap.
#[test]
fn a_batch_of_creates_and_flag_changes_has_no_changing_step() {
    let slots = Memslots::new(Config::default().with_address_spaces(1)).expect("config");
    let first =
        memslots::Region { id: 0, as_id: 0, base_gfn: 0x100, npages: 0x10, hva: 1 << 40, flags: Flags::empty() };
    let backend = Layouts { reader: slots.reader(), gfns: 0x100..0x110, armed: false, seen: Vec::new() };
    let mut w = slots.writer_with(backend).expect("writer");
    w.create(first).expect("create");
    w.backend_mut().armed = true;
    let mut batch = w.batch();
    batch.set_flags(first.key(), Flags::LOG_DIRTY_PAGES);
    batch.create(memslots::Region { id: 1, base_gfn: 0x200, hva: 2 << 40, ..first });
    batch.commit().expect("commit");
    let hooks: Vec<&str> = w.backend().seen.iter().map(|(hook, _, _)| *hook).collect();
    assert_eq!(hooks, ["prepare", "prepare", "commit", "commit"]);
    let counts: Vec<usize> = w.backend().seen.iter().map(|(_, _, count)| *count).collect();
    assert_eq!(counts, [1, 1, 2, 2], "one step from the old layout to the final one");
}
