//! Reader handles (one per vCPU or device thread) and pinned views.

use alloc::sync::Arc;
use core::cell::Cell;
use core::ops::Range;

use crossbeam_epoch::{Guard, LocalHandle};

use crate::addr::{Gfn, Hva};
use crate::error::Error;
use crate::set::{Hit, Set};
use crate::slot::Slot;
use crate::space::GEN_UPDATE_IN_PROGRESS;
use crate::sync::{ConstPtr, Ordering};
use crate::Inner;

/// The per-vCPU last-used slot, trusted only in the generation it was filled.
#[derive(Clone, Copy)]
struct VcpuCache {
    hit: Option<Hit>,
    generation: u64,
}

/// A thread's handle for looking up slots: one per vCPU thread
/// ([`Memslots::reader`]) or per device thread ([`Memslots::device_reader`]).
///
/// Lookups happen on a [`View`] returned by [`Reader::pin`]. A reader is not
/// `Send`: its epoch handle is bound to the thread that made it.
///
/// [`Memslots::reader`]: crate::Memslots::reader
/// [`Memslots::device_reader`]: crate::Memslots::device_reader
pub struct Reader {
    // Declared before `inner`: the handle must go before the collector it
    // belongs to (see `Inner`).
    handle: LocalHandle,
    inner: Arc<Inner>,
    as_id: u16,
    /// `Some` for vCPU readers. `None` readers use the set's shared
    /// last-used slot instead.
    vcpu_cache: Option<Cell<VcpuCache>>,
}

impl Reader {
    pub(crate) fn new(inner: Arc<Inner>, vcpu: bool) -> Reader {
        let cache = VcpuCache { hit: None, generation: GEN_UPDATE_IN_PROGRESS };
        Reader { handle: inner.collector.register(), inner, as_id: 0, vcpu_cache: vcpu.then(|| Cell::new(cache)) }
    }

    /// Pins the current thread and takes a view of the active set of the
    /// reader's address space.
    ///
    /// Until the view is dropped (or [`View::repin`]ned) the writer cannot
    /// finish a change, so do not hold a view across `KVM_RUN` or any other
    /// blocking call. Pinning costs a fence (about 14 ns); look up many
    /// addresses under one view where you can.
    #[inline]
    pub fn pin(&self) -> View<'_> {
        View::new(self, self.handle.pin())
    }

    /// The address space lookups use.
    pub fn address_space(&self) -> u16 {
        self.as_id
    }

    /// Looks up in address space `as_id` from now on.
    pub fn set_address_space(&mut self, as_id: u16) -> Result<(), Error> {
        if as_id >= self.inner.limits.address_spaces {
            return Err(Error::InvalidAddressSpace { as_id: as_id.into() });
        }
        self.as_id = as_id;
        Ok(())
    }

    /// Enters or leaves System Management Mode: a vCPU in SMM looks up in
    /// address space 1, where SMRAM lives.
    pub fn set_smm(&mut self, smm: bool) -> Result<(), Error> {
        self.set_address_space(u16::from(smm))
    }

    /// Whether the reader keeps a per-vCPU cache.
    pub fn is_vcpu(&self) -> bool {
        self.vcpu_cache.is_some()
    }
}

/// A pinned, consistent view of one address space: every lookup on it sees
/// the same set. Slots it returns live as long as the view.
pub struct View<'r> {
    reader: &'r Reader,
    // Declared before `guard`: the access to the set ends before the pin.
    set: ConstPtr<Set>,
    generation: u64,
    guard: Guard,
}

impl<'r> View<'r> {
    fn new(reader: &'r Reader, guard: Guard) -> View<'r> {
        let set = reader.inner.spaces[usize::from(reader.as_id)].active();
        // SAFETY: pinned, and the set was active after the pin.
        let generation = unsafe { set.deref() }.generation.load(Ordering::Relaxed);
        // Relaxed: the generation was stored before the set's publication,
        // which the Acquire load in `active` synchronizes with.
        View { reader, set, generation, guard }
    }

    #[inline]
    fn set(&self) -> &Set {
        // The writer edits a set only a grace period after it stopped being
        // active, and that grace period waits for this view's guard.
        // SAFETY: pinned, and the set was active after the pin (see above).
        unsafe { self.set.deref() }
    }

    /// Leaves the epoch and pins again, taking a view of the current state.
    /// A device loop calls this at its quiescent points so the writer can
    /// make progress without paying for a full unpin and pin.
    pub fn repin(self) -> View<'r> {
        let View { reader, set, mut guard, .. } = self;
        // End the access to the set before leaving the epoch (under loom the
        // access is tracked and has a destructor).
        #[allow(clippy::drop_non_drop)]
        drop(set);
        guard.repin();
        View::new(reader, guard)
    }

    /// The generation of the viewed set. It changes with every published
    /// update; while an update is being published it may carry the top bit,
    /// and a value with that bit never matches a later generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The address space of the view.
    pub fn address_space(&self) -> u16 {
        self.reader.as_id
    }

    /// The slot holding `gfn`.
    #[inline]
    pub fn gfn_to_slot(&self, gfn: Gfn) -> Option<&Slot> {
        let hit = self.hit(gfn)?;
        // SAFETY: the hit is from the viewed set (a cached one only in the
        // generation it was filled), which the guard keeps alive (see `set`).
        let slot = unsafe { hit.entry.slot.get() };
        slot.touch();
        Some(slot)
    }

    /// The host address backing `gfn`. This reads only the gfn index (or
    /// the cache), never the slot object.
    #[inline]
    pub fn gfn_to_hva(&self, gfn: Gfn) -> Option<Hva> {
        self.hit(gfn)?.hva(gfn)
    }

    /// The usable slot holding `gfn`, through the reader's cache.
    #[inline]
    fn hit(&self, gfn: Gfn) -> Option<Hit> {
        let set = self.set();
        let Some(cache) = &self.reader.vcpu_cache else {
            if let Some(slot) = set.last_used().filter(|slot| slot.contains(gfn)) {
                return usable(slot).map(Hit::of);
            }
            let hit = set.lookup(gfn)?;
            set.set_last_used(hit.entry.slot);
            return Some(hit);
        };
        let cached = cache.get();
        if cached.generation == self.generation {
            if let Some(hit) = cached.hit.filter(|hit| hit.contains(gfn)) {
                return Some(hit);
            }
        }
        let hit = set.lookup(gfn)?;
        if self.generation & GEN_UPDATE_IN_PROGRESS == 0 {
            cache.set(VcpuCache { hit: Some(hit), generation: self.generation });
        }
        Some(hit)
    }

    /// Exactly the slots intersecting `gfns`, in gfn order.
    pub fn slots_in_gfn_range(&self, gfns: Range<Gfn>) -> impl Iterator<Item = &Slot> + '_ {
        self.set().in_gfn_range(gfns).filter_map(usable)
    }

    /// The slots whose host range intersects `hvas`, by host address; for
    /// host-side invalidation (an `munmap`, a page migrating).
    pub fn slots_in_hva_range(&self, hvas: Range<Hva>) -> impl Iterator<Item = &Slot> + '_ {
        self.set().in_hva_range(hvas).filter_map(usable)
    }

    /// The slot with id `id`.
    pub fn slot_by_id(&self, id: u16) -> Option<&Slot> {
        self.set().by_id(id).and_then(usable)
    }

    /// Every usable slot, by id.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.set().slots().filter_map(usable)
    }
}

/// A slot a lookup may return: not one being deleted or moved.
#[inline]
fn usable(slot: &Slot) -> Option<&Slot> {
    slot.touch();
    (!slot.is_invalid()).then_some(slot)
}
