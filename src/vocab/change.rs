//! What a change did, in the caller's words ([`Change`]) and as a backend
//! sees it ([`SlotChange`]).

use crate::vocab::slot::{Region, SlotKey};

/// What `Writer::set_region` did.
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
