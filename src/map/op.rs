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
