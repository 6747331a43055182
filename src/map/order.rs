//! The order in which a backend hears of a batch's changes: one in which
//! applying them one at a time, as a kernel without a multi-slot call must,
//! never makes two slots overlap where it can be avoided.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use crate::vocab::{Change, SlotChange};

/// Sorts `changes` (with the index of the batch operation behind each):
/// deletes, then moves, then flag changes, then creates; within a kind by
/// key, except that a move comes after the moves that free the range it
/// moves into. Moves that free each other's ranges in a cycle (two slots
/// trading places) keep key order: no one-at-a-time order can do them.
pub(crate) fn backend_order(changes: &mut [(SlotChange, usize)]) {
    // A single change (most calls) needs no order, nor the cold code below.
    if changes.len() < 2 {
        return;
    }
    changes.sort_by_key(|(change, _)| (kind_rank(change.kind()), change.key));
    let first = changes.partition_point(|(c, _)| kind_rank(c.kind()) < kind_rank(Change::Moved));
    let end = changes.partition_point(|(c, _)| kind_rank(c.kind()) <= kind_rank(Change::Moved));
    order_moves(&mut changes[first..end]);
}

/// Backend order of the kinds: removals before insertions.
fn kind_rank(kind: Change) -> u8 {
    match kind {
        Change::Deleted => 0,
        Change::Moved => 1,
        Change::FlagsChanged | Change::Unchanged => 2,
        Change::Created => 3,
    }
}

/// Orders moves (sorted by key) so that each comes after every move whose
/// old range overlaps its new one: a topological sort, smallest key first
/// among the moves that are ready, in O(k log k) for k moves plus the
/// overlaps (at most 2k, as both the old and the new ranges are disjoint).
fn order_moves(moves: &mut [(SlotChange, usize)]) {
    let k = moves.len();
    let range = |i: usize, old: bool| {
        let (key, region) = (moves[i].0.key, if old { moves[i].0.old } else { moves[i].0.new });
        let region = region.unwrap_or_else(|| unreachable!("a move has both"));
        (key.as_id, region.base_gfn, region.end_gfn())
    };
    // Old ranges by address space and start; disjoint within one space, so
    // their ends are sorted too.
    let mut by_old: Vec<usize> = (0..k).collect();
    by_old.sort_by_key(|&i| range(i, true));
    let mut waits_for = alloc::vec![0usize; k];
    let mut frees: Vec<Vec<usize>> = alloc::vec![Vec::new(); k];
    for (n, waits) in waits_for.iter_mut().enumerate() {
        let (as_id, start, end) = range(n, false);
        let from = by_old.partition_point(|&m| {
            let (a, _, e) = range(m, true);
            (a, e) <= (as_id, start)
        });
        for &m in by_old[from..].iter().take_while(|&&m| {
            let (a, s, _) = range(m, true);
            (a, s) < (as_id, end)
        }) {
            if m != n {
                *waits += 1;
                frees[m].push(n);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..k).filter(|&i| waits_for[i] == 0).collect();
    let mut sorted = Vec::with_capacity(k);
    while let Some(m) = ready.pop_first() {
        sorted.push(m);
        for &n in &frees[m] {
            waits_for[n] -= 1;
            if waits_for[n] == 0 {
                ready.insert(n);
            }
        }
    }
    // Cycles: what is left, in key order.
    sorted.extend((0..k).filter(|&i| waits_for[i] != 0));
    let before: Vec<(SlotChange, usize)> = moves.to_vec();
    for (slot, i) in moves.iter_mut().zip(sorted) {
        *slot = before[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{Flags, Region, SlotKey};

    fn moved(id: u16, from: u64, to: u64) -> (SlotChange, usize) {
        let region = |base_gfn| Region { id, as_id: 0, base_gfn, npages: 4, hva: 0, flags: Flags::empty() };
        (SlotChange { key: SlotKey { id, as_id: 0 }, old: Some(region(from)), new: Some(region(to)) }, 0)
    }

    fn ids(changes: &[(SlotChange, usize)]) -> Vec<u16> {
        changes.iter().map(|(c, _)| c.key.id).collect()
    }

    #[test]
    fn a_move_waits_for_the_move_that_frees_its_target() {
        // 1 moves into 2's range, 2 into 3's, 3 to free space: 3, 2, 1.
        let mut chain = [moved(1, 0, 10), moved(2, 10, 20), moved(3, 20, 30)];
        backend_order(&mut chain);
        assert_eq!(ids(&chain), [3, 2, 1]);
        // A move overlapping two freed ranges waits for both; among the
        // ready moves the smallest key goes first.
        let mut fan = [moved(1, 0, 12), moved(2, 10, 100), moved(3, 14, 200), moved(4, 50, 60)];
        backend_order(&mut fan);
        assert_eq!(ids(&fan), [2, 3, 1, 4]);
    }

    #[test]
    fn a_cycle_keeps_key_order_after_the_rest() {
        let mut swap = [moved(1, 0, 10), moved(2, 10, 0), moved(3, 40, 50)];
        backend_order(&mut swap);
        assert_eq!(ids(&swap), [3, 1, 2]);
    }

    #[test]
    fn address_spaces_do_not_wait_for_each_other() {
        let (mut a, b) = (moved(1, 0, 10), moved(2, 10, 20));
        a.0.key.as_id = 1;
        for r in [&mut a.0.old, &mut a.0.new].into_iter().flatten() {
            r.as_id = 1;
        }
        let mut both = [a, b];
        backend_order(&mut both);
        assert_eq!(ids(&both), [1, 2]);
    }
}
