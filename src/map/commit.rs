//! The writer's engine: validates a batch of operations in the inactive sets,
//! asks the backend, then publishes the net changes with at most two swaps
//! per touched address space and two grace periods in all.
//!
//! Validation applies each operation to the inactive set of its address
//! space, so each is checked against the state as it evolves inside the
//! batch, by the same rules (`plan`) as a single call; the last one, which
//! no later operation needs to see, is left for publication to apply.
//! Readers never see the inactive sets (invariant 2), so a refused batch is
//! undone there and nothing was ever published (invariant 5).

use alloc::vec::Vec;

use crate::backend::Backend;
use crate::base::addr::PAGE_SHIFT;
use crate::base::sync::{AtomicBool, Ordering};
use crate::error::Error;
use crate::map::op::{BatchError, Op};
use crate::map::order::backend_order;
use crate::map::plan::{plan, Plan};
use crate::map::set::{self, Set};
use crate::map::shared::Inner;
use crate::map::slot::{Slot, SlotPtr};
use crate::memory::backing::Backing;
use crate::vocab::{Change, Region, SlotChange, SlotKey, UserMemoryRegion};

/// What a batch did to one slot key, all its operations taken together.
#[derive(Clone, Copy)]
struct NetChange {
    /// The slot before the batch (in both sets).
    before: Option<SlotPtr>,
    /// The slot after the batch.
    after: Option<SlotPtr>,
    /// What the inactive set holds for the key: `after`, but for the batch's
    /// last operation, which validation checks and leaves for `publish` to
    /// apply (no later operation needs to see it, and a delete or move then
    /// goes from `before` straight to its INVALID copy in place).
    in_inactive: Option<SlotPtr>,
    /// The index of the last operation on the key, named when the backend
    /// refuses it.
    last_op: usize,
    /// The INVALID copy of `before` published while the change is under way
    /// (DELETE and MOVE only).
    invalid_copy: Option<SlotPtr>,
}

impl NetChange {
    /// The net of a key no operation has reached yet: nothing to undo.
    const UNTOUCHED: NetChange =
        NetChange { before: None, after: None, in_inactive: None, last_op: usize::MAX, invalid_copy: None };

    fn touched(&self) -> bool {
        self.last_op != usize::MAX
    }

    fn slot<'s>(slot: Option<SlotPtr>) -> Option<&'s Slot> {
        // `before` is in both sets and `after` was made by this
        // batch; both are live until the batch frees them (a set holds only
        // live slots, invariant 6).
        // SAFETY: as just said.
        slot.map(|slot| unsafe { slot.get() })
    }

    /// Whether `after` is `before` moved or re-flagged (same memory, size and
    /// READONLY), as opposed to a new slot that took the id of a deleted one.
    fn in_place(&self) -> bool {
        match (NetChange::slot(self.before), NetChange::slot(self.after)) {
            (Some(before), Some(after)) => after.is_successor_of(before),
            _ => false,
        }
    }

    /// Whether the batch leaves the slot as it was.
    fn cancelled(&self) -> bool {
        match (NetChange::slot(self.before), NetChange::slot(self.after)) {
            (None, None) => true,
            (Some(before), Some(after)) => after.is_successor_of(before) && after.region() == before.region(),
            _ => false,
        }
    }

    /// Whether readers must first see the slot INVALID: a DELETE, a MOVE,
    /// or an id whose slot was deleted and made anew.
    fn invalidates(&self) -> bool {
        match (NetChange::slot(self.before), NetChange::slot(self.after)) {
            (Some(_), None) => true,
            (Some(before), Some(after)) => !self.in_place() || after.base_gfn() != before.base_gfn(),
            _ => false,
        }
    }

    /// Appends the changes a backend sees, with the index of the last
    /// operation: one, or a delete and a create where a new slot took the
    /// id of a deleted one.
    fn push_changes(&self, key: SlotKey, order: &mut Vec<(SlotChange, usize)>) {
        let (old, new) =
            (NetChange::slot(self.before).map(|s| *s.region()), NetChange::slot(self.after).map(|s| *s.region()));
        if old.is_some() && new.is_some() && !self.in_place() {
            order.push((SlotChange { key, old, new: None }, self.last_op));
            order.push((SlotChange { key, old: None, new }, self.last_op));
        } else {
            order.push((SlotChange { key, old, new }, self.last_op));
        }
    }

    /// The slot the set published first in the batch holds for this key.
    fn first_published(&self) -> Option<SlotPtr> {
        self.invalid_copy.or(self.before)
    }
}

/// Buffers the engine reuses from one batch to the next, so that a change
/// allocates only the slots it makes (and a batch over address spaces of
/// which only some go through an INVALID swap, two lists to split them):
/// with cold caches, each allocation and free costs about what a walk down
/// an index does.
#[derive(Default)]
pub(crate) struct Scratch {
    /// What each operation did.
    changes: Vec<Change>,
    /// Every key the batch names with what it did to the key, in key order
    /// (a key no operation changed, or reached before an error, has a net
    /// from nothing to nothing, which counts as cancelled); and the
    /// position of each operation's key there.
    nets: Vec<(SlotKey, NetChange)>,
    net_of_op: Vec<usize>,
    /// The operations' keys with their indexes, sorted to lay out `nets`.
    keys: Vec<(SlotKey, usize)>,
    /// Slots allocated by validation; those that are not a final slot are
    /// freed when the batch ends.
    made: Vec<SlotPtr>,
    /// The changes in the order the backend hears of them, with the index
    /// of the operation each comes from.
    order: Vec<(SlotChange, usize)>,
    /// The address spaces that go through an INVALID swap, and all those
    /// the batch touches.
    invalidating: Vec<u16>,
    touched: Vec<u16>,
}

impl Scratch {
    /// Entries each buffer keeps room for between batches.
    pub(crate) const KEEP: usize = 64;

    /// The most entries any buffer has room for.
    #[cfg(test)]
    pub(crate) fn room(&self) -> usize {
        let (changes, made, order) = (self.changes.capacity(), self.made.capacity(), self.order.capacity());
        let (nets, net_of_op, keys) = (self.nets.capacity(), self.net_of_op.capacity(), self.keys.capacity());
        let ids = self.invalidating.capacity().max(self.touched.capacity());
        changes.max(made).max(order).max(nets).max(net_of_op).max(keys).max(ids)
    }

    /// Empties the buffers and gives back the memory of a large batch.
    pub(crate) fn trim(&mut self) {
        fn trim<T>(buffer: &mut Vec<T>) {
            buffer.clear();
            buffer.shrink_to(Scratch::KEEP);
        }
        trim(&mut self.changes);
        trim(&mut self.nets);
        trim(&mut self.net_of_op);
        trim(&mut self.keys);
        trim(&mut self.made);
        trim(&mut self.order);
        trim(&mut self.invalidating);
        trim(&mut self.touched);
    }
}

/// The writer's state during one batch.
pub(crate) struct Engine<'a, B> {
    inner: &'a Inner,
    backend: &'a mut B,
    scratch: &'a mut Scratch,
    total_pages: u64,
}

impl<'a, B: Backend> Engine<'a, B> {
    pub(crate) fn new(inner: &'a Inner, backend: &'a mut B, scratch: &'a mut Scratch) -> Engine<'a, B> {
        // Relaxed: only the writer reads or writes the total.
        let total_pages = inner.total_pages.load(Ordering::Relaxed);
        // `made` is empty but after a batch that unwound and poisoned the
        // map, whose slots then leak.
        scratch.changes.clear();
        scratch.made.clear();
        Engine { inner, backend, scratch, total_pages }
    }

    /// Runs `f` on the inactive set of `as_id`.
    fn edit<R>(&self, as_id: u16, f: impl FnOnce(&mut Set) -> R) -> R {
        // No reader is inside an inactive set once the grace period
        // after its swap has passed, and every swap is followed by one
        // before the engine edits (invariant 2); this is the one writer
        // (invariant 7).
        // SAFETY: as just said.
        let set = unsafe { self.inner.spaces[usize::from(as_id)].inactive() };
        // SAFETY: as above; the reference ends with `f`, and the engine
        // holds no other reference into the set meanwhile.
        f(unsafe { set.deref() })
    }

    /// Validates and applies `ops`, then publishes them; returns what each
    /// did. On error nothing is published and the inactive sets are as
    /// before.
    pub(crate) fn run(self, ops: &[Op]) -> Result<&'a [Change], BatchError> {
        // Relaxed: the flag is only set by a writer thread that unwound, and
        // the writer handoff (`writer_taken`) orders it before this load.
        if self.inner.poisoned.load(Ordering::Relaxed) {
            return Err(BatchError { index: None, error: Error::Poisoned });
        }
        // Until this returns, an unwinding panic (from a backend hook, or a
        // bug) leaves the sets out of step: poison the map then.
        let guard = PoisonOnUnwind(&self.inner.poisoned);
        let result = self.run_unguarded(ops);
        core::mem::forget(guard);
        result
    }

    fn run_unguarded(mut self, ops: &[Op]) -> Result<&'a [Change], BatchError> {
        self.lay_out(ops);
        for (index, op) in ops.iter().enumerate() {
            match self.apply(index, op.clone(), index + 1 == ops.len()) {
                Ok(change) => self.scratch.changes.push(change),
                Err(error) => return Err(self.undo(Some(index), error)),
            }
        }
        self.drop_cancelled();
        if self.scratch.nets.is_empty() {
            self.free_made(None);
            return Ok(self.changes());
        }
        let mut order = core::mem::take(&mut self.scratch.order);
        order.clear();
        for (key, net) in &self.scratch.nets {
            net.push_changes(*key, &mut order);
        }
        backend_order(&mut order);
        let refused = self.prepare(&order);
        if refused.is_none() {
            self.publish(&order);
            for (change, _) in &order {
                self.backend.commit(change);
            }
        }
        self.scratch.order = order;
        match refused {
            Some((index, error)) => Err(self.undo(index, error)),
            None => Ok(self.changes()),
        }
    }

    /// Lays out the nets: one untouched net per key of `ops`, in key order,
    /// and for each operation the position of its key's net. Sorting once
    /// keeps a batch O(n log n) with no allocation once the buffers have
    /// room.
    fn lay_out(&mut self, ops: &[Op]) {
        let Scratch { nets, net_of_op, keys, .. } = &mut *self.scratch;
        keys.clear();
        keys.extend(ops.iter().enumerate().map(|(index, op)| (op.key(), index)));
        keys.sort_unstable();
        nets.clear();
        net_of_op.clear();
        net_of_op.resize(ops.len(), 0);
        for &(key, index) in keys.iter() {
            if nets.last().is_none_or(|&(last, _)| last != key) {
                nets.push((key, NetChange::UNTOUCHED));
            }
            net_of_op[index] = nets.len() - 1;
        }
    }

    /// Refuses a batch on a thread that holds a view (the grace period would
    /// wait for it forever), then tells the backend how many changes follow
    /// and asks it to prepare every change, in `order`; on a refusal, aborts
    /// those it prepared. Returns the operation to blame, if one, and the
    /// error.
    fn prepare(&mut self, order: &[(SlotChange, usize)]) -> Option<(Option<usize>, Error)> {
        if self.inner.epochs.held_on_this_thread() {
            return Some((None, Error::ViewHeldByWriterThread));
        }
        self.backend.begin(order.len());
        for (i, &(change, index)) in order.iter().enumerate() {
            if let Err(code) = self.backend.prepare(&change) {
                for (change, _) in order[..i].iter().rev() {
                    self.backend.abort(change);
                }
                return Some((Some(index), Error::Backend { code }));
            }
        }
        None
    }

    /// What each operation did, once the batch is over.
    fn changes(self) -> &'a [Change] {
        let scratch: &'a Scratch = self.scratch;
        &scratch.changes
    }

    /// Validates one operation against the inactive set and applies it there
    /// (unless it is the `last` of the batch).
    fn apply(&mut self, index: usize, op: Op, last: bool) -> Result<Change, Error> {
        let (raw, backing) = self.resolve(op)?;
        if index == 0 {
            self.warm(&raw);
        }
        let key = raw.key();
        let mut set = None;
        let plan = plan(
            &self.inner.config,
            |as_id| {
                // SAFETY: as in `edit`; the reference ends with `plan`.
                unsafe { set.insert(self.inner.spaces[usize::from(as_id)].inactive()).deref() }
            },
            self.total_pages,
            raw,
        )?;
        #[allow(clippy::drop_non_drop)]
        drop(set); // Under loom, the end of the tracked access.
        let (old, new) = match plan {
            Plan::Unchanged => return Ok(Change::Unchanged),
            Plan::Create(region) => {
                self.total_pages += region.npages;
                (None, Some(self.alloc(Slot::created(region, backing))))
            }
            Plan::Flags(old, region) | Plan::Move(old, region) => {
                // SAFETY: `old` is in the inactive set, so it is live
                // (invariant 6).
                let successor = unsafe { old.get() }.successor(region);
                (Some(old), Some(self.alloc(successor)))
            }
            Plan::Delete(old) => {
                // SAFETY: `old` is in the inactive set, so it is live
                // (invariant 6).
                self.total_pages -= unsafe { old.get() }.npages();
                (Some(old), None)
            }
        };
        if !last {
            // `plan` found `old` in this set and checked that `new` overlaps
            // nothing but `old`; the batch frees `new` only out of every set.
            // `replace`'s contract, as just said: slot objects are
            // freed only once no set holds them (invariant 3), so `new` lives
            // while this set holds it (invariant 6).
            // SAFETY: as just said.
            self.edit(key.as_id, |set| unsafe { set.replace(old, new) });
        }
        let (net_key, net) = &mut self.scratch.nets[self.scratch.net_of_op[index]];
        debug_assert_eq!(*net_key, key, "`lay_out` keyed the operation by the slot it changes");
        if !net.touched() {
            *net = NetChange { before: old, after: old, in_inactive: old, last_op: index, invalid_copy: None };
        }
        (net.after, net.last_op) = (new, index);
        if !last {
            net.in_inactive = new;
        }
        Ok(plan.change())
    }

    /// Loads the paths that `raw` will edit in both sets of its address
    /// space at once (`set::warm`), before validation walks the inactive one
    /// and the edits walk both in turn. Done for a batch's first operation:
    /// the writer then often starts with cold caches, and later operations
    /// mostly find them warm.
    fn warm(&self, raw: &UserMemoryRegion) {
        let key = raw.key();
        if key.as_id >= self.inner.config.address_spaces {
            return;
        }
        let active = self.inner.spaces[usize::from(key.as_id)].active().0;
        // The writer reads the active set, as readers do: only the writer
        // changes a set but for its atomics (invariant 7), and only inactive
        // ones (invariant 2).
        // SAFETY: as just said.
        let active = unsafe { active.deref() };
        self.edit(key.as_id, |inactive| {
            let new = raw.guest_phys_addr >> PAGE_SHIFT;
            let old = inactive.by_id(key.id).map_or(new, Slot::base_gfn);
            let (gfns, hva) = ([old, new], raw.userspace_addr);
            set::warm(&mut [active.edit_paths(gfns, hva, key.id), inactive.edit_paths(gfns, hva, key.id)]);
        });
    }

    /// The raw request of an operation, with the single calls' own errors,
    /// and the memory behind the slot if it creates one.
    fn resolve(&self, op: Op) -> Result<(UserMemoryRegion, Backing), Error> {
        let existing = |key: SlotKey| -> Result<Region, Error> {
            self.inner.config.check_key(key)?;
            let region = self.edit(key.as_id, |set| set.by_id(key.id).map(|slot| *slot.region()));
            region.ok_or(Error::NoSuchSlot { key })
        };
        match op {
            Op::Create(region, backing) => {
                let key = region.key();
                self.inner.config.check_key(key)?;
                if region.npages == 0 {
                    return Err(Error::EmptySlot);
                }
                if existing(key).is_ok() {
                    return Err(Error::SlotExists { key });
                }
                Ok((UserMemoryRegion::try_from(region)?, backing))
            }
            Op::Delete(key) => {
                let raw = UserMemoryRegion::try_from(existing(key)?)?;
                Ok((UserMemoryRegion { memory_size: 0, ..raw }, Backing::Address))
            }
            Op::Move(key, base_gfn) => {
                Ok((UserMemoryRegion::try_from(Region { base_gfn, ..existing(key)? })?, Backing::Address))
            }
            Op::SetFlags(key, flags) => {
                Ok((UserMemoryRegion::try_from(Region { flags, ..existing(key)? })?, Backing::Address))
            }
            Op::SetRegion(raw) => Ok((raw, Backing::Address)),
        }
    }

    fn alloc(&mut self, slot: Slot) -> SlotPtr {
        let slot = alloc_slot(self.inner, slot);
        self.scratch.made.push(slot);
        slot
    }

    /// Forgets keys whose operations cancel out, putting the original slot
    /// object back where the batch made an equal copy of it.
    fn drop_cancelled(&mut self) {
        let mut nets = core::mem::take(&mut self.scratch.nets);
        nets.retain(|(key, net)| {
            let cancelled = net.cancelled();
            if cancelled && net.in_inactive != net.before {
                // `in_inactive` is in the set; `before` is live (it is in the active
                // set), and its range is `after`'s, which validation checked
                // against this set but `in_inactive`.
                // SAFETY: `replace`'s contract, as just said.
                self.edit(key.as_id, |set| unsafe { set.replace(net.in_inactive, net.before) });
            }
            !cancelled
        });
        self.scratch.nets = nets;
    }

    /// Puts the inactive sets back as they were and frees what validation
    /// made; the batch fails with `error`.
    fn undo(mut self, index: Option<usize>, error: Error) -> BatchError {
        let nets = core::mem::take(&mut self.scratch.nets);
        // Keys no operation reached are untouched: nothing to put back.
        self.rewrite(&nets, |net| net.in_inactive, |net| net.before);
        self.scratch.nets = nets;
        self.free_made(None);
        BatchError { index, error }
    }

    /// In the inactive set of every key in `nets`, replaces `from(net)` with
    /// `to(net)`: all removals first, then all insertions, so that no two
    /// slots of a set overlap at any step.
    ///
    /// One copy of the code for every pair of states (function pointers,
    /// out of line): the writer often runs with cold caches, where each
    /// line of code it runs costs a miss.
    #[inline(never)]
    fn rewrite(
        &self,
        nets: &[(SlotKey, NetChange)],
        from: fn(&NetChange) -> Option<SlotPtr>,
        to: fn(&NetChange) -> Option<SlotPtr>,
    ) {
        // Keys whose slot stays as it is are left alone.
        let changing = || nets.iter().filter(|(_, net)| from(net) != to(net));
        for (key, net) in changing() {
            if let Some(old) = from(net) {
                // SAFETY: the caller names slots the set holds; the cache
                // moves to a slot inserted below.
                self.edit(key.as_id, |set| unsafe { set.remove(old, to(net)) });
            }
        }
        for (key, net) in changing() {
            if let Some(new) = to(net) {
                // Live until the batch frees it, after it left every set; the
                // state `to` names was validated or published before; the
                // loop above removed `from(net)` with `new` as its successor.
                // SAFETY: `insert`'s contract, as just said: `new` lives while
                // the set holds it (invariant 6).
                self.edit(key.as_id, |set| unsafe { set.insert(new, from(net)) });
            }
        }
    }

    /// Frees the slots validation made, except the final slots of `keep`.
    fn free_made(&mut self, keep: Option<&[(SlotKey, NetChange)]>) {
        for slot in self.scratch.made.drain(..) {
            // SAFETY: `made` holds live slots this batch allocated.
            let key = unsafe { slot.get() }.key();
            let kept = keep.and_then(|nets| nets.binary_search_by_key(&key, |&(key, _)| key).ok().map(|i| nets[i].1));
            if kept.and_then(|net| net.after) != Some(slot) {
                // Never published, and no set holds it any more (a later
                // operation, `drop_cancelled`, `undo` or publication's
                // rewrite of what validation left replaced it).
                // SAFETY: as just said.
                unsafe { free_slot(self.inner, slot) };
            }
        }
    }

    /// Publishes the validated nets: the INVALID swap where a slot is
    /// deleted or moved, the final swap, the catch-up, then frees what left.
    fn publish(&mut self, order: &[(SlotChange, usize)]) {
        let mut nets = core::mem::take(&mut self.scratch.nets);
        for (_, net) in nets.iter_mut().filter(|(_, net)| net.invalidates()) {
            let copy = NetChange::slot(net.before).map(Slot::invalid_copy);
            net.invalid_copy = copy.map(|copy| alloc_slot(self.inner, copy));
        }
        let mut invalidating = core::mem::take(&mut self.scratch.invalidating);
        let mut touched = core::mem::take(&mut self.scratch.touched);
        address_spaces(nets.iter().filter(|(_, net)| net.invalid_copy.is_some()), &mut invalidating);
        address_spaces(nets.iter(), &mut touched);
        // The nets of the address spaces that go through an INVALID swap,
        // and those of the others (split only when a batch has both).
        let split: (Vec<_>, Vec<_>);
        let (through_invalid, direct) = if invalidating.is_empty() {
            (None, Some(&nets[..]))
        } else if invalidating.len() == touched.len() {
            (Some(&nets[..]), None)
        } else {
            split = nets.iter().partition(|(key, _)| invalidating.contains(&key.as_id));
            (Some(&split.0[..]), Some(&split.1[..]))
        };
        if let Some(some) = through_invalid {
            // Those inactive sets hold what validation left there: make it
            // the original state with INVALID copies of the deleted and moved
            // slots.
            self.rewrite(some, |net| net.in_inactive, NetChange::first_published);
            self.swap(&invalidating);
            // From here until the hooks have run, an unwinding panic (the
            // `Wait` strategy, a hook) would leave the INVALID copies
            // published for good: swap the original state back in then.
            let restore = SwapBackOnUnwind { inner: self.inner, as_ids: &invalidating };
            self.wait_grace_period();
            for (change, _) in order.iter().filter(|(change, _)| invalidates(change)) {
                self.backend.invalidated(change);
            }
            core::mem::forget(restore);
            // The sets now inactive hold the original state.
            self.rewrite(some, |net| net.before, |net| net.after);
        }
        if let Some(rest) = direct {
            // The other inactive sets get the final state.
            self.rewrite(rest, |net| net.in_inactive, |net| net.after);
        }
        // No set holds what validation made and the batch did not keep.
        self.free_made(Some(&nets));
        self.swap_and_wait(&touched);
        // Catch up the sets left behind.
        self.rewrite(&nets, NetChange::first_published, |net| net.after);
        for (_, net) in &nets {
            for slot in [net.before, net.invalid_copy].into_iter().flatten() {
                // The slot left both sets, and the grace period after the final
                // swap has passed since it was last reachable.
                // No set and no cache can hand it out and a grace
                // period has passed (invariant 3); a reader's own cache may
                // still name it, but only for an older generation, which no
                // view trusts (invariant 4).
                // SAFETY: as just said.
                unsafe { free_slot(self.inner, slot) };
            }
        }
        // Relaxed: only the writer reads or writes the total.
        self.inner.total_pages.store(self.total_pages, Ordering::Relaxed);
        (self.scratch.nets, self.scratch.invalidating, self.scratch.touched) = (nets, invalidating, touched);
    }

    /// Publishes the inactive sets of `as_ids` and waits out one grace
    /// period for all of them.
    fn swap_and_wait(&self, as_ids: &[u16]) {
        self.swap(as_ids);
        self.wait_grace_period();
    }

    /// Publishes the inactive sets of `as_ids`.
    fn swap(&self, as_ids: &[u16]) {
        for &as_id in as_ids {
            self.inner.spaces[usize::from(as_id)].swap(self.inner.config.address_spaces);
        }
    }

    /// Waits until every view that could have loaded a set made inactive by
    /// the last swaps has ended or moved on.
    fn wait_grace_period(&self) {
        self.inner.epochs.synchronize(&*self.inner.wait);
    }
}

/// Poisons the map when dropped, which only happens if the writer unwinds
/// in the middle of a batch (it is forgotten otherwise).
struct PoisonOnUnwind<'a>(&'a AtomicBool);

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        // Relaxed: see `Engine::run`.
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Publishes again the sets that were active before the INVALID swap, when
/// dropped, which only happens if the grace-period wait or a backend hook
/// unwinds after that swap (it is forgotten otherwise). The map is poisoned then and never edited again,
/// so no grace period is needed.
struct SwapBackOnUnwind<'a> {
    inner: &'a Inner,
    as_ids: &'a [u16],
}

impl Drop for SwapBackOnUnwind<'_> {
    fn drop(&mut self) {
        for &as_id in self.as_ids {
            self.inner.spaces[usize::from(as_id)].swap(self.inner.config.address_spaces);
        }
    }
}

/// The backend hears of DELETE and MOVE after the INVALID swap.
fn invalidates(change: &SlotChange) -> bool {
    matches!(change.kind(), Change::Deleted | Change::Moved)
}

/// Sets `ids` to the address spaces of some keys, ascending, once each.
fn address_spaces<'n>(nets: impl Iterator<Item = &'n (SlotKey, NetChange)>, ids: &mut Vec<u16>) {
    ids.clear();
    ids.extend(nets.map(|(key, _)| key.as_id));
    ids.sort_unstable();
    ids.dedup();
}

fn alloc_slot(inner: &Inner, slot: Slot) -> SlotPtr {
    // Relaxed: a statistic; only the writer changes it.
    inner.slot_objects.fetch_add(1, Ordering::Relaxed);
    SlotPtr::alloc(slot)
}

/// # Safety
/// As for [`SlotPtr::free`].
unsafe fn free_slot(inner: &Inner, slot: SlotPtr) {
    // Relaxed: a statistic; only the writer changes it.
    inner.slot_objects.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: per the caller.
    unsafe { slot.free() };
}
