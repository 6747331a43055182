//! What the two B+trees of a set (`gfn_index`, `hva_index`) share: the fill
//! bounds and the split rule, for nodes of any capacity.

/// Entries every node but the root keeps, for nodes of `cap` entries: a
/// quarter, so removals borrow or merge rarely and the height stays
/// O(log n).
pub(crate) const fn min_fill(cap: usize) -> usize {
    (cap + 1) / 4
}

/// Where a full node of `cap` entries splits when an entry arrives at
/// `pos`. Keys arriving at one end keep arriving there (slots made in
/// order): the node that will not grow is left three quarters full.
pub(crate) fn split_point(pos: usize, cap: usize) -> usize {
    if pos == 0 {
        min_fill(cap)
    } else if pos == cap {
        cap - min_fill(cap)
    } else {
        cap / 2
    }
}

/// Mutable references to two distinct nodes of one arena.
pub(crate) fn pair_mut<T>(nodes: &mut [T], a: u32, b: u32) -> (&mut T, &mut T) {
    let (a, b) = (a as usize, b as usize);
    debug_assert!(a != b);
    if a < b {
        let (lo, hi) = nodes.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = nodes.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}
