//! The operations a writer call or a batch is made of (a single call is a
//! batch of one), and the error of a refused batch.

use core::fmt;

use crate::base::addr::Gfn;
use crate::error::Error;
use crate::memory::backing::Backing;
use crate::vocab::{Flags, Region, SlotKey, UserMemoryRegion};

/// One operation of a batch (a single writer call is a batch of one).
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Create(Region, Backing),
    Delete(SlotKey),
    Move(SlotKey, Gfn),
    SetFlags(SlotKey, Flags),
    SetRegion(UserMemoryRegion),
}

impl Op {
    /// The slot the operation changes.
    pub(crate) fn key(&self) -> SlotKey {
        match self {
            Op::Create(region, _) => region.key(),
            Op::Delete(key) | Op::Move(key, _) | Op::SetFlags(key, _) => *key,
            Op::SetRegion(raw) => raw.key(),
        }
    }
}

/// Why a batch was refused; nothing of it was applied.
///
/// ```
/// use memslots::{BatchError, Config, Error, Flags, Memslots, Region};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// let low = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// let clash = Region { id: 1, base_gfn: 8, hva: 0x7f00_1000_0000, ..low };
/// let mut batch = writer.batch();
/// batch.create(low).create(clash); // operation 1 overlaps operation 0
/// let refused = batch.commit().err().expect("an overlap is refused");
/// assert_eq!(refused, BatchError { index: Some(1), error: Error::Overlap { key: clash.key(), with: low.key() } });
/// assert_eq!(refused.to_string(), "batch operation 1: slot 0:1 would overlap slot 0:0");
/// assert_eq!(slots.reader().pin().slots().count(), 0); // nothing applied
/// // For `?` in a function returning `Error`, take the error alone.
/// let mut batch = writer.batch();
/// batch.create(low);
/// batch.commit().map_err(|e| e.error)?;
/// # Ok::<(), memslots::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchError {
    /// The operation that failed, counting from 0; `None` for a refusal of
    /// the whole batch.
    pub index: Option<usize>,
    /// What the operation (or the batch) got.
    pub error: Error,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "batch operation {index}: {}", self.error),
            None => write!(f, "batch: {}", self.error),
        }
    }
}

impl core::error::Error for BatchError {}
