//! What a change did, in the caller's words ([`Change`]) and as a backend
//! sees it ([`SlotChange`]).

use crate::vocab::slot::{Region, SlotKey};

/// What a writer call did ([`Writer::set_region`](crate::Writer::set_region)
/// and the other single calls return it; [`Batch::commit`](crate::Batch::commit)
/// returns one per operation).
///
/// ```
/// use memslots::{Change, Config, Flags, Memslots, Region};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// let mut batch = writer.batch();
/// batch.create(region).set_flags(region.key(), Flags::LOG_DIRTY_PAGES).move_to(region.key(), 0x100);
/// assert_eq!(batch.commit().map_err(|e| e.error)?, [Change::Created, Change::FlagsChanged, Change::Moved]);
/// assert_eq!(writer.set_flags(region.key(), Flags::LOG_DIRTY_PAGES)?, Change::Unchanged);
/// assert_eq!(writer.delete(region.key())?, Change::Deleted);
/// # Ok::<(), memslots::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new slot.
    Created,
    /// The slot was removed.
    Deleted,
    /// The slot moved to a new guest address.
    Moved,
    /// Only the flags changed.
    FlagsChanged,
    /// The parameters matched the slot: nothing was done.
    Unchanged,
}

/// One net change of a writer call or batch, as a backend sees it.
///
/// ```
/// use memslots::{Change, Flags, Region, SlotChange};
///
/// let old = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// let moved = SlotChange { key: old.key(), old: Some(old), new: Some(Region { base_gfn: 0x100, ..old }) };
/// assert_eq!(moved.kind(), Change::Moved);
/// let deleted = SlotChange { new: None, ..moved };
/// assert_eq!(deleted.kind(), Change::Deleted);
/// ```
///
/// The [`Backend`](crate::Backend) docs show the changes a writer hands a
/// backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotChange {
    /// The slot.
    pub key: SlotKey,
    /// The slot before the call, if it existed.
    pub old: Option<Region>,
    /// The slot after the call, if it exists.
    pub new: Option<Region>,
}

impl SlotChange {
    /// What the change does.
    pub fn kind(&self) -> Change {
        match (self.old, self.new) {
            (None, Some(_)) => Change::Created,
            (Some(_), None) => Change::Deleted,
            (Some(old), Some(new)) if old.base_gfn != new.base_gfn => Change::Moved,
            (Some(old), Some(new)) if old.flags != new.flags => Change::FlagsChanged,
            _ => Change::Unchanged,
        }
    }
}
