//! Guest-memory accessors (`View::read`/`write`, `read_obj`/`write_obj`,
//! `GpaCache`, `mark_page_dirty`, `GuestRange`) against a flat byte model of
//! guest memory per address space.
//!
//! The property test builds a random layout (owned, raw and address-only
//! slots, some READONLY, some logging dirty pages, holes between them, and in
//! a two-address-space map an SMRAM slot only in address space 1), runs
//! random accesses, moves and flag changes, and compares every result, error
//! and dirty log with the model exactly. The unit tests below it cover bad
//! input and the lifetime rules of `GuestRange` and `GpaCache`.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use memslots::{
    AccessError, AccessFailure, Change, Config, Error, Flags, GpaCache, GuestRam, Memslots, Reader, Region, SlotKey,
    View, Writer, GFN_LIMIT, PAGE_SIZE,
};
use proptest::prelude::*;

const PAGE: u64 = PAGE_SIZE;
/// The first gfn of the random layouts.
const FIRST_GFN: u64 = 0x10;
/// Accesses and moves of the property test aim into this gfn window (the
/// layouts fill at most 0x10..0x33, so there are holes on both sides).
const WINDOW: std::ops::Range<u64> = 0x0c..0x50;

/// Deterministic, page-varying bytes.
fn pattern(seed: u8, i: usize) -> u8 {
    (usize::from(seed).wrapping_mul(31) ^ i.wrapping_mul(7) ^ (i >> 12).wrapping_mul(101)) as u8
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| pattern(seed.wrapping_add(0x55), i)).collect()
}

/// Guest RAM of `npages` filled with `pattern(seed, _)`.
fn ram_with(npages: u64, seed: u8) -> Arc<GuestRam> {
    let ram = GuestRam::new((npages * PAGE) as usize).expect("guest RAM");
    let data: Vec<u8> = (0..ram.len()).map(|i| pattern(seed, i)).collect();
    // SAFETY: the RAM was just mapped, `len` bytes long, and nothing else
    // refers to it yet.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ram.as_ptr(), data.len()) };
    Arc::new(ram)
}

/// The bytes of guest RAM, read through its host pointer.
fn host_bytes(ram: &GuestRam) -> Vec<u8> {
    let mut out = vec![0; ram.len()];
    // SAFETY: the RAM is mapped while `ram` lives; no thread writes it now.
    unsafe { std::ptr::copy_nonoverlapping(ram.as_ptr(), out.as_mut_ptr(), out.len()) };
    out
}

fn key(id: u16, as_id: u16) -> SlotKey {
    SlotKey { id, as_id }
}

fn err(gpa: u64, done: usize, failure: AccessFailure) -> AccessError {
    AccessError { gpa, done, failure }
}

fn one_space() -> Config {
    Config::new(1, 16)
}

fn two_spaces() -> Config {
    Config::new(2, 16)
}

// ---------------------------------------------------------------------------
// The model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `create_owned`.
    Owned,
    /// `create_raw` over RAM the test keeps alive.
    Raw,
    /// Plain `create`: an address only.
    AddressOnly,
}

#[derive(Clone, Debug)]
struct Spec {
    /// Pages of hole before the slot.
    gap: u64,
    npages: u64,
    kind: Kind,
    readonly: bool,
    log: bool,
    seed: u8,
}

#[derive(Clone, Debug)]
struct Layout {
    /// Slots of address space 0, in gfn order from `FIRST_GFN`.
    slots: Vec<Spec>,
    /// Two address spaces, with an SMRAM slot (owned) in address space 1 at
    /// this gfn, of this many pages, logging or not.
    smram: Option<(u64, u64, bool, u8)>,
}

/// One slot of the model.
struct MSlot {
    key: SlotKey,
    base_gfn: u64,
    npages: u64,
    kind: Kind,
    readonly: bool,
    /// Dirty page offsets while the slot logs.
    dirty: Option<BTreeSet<u64>>,
    /// The slot's bytes (empty for an address-only slot).
    data: Vec<u8>,
    /// The slot's memory (owned or raw), for the final check.
    ram: Option<Arc<GuestRam>>,
}

impl MSlot {
    fn flags(&self) -> Flags {
        let mut flags = Flags::empty();
        flags.set(Flags::READONLY, self.readonly);
        flags.set(Flags::LOG_DIRTY_PAGES, self.dirty.is_some());
        flags
    }

    fn contains(&self, gfn: u64) -> bool {
        gfn >= self.base_gfn && gfn - self.base_gfn < self.npages
    }

    fn bitmap(&self) -> Option<Vec<u64>> {
        let dirty = self.dirty.as_ref()?;
        let mut words = vec![0u64; self.npages.div_ceil(64) as usize];
        for &page in dirty {
            words[(page / 64) as usize] |= 1 << (page % 64);
        }
        Some(words)
    }
}

struct Model {
    slots: Vec<MSlot>,
}

impl Model {
    fn find(&self, as_id: u16, gfn: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.key.as_id == as_id && s.contains(gfn))
    }

    /// A read into `buf` or a write of `buf`, byte by byte, stopping at the
    /// first byte that cannot be accessed.
    fn access(&mut self, as_id: u16, gpa: u64, buf: &mut [u8], write: bool) -> Result<(), AccessError> {
        if buf.is_empty() {
            return Err(err(gpa, 0, AccessFailure::Empty));
        }
        for (i, byte) in buf.iter_mut().enumerate() {
            let fail = |failure| Err(err(gpa.wrapping_add(i as u64), i, failure));
            let Some(at) = gpa.checked_add(i as u64) else { return fail(AccessFailure::PastEnd) };
            let Some(s) = self.find(as_id, at / PAGE) else { return fail(AccessFailure::NotMapped) };
            let slot = &mut self.slots[s];
            if write && slot.readonly {
                return fail(AccessFailure::ReadOnly);
            }
            if slot.kind == Kind::AddressOnly {
                return fail(AccessFailure::NoHostMemory);
            }
            let offset = at - slot.base_gfn * PAGE;
            if write {
                slot.data[offset as usize] = *byte;
                if let Some(dirty) = &mut slot.dirty {
                    dirty.insert(offset / PAGE);
                }
            } else {
                *byte = slot.data[offset as usize];
            }
        }
        Ok(())
    }

    fn mark(&mut self, as_id: u16, gfn: u64) -> bool {
        let Some(s) = self.find(as_id, gfn) else { return false };
        let slot = &mut self.slots[s];
        let page = gfn - slot.base_gfn;
        let Some(dirty) = &mut slot.dirty else { return false };
        dirty.insert(page);
        true
    }

    /// The slots of `s`'s address space that `s` moved to `base` would
    /// overlap.
    fn overlaps(&self, s: usize, base: u64) -> Vec<SlotKey> {
        let me = &self.slots[s];
        let end = base + me.npages;
        self.slots
            .iter()
            .enumerate()
            .filter(|&(i, o)| i != s && o.key.as_id == me.key.as_id && o.base_gfn < end && base < o.base_gfn + o.npages)
            .map(|(_, o)| o.key)
            .collect()
    }
}

/// Creates the layout in a new map.
fn build(layout: &Layout) -> (Memslots, Writer, Model) {
    let config = if layout.smram.is_some() { two_spaces() } else { one_space() };
    let slots = Memslots::new(config).unwrap();
    let mut w = slots.writer().unwrap();
    let mut model = Model { slots: Vec::new() };
    let mut next = FIRST_GFN;
    let smram = layout.smram.map(|(base, npages, log, seed)| {
        let spec = Spec { gap: 0, npages, kind: Kind::Owned, readonly: false, log, seed };
        (key(0, 1), base, spec)
    });
    let normal = layout.slots.iter().enumerate().map(|(id, spec)| {
        let base = next + spec.gap;
        next = base + spec.npages;
        (key(id as u16, 0), base, spec.clone())
    });
    for (key, base_gfn, spec) in normal.collect::<Vec<_>>().into_iter().chain(smram) {
        let mut flags = Flags::empty();
        flags.set(Flags::READONLY, spec.readonly);
        flags.set(Flags::LOG_DIRTY_PAGES, spec.log);
        let (ram, data) = match spec.kind {
            Kind::AddressOnly => {
                let hva = 0x7f00_0000_0000 + (u64::from(key.id) << 24);
                let region = Region { id: key.id, as_id: key.as_id, base_gfn, npages: spec.npages, hva, flags };
                assert_eq!(w.create(region), Ok(Change::Created));
                (None, Vec::new())
            }
            Kind::Owned => {
                let ram = ram_with(spec.npages, spec.seed);
                assert_eq!(w.create_owned(key, base_gfn, flags, ram.clone()), Ok(Change::Created));
                let data = host_bytes(&ram);
                (Some(ram), data)
            }
            Kind::Raw => {
                let ram = ram_with(spec.npages, spec.seed);
                let hva = ram.as_ptr() as u64;
                let region = Region { id: key.id, as_id: key.as_id, base_gfn, npages: spec.npages, hva, flags };
                // SAFETY: the model keeps `ram` alive (mapped, readable and
                // writable) until after the map is dropped, and the test
                // touches it only through raw pointers.
                assert_eq!(unsafe { w.create_raw(region) }, Ok(Change::Created));
                let data = host_bytes(&ram);
                (Some(ram), data)
            }
        };
        model.slots.push(MSlot {
            key,
            base_gfn,
            npages: spec.npages,
            kind: spec.kind,
            readonly: spec.readonly,
            dirty: spec.log.then(BTreeSet::new),
            data,
            ram,
        });
    }
    (slots, w, model)
}

#[derive(Clone, Debug)]
enum Op {
    Read { who: usize, gpa: u64, len: usize },
    Write { who: usize, gpa: u64, len: usize, seed: u8 },
    ReadObj { who: usize, gpa: u64, size: usize },
    WriteObj { who: usize, gpa: u64, size: usize, value: u64 },
    CachedRead { who: usize, cache: usize, offset: Offset, len: usize },
    CachedWrite { who: usize, cache: usize, offset: Offset, len: usize, seed: u8 },
    MarkPage { who: usize, gfn: u64 },
    Move { slot: usize, to: u64 },
    ToggleLog { slot: usize },
    Harvest { slot: usize },
    Peek { slot: usize },
}

/// Where a cached access starts in its range.
#[derive(Clone, Copy, Debug)]
enum Offset {
    /// This many bytes from the start (reduced modulo the range's length
    /// plus a little, so some run past its end).
    Start(usize),
    /// So that the access ends this many bytes before the range's end plus
    /// two: 0 and 1 run past it, 2 ends exactly at it, 3 inside.
    End(usize),
}

impl Offset {
    fn at(self, cache: &GpaCache, len: usize) -> usize {
        match self {
            Offset::Start(o) => o % (cache.len() + 16),
            Offset::End(k) => (cache.len() + 2).saturating_sub(len + k),
        }
    }
}

fn offset() -> impl Strategy<Value = Offset> {
    prop_oneof![(0usize..=2 * PAGE as usize).prop_map(Offset::Start), (0usize..4).prop_map(Offset::End)]
}

fn max_len() -> usize {
    if cfg!(miri) {
        64
    } else {
        2 * PAGE as usize + 64
    }
}

/// A guest address: mostly in the window (anywhere, near a page boundary,
/// or 8-byte aligned), sometimes near the top of the address space.
fn gpa() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (WINDOW, 0..PAGE).prop_map(|(gfn, off)| gfn * PAGE + off),
        4 => (WINDOW, -12i64..12).prop_map(|(gfn, d)| (gfn * PAGE).wrapping_add_signed(d)),
        4 => (WINDOW, 0..PAGE / 8).prop_map(|(gfn, k)| gfn * PAGE + k * 8),
        1 => (0u64..24).prop_map(|k| u64::MAX - k),
    ]
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..=16, 3 => 0..=max_len(), 1 => Just(PAGE as usize)]
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0usize..4;
    prop_oneof![
        6 => (who.clone(), gpa(), len()).prop_map(|(who, gpa, len)| Op::Read { who, gpa, len }),
        6 => (who.clone(), gpa(), len(), any::<u8>()).prop_map(|(who, gpa, len, seed)| Op::Write { who, gpa, len, seed }),
        3 => (who.clone(), gpa(), prop::sample::select(vec![1usize, 2, 4, 8]))
            .prop_map(|(who, gpa, size)| Op::ReadObj { who, gpa, size }),
        3 => (who.clone(), gpa(), prop::sample::select(vec![1usize, 2, 4, 8]), any::<u64>())
            .prop_map(|(who, gpa, size, value)| Op::WriteObj { who, gpa, size, value }),
        3 => (who.clone(), 0usize..4, offset(), len())
            .prop_map(|(who, cache, offset, len)| Op::CachedRead { who, cache, offset, len }),
        3 => (who.clone(), 0usize..4, offset(), len(), any::<u8>())
            .prop_map(|(who, cache, offset, len, seed)| Op::CachedWrite { who, cache, offset, len, seed }),
        2 => (who, WINDOW).prop_map(|(who, gfn)| Op::MarkPage { who, gfn }),
        2 => (0usize..8, WINDOW).prop_map(|(slot, to)| Op::Move { slot, to }),
        1 => (0usize..8).prop_map(|slot| Op::ToggleLog { slot }),
        1 => (0usize..8).prop_map(|slot| Op::Harvest { slot }),
        1 => (0usize..8).prop_map(|slot| Op::Peek { slot }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let kind = prop_oneof![4 => Just(Kind::Owned), 2 => Just(Kind::Raw), 1 => Just(Kind::AddressOnly)];
    (0u64..3, 1u64..=4, kind, prop::bool::weighted(0.25), any::<bool>(), any::<u8>())
        .prop_map(|(gap, npages, kind, readonly, log, seed)| Spec { gap, npages, kind, readonly, log, seed })
}

fn layout() -> impl Strategy<Value = Layout> {
    let smram = prop::option::of((WINDOW.start..WINDOW.end - 2, 1u64..=2, any::<bool>(), any::<u8>()));
    (prop::collection::vec(spec(), 1..=5), smram).prop_map(|(slots, smram)| Layout { slots, smram })
}

/// A cached range in the window: its address and length.
fn cache_spec() -> impl Strategy<Value = (u64, usize)> {
    (WINDOW, 0..PAGE, 1usize..=(2 * PAGE as usize))
        .prop_map(|(gfn, off, len)| (gfn * PAGE + off, if cfg!(miri) { len % 64 + 1 } else { len }))
}

/// Reads `size` bytes at `gpa` with `read_obj` of the matching type.
fn read_obj(view: &View<'_>, gpa: u64, size: usize) -> Result<Vec<u8>, AccessError> {
    match size {
        1 => view.read_obj::<u8>(gpa).map(|v| v.to_ne_bytes().to_vec()),
        2 => view.read_obj::<u16>(gpa).map(|v| v.to_ne_bytes().to_vec()),
        4 => view.read_obj::<u32>(gpa).map(|v| v.to_ne_bytes().to_vec()),
        _ => view.read_obj::<u64>(gpa).map(|v| v.to_ne_bytes().to_vec()),
    }
}

/// Writes the low `size` bytes of `value` at `gpa` with `write_obj` of the
/// matching type; returns the bytes written.
fn write_obj(view: &View<'_>, gpa: u64, size: usize, value: u64) -> (Result<(), AccessError>, Vec<u8>) {
    match size {
        1 => (view.write_obj(gpa, value as u8), (value as u8).to_ne_bytes().to_vec()),
        2 => (view.write_obj(gpa, value as u16), (value as u16).to_ne_bytes().to_vec()),
        4 => (view.write_obj(gpa, value as u32), (value as u32).to_ne_bytes().to_vec()),
        _ => (view.write_obj(gpa, value), value.to_ne_bytes().to_vec()),
    }
}

/// The model of a cached access's own checks.
fn cache_check(cache: &GpaCache, offset: usize, len: usize) -> Result<u64, AccessError> {
    let gpa = cache.gpa().wrapping_add(offset as u64);
    if len == 0 {
        return Err(err(gpa, 0, AccessFailure::Empty));
    }
    if offset.checked_add(len).is_none_or(|end| end > cache.len()) {
        return Err(err(gpa, 0, AccessFailure::PastEnd));
    }
    Ok(gpa)
}

fn run_model(layout: Layout, caches: Vec<(u64, usize)>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (slots, mut w, mut model) = build(&layout);
    let two = layout.smram.is_some();
    // vCPU and device readers of address space 0 and, with two address
    // spaces, of address space 1 (the vCPU one through SMM).
    let mut readers: Vec<Reader> = vec![slots.reader(), slots.device_reader()];
    if two {
        let mut smm = slots.reader();
        smm.set_smm(true).unwrap();
        let mut dev = slots.device_reader();
        dev.set_address_space(1).unwrap();
        readers.extend([smm, dev]);
    } else {
        let mut vcpu = slots.reader();
        prop_assert_eq!(vcpu.set_smm(true), Err(Error::InvalidAddressSpace { as_id: 1 }));
        prop_assert_eq!(vcpu.address_space(), 0);
    }
    let mut caches: Vec<GpaCache> = caches.into_iter().map(|(gpa, len)| GpaCache::new(gpa, len).unwrap()).collect();

    for op in ops {
        match op {
            Op::Read { who, gpa, len } => {
                let reader = &readers[who % readers.len()];
                let (mut got, mut want) = (vec![0xee; len], vec![0xee; len]);
                let res = reader.pin().read(gpa, &mut got);
                let expect = model.access(reader.address_space(), gpa, &mut want, false);
                prop_assert_eq!(res, expect, "read {:#x}+{}", gpa, len);
                let done = res.map_or_else(|e| e.done, |()| len);
                prop_assert_eq!(&got[..done], &want[..done]);
            }
            Op::Write { who, gpa, len, seed } => {
                let reader = &readers[who % readers.len()];
                let mut data = bytes(seed, len);
                let res = reader.pin().write(gpa, &data);
                let expect = model.access(reader.address_space(), gpa, &mut data, true);
                prop_assert_eq!(res, expect, "write {:#x}+{}", gpa, len);
            }
            Op::ReadObj { who, gpa, size } => {
                let reader = &readers[who % readers.len()];
                let res = read_obj(&reader.pin(), gpa, size);
                let mut want = vec![0; size];
                let expect = model.access(reader.address_space(), gpa, &mut want, false).map(|()| want);
                prop_assert_eq!(res, expect, "read_obj {:#x} of {}", gpa, size);
            }
            Op::WriteObj { who, gpa, size, value } => {
                let reader = &readers[who % readers.len()];
                let (res, mut data) = write_obj(&reader.pin(), gpa, size, value);
                let expect = model.access(reader.address_space(), gpa, &mut data, true);
                prop_assert_eq!(res, expect, "write_obj {:#x} of {}", gpa, size);
            }
            Op::CachedRead { who, cache, offset, len } => {
                let reader = &readers[who % readers.len()];
                let n = caches.len();
                let cache = &mut caches[cache % n];
                let offset = offset.at(cache, len);
                let (mut got, mut want) = (vec![0xee; len], vec![0xee; len]);
                let res = reader.pin().read_cached(cache, offset, &mut got);
                let expect = cache_check(cache, offset, len)
                    .and_then(|gpa| model.access(reader.address_space(), gpa, &mut want, false));
                prop_assert_eq!(res, expect, "read_cached {:?} at {}+{}", cache, offset, len);
                let done = res.map_or_else(|e| e.done, |()| len);
                prop_assert_eq!(&got[..done], &want[..done]);
            }
            Op::CachedWrite { who, cache, offset, len, seed } => {
                let reader = &readers[who % readers.len()];
                let n = caches.len();
                let cache = &mut caches[cache % n];
                let offset = offset.at(cache, len);
                let mut data = bytes(seed, len);
                let res = reader.pin().write_cached(cache, offset, &data);
                let expect = cache_check(cache, offset, len)
                    .and_then(|gpa| model.access(reader.address_space(), gpa, &mut data, true));
                prop_assert_eq!(res, expect, "write_cached {:?} at {}+{}", cache, offset, len);
            }
            Op::MarkPage { who, gfn } => {
                let reader = &readers[who % readers.len()];
                let got = reader.pin().mark_page_dirty(gfn);
                prop_assert_eq!(got, model.mark(reader.address_space(), gfn), "mark_page_dirty {:#x}", gfn);
            }
            Op::Move { slot, to } => {
                let s = slot % model.slots.len();
                let key = model.slots[s].key;
                let overlaps = model.overlaps(s, to);
                match w.move_to(key, to) {
                    Err(Error::Overlap { key: k, with }) => {
                        prop_assert_eq!(k, key);
                        prop_assert!(overlaps.contains(&with), "overlap with {} not in {:?}", with, overlaps);
                    }
                    Ok(change) => {
                        prop_assert!(overlaps.is_empty(), "move over {:?} accepted", overlaps);
                        let want = if to == model.slots[s].base_gfn { Change::Unchanged } else { Change::Moved };
                        prop_assert_eq!(change, want);
                        model.slots[s].base_gfn = to;
                    }
                    Err(e) => prop_assert!(false, "move {} to {:#x}: {:?}", key, to, e),
                }
            }
            Op::ToggleLog { slot } => {
                let n = model.slots.len();
                let slot = &mut model.slots[slot % n];
                slot.dirty = match slot.dirty {
                    Some(_) => None,
                    None => Some(BTreeSet::new()),
                };
                prop_assert_eq!(w.set_flags(slot.key, slot.flags()), Ok(Change::FlagsChanged));
            }
            Op::Harvest { slot } => {
                let n = model.slots.len();
                let slot = &mut model.slots[slot % n];
                let want = slot.bitmap().ok_or(Error::DirtyLogDisabled { key: slot.key });
                prop_assert_eq!(w.get_dirty_log(slot.key), want);
                if let Some(dirty) = &mut slot.dirty {
                    dirty.clear();
                }
            }
            Op::Peek { slot } => {
                let slot = &model.slots[slot % model.slots.len()];
                let want = slot.bitmap().ok_or(Error::DirtyLogDisabled { key: slot.key });
                prop_assert_eq!(w.peek_dirty_log(slot.key), want);
            }
        }
    }

    // The end state: every slot's memory, through the map and through the
    // host pointer, and every dirty log.
    for slot in &model.slots {
        let reader = &readers[if slot.key.as_id == 1 { 2 } else { 0 }];
        if let Some(ram) = &slot.ram {
            prop_assert!(host_bytes(ram) == slot.data, "host memory of {} differs from the model", slot.key);
            let mut got = vec![0; slot.data.len()];
            prop_assert_eq!(reader.pin().read(slot.base_gfn * PAGE, &mut got), Ok(()));
            prop_assert!(got == slot.data, "slot {} differs from the model", slot.key);
        }
        let want = slot.bitmap().ok_or(Error::DirtyLogDisabled { key: slot.key });
        prop_assert_eq!(w.peek_dirty_log(slot.key), want);
    }

    // Owned RAM is freed with the map; raw RAM is the test's alone.
    let owned: Vec<Weak<GuestRam>> =
        model.slots.iter().filter(|s| s.kind == Kind::Owned).map(|s| Arc::downgrade(s.ram.as_ref().unwrap())).collect();
    for slot in &mut model.slots {
        if slot.kind == Kind::Owned {
            slot.ram = None;
        }
    }
    prop_assert!(owned.iter().all(|weak| weak.strong_count() == 1), "owned RAM not held by its slot alone");
    drop((readers, w, slots));
    prop_assert!(owned.iter().all(|weak| weak.strong_count() == 0), "owned RAM outlived the map");
    for slot in &model.slots {
        if let Some(ram) = &slot.ram {
            prop_assert_eq!(Arc::strong_count(ram), 1, "the map kept raw RAM");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    /// Random layouts, accesses, moves and flag changes against the model.
    #[test]
    fn accessors_match_flat_model(
        layout in layout(),
        caches in prop::collection::vec(cache_spec(), 1..4),
        ops in prop::collection::vec(op(), 1..if cfg!(miri) { 24 } else { 80 }),
    ) {
        run_model(layout, caches, ops)?;
    }
}

/// A few fixed layouts the random ones might miss, through the same model.
#[test]
fn model_fixed_layouts() {
    let owned = |gap, npages, readonly, log| Spec { gap, npages, kind: Kind::Owned, readonly, log, seed: 7 };
    // Adjacent writable, READONLY, address-only slots; SMRAM over the first.
    let layout = Layout {
        slots: vec![
            owned(0, 2, false, true),
            owned(0, 2, true, true),
            Spec { kind: Kind::AddressOnly, ..owned(0, 1, false, false) },
            Spec { kind: Kind::Raw, ..owned(1, 2, false, true) },
        ],
        smram: Some((FIRST_GFN, 2, true, 9)),
    };
    let base = FIRST_GFN * PAGE;
    let ops = vec![
        // Across writable -> READONLY: stops at the first READONLY byte.
        Op::Write { who: 0, gpa: base + 2 * PAGE - 5, len: 16, seed: 1 },
        // Across READONLY -> address-only on a read.
        Op::Read { who: 0, gpa: base + 4 * PAGE - 3, len: 8 },
        // Across address-only -> hole -> raw.
        Op::Read { who: 1, gpa: base + 5 * PAGE + 4090, len: 16 },
        // The same gpa in SMM.
        Op::Write { who: 2, gpa: base + 2, len: 40, seed: 2 },
        Op::Read { who: 0, gpa: base, len: 64 },
        Op::Read { who: 3, gpa: base, len: 64 },
        Op::CachedWrite { who: 0, cache: 0, offset: Offset::Start(0), len: 8, seed: 3 },
        Op::CachedRead { who: 2, cache: 0, offset: Offset::Start(0), len: 8 },
        Op::Move { slot: 0, to: 0x40 },
        Op::CachedRead { who: 0, cache: 0, offset: Offset::End(2), len: 8 },
        Op::Read { who: 0, gpa: 0x40 * PAGE, len: 64 },
        Op::Harvest { slot: 0 },
        Op::ToggleLog { slot: 3 },
        Op::Write { who: 0, gpa: (FIRST_GFN + 6) * PAGE, len: 8, seed: 4 },
        Op::Harvest { slot: 3 },
        Op::ToggleLog { slot: 3 },
        Op::Harvest { slot: 3 },
        Op::ReadObj { who: 0, gpa: u64::MAX - 3, size: 8 },
        Op::WriteObj { who: 0, gpa: 0x40 * PAGE + 3, size: 8, value: u64::MAX },
        Op::MarkPage { who: 2, gfn: FIRST_GFN + 1 },
        Op::Peek { slot: 4 },
    ];
    run_model(layout, vec![(base, 8)], ops).unwrap();
}

// ---------------------------------------------------------------------------
// Bad input.

/// One map with an owned slot of `npages` at `base_gfn` (flags as given) in
/// address space 0.
fn one_owned(npages: u64, base_gfn: u64, flags: Flags, seed: u8) -> (Memslots, Writer, Arc<GuestRam>) {
    let slots = Memslots::new(two_spaces()).unwrap();
    let mut w = slots.writer().unwrap();
    let ram = ram_with(npages, seed);
    w.create_owned(key(0, 0), base_gfn, flags, ram.clone()).unwrap();
    (slots, w, ram)
}

#[test]
fn zero_length_accesses_are_empty() {
    let (slots, _w, _ram) = one_owned(2, 0x10, Flags::empty(), 1);
    let reader = slots.reader();
    let view = reader.pin();
    for gpa in [0, 0x10 * PAGE, 0x10 * PAGE + 5, u64::MAX] {
        assert_eq!(view.read(gpa, &mut []), Err(err(gpa, 0, AccessFailure::Empty)));
        assert_eq!(view.write(gpa, &[]), Err(err(gpa, 0, AccessFailure::Empty)));
        assert_eq!(view.range(gpa, 0).map(|_| ()), Err(err(gpa, 0, AccessFailure::Empty)));
    }
    assert_eq!(view.read_obj::<()>(0x10 * PAGE), Err(err(0x10 * PAGE, 0, AccessFailure::Empty)));
    let mut cache = GpaCache::new(0x10 * PAGE, 16).unwrap();
    assert_eq!(view.read_cached(&mut cache, 3, &mut []), Err(err(0x10 * PAGE + 3, 0, AccessFailure::Empty)));
    assert_eq!(view.write_cached(&mut cache, 3, &[]), Err(err(0x10 * PAGE + 3, 0, AccessFailure::Empty)));
    let range = view.range(0x10 * PAGE, 16).unwrap();
    assert_eq!(range.read(0, &mut []), Err(err(0, 0, AccessFailure::Empty)));
    assert_eq!(range.write(16, &[]), Err(err(16, 0, AccessFailure::Empty)));
}

#[test]
fn accesses_near_the_top_of_the_address_space() {
    // The highest slot possible: it ends at gfn GFN_LIMIT - 1 (a slot may
    // not reach GFN_LIMIT), so the last page is never mapped.
    let top = GFN_LIMIT - 2;
    let (slots, _w, _ram) = one_owned(1, top, Flags::empty(), 2);
    let reader = slots.reader();
    let view = reader.pin();
    let mut buf = [0u8; 8];
    for k in 0..8 {
        let gpa = u64::MAX - k;
        assert_eq!(view.read(gpa, &mut buf), Err(err(gpa, 0, AccessFailure::NotMapped)));
        assert_eq!(view.write(gpa, &buf), Err(err(gpa, 0, AccessFailure::NotMapped)));
        assert_eq!(view.read_obj::<u64>(gpa), Err(err(gpa, 0, AccessFailure::NotMapped)));
        assert!(view.range(gpa, 8).is_err());
    }
    let end = (top + 1) * PAGE;
    // Four bytes in the slot, then the unmappable page.
    assert_eq!(view.write(end - 4, &[0xab; 8]), Err(err(end, 4, AccessFailure::NotMapped)));
    assert_eq!(view.read(end - 4, &mut buf), Err(err(end, 4, AccessFailure::NotMapped)));
    assert_eq!(buf[..4], [0xab; 4]);
    assert_eq!(view.read_obj::<u32>(end - 4), Ok(u32::from_ne_bytes([0xab; 4])));
    // A buffer as long as the address space allows.
    let mut big = vec![0u8; 3 * PAGE as usize];
    assert_eq!(view.read(end - PAGE, &mut big), Err(err(end, PAGE as usize, AccessFailure::NotMapped)));
}

#[test]
fn buffer_longer_than_the_slot_stops_at_the_hole() {
    let (slots, _w, ram) = one_owned(2, 0x10, Flags::LOG_DIRTY_PAGES, 3);
    let reader = slots.reader();
    let view = reader.pin();
    let (start, end) = (0x10 * PAGE, 0x12 * PAGE);
    let mut buf = vec![0u8; 3 * PAGE as usize];
    assert_eq!(view.read(start, &mut buf), Err(err(end, 2 * PAGE as usize, AccessFailure::NotMapped)));
    assert!(buf[..2 * PAGE as usize] == host_bytes(&ram)[..], "the slot's bytes before the hole");
    let data = bytes(9, 3 * PAGE as usize);
    assert_eq!(view.write(start + 100, &data), Err(err(end, 2 * PAGE as usize - 100, AccessFailure::NotMapped)));
    assert!(host_bytes(&ram)[100..] == data[..2 * PAGE as usize - 100]);
    // Starting in the hole: nothing done.
    assert_eq!(view.read(end, &mut buf), Err(err(end, 0, AccessFailure::NotMapped)));
    assert_eq!(view.read(start - 1, &mut buf), Err(err(start - 1, 0, AccessFailure::NotMapped)));
}

#[test]
fn guest_ram_rejects_bad_sizes() {
    for len in [0usize, 1, 100, 4095, 4097, 8191, 3 * 4096 + 1] {
        assert_eq!(GuestRam::new(len).map(|_| ()), Err(Error::UnalignedSize { size: len as u64 }), "len {len}");
    }
    let ram = GuestRam::new(2 * PAGE as usize).unwrap();
    assert_eq!(ram.len(), 2 * PAGE as usize);
    assert!(!ram.is_empty());
    assert_eq!(ram.as_ptr() as usize % (2 << 20), 0, "guest RAM is 2 MiB aligned");
    assert!(host_bytes(&ram).iter().all(|&b| b == 0), "guest RAM starts zeroed");
}

#[test]
fn gpa_cache_rejects_bad_ranges() {
    assert_eq!(GpaCache::new(0x1000, 0).map(|_| ()), Err(err(0x1000, 0, AccessFailure::Empty)));
    for (gpa, len) in [(u64::MAX - 3, 8), (u64::MAX, 2), (u64::MAX - 100, usize::MAX), (1 << 63, usize::MAX)] {
        assert_eq!(GpaCache::new(gpa, len).map(|_| ()), Err(err(gpa, 0, AccessFailure::PastEnd)), "{gpa:#x}+{len}");
    }
    let cache = GpaCache::new(0x1234, 100).unwrap();
    assert_eq!((cache.gpa(), cache.len(), cache.is_empty()), (0x1234, 100, false));

    // Requests outside the cached range.
    let (slots, _w, _ram) = one_owned(1, 0, Flags::empty(), 4);
    let reader = slots.reader();
    let view = reader.pin();
    let mut cache = GpaCache::new(0x10, 16).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(view.read_cached(&mut cache, 9, &mut buf), Err(err(0x19, 0, AccessFailure::PastEnd)));
    assert_eq!(view.write_cached(&mut cache, 16, &buf[..1]), Err(err(0x20, 0, AccessFailure::PastEnd)));
    assert_eq!(view.read_cached(&mut cache, usize::MAX, &mut buf), Err(err(0x0f, 0, AccessFailure::PastEnd)));
    assert_eq!(view.read_cached(&mut cache, 8, &mut buf), Ok(()));
    assert_eq!(view.write_cached(&mut cache, 8, &buf), Ok(()));
}

/// `GpaCache::new` documents `PastEnd` "for a range past the top of the
/// guest address space", but it also refuses ranges that end exactly at the
/// top (`gpa + len == 2^64`): `checked_add` overflows on the end address
/// rather than on the last byte's. `View::read` at the same range reports
/// `NotMapped` at `gpa` (the top page can never be mapped), so the two
/// disagree about whether the range is in the address space.
#[test]
fn gpa_cache_accepts_a_range_ending_at_the_top() {
    for (gpa, len) in [(u64::MAX, 1), (u64::MAX - 7, 8), (u64::MAX - 4095, 4096)] {
        let cache = GpaCache::new(gpa, len);
        assert!(cache.is_ok(), "GpaCache::new({gpa:#x}, {len}) = {cache:?}: the range ends at 2^64, inside the space");
    }
}

#[test]
fn guest_range_bad_input() {
    let slots = Memslots::new(two_spaces()).unwrap();
    let mut w = slots.writer().unwrap();
    let rw = ram_with(2, 5);
    let ro = ram_with(1, 6);
    let raw = ram_with(1, 7);
    w.create_owned(key(0, 0), 0x10, Flags::empty(), rw.clone()).unwrap();
    w.create_owned(key(1, 0), 0x12, Flags::READONLY, ro.clone()).unwrap();
    w.create(Region { id: 2, as_id: 0, base_gfn: 0x20, npages: 1, hva: 0x7f00_0000_0000, flags: Flags::empty() })
        .unwrap();
    let region = Region { id: 3, as_id: 0, base_gfn: 0x30, npages: 1, hva: raw.as_ptr() as u64, flags: Flags::empty() };
    // SAFETY: `raw` outlives the map (dropped after it at the end of the
    // test) and is only reached through raw pointers.
    unsafe { w.create_raw(region) }.unwrap();
    let reader = slots.reader();
    let view = reader.pin();

    // Ranges that cannot be taken.
    assert_eq!(view.range(0x10 * PAGE, 0).map(|_| ()), Err(err(0x10 * PAGE, 0, AccessFailure::Empty)));
    assert_eq!(view.range(0x14 * PAGE, 8).map(|_| ()), Err(err(0x14 * PAGE, 0, AccessFailure::NotMapped)));
    // Leaves its slot (into the READONLY neighbour): PastEnd, with what
    // the slot holds.
    assert_eq!(view.range(0x12 * PAGE - 8, 16).map(|_| ()), Err(err(0x12 * PAGE - 8, 8, AccessFailure::PastEnd)));
    assert_eq!(
        view.range(0x10 * PAGE, 3 * PAGE as usize).map(|_| ()),
        Err(err(0x10 * PAGE, 2 * PAGE as usize, AccessFailure::PastEnd))
    );
    assert_eq!(view.range(0x20 * PAGE, 8).map(|_| ()), Err(err(0x20 * PAGE, 0, AccessFailure::NoHostMemory)));
    assert_eq!(view.range(0x30 * PAGE, 8).map(|_| ()), Err(err(0x30 * PAGE, 0, AccessFailure::NoHostMemory)));
    assert_eq!(view.range(u64::MAX - 3, 8).map(|_| ()), Err(err(u64::MAX - 3, 0, AccessFailure::NotMapped)));

    // Accesses past the end of a range.
    let range = view.range(0x10 * PAGE + 8, 32).unwrap();
    assert_eq!((range.len(), range.is_empty(), range.is_writable()), (32, false, true));
    assert_eq!(range.as_ptr(), rw.as_ptr().wrapping_add(8));
    let mut buf = [0u8; 8];
    assert_eq!(range.read(25, &mut buf), Err(err(25, 0, AccessFailure::PastEnd)));
    assert_eq!(range.write(32, &buf[..1]), Err(err(32, 0, AccessFailure::PastEnd)));
    assert_eq!(range.read(usize::MAX, &mut buf), Err(err(usize::MAX as u64, 0, AccessFailure::PastEnd)));
    assert_eq!(range.read(24, &mut buf), Ok(()));
    assert_eq!(buf, host_bytes(&rw)[32..40]);
    assert_eq!(range.write(24, &[1; 8]), Ok(()));
    assert_eq!(host_bytes(&rw)[32..40], [1; 8]);

    // A range of a READONLY slot reads but refuses writes.
    let range = view.range(0x12 * PAGE, PAGE as usize).unwrap();
    assert!(!range.is_writable());
    assert_eq!(range.write(0, &[0xff; 4]), Err(err(0, 0, AccessFailure::ReadOnly)));
    assert_eq!(range.read(0, &mut buf), Ok(()));
    assert_eq!(buf, host_bytes(&ro)[..8]);
    assert_eq!(host_bytes(&ro), host_bytes(&ram_with(1, 6)), "a READONLY slot was written");
    drop(view);
    drop((range, reader, w, slots));
}

#[test]
fn address_only_slots_have_no_host_memory() {
    let slots = Memslots::new(one_space()).unwrap();
    let mut w = slots.writer().unwrap();
    let hva = 0x7f00_0000_0000;
    w.create(Region { id: 0, as_id: 0, base_gfn: 0x10, npages: 2, hva, flags: Flags::LOG_DIRTY_PAGES }).unwrap();
    let reader = slots.reader();
    let view = reader.pin();
    let gpa = 0x10 * PAGE + 8;
    let slot = view.gfn_to_slot(0x10).unwrap();
    assert!(!slot.has_host_memory());
    assert_eq!(view.gfn_to_hva(0x11), Some(hva + PAGE), "it still translates");
    let mut buf = [0u8; 4];
    assert_eq!(view.read(gpa, &mut buf), Err(err(gpa, 0, AccessFailure::NoHostMemory)));
    assert_eq!(view.write(gpa, &buf), Err(err(gpa, 0, AccessFailure::NoHostMemory)));
    assert_eq!(view.read_obj::<u64>(gpa), Err(err(gpa, 0, AccessFailure::NoHostMemory)));
    assert_eq!(view.write_obj(gpa, 1u16), Err(err(gpa, 0, AccessFailure::NoHostMemory)));
    assert_eq!(view.range(gpa, 4).map(|_| ()), Err(err(gpa, 0, AccessFailure::NoHostMemory)));
    let mut cache = GpaCache::new(gpa, 4).unwrap();
    assert_eq!(view.read_cached(&mut cache, 0, &mut buf), Err(err(gpa, 0, AccessFailure::NoHostMemory)));
    assert_eq!(view.write_cached(&mut cache, 0, &buf), Err(err(gpa, 0, AccessFailure::NoHostMemory)));
    // Its dirty log still takes marks.
    assert!(view.mark_page_dirty(0x11));
    drop(view);
    assert_eq!(w.get_dirty_log(key(0, 0)), Ok(vec![0b10]));
}

#[test]
fn write_to_readonly_stops_at_its_first_byte() {
    let slots = Memslots::new(one_space()).unwrap();
    let mut w = slots.writer().unwrap();
    let (a, b) = (ram_with(1, 1), ram_with(1, 2));
    w.create_owned(key(0, 0), 0x10, Flags::LOG_DIRTY_PAGES, a.clone()).unwrap();
    w.create_owned(key(1, 0), 0x11, Flags::READONLY | Flags::LOG_DIRTY_PAGES, b.clone()).unwrap();
    let (before_a, before_b) = (host_bytes(&a), host_bytes(&b));
    let reader = slots.reader();
    let boundary = 0x11 * PAGE;
    let data = bytes(3, 32);
    assert_eq!(reader.pin().write(boundary - 10, &data), Err(err(boundary, 10, AccessFailure::ReadOnly)));
    assert_eq!(host_bytes(&a)[..PAGE as usize - 10], before_a[..PAGE as usize - 10]);
    assert_eq!(host_bytes(&a)[PAGE as usize - 10..], data[..10], "the bytes before it are written");
    assert_eq!(host_bytes(&b), before_b);
    assert_eq!(reader.pin().write_obj(boundary, 5u8), Err(err(boundary, 0, AccessFailure::ReadOnly)));
    let mut cache = GpaCache::new(boundary + 8, 8).unwrap();
    assert_eq!(reader.pin().write_cached(&mut cache, 0, &[1; 8]), Err(err(boundary + 8, 0, AccessFailure::ReadOnly)));
    assert_eq!(reader.pin().read_obj::<u64>(boundary + 8), Ok(u64::from_ne_bytes(before_b[8..16].try_into().unwrap())));
    assert_eq!(host_bytes(&b), before_b);
    assert_eq!(w.get_dirty_log(key(0, 0)), Ok(vec![1]));
    assert_eq!(w.get_dirty_log(key(1, 0)), Ok(vec![0]), "a refused write marks nothing");
}

#[test]
fn smram_is_seen_only_in_smm() {
    let slots = Memslots::new(two_spaces()).unwrap();
    let mut w = slots.writer().unwrap();
    let (low, smram) = (ram_with(1, 1), ram_with(1, 2));
    // Normal RAM at gfn 0x10 in both spaces' view of that gpa; SMRAM at 0x20
    // only in address space 1, and over 0x10 there as well.
    w.create_owned(key(0, 0), 0x10, Flags::empty(), low.clone()).unwrap();
    w.create_owned(key(0, 1), 0x20, Flags::LOG_DIRTY_PAGES, smram.clone()).unwrap();
    let normal = slots.reader();
    let mut smm = slots.reader();
    smm.set_smm(true).unwrap();
    let device = slots.device_reader();
    let gpa = 0x20 * PAGE + 16;
    for reader in [&normal, &device] {
        assert_eq!(reader.pin().read_obj::<u64>(gpa), Err(err(gpa, 0, AccessFailure::NotMapped)));
        assert_eq!(reader.pin().write_obj(gpa, 1u64), Err(err(gpa, 0, AccessFailure::NotMapped)));
        assert!(!reader.pin().mark_page_dirty(0x20));
    }
    let want = u64::from_ne_bytes(host_bytes(&smram)[16..24].try_into().unwrap());
    assert_eq!(smm.pin().read_obj::<u64>(gpa), Ok(want));
    assert_eq!(smm.pin().write_obj(gpa, 0x5555u64), Ok(()));
    assert_eq!(smm.pin().read_obj::<u64>(gpa), Ok(0x5555));
    // Normal RAM is not in address space 1.
    assert_eq!(smm.pin().read_obj::<u8>(0x10 * PAGE), Err(err(0x10 * PAGE, 0, AccessFailure::NotMapped)));
    // A cache follows the reader's address space.
    let mut cache = GpaCache::new(gpa, 8).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(smm.pin().read_cached(&mut cache, 0, &mut buf), Ok(()));
    assert_eq!(u64::from_ne_bytes(buf), 0x5555);
    assert_eq!(normal.pin().read_cached(&mut cache, 0, &mut buf), Err(err(gpa, 0, AccessFailure::NotMapped)));
    // Leaving SMM.
    smm.set_smm(false).unwrap();
    assert_eq!(smm.pin().read_obj::<u64>(gpa), Err(err(gpa, 0, AccessFailure::NotMapped)));
    assert_eq!(w.get_dirty_log(key(0, 1)), Ok(vec![1]));
}

#[test]
fn data_stays_with_the_slot_across_moves_and_flag_changes() {
    let slots = Memslots::new(one_space()).unwrap();
    let mut w = slots.writer().unwrap();
    let ram = ram_with(3, 1);
    let weak = Arc::downgrade(&ram);
    w.create_owned(key(0, 0), 0x10, Flags::empty(), ram).unwrap();
    let reader = slots.reader();
    let data = bytes(7, 3 * PAGE as usize);
    reader.pin().write(0x10 * PAGE, &data).unwrap();
    assert_eq!(w.move_to(key(0, 0), 0x40), Ok(Change::Moved));
    let mut got = vec![0; data.len()];
    assert_eq!(reader.pin().read(0x40 * PAGE, &mut got), Ok(()));
    assert!(got == data, "the data moved with the slot");
    assert_eq!(reader.pin().read(0x10 * PAGE, &mut got), Err(err(0x10 * PAGE, 0, AccessFailure::NotMapped)));
    assert_eq!(w.set_flags(key(0, 0), Flags::LOG_DIRTY_PAGES), Ok(Change::FlagsChanged));
    assert_eq!(reader.pin().read(0x40 * PAGE, &mut got), Ok(()));
    assert!(got == data, "the data stayed across a flags change");
    // An overlapping move fails and changes nothing.
    w.create_owned(key(1, 0), 0x50, Flags::empty(), ram_with(1, 2)).unwrap();
    assert_eq!(w.move_to(key(0, 0), 0x4e), Err(Error::Overlap { key: key(0, 0), with: key(1, 0) }));
    assert_eq!(reader.pin().read(0x40 * PAGE, &mut got), Ok(()));
    assert!(got == data);
    assert_eq!(w.move_to(key(0, 0), 0x0), Ok(Change::Moved));
    assert_eq!(reader.pin().read(0, &mut got), Ok(()));
    assert!(got == data);
    assert_eq!(weak.strong_count(), 1, "one reference: the slot's");
    assert_eq!(w.delete(key(0, 0)), Ok(Change::Deleted));
    assert_eq!(weak.strong_count(), 0, "the RAM is freed once the delete returns");
}

// ---------------------------------------------------------------------------
// GuestRange lifetime.

#[test]
fn guest_range_outlives_view_and_slot() {
    let slots = Memslots::new(one_space()).unwrap();
    let mut w = slots.writer().unwrap();
    let ram = ram_with(4, 3);
    let weak = Arc::downgrade(&ram);
    w.create_owned(key(0, 0), 0x10, Flags::LOG_DIRTY_PAGES, ram).unwrap();
    let reader = slots.reader();
    let range = {
        let view = reader.pin();
        view.range(0x11 * PAGE + 100, 2 * PAGE as usize).unwrap()
    };
    assert_eq!(weak.strong_count(), 2, "the slot's reference and the handle's");

    // Writes through the handle mark the slot's log (pages 1 and 2 of the
    // slot, the pages the write touched).
    range.write(PAGE as usize - 100 - 4, &[9; 8]).unwrap();
    assert_eq!(w.get_dirty_log(key(0, 0)), Ok(vec![0b110]));
    // ... still after the slot moved: the log is carried, bits by page
    // offset in the slot.
    w.move_to(key(0, 0), 0x30).unwrap();
    range.write(0, &[1]).unwrap();
    assert_eq!(w.get_dirty_log(key(0, 0)), Ok(vec![0b10]));
    assert_eq!(reader.pin().read_obj::<u8>(0x31 * PAGE + 100), Ok(1), "the handle writes the slot's memory");
    range.mark_dirty();
    assert_eq!(w.get_dirty_log(key(0, 0)), Ok(vec![0b1110]));

    // Delete the slot: the handle alone keeps the memory.
    assert_eq!(w.delete(key(0, 0)), Ok(Change::Deleted));
    assert_eq!(
        reader.pin().read_obj::<u8>(0x31 * PAGE + 100),
        Err(err(0x31 * PAGE + 100, 0, AccessFailure::NotMapped))
    );
    assert_eq!(weak.strong_count(), 1, "only the handle holds the RAM");
    let data = bytes(4, range.len());
    range.write(0, &data).unwrap();
    let mut got = vec![0; range.len()];
    range.read(0, &mut got).unwrap();
    assert!(got == data, "the handle sees its own data after the delete");
    // SAFETY: the range is mapped while the handle lives and at least one
    // byte long; nothing writes it concurrently.
    assert_eq!(unsafe { range.as_ptr().read_volatile() }, data[0]);
    drop(range);
    assert_eq!(weak.strong_count(), 0, "the RAM is freed when the handle drops");
}

#[test]
fn guest_range_of_a_slot_without_log_marks_nothing() {
    let (slots, mut w, ram) = one_owned(1, 0x10, Flags::empty(), 1);
    let reader = slots.reader();
    let range = reader.pin().range(0x10 * PAGE, 8).unwrap();
    range.write(0, &[7; 8]).unwrap();
    range.mark_dirty();
    assert_eq!(host_bytes(&ram)[..8], [7; 8]);
    assert_eq!(w.get_dirty_log(key(0, 0)), Err(Error::DirtyLogDisabled { key: key(0, 0) }));
    // The log started later is not the handle's (it marks the log the slot
    // had when it was taken: none).
    w.set_flags(key(0, 0), Flags::LOG_DIRTY_PAGES).unwrap();
    range.write(0, &[8; 8]).unwrap();
    assert_eq!(w.get_dirty_log(key(0, 0)), Ok(vec![0]));
}

// ---------------------------------------------------------------------------
// GpaCache.

/// The cache's resolved state, from its `Debug` form (white-box: the fields
/// are private): the generation it was resolved in and whether it took the
/// fast path.
fn cache_state(cache: &GpaCache) -> (Option<u64>, bool) {
    let text = format!("{cache:?}");
    let generation = text.split("valid_in: Some((").nth(1).and_then(|rest| {
        let inside = rest.split("))").next()?;
        inside.split(", ").nth(1)?.trim().parse().ok()
    });
    (generation, text.contains("fast: Some("))
}

#[test]
fn gpa_cache_hits_after_resolution() {
    let (slots, mut w, ram) = one_owned(2, 0x10, Flags::LOG_DIRTY_PAGES, 5);
    let reader = slots.reader();
    let gpa = 0x10 * PAGE + 0x800;
    let mut cache = GpaCache::new(gpa, 0x1000).unwrap();
    assert_eq!(cache_state(&cache), (None, false), "nothing resolved yet");
    let view = reader.pin();
    let generation = view.generation();
    let mut buf = [0u8; 8];
    view.read_cached(&mut cache, 0x7fc, &mut buf).unwrap();
    assert_eq!(buf[..], host_bytes(&ram)[0xffc..0x1004]);
    assert_eq!(cache_state(&cache), (Some(generation), true), "resolved in this generation, in one slot");
    view.write_cached(&mut cache, 0x7fc, &[3; 8]).unwrap();
    assert_eq!(host_bytes(&ram)[0xffc..0x1004], [3; 8]);
    drop(view);
    // Another view of the same generation: still the same translation.
    let view = reader.pin();
    assert_eq!(view.generation(), generation);
    view.read_cached(&mut cache, 0, &mut buf).unwrap();
    assert_eq!(cache_state(&cache), (Some(generation), true));
    drop(view);
    assert_eq!(w.get_dirty_log(key(0, 0)), Ok(vec![0b11]), "the cached write marked both pages");
}

#[test]
fn gpa_cache_resolves_again_after_a_move() {
    let slots = Memslots::new(one_space()).unwrap();
    let mut w = slots.writer().unwrap();
    let (a, b) = (ram_with(1, 1), ram_with(1, 2));
    w.create_owned(key(0, 0), 0x10, Flags::empty(), a.clone()).unwrap();
    let reader = slots.reader();
    let gpa = 0x10 * PAGE + 64;
    let mut cache = GpaCache::new(gpa, 8).unwrap();
    let mut buf = [0u8; 8];
    reader.pin().read_cached(&mut cache, 0, &mut buf).unwrap();
    assert_eq!(buf[..], host_bytes(&a)[64..72]);
    let first = cache_state(&cache).0;

    // Slot A leaves: the cached range is a hole.
    w.move_to(key(0, 0), 0x20).unwrap();
    assert_eq!(reader.pin().read_cached(&mut cache, 0, &mut buf), Err(err(gpa, 0, AccessFailure::NotMapped)));
    assert_eq!(reader.pin().write_cached(&mut cache, 0, &buf), Err(err(gpa, 0, AccessFailure::NotMapped)));
    assert_ne!(cache_state(&cache).0, first, "resolved again");
    // Slot B comes to the cached place: the cache reads B, not A.
    w.create_owned(key(1, 0), 0x10, Flags::empty(), b.clone()).unwrap();
    reader.pin().read_cached(&mut cache, 0, &mut buf).unwrap();
    assert_eq!(buf[..], host_bytes(&b)[64..72]);
    reader.pin().write_cached(&mut cache, 0, &[0xcc; 8]).unwrap();
    assert_eq!(host_bytes(&b)[64..72], [0xcc; 8]);
    assert_eq!(host_bytes(&a)[64..72], host_bytes(&ram_with(1, 1))[64..72], "A untouched");
    // A moved back over B's old place after B moves away.
    w.move_to(key(1, 0), 0x30).unwrap();
    w.move_to(key(0, 0), 0x10).unwrap();
    reader.pin().read_cached(&mut cache, 0, &mut buf).unwrap();
    assert_eq!(buf[..], host_bytes(&a)[64..72]);
    // A device reader (the set's shared cache) agrees.
    let device = slots.device_reader();
    let mut buf2 = [0u8; 8];
    device.pin().read_cached(&mut cache, 0, &mut buf2).unwrap();
    assert_eq!(buf, buf2);
}

#[test]
fn gpa_cache_crossing_two_slots_takes_the_slow_path() {
    let slots = Memslots::new(one_space()).unwrap();
    let mut w = slots.writer().unwrap();
    let (a, b) = (ram_with(1, 1), ram_with(1, 2));
    w.create_owned(key(0, 0), 0x10, Flags::LOG_DIRTY_PAGES, a.clone()).unwrap();
    w.create_owned(key(1, 0), 0x11, Flags::LOG_DIRTY_PAGES, b.clone()).unwrap();
    let reader = slots.reader();
    let gpa = 0x11 * PAGE - 6;
    let mut cache = GpaCache::new(gpa, 12).unwrap();
    let mut buf = [0u8; 12];
    reader.pin().read_cached(&mut cache, 0, &mut buf).unwrap();
    assert_eq!(buf[..6], host_bytes(&a)[PAGE as usize - 6..]);
    assert_eq!(buf[6..], host_bytes(&b)[..6]);
    let (generation, fast) = cache_state(&cache);
    assert!(generation.is_some() && !fast, "resolved, but not to one slot");
    reader.pin().write_cached(&mut cache, 2, &[0xaa; 8]).unwrap();
    assert_eq!(host_bytes(&a)[PAGE as usize - 4..], [0xaa; 4]);
    assert_eq!(host_bytes(&b)[..4], [0xaa; 4]);
    // A piece inside one slot, still through the slow path.
    reader.pin().read_cached(&mut cache, 6, &mut buf[..4]).unwrap();
    assert_eq!(buf[..4], [0xaa; 4]);
    assert_eq!(w.get_dirty_log(key(0, 0)), Ok(vec![1]));
    assert_eq!(w.get_dirty_log(key(1, 0)), Ok(vec![1]));
    // One slot deleted: the cached range now runs into a hole.
    w.delete(key(1, 0)).unwrap();
    assert_eq!(reader.pin().read_cached(&mut cache, 0, &mut buf), Err(err(0x11 * PAGE, 6, AccessFailure::NotMapped)));
}

#[test]
fn gpa_cache_is_not_used_with_another_map() {
    let (one, _w1, ram1) = one_owned(1, 0x10, Flags::empty(), 1);
    let (two, _w2, ram2) = one_owned(1, 0x10, Flags::empty(), 2);
    let (r1, r2) = (one.reader(), two.reader());
    let mut cache = GpaCache::new(0x10 * PAGE, 8).unwrap();
    let mut buf = [0u8; 8];
    r1.pin().read_cached(&mut cache, 0, &mut buf).unwrap();
    assert_eq!(buf[..], host_bytes(&ram1)[..8]);
    // Both maps may be in the same generation: the map id tells them apart.
    r2.pin().read_cached(&mut cache, 0, &mut buf).unwrap();
    assert_eq!(buf[..], host_bytes(&ram2)[..8]);
    r2.pin().write_cached(&mut cache, 0, &[4; 8]).unwrap();
    assert_eq!(host_bytes(&ram2)[..8], [4; 8]);
    assert_ne!(host_bytes(&ram1)[..8], [4; 8]);
}

// ---------------------------------------------------------------------------
// Owned RAM and failed or cancelled changes.

#[test]
#[cfg_attr(miri, ignore = "miri has no mmap; its allocator aborts on huge layouts")]
fn guest_ram_too_large_fails_cleanly() {
    for len in [usize::MAX & !4095, 1 << 60] {
        assert!(matches!(GuestRam::new(len), Err(Error::MapFailed { .. })), "len {len:#x}");
    }
}

#[test]
fn refused_create_owned_drops_its_ram() {
    let (_slots, mut w, _ram) = one_owned(2, 0x10, Flags::empty(), 1);
    let ram = ram_with(1, 2);
    let weak = Arc::downgrade(&ram);
    let overlap = w.create_owned(key(1, 0), 0x11, Flags::empty(), ram);
    assert_eq!(overlap, Err(Error::Overlap { key: key(1, 0), with: key(0, 0) }));
    assert_eq!(weak.strong_count(), 0, "a refused create keeps no reference");
    let ram = ram_with(1, 3);
    let weak = Arc::downgrade(&ram);
    assert_eq!(w.create_owned(key(0, 0), 0x40, Flags::empty(), ram), Err(Error::SlotExists { key: key(0, 0) }));
    assert_eq!(weak.strong_count(), 0);
    let ram = ram_with(1, 4);
    let weak = Arc::downgrade(&ram);
    let bad = Flags::from_bits_retain(1 << 5);
    assert_eq!(w.create_owned(key(2, 0), 0x40, bad, ram), Err(Error::UnknownFlags { bits: 1 << 5 }));
    assert_eq!(weak.strong_count(), 0);
}

#[test]
fn batch_create_owned_then_delete_frees_the_ram() {
    let (slots, mut w, _ram) = one_owned(1, 0x10, Flags::empty(), 1);
    let ram = ram_with(1, 2);
    let weak = Arc::downgrade(&ram);
    let mut batch = w.batch();
    batch.create_owned(key(1, 0), 0x20, Flags::empty(), ram).delete(key(1, 0));
    assert_eq!(batch.commit().map_err(|e| e.error), Ok(vec![Change::Created, Change::Deleted]));
    assert_eq!(weak.strong_count(), 0, "a slot created and deleted in one batch keeps nothing");
    assert_eq!(slots.reader().pin().read_obj::<u8>(0x20 * PAGE), Err(err(0x20 * PAGE, 0, AccessFailure::NotMapped)));
    // Replacing an owned slot by an address-only one with the same region
    // in one batch: the new slot has no host memory, the old RAM is freed.
    let ram = ram_with(1, 3);
    let weak = Arc::downgrade(&ram);
    let hva = ram.as_ptr() as u64;
    w.create_owned(key(1, 0), 0x20, Flags::empty(), ram).unwrap();
    let mut batch = w.batch();
    batch.delete(key(1, 0)).create(Region { id: 1, as_id: 0, base_gfn: 0x20, npages: 1, hva, flags: Flags::empty() });
    batch.commit().unwrap();
    assert_eq!(weak.strong_count(), 0);
    let gpa = 0x20 * PAGE;
    assert_eq!(slots.reader().pin().read_obj::<u8>(gpa), Err(err(gpa, 0, AccessFailure::NoHostMemory)));
}
