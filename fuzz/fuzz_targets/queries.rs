//! (b) Queries on random layouts: up to 200 slots in two address spaces,
//! packed from gfn 0 or up to the top of the range, then lookups (at slot
//! edges, in holes, at the top and anywhere, through a vCPU and a device
//! reader, each under one view so their caches carry over), lookups by id,
//! and gfn- and hva-range iteration (empty, reversed and open-ended ranges
//! included) through both readers, all against the model.

#![no_main]

use libfuzzer_sys::fuzz_target;
use memslots::{Config, Memslots, Region, SlotKey, GFN_LIMIT};
use memslots_fuzz::agree::{apply, check, Op};
use memslots_fuzz::model::Model;
use memslots_fuzz::{flags, gfn, hva, HVA};

fn query(slots: &Memslots, m: &Model, u: &mut arbitrary::Unstructured) -> arbitrary::Result<()> {
    let as_id = u.int_in_range(0..=1)?;
    let edges = m.probe_gfns(as_id);
    let mut vcpu = slots.reader();
    let mut device = slots.device_reader();
    vcpu.set_address_space(as_id).unwrap();
    device.set_address_space(as_id).unwrap();
    let (v, d) = (vcpu.pin(), device.pin());
    for _ in 0..u.int_in_range(1..=64)? {
        let g = if u.arbitrary()? { *u.choose(&edges)? } else { gfn(u)? };
        let want = m.lookup(as_id, g);
        assert_eq!(v.gfn_to_slot(g).map(|s| *s.region()), want, "vCPU reader, gfn {g:#x}");
        assert_eq!(d.gfn_to_slot(g).map(|s| *s.region()), want, "device reader, gfn {g:#x}");
        assert_eq!(v.gfn_to_hva(g), want.map(|r| r.hva + (g - r.base_gfn) * 4096));
    }
    let id = u.int_in_range(0..=255)?;
    assert_eq!(v.slot_by_id(id).map(|s| *s.region()), m.by_id(SlotKey { id, as_id }));
    // Ranges, often empty or reversed, sometimes open to the top.
    let start = gfn(u)?;
    let end = if u.int_in_range(0..=7u8)? == 0 { u64::MAX } else { gfn(u)? };
    let lo = hva(u)?.saturating_add(u.int_in_range(0..=0x8000)?);
    let hi =
        if u.int_in_range(0..=7u8)? == 0 { u64::MAX } else { hva(u)?.saturating_add(u.int_in_range(0..=0x40000)?) };
    for (name, view) in [("vCPU", &v), ("device", &d)] {
        let got: Vec<Region> = view.slots_in_gfn_range(start..end).map(|s| *s.region()).collect();
        assert_eq!(got, m.in_gfn_range(as_id, start, end), "{name} reader, gfns {start:#x}..{end:#x}");
        let got: Vec<Region> = view.slots_in_hva_range(lo..hi).map(|s| *s.region()).collect();
        assert_eq!(got, m.in_hva_range(as_id, lo, hi), "{name} reader, hvas {lo:#x}..{hi:#x}");
    }
    Ok(())
}

/// Slot `id` in a random address space, a gap of 0..3 pages after the last
/// one there, 1..16 pages long.
fn packed_slot(u: &mut arbitrary::Unstructured, id: u16, next: &mut [u64; 2]) -> arbitrary::Result<Region> {
    let as_id = u.int_in_range(0..=1)?;
    let base_gfn = next[usize::from(as_id)] + u.int_in_range(0..=3)?;
    let npages = u.int_in_range(1..=16)?;
    next[usize::from(as_id)] = base_gfn + npages;
    Ok(Region { id, as_id, base_gfn, npages, hva: hva(u)?, flags: flags(u)? })
}

fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    let config = Config::new(2, 256);
    let slots = Memslots::new(config).unwrap();
    let mut w = slots.writer().unwrap();
    let mut m = Model::new(config);
    // A layout: slots packed upward with small gaps, from gfn 0 or from
    // just below the top of the range (so that the last slots end at the
    // last allowed gfn, or are refused for passing it).
    let Ok(n) = u.int_in_range(0..=200u16) else { return };
    let Ok(top) = u.arbitrary::<bool>() else { return };
    let Ok(below_top) = u.int_in_range(0..=4000u64) else { return };
    let mut next = [if top { GFN_LIMIT - 1 - below_top } else { 0 }; 2];
    for id in 0..n {
        if u.is_empty() {
            break;
        }
        let Ok(r) = packed_slot(&mut u, id, &mut next) else { break };
        apply(&mut w, &mut m, &Op::Create(r)).unwrap();
    }
    let probes = [(0, 400), (100, 3), (GFN_LIMIT - 0x100, 0x200), (u64::MAX - 5, 5)];
    check(&slots, &mut [slots.reader(), slots.device_reader()], &m, &probes, HVA).unwrap();
    // `Unstructured` yields defaults once drained, so stop on empty input.
    while !u.is_empty() && query(&slots, &m, &mut u).is_ok() {}
});
