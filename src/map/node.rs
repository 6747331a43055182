//! What the two B+trees of a set (`gfn_index`, `hva_index`) share: the node
//! width, the fill bounds and the split rule.

/// Children of a branch, and the width of a node's arrays.
pub(crate) const B: usize = 32;
/// Entries a node holds: one fewer than `B` (the gfn index keeps its last
/// key slot for a sentinel).
pub(crate) const CAP: usize = B - 1;
/// Entries every node but the root keeps.
pub(crate) const MIN: usize = B / 4;

/// Where a full node splits when an entry arrives at `pos`. Keys arriving at
/// one end keep arriving there (slots made in order): the node that will not
/// grow is left three quarters full.
pub(crate) fn split_point(pos: usize) -> usize {
    match pos {
        0 => MIN,
        CAP => CAP - MIN,
        _ => CAP / 2,
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
