//! The lookup benchmark: one layout and one loop, compiled into the guest
//! kernel and, from this same file, into the host test
//! (tests/nostd_guest.rs), so both sides time the same code on the same
//! slots.

use core::hint::black_box;

use memslots::{Backend, Error, Flags, Gfn, Region, View, Writer};

/// Slots in the layout.
pub const SLOTS: usize = 32;
/// Lookups in the timed loop.
pub const LOOKUPS: u64 = 20_000;
/// Gfns the loop cycles through.
const TABLE: usize = 1024;

/// A small LCG (Knuth's MMIX constants), the same on both sides.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The layout: [`SLOTS`] slots of 1..16 pages after gaps of 0..3 pages.
pub fn regions() -> [Region; SLOTS] {
    let mut rng = Lcg(1);
    let mut gfn = 0x100;
    core::array::from_fn(|id| {
        gfn += rng.below(4);
        let npages = 1 + rng.below(16);
        let region = Region {
            id: id as u16,
            as_id: 0,
            base_gfn: gfn,
            npages,
            hva: 0x7f00_0000_0000 + (gfn << 12),
            flags: Flags::empty(),
        };
        gfn += npages;
        region
    })
}

/// Creates the layout's slots.
///
/// # Errors
/// As [`Writer::create`].
pub fn create<B: Backend>(writer: &mut Writer<B>) -> Result<(), Error> {
    regions().into_iter().try_for_each(|region| writer.create(region).map(|_| ()))
}

/// The gfns the loop looks up: uniformly random slots, random pages in them.
pub fn gfn_table() -> [Gfn; TABLE] {
    let regions = regions();
    let mut rng = Lcg(2);
    core::array::from_fn(|_| {
        let region = &regions[rng.below(SLOTS as u64) as usize];
        region.base_gfn + rng.below(region.npages)
    })
}

/// `lookups` lookups under one view, cycling through `table`; returns the
/// sum of the host addresses found.
pub fn lookups(view: &View<'_>, table: &[Gfn; TABLE], lookups: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..lookups {
        let gfn = black_box(table[(i % TABLE as u64) as usize]);
        sum = sum.wrapping_add(view.gfn_to_hva(gfn).unwrap_or(u64::MAX));
    }
    sum
}
