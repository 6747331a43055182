//! Shared pieces of the downstream benchmarks: the slot layouts and the
//! peers (`benches/common/peers.rs` of memslots, compiled here as a user's
//! crate compiles it).

// Shared with memslots' own benches, where it is private: its small
// generator's `next` is not an iterator.
#[allow(clippy::should_implement_trait)]
#[path = "../../benches/common/peers.rs"]
pub mod peers;

use std::hint::black_box;

use memslots::{Memslots, Reader};
use peers::{memslots_config, region, BareVec, Lookup, Span};

/// The slot counts of `benches/read.rs`.
pub const SIZES: [usize; 5] = [8, 32, 509, 4096, 32764];
/// The slot counts of `benches/sweep.rs`: from 8 to 32764 in steps of
/// about half.
pub const SWEEP_SIZES: [usize; 23] =
    [8, 12, 16, 24, 32, 40, 48, 64, 96, 128, 192, 256, 384, 509, 768, 1024, 1536, 2048, 3072, 4096, 8192, 16384, 32764];

/// A map holding `spans` as slots 0.., created in the given order.
pub fn build(spans: &[Span], order: &[usize]) -> Memslots {
    let slots = Memslots::new(memslots_config()).expect("valid config");
    let mut w = slots.writer().expect("first writer");
    for &i in order {
        w.create(region(i, &spans[i])).expect("valid layout");
    }
    slots
}

/// `0..n` in a fixed random order.
pub fn shuffled(n: usize) -> Vec<usize> {
    let mut rng = peers::Rng(0xdecade ^ n as u64);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
}

/// The same loop over the bare sorted `Vec`, the peer of `under_one_view`.
#[inline]
pub fn bare_vec(vec: &BareVec, queries: &[u64]) {
    let guard = vec.guard();
    queries.iter().for_each(|&g| _ = black_box(BareVec::find(&guard, black_box(g))));
}

/// Looks up every gfn of `queries` under one view of `reader`: the loop the
/// read benches time.
#[inline]
pub fn under_one_view(reader: &Reader, queries: &[u64]) {
    let view = reader.pin();
    queries.iter().for_each(|&g| _ = black_box(view.gfn_to_hva(black_box(g))));
}
