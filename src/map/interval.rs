//! An interval index: an AVL tree in an arena, each node augmented with the
//! largest end in its subtree, so that overlap queries prune whole subtrees.
//!
//! Intervals may overlap each other. Entries are ordered by `(start, tag)`,
//! where the tag (a slot id) makes keys unique. Updates are O(log n). A query
//! yields the k intersecting entries in order of start and visits
//! O(min(n, (k + 1) log n)) nodes, the bound of the kernel's augmented
//! interval tree.
//!
//! AVL height is below 1.45 log2(n + 2), so a query's explicit stack of
//! `MAX_HEIGHT` entries holds any tree that fits in u32 indices and a reader
//! never allocates.

use alloc::vec::Vec;
use core::cmp::Ordering;
use core::ops::Range;

const NIL: u32 = u32::MAX;
const MAX_HEIGHT: usize = 48;

#[derive(Clone, Debug)]
struct Node<V> {
    start: u64,
    end: u64,
    tag: u32,
    value: V,
    max_end: u64,
    left: u32,
    right: u32,
    height: u8,
}

/// The tree. Freed nodes are kept on a free list threaded through `left`.
#[derive(Debug)]
pub(crate) struct IntervalTree<V> {
    nodes: Vec<Node<V>>,
    root: u32,
    free: u32,
    len: usize,
}

impl<V: Copy> IntervalTree<V> {
    pub(crate) const fn new() -> Self {
        IntervalTree { nodes: Vec::new(), root: NIL, free: NIL, len: 0 }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `[range.start, range.end)` under a `(start, tag)` key that is not
    /// in the tree yet.
    pub(crate) fn insert(&mut self, range: Range<u64>, tag: u32, value: V) {
        let node = Node {
            start: range.start,
            end: range.end,
            tag,
            value,
            max_end: range.end,
            left: NIL,
            right: NIL,
            height: 1,
        };
        let n = if self.free == NIL {
            // An eighth at a time: the arena holds one node a slot.
            if self.nodes.len() == self.nodes.capacity() {
                self.nodes.reserve_exact(self.nodes.len() / 8 + 1);
            }
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        } else {
            let n = self.free;
            self.free = self.nodes[n as usize].left;
            self.nodes[n as usize] = node;
            n
        };
        self.root = self.insert_at(self.root, n);
        self.len += 1;
    }

    /// Removes the entry with key `(start, tag)`; returns whether it was there.
    pub(crate) fn remove(&mut self, start: u64, tag: u32) -> bool {
        let mut removed = NIL;
        self.root = self.remove_at(self.root, (start, tag), &mut removed);
        if removed == NIL {
            return false;
        }
        self.nodes[removed as usize].left = self.free;
        self.free = removed;
        self.len -= 1;
        true
    }

    /// The entries whose interval intersects `range`, in order of start.
    pub(crate) fn overlapping(&self, range: Range<u64>) -> Overlapping<'_, V> {
        let mut iter = Overlapping { tree: self, stack: [NIL; MAX_HEIGHT], depth: 0, range };
        iter.descend_left(self.root);
        iter
    }

    fn key(&self, n: u32) -> (u64, u32) {
        let node = &self.nodes[n as usize];
        (node.start, node.tag)
    }

    fn height(&self, n: u32) -> u8 {
        if n == NIL {
            0
        } else {
            self.nodes[n as usize].height
        }
    }

    fn max_end(&self, n: u32) -> u64 {
        if n == NIL {
            0
        } else {
            self.nodes[n as usize].max_end
        }
    }

    /// Recomputes `n`'s height and max end from its children.
    fn update(&mut self, n: u32) {
        let (l, r) = (self.nodes[n as usize].left, self.nodes[n as usize].right);
        let height = 1 + self.height(l).max(self.height(r));
        let max_end = self.nodes[n as usize].end.max(self.max_end(l)).max(self.max_end(r));
        let node = &mut self.nodes[n as usize];
        node.height = height;
        node.max_end = max_end;
    }

    fn rotate_right(&mut self, n: u32) -> u32 {
        let l = self.nodes[n as usize].left;
        self.nodes[n as usize].left = self.nodes[l as usize].right;
        self.nodes[l as usize].right = n;
        self.update(n);
        self.update(l);
        l
    }

    fn rotate_left(&mut self, n: u32) -> u32 {
        let r = self.nodes[n as usize].right;
        self.nodes[n as usize].right = self.nodes[r as usize].left;
        self.nodes[r as usize].left = n;
        self.update(n);
        self.update(r);
        r
    }

    /// Restores the AVL balance at `n` and returns the subtree's new root.
    fn rebalance(&mut self, n: u32) -> u32 {
        self.update(n);
        let (l, r) = (self.nodes[n as usize].left, self.nodes[n as usize].right);
        let (hl, hr) = (self.height(l), self.height(r));
        if hl > hr + 1 {
            let l = self.nodes[n as usize].left;
            if self.height(self.nodes[l as usize].left) < self.height(self.nodes[l as usize].right) {
                self.nodes[n as usize].left = self.rotate_left(l);
            }
            self.rotate_right(n)
        } else if hr > hl + 1 {
            let r = self.nodes[n as usize].right;
            if self.height(self.nodes[r as usize].right) < self.height(self.nodes[r as usize].left) {
                self.nodes[n as usize].right = self.rotate_right(r);
            }
            self.rotate_left(n)
        } else {
            n
        }
    }

    fn insert_at(&mut self, n: u32, new: u32) -> u32 {
        if n == NIL {
            return new;
        }
        if self.key(new) < self.key(n) {
            let l = self.insert_at(self.nodes[n as usize].left, new);
            self.nodes[n as usize].left = l;
        } else {
            let r = self.insert_at(self.nodes[n as usize].right, new);
            self.nodes[n as usize].right = r;
        }
        self.rebalance(n)
    }

    fn remove_at(&mut self, n: u32, key: (u64, u32), removed: &mut u32) -> u32 {
        if n == NIL {
            return NIL;
        }
        match key.cmp(&self.key(n)) {
            Ordering::Less => {
                let l = self.remove_at(self.nodes[n as usize].left, key, removed);
                self.nodes[n as usize].left = l;
            }
            Ordering::Greater => {
                let r = self.remove_at(self.nodes[n as usize].right, key, removed);
                self.nodes[n as usize].right = r;
            }
            Ordering::Equal => {
                *removed = n;
                let (l, r) = (self.nodes[n as usize].left, self.nodes[n as usize].right);
                if l == NIL || r == NIL {
                    return if l == NIL { r } else { l };
                }
                let (rest, min) = self.take_min(r);
                self.nodes[min as usize].left = l;
                self.nodes[min as usize].right = rest;
                return self.rebalance(min);
            }
        }
        self.rebalance(n)
    }

    /// Detaches the leftmost node of the subtree at `n`: (new root, that node).
    fn take_min(&mut self, n: u32) -> (u32, u32) {
        let l = self.nodes[n as usize].left;
        if l == NIL {
            return (self.nodes[n as usize].right, n);
        }
        let (rest, min) = self.take_min(l);
        self.nodes[n as usize].left = rest;
        (self.rebalance(n), min)
    }
}

/// In-order walk over the entries intersecting a range, skipping subtrees
/// whose largest end is at or below the range's start.
pub(crate) struct Overlapping<'a, V> {
    tree: &'a IntervalTree<V>,
    stack: [u32; MAX_HEIGHT],
    depth: usize,
    range: Range<u64>,
}

impl<V: Copy> Overlapping<'_, V> {
    fn descend_left(&mut self, mut n: u32) {
        while n != NIL && self.tree.nodes[n as usize].max_end > self.range.start {
            // The depth never passes MAX_HEIGHT: the tree stays AVL balanced.
            self.stack[self.depth] = n;
            self.depth += 1;
            n = self.tree.nodes[n as usize].left;
        }
    }
}

impl<V: Copy> Iterator for Overlapping<'_, V> {
    type Item = V;

    fn next(&mut self) -> Option<V> {
        while self.depth > 0 {
            self.depth -= 1;
            let node = &self.tree.nodes[self.stack[self.depth] as usize];
            if node.start >= self.range.end {
                // Everything later in order starts even later.
                self.depth = 0;
                return None;
            }
            self.descend_left(node.right);
            if node.end > self.range.start {
                return Some(node.value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    impl<V: Copy> IntervalTree<V> {
        /// Checks order, balance and augmentation; returns the height.
        fn check(&self, n: u32, lo: Option<(u64, u32)>, hi: Option<(u64, u32)>) -> u8 {
            if n == NIL {
                return 0;
            }
            let node = &self.nodes[n as usize];
            let key = (node.start, node.tag);
            assert!(lo.is_none_or(|lo| key > lo) && hi.is_none_or(|hi| key < hi));
            let hl = self.check(node.left, lo, Some(key));
            let hr = self.check(node.right, Some(key), hi);
            assert!(hl.abs_diff(hr) <= 1, "unbalanced");
            assert_eq!(node.height, 1 + hl.max(hr));
            assert_eq!(node.max_end, node.end.max(self.max_end(node.left)).max(self.max_end(node.right)));
            node.height
        }
    }

    proptest! {
        // Under miri: a few cases, and no failure file (isolation forbids it).
        #![proptest_config(if cfg!(miri) {
            ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
        } else {
            ProptestConfig::default()
        })]
        #[test]
        fn matches_a_linear_scan(
            ops in proptest::collection::vec((any::<bool>(), 0u64..200, 1u64..40, 0u32..8), 1..200),
            queries in proptest::collection::vec((0u64..260, 0u64..60), 1..20),
        ) {
            let mut tree = IntervalTree::new();
            let mut model: Vec<(u64, u64, u32)> = Vec::new();
            for (insert, start, len, tag) in ops {
                let present = model.iter().position(|&(s, _, t)| s == start && t == tag);
                match (insert, present) {
                    (true, None) => {
                        tree.insert(start..start + len, tag, (start, tag));
                        model.push((start, start + len, tag));
                    }
                    (false, Some(i)) => {
                        prop_assert!(tree.remove(start, tag));
                        model.remove(i);
                    }
                    (false, None) => prop_assert!(!tree.remove(start, tag)),
                    (true, Some(_)) => {}
                }
                tree.check(tree.root, None, None);
                prop_assert_eq!(tree.len(), model.len());
            }
            model.sort_by_key(|&(s, _, t)| (s, t));
            for (lo, len) in queries {
                let hi = lo + len;
                let got: Vec<(u64, u32)> = tree.overlapping(lo..hi).collect();
                let want: Vec<(u64, u32)> = model
                    .iter()
                    .filter(|&&(s, e, _)| s < hi && e > lo)
                    .map(|&(s, _, t)| (s, t))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn height_stays_logarithmic_for_sorted_inserts() {
        let mut tree = IntervalTree::new();
        for i in 0..if cfg!(miri) { 500 } else { 100_000u64 } {
            tree.insert(i * 2..i * 2 + 1, 0, i);
        }
        let h = tree.check(tree.root, None, None);
        assert!(h <= 25, "height {h}");
        assert_eq!(tree.overlapping(400..404).collect::<Vec<_>>(), [200, 201]);
    }
}
