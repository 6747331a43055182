//! The order in which a backend hears of a batch's changes: one in which
//! applying them one at a time, as a kernel without a multi-slot call must,
//! never makes two slots overlap where it can be avoided.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use crate::vocab::{Change, Flags, SlotChange};

/// Sorts `changes` (with the index of the batch operation behind each):
/// deletes, then moves, then flag changes, then creates; within a kind by
/// key, except that a move comes after the moves that free the range it
/// moves into. Moves that free each other's ranges in a cycle (two slots
/// trading places) have no such order: one move of each cycle is split into
/// a delete, where the cycle is reached, and a create after the other moves
/// (see [`order_moves`]).
pub(crate) fn backend_order(changes: &mut Vec<(SlotChange, usize)>) {
    // A single change (most calls) needs no order, nor the cold code below.
    if changes.len() < 2 {
        return;
    }
    changes.sort_by_key(|(change, _)| (kind_rank(change.kind()), change.key));
    let first = changes.partition_point(|(c, _)| kind_rank(c.kind()) < kind_rank(Change::Moved));
    let end = changes.partition_point(|(c, _)| kind_rank(c.kind()) <= kind_rank(Change::Moved));
    let moves = order_moves(&changes[first..end]);
    changes.splice(first..end, moves);
}

/// A cycle among the moves not `done`, found by walking from `start` (not
/// done, waiting on a move not done) to a move it waits on until a move
/// repeats: every move on the walk waits on one not done, so the walk ends
/// on a cycle within k steps.
fn cycle_from(start: usize, freed_by: &[Vec<usize>], done: &[bool]) -> Vec<usize> {
    let (mut path, mut on_path) = (Vec::new(), alloc::vec![usize::MAX; freed_by.len()]);
    let mut at = start;
    loop {
        if on_path[at] != usize::MAX {
            return path.split_off(on_path[at]);
        }
        on_path[at] = path.len();
        path.push(at);
        match freed_by[at].iter().copied().find(|&m| !done[m]) {
            Some(next) => at = next,
            None => unreachable!("a move left after the ready ones waits on another"),
        }
    }
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
///
/// When only moves in cycles (and moves that wait on them) are left, one move
/// of a cycle is split: its delete frees its old range at once, and its
/// create comes after every move. The split move is one whose dirty log does
/// not go across (its old or new flags lack `LOG_DIRTY_PAGES`) where the
/// cycle has one, so that a kernel keeps the log of every slot it can; the
/// smallest key otherwise. Finding a cycle walks at most k moves, so a batch
/// with c cycles costs O(c k) more.
fn order_moves(moves: &[(SlotChange, usize)]) -> Vec<(SlotChange, usize)> {
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
    let mut freed_by: Vec<Vec<usize>> = alloc::vec![Vec::new(); k];
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
                freed_by[n].push(m);
            }
        }
    }
    let keeps_log = |i: usize| {
        let change = &moves[i].0;
        [change.old, change.new].iter().flatten().all(|r| r.flags.contains(Flags::LOG_DIRTY_PAGES))
    };
    let mut ready: BTreeSet<usize> = (0..k).filter(|&i| waits_for[i] == 0).collect();
    let mut done = alloc::vec![false; k];
    let (mut sorted, mut split, mut finished, mut first_left) = (Vec::with_capacity(k + 1), Vec::new(), 0, 0);
    let free_range = |m: usize, waits_for: &mut [usize], ready: &mut BTreeSet<usize>| {
        for &n in &frees[m] {
            waits_for[n] -= 1;
            if waits_for[n] == 0 {
                ready.insert(n);
            }
        }
    };
    while finished < k {
        if let Some(m) = ready.pop_first() {
            // A split move may become ready later: it is done already.
            if !done[m] {
                (done[m], finished) = (true, finished + 1);
                sorted.push(moves[m]);
                free_range(m, &mut waits_for, &mut ready);
            }
            continue;
        }
        // Only cycles, and moves waiting on them, are left: split one move
        // of a cycle.
        while done[first_left] {
            first_left += 1;
        }
        let cycle = cycle_from(first_left, &freed_by, &done);
        let m = cycle.iter().copied().find(|&i| !keeps_log(i)).or_else(|| cycle.iter().copied().min());
        let m = m.unwrap_or_else(|| unreachable!("a cycle has a move"));
        (done[m], finished) = (true, finished + 1);
        let (change, index) = moves[m];
        sorted.push((SlotChange { new: None, ..change }, index));
        split.push((SlotChange { old: None, ..change }, index));
        free_range(m, &mut waits_for, &mut ready);
    }
    sorted.extend(split);
    sorted
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
        let mut chain = vec![moved(1, 0, 10), moved(2, 10, 20), moved(3, 20, 30)];
        backend_order(&mut chain);
        assert_eq!(ids(&chain), [3, 2, 1]);
        // A move overlapping two freed ranges waits for both; among the
        // ready moves the smallest key goes first.
        let mut fan = vec![moved(1, 0, 12), moved(2, 10, 100), moved(3, 14, 200), moved(4, 50, 60)];
        backend_order(&mut fan);
        assert_eq!(ids(&fan), [2, 3, 1, 4]);
    }

    /// Applies `changes` one at a time to the slots `before` and checks
    /// that no two slots overlap at any step and that the end is `after`.
    fn apply_one_at_a_time(before: &[(SlotChange, usize)], changes: &[(SlotChange, usize)]) {
        let mut now: Vec<Region> = before.iter().filter_map(|(c, _)| c.old).collect();
        for (change, _) in changes {
            if let Some(old) = change.old {
                now.retain(|r| r.key() != old.key());
            }
            if let Some(new) = change.new {
                let clash = now
                    .iter()
                    .find(|r| r.as_id == new.as_id && r.base_gfn < new.end_gfn() && new.base_gfn < r.end_gfn());
                assert!(clash.is_none(), "{new:?} overlaps {clash:?} in {changes:?}");
                now.push(new);
            }
        }
        let mut want: Vec<Region> = before.iter().filter_map(|(c, _)| c.new).collect();
        now.sort_by_key(Region::key);
        want.sort_by_key(Region::key);
        assert_eq!(now, want);
    }

    fn kinds(changes: &[(SlotChange, usize)]) -> Vec<(u16, Change)> {
        changes.iter().map(|(c, _)| (c.key.id, c.kind())).collect()
    }

    #[test]
    fn a_cycle_is_split_into_a_delete_and_a_later_create() {
        // Slots 1 and 2 trade places; 3 moves to free space.
        let swap = [moved(1, 0, 10), moved(2, 10, 0), moved(3, 40, 50)];
        let mut ordered = swap.to_vec();
        backend_order(&mut ordered);
        let (m, d, c) = (Change::Moved, Change::Deleted, Change::Created);
        assert_eq!(kinds(&ordered), [(3, m), (1, d), (2, m), (1, c)]);
        apply_one_at_a_time(&swap, &ordered);
        // A cycle of three, and two cycles at once, after plain deletes.
        let three = [moved(1, 0, 10), moved(2, 10, 20), moved(3, 20, 0)];
        let two_cycles = [moved(1, 0, 10), moved(2, 10, 0), moved(3, 20, 30), moved(4, 30, 20)];
        for (moves, cycles) in [(&three[..], 1), (&two_cycles[..], 2)] {
            let mut ordered = moves.to_vec();
            backend_order(&mut ordered);
            assert_eq!(ordered.len(), moves.len() + cycles, "one split per cycle: {ordered:?}");
            apply_one_at_a_time(moves, &ordered);
        }
    }

    fn moved_sized(id: u16, from: u64, to: u64, npages: u64) -> (SlotChange, usize) {
        let (mut change, index) = moved(id, from, to);
        for r in [&mut change.old, &mut change.new].into_iter().flatten() {
            r.npages = npages;
        }
        (change, index)
    }

    #[test]
    fn only_moves_on_a_cycle_are_split() {
        // A chain into a cycle: A waits on B, B on C, C on B. One split (of
        // B or C), not of A.
        let chain = [moved_sized(1, 0, 12, 2), moved_sized(2, 10, 20, 4), moved_sized(3, 20, 10, 2)];
        let mut ordered = chain.to_vec();
        backend_order(&mut ordered);
        assert_eq!(ordered.len(), 4, "one split: {ordered:?}");
        assert!(ordered.iter().all(|(c, _)| c.key.id != 1 || c.kind() == Change::Moved), "A is not split");
        apply_one_at_a_time(&chain, &ordered);
    }

    /// Random layouts of equal slots moved to random free or taken places:
    /// applied one at a time the order never overlaps, and it splits
    /// exactly one move per cycle of slots taking each other's places.
    #[test]
    fn random_moves_split_once_per_cycle() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..if cfg!(miri) { 20 } else { 500 } {
            let slots = 2 + next(10) as usize;
            let places = slots + next(4) as usize;
            // Each slot's place before and after: two random injections.
            let mut shuffle = |n: usize| {
                let mut p: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    p.swap(i, next(i as u64 + 1) as usize);
                }
                p
            };
            let (before, after) = (shuffle(places), shuffle(places));
            let moves: Vec<_> = (0..slots)
                .filter(|&i| before[i] != after[i])
                .map(|i| moved(i as u16, before[i] as u64 * 10, after[i] as u64 * 10))
                .collect();
            let mut ordered = moves.clone();
            backend_order(&mut ordered);
            apply_one_at_a_time(&moves, &ordered);
            // Cycles of the map from a moving slot to the slot whose place
            // it takes (an injection: its parts are chains and cycles).
            let takes = |i: usize| (0..slots).find(|&j| before[j] == after[i]).filter(|_| before[i] != after[i]);
            let (mut seen, mut cycles) = (vec![false; slots], 0);
            for start in 0..slots {
                let mut at = start;
                while !seen[at] {
                    seen[at] = true;
                    match takes(at) {
                        Some(j) if j == start => cycles += 1,
                        Some(j) => at = j,
                        None => break,
                    }
                }
            }
            assert_eq!(ordered.len() - moves.len(), cycles, "splits: {ordered:?}");
        }
    }

    #[test]
    fn a_split_prefers_a_slot_whose_dirty_log_does_not_go_across() {
        let logging = |(mut change, index): (SlotChange, usize)| {
            for r in [&mut change.old, &mut change.new].into_iter().flatten() {
                r.flags = Flags::LOG_DIRTY_PAGES;
            }
            (change, index)
        };
        // Slot 1 logs on both sides, slot 2 does not: slot 2 is split.
        let swap = [logging(moved(1, 0, 10)), moved(2, 10, 0)];
        let mut ordered = swap.to_vec();
        backend_order(&mut ordered);
        assert_eq!(kinds(&ordered), [(2, Change::Deleted), (1, Change::Moved), (2, Change::Created)]);
        apply_one_at_a_time(&swap, &ordered);
    }

    #[test]
    fn address_spaces_do_not_wait_for_each_other() {
        let (mut a, b) = (moved(1, 0, 10), moved(2, 10, 20));
        a.0.key.as_id = 1;
        for r in [&mut a.0.old, &mut a.0.new].into_iter().flatten() {
            r.as_id = 1;
        }
        let mut both = vec![a, b];
        backend_order(&mut both);
        assert_eq!(ids(&both), [1, 2]);
    }
}
