//! The lookup structures measured side by side: memslots and what VMMs use
//! today, all built from the same slot layout and answering the same
//! question (the host address of a gfn). Shared by the criterion benches and
//! `examples/bench_report.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use arc_swap::ArcSwap;
use memslots::{Config, Flags, Memslots, Reader, Region, View};
use vm_memory::{
    GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryLoadGuard, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionMmap,
};

pub const PAGE: u64 = 4096;

/// One slot of a layout: where it is in the guest and where in the host.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub base_gfn: u64,
    pub npages: u64,
    pub hva: u64,
}

impl Span {
    fn find(spans: &[Span], gfn: u64) -> Option<u64> {
        let i = spans.partition_point(|s| s.base_gfn <= gfn).checked_sub(1)?;
        let s = &spans[i];
        (gfn - s.base_gfn < s.npages).then(|| s.hva + (gfn - s.base_gfn) * PAGE)
    }
}

/// A small deterministic generator (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` slots of 1..16 pages, each after a gap of 0..3 pages, in gfn order.
pub fn layout(n: usize) -> Vec<Span> {
    let mut rng = Rng(n as u64);
    let mut next = 0x100;
    (0..n)
        .map(|i| {
            let base_gfn = next + rng.below(4);
            let npages = 1 + rng.below(16);
            next = base_gfn + npages;
            Span { base_gfn, npages, hva: 0x7f00_0000_0000 + i as u64 * 0x10_0000 }
        })
        .collect()
}

/// `count` gfns inside the slots. Uniform: each in a random slot. Hot: 95%
/// in the slot of the previous gfn.
pub fn gfns(spans: &[Span], count: usize, hot: bool) -> Vec<u64> {
    let mut rng = Rng(0x5eed ^ spans.len() as u64);
    let mut slot = 0;
    (0..count)
        .map(|_| {
            if !hot || rng.below(100) >= 95 {
                slot = rng.below(spans.len() as u64) as usize;
            }
            spans[slot].base_gfn + rng.below(spans[slot].npages)
        })
        .collect()
}

/// A gfn-to-hva map that readers consult under a guard. Every
/// implementation's `guard`, `find` and `find_pinned` are inlined into the
/// measuring loops, so that no peer pays for a call the others do not.
pub trait Lookup {
    const NAME: &'static str;
    type Guard<'a>
    where
        Self: 'a;
    fn build(spans: &[Span]) -> Self;
    fn guard(&self) -> Self::Guard<'_>;
    fn find(guard: &Self::Guard<'_>, gfn: u64) -> Option<u64>;
    /// One lookup with its own guard, as a vCPU exit handler does it.
    #[inline(always)]
    fn find_pinned(&self, gfn: u64) -> Option<u64> {
        Self::find(&self.guard(), gfn)
    }
}

pub fn memslots_config() -> Config {
    Config::default().with_address_spaces(1)
}

pub fn region(id: usize, s: &Span) -> Region {
    Region { id: id as u16, as_id: 0, base_gfn: s.base_gfn, npages: s.npages, hva: s.hva, flags: Flags::empty() }
}

/// memslots with a vCPU reader.
pub struct MemslotsMap {
    // Declared first: a reader goes before the map it reads.
    reader: Reader,
    _slots: Memslots,
}

impl Lookup for MemslotsMap {
    const NAME: &'static str = "memslots";
    type Guard<'a> = View<'a>;
    fn build(spans: &[Span]) -> Self {
        let slots = Memslots::new(memslots_config()).expect("valid config");
        let mut w = slots.writer().expect("first writer");
        for (id, s) in spans.iter().enumerate() {
            w.create(region(id, s)).expect("valid layout");
        }
        drop(w);
        MemslotsMap { reader: slots.reader(), _slots: slots }
    }
    #[inline(always)]
    fn guard(&self) -> View<'_> {
        self.reader.pin()
    }
    #[inline(always)]
    fn find(view: &View<'_>, gfn: u64) -> Option<u64> {
        view.gfn_to_hva(gfn)
    }
}

/// vm-memory 0.18: `GuestMemoryAtomic<GuestMemoryMmap>`, one anonymous
/// mapping per slot.
pub struct VmMemory(pub GuestMemoryAtomic<GuestMemoryMmap>);

pub fn vm_memory_region(s: &Span) -> Arc<GuestRegionMmap> {
    let region = GuestRegionMmap::from_range(GuestAddress(s.base_gfn * PAGE), (s.npages * PAGE) as usize, None);
    Arc::new(region.expect("anonymous mapping"))
}

impl Lookup for VmMemory {
    const NAME: &'static str = "vm-memory";
    type Guard<'a> = GuestMemoryLoadGuard<GuestMemoryMmap>;
    fn build(spans: &[Span]) -> Self {
        let regions = spans.iter().map(vm_memory_region);
        VmMemory(GuestMemoryAtomic::new(GuestMemoryMmap::from_arc_regions(regions.collect()).expect("sorted")))
    }
    #[inline(always)]
    fn guard(&self) -> Self::Guard<'_> {
        self.0.memory()
    }
    #[inline(always)]
    fn find(mem: &Self::Guard<'_>, gfn: u64) -> Option<u64> {
        let addr = GuestAddress(gfn * PAGE);
        let region = mem.find_region(addr)?;
        Some(region.as_ptr() as u64 + (addr.0 - region.start_addr().0))
    }
}

/// `RwLock<BTreeMap<base gfn, slot>>`.
pub struct RwLockBTree(pub RwLock<BTreeMap<u64, Span>>);

impl Lookup for RwLockBTree {
    const NAME: &'static str = "RwLock<BTreeMap>";
    type Guard<'a> = RwLockReadGuard<'a, BTreeMap<u64, Span>>;
    fn build(spans: &[Span]) -> Self {
        RwLockBTree(RwLock::new(spans.iter().map(|s| (s.base_gfn, *s)).collect()))
    }
    #[inline(always)]
    fn guard(&self) -> Self::Guard<'_> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
    #[inline(always)]
    fn find(map: &Self::Guard<'_>, gfn: u64) -> Option<u64> {
        let (_, s) = map.range(..=gfn).next_back()?;
        (gfn - s.base_gfn < s.npages).then(|| s.hva + (gfn - s.base_gfn) * PAGE)
    }
}

/// `ArcSwap<Vec<slot>>` sorted by base gfn, searched with `partition_point`.
pub struct ArcSwapVec(pub ArcSwap<Vec<Span>>);

impl Lookup for ArcSwapVec {
    const NAME: &'static str = "ArcSwap<Vec>";
    type Guard<'a> = arc_swap::Guard<Arc<Vec<Span>>>;
    fn build(spans: &[Span]) -> Self {
        ArcSwapVec(ArcSwap::from_pointee(spans.to_vec()))
    }
    #[inline(always)]
    fn guard(&self) -> Self::Guard<'_> {
        self.0.load()
    }
    #[inline(always)]
    fn find(spans: &Self::Guard<'_>, gfn: u64) -> Option<u64> {
        Span::find(spans, gfn)
    }
}

/// The sorted `Vec` with no synchronization: the floor.
pub struct BareVec(pub Vec<Span>);

impl Lookup for BareVec {
    const NAME: &'static str = "bare Vec";
    type Guard<'a> = &'a [Span];
    fn build(spans: &[Span]) -> Self {
        BareVec(spans.to_vec())
    }
    #[inline(always)]
    fn guard(&self) -> &[Span] {
        &self.0
    }
    #[inline(always)]
    fn find(spans: &&[Span], gfn: u64) -> Option<u64> {
        Span::find(spans, gfn)
    }
}
