//! The single writer: validates a change, then publishes it through the
//! inactive set, swaps, waits out a grace period and catches the other set up.

use alloc::sync::Arc;

use crossbeam_epoch::LocalHandle;
use crossbeam_utils::Backoff;

use crate::addr::Gfn;
use crate::error::Error;
use crate::plan::{check_frames, plan, Change, Plan, RawRegion};
use crate::slot::{Flags, Region, SlotKey, SlotPtr};
use crate::space::AddressSpace;
use crate::sync::Ordering;
use crate::Inner;

/// The one handle that changes slots. Get it with [`Memslots::writer`];
/// dropping it lets another be made.
///
/// Every method either applies its whole change or returns an error and
/// changes nothing. A change returns once both sets hold it, so it waits for
/// a grace period: every reader view pinned before the change must end (or
/// `repin`). A view held on the writer's own thread therefore deadlocks, and
/// so does one held across a blocking call such as `KVM_RUN`.
///
/// The writer is not `Send`: it keeps its own epoch handle, bound to the
/// thread that made it.
///
/// [`Memslots::writer`]: crate::Memslots::writer
pub struct Writer {
    // Declared before `inner`: the handle must go before the collector it
    // belongs to (see `Inner`).
    handle: LocalHandle,
    inner: Arc<Inner>,
    /// Loom's negative control: skip the grace-period wait, which the model
    /// checker must then catch.
    #[cfg(loom)]
    skip_grace_period: bool,
}

impl Writer {
    pub(crate) fn new(inner: Arc<Inner>) -> Writer {
        Writer {
            handle: inner.collector.register(),
            inner,
            #[cfg(loom)]
            skip_grace_period: false,
        }
    }

    /// Adds a slot. Fails with [`Error::SlotExists`] if its id is taken, and
    /// with the rules of [`Writer::set_region`] otherwise.
    pub fn create(&mut self, region: Region) -> Result<(), Error> {
        self.inner.limits.check_key(region.key())?;
        if region.npages == 0 {
            return Err(Error::EmptySlot);
        }
        if self.existing(region.key()).is_ok() {
            return Err(Error::SlotExists { key: region.key() });
        }
        check_frames(region.base_gfn, region.npages)?;
        self.apply(RawRegion::from_region(&region)).map(drop)
    }

    /// Removes a slot. Readers stop seeing it before the call returns.
    pub fn delete(&mut self, key: SlotKey) -> Result<(), Error> {
        let old = self.existing(key)?;
        self.apply(RawRegion { size: 0, ..RawRegion::from_region(&old) }).map(drop)
    }

    /// Moves a slot to `base_gfn`, keeping its size, host address and flags.
    pub fn move_to(&mut self, key: SlotKey, base_gfn: Gfn) -> Result<(), Error> {
        let old = self.existing(key)?;
        check_frames(base_gfn, old.npages)?;
        self.apply(RawRegion::from_region(&Region { base_gfn, ..old })).map(drop)
    }

    /// Changes a slot's flags. `READONLY` cannot be toggled.
    pub fn set_flags(&mut self, key: SlotKey, flags: Flags) -> Result<(), Error> {
        let old = self.existing(key)?;
        self.apply(RawRegion::from_region(&Region { flags, ..old })).map(drop)
    }

    /// `KVM_SET_USER_MEMORY_REGION`: sets slot `id` of address space `as_id`
    /// to `size` bytes at guest address `gpa`, backed from host address
    /// `hva`, with raw `flags` bits.
    ///
    /// A size of 0 deletes the slot; an existing slot at another guest
    /// address moves; other flags change the flags; identical parameters
    /// succeed and change nothing (no swap, no new generation). The rules and
    /// their order are KVM's, listed in the `plan` module docs.
    pub fn set_region(
        &mut self,
        id: u32,
        as_id: u32,
        gpa: u64,
        size: u64,
        hva: u64,
        flags: u32,
    ) -> Result<Change, Error> {
        self.apply(RawRegion { id, as_id, gpa, size, hva, flags })
    }

    /// Loom's negative control: a writer that skips the grace-period wait.
    /// The protocol is then broken, and the loom suite expects to catch it.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn loom_skip_grace_period(&mut self) {
        self.skip_grace_period = true;
    }

    /// The region of an existing slot, after checking its key.
    fn existing(&self, key: SlotKey) -> Result<Region, Error> {
        self.inner.limits.check_key(key)?;
        let active = self.inner.spaces[usize::from(key.as_id)].active();
        // SAFETY: shared read; only this writer mutates sets, and not now.
        let set = unsafe { active.deref() };
        set.by_id(key.id).map(|slot| *slot.region()).ok_or(Error::NoSuchSlot { key })
    }

    fn apply(&mut self, raw: RawRegion) -> Result<Change, Error> {
        let total = self.inner.total_pages.load(Ordering::Relaxed);
        let plan = {
            let spaces = &self.inner.spaces;
            let mut active = None;
            plan(
                &self.inner.limits,
                |as_id| {
                    // SAFETY: shared read; only this writer mutates sets, and
                    // not while planning.
                    unsafe { active.insert(spaces[usize::from(as_id)].active()).deref() }
                },
                total,
                raw,
            )?
        };
        let change = plan.change();
        self.commit(plan);
        Ok(change)
    }

    fn commit(&mut self, plan: Plan) {
        match plan {
            Plan::Unchanged => {}
            Plan::Create(region) => {
                let new = self.alloc(region);
                self.replace_everywhere(region.as_id, None, Some(new));
                self.add_total_pages(region.npages, true);
            }
            Plan::Flags(old, region) => {
                let new = self.alloc(region);
                self.replace_everywhere(region.as_id, Some(old), Some(new));
                self.free(old);
            }
            Plan::Move(old, region) => {
                let new = self.alloc(region);
                self.replace_through_invalid(region.as_id, old, Some(new));
            }
            Plan::Delete(old) => {
                // SAFETY: `old` is in the writer's sets.
                let region = *unsafe { old.get() }.region();
                self.replace_through_invalid(region.as_id, old, None);
                self.add_total_pages(region.npages, false);
            }
        }
    }

    /// CREATE and FLAGS_ONLY: publish the change, then catch the other set up.
    fn replace_everywhere(&mut self, as_id: u16, old: Option<SlotPtr>, new: Option<SlotPtr>) {
        self.publish(as_id, old, new);
        self.edit_inactive(as_id, old, new);
    }

    /// DELETE and MOVE: first publish an INVALID copy of `old`, so readers see
    /// no usable slot there, then publish the final state and catch up.
    fn replace_through_invalid(&mut self, as_id: u16, old: SlotPtr, new: Option<SlotPtr>) {
        // SAFETY: `old` is in the writer's sets.
        let region = *unsafe { old.get() }.region();
        let invalid = self.alloc(Region { flags: region.flags | Flags::INVALID, ..region });
        self.publish(as_id, Some(old), Some(invalid));
        // The set now inactive still holds `old`; the active one `invalid`.
        self.publish(as_id, Some(old), new);
        self.edit_inactive(as_id, Some(invalid), new);
        self.free(old);
        self.free(invalid);
    }

    /// Applies a replacement to the inactive set, makes it active, and waits
    /// until no reader can be in the set that was active before.
    fn publish(&mut self, as_id: u16, old: Option<SlotPtr>, new: Option<SlotPtr>) {
        self.edit_inactive(as_id, old, new);
        let space = &self.inner.spaces[usize::from(as_id)];
        // SAFETY: this is the writer, holding no reference into the sets.
        unsafe { space.swap(self.inner.limits.address_spaces) };
        self.wait_grace_period();
    }

    fn edit_inactive(&mut self, as_id: u16, old: Option<SlotPtr>, new: Option<SlotPtr>) {
        let space: &AddressSpace = &self.inner.spaces[usize::from(as_id)];
        // SAFETY: this is the writer, and every swap is followed by a grace
        // period, so no reader is inside the inactive set.
        let inactive = unsafe { space.inactive() };
        // SAFETY: as above; the reference ends with this statement.
        unsafe { inactive.deref() }.replace(old, new);
    }

    /// Returns once every reader pinned before the call has unpinned.
    ///
    /// A deferred closure runs only after all guards that were pinned when it
    /// was deferred are gone; it only stores a flag, so a reader that runs it
    /// during its own `pin` does a bounded amount of work and frees nothing.
    fn wait_grace_period(&self) {
        #[cfg(loom)]
        if self.skip_grace_period {
            return;
        }
        assert!(!self.handle.is_pinned(), "grace-period wait while pinned would deadlock");
        let done = &self.inner.grace_done;
        // Relaxed: only the writer advances the ticket, and every earlier
        // ticket's store has been seen by an earlier wait.
        let ticket = done.load(Ordering::Relaxed) + 1;
        let guard = self.handle.pin();
        // The closure borrows `Inner::grace_done`. `Inner` drops its collector
        // first, and dropping the collector runs what is still pending.
        // Release: pairs with the Acquire load below, so the readers' accesses
        // that the epoch advance waited for happen before the next edit.
        // SAFETY: `grace_done` outlives every deferred closure (see above).
        unsafe { guard.defer_unchecked(move || done.store(ticket, Ordering::Release)) };
        guard.flush();
        drop(guard);
        let backoff = Backoff::new();
        // Acquire: pairs with the Release store in the deferred closure.
        while done.load(Ordering::Acquire) < ticket {
            self.handle.pin().flush();
            crate::sync::snooze(&backoff);
        }
    }

    fn alloc(&self, region: Region) -> SlotPtr {
        // Relaxed: a statistic; only the writer changes it.
        self.inner.slot_objects.fetch_add(1, Ordering::Relaxed);
        SlotPtr::alloc(region)
    }

    fn free(&self, slot: SlotPtr) {
        // Relaxed: a statistic; only the writer changes it.
        self.inner.slot_objects.fetch_sub(1, Ordering::Relaxed);
        // Callers free a slot only after it left both sets and the last-used
        // caches (`Set::replace` moves them) and a grace period passed;
        // per-vCPU caches are trusted only in the generation they were filled.
        // SAFETY: nothing can reach the slot any more (see above).
        unsafe { slot.free() };
    }

    fn add_total_pages(&self, npages: u64, add: bool) {
        let total = &self.inner.total_pages;
        // Relaxed: only the writer reads or writes the total.
        let value = total.load(Ordering::Relaxed);
        total.store(if add { value + npages } else { value - npages }, Ordering::Relaxed);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Release: pairs with the Acquire compare-exchange in
        // `Memslots::writer`, handing the sets over to the next writer.
        self.inner.writer_taken.store(false, Ordering::Release);
    }
}
