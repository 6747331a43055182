//! The kernel's own words for the crate's errors: [`Error::errno`] gives the
//! errno that Linux KVM returns for the same refusal.
//!
//! The reference is `kvm_set_memory_region` in `virt/kvm/kvm_main.c`: every
//! sanity check there returns `-EINVAL` (unknown flags, unaligned size,
//! guest or host address, a wrapping range, an address space or slot id out
//! of range, too many pages, deleting a slot that does not exist, a new
//! size, host address or READONLY bit on an existing slot, the page total
//! overflowing), and an overlap with another slot returns `-EEXIST`.
//! `KVM_GET_DIRTY_LOG` on a slot without a dirty log returns `-ENOENT`, and
//! `KVM_CLEAR_DIRTY_LOG` with a bad range `-EINVAL`.
//!
//! Where the crate refuses something KVM has no refusal for, the errno is
//! the closest POSIX meaning, and says so below.

use super::Error;

/// Linux errno values (the generic ones: x86, arm64, riscv), from `libc`
/// where it is available.
mod code {
    #[cfg(feature = "std")]
    pub(super) use libc::{EDEADLK, EEXIST, EINVAL, EIO, ENOENT};

    #[cfg(not(feature = "std"))]
    mod generic {
        pub(crate) const ENOENT: i32 = 2;
        pub(crate) const EIO: i32 = 5;
        pub(crate) const EEXIST: i32 = 17;
        pub(crate) const EINVAL: i32 = 22;
        pub(crate) const EDEADLK: i32 = 35;
    }
    #[cfg(not(feature = "std"))]
    pub(super) use generic::{EDEADLK, EEXIST, EINVAL, EIO, ENOENT};
}

impl Error {
    /// The errno Linux KVM returns for the same refusal (a positive number:
    /// `EINVAL`, `EEXIST`, ...), so that a VMM that used to call
    /// `KVM_SET_USER_MEMORY_REGION` itself can report the same code.
    ///
    /// | variant | errno | KVM's reason |
    /// |---|---|---|
    /// | [`Overlap`](Error::Overlap) | `EEXIST` | `kvm_check_memslot_overlap` |
    /// | [`SlotExists`](Error::SlotExists) | `EEXIST` | no KVM equivalent (`create` of a used id); the id is taken |
    /// | [`DirtyLogDisabled`](Error::DirtyLogDisabled) | `ENOENT` | `KVM_GET_DIRTY_LOG` on a slot without a log |
    /// | [`Backend`](Error::Backend) | its `code` | the `kvm` backend's code is the errno of the refused ioctl |
    /// | [`MapFailed`](Error::MapFailed) | its `errno` | `mmap`'s errno |
    /// | [`ViewHeldByWriterThread`](Error::ViewHeldByWriterThread) | `EDEADLK` | no KVM equivalent: the change would wait for its own thread |
    /// | [`Poisoned`](Error::Poisoned) | `EIO` | no KVM equivalent: the map's state is broken |
    /// | [`TotalPagesExceeded`](Error::TotalPagesExceeded) | `EINVAL` | the page total overflowing |
    /// | [`BeyondPhysAddrWidth`](Error::BeyondPhysAddrWidth) | `EINVAL` | x86's `kvm_arch_prepare_memory_region` (a slot past `kvm_mmu_max_gfn`) |
    /// | [`NoSuchSlot`](Error::NoSuchSlot) | `EINVAL` | deleting a slot that does not exist (`KVM_GET_DIRTY_LOG` says `ENOENT` there) |
    /// | every other variant | `EINVAL` | the sanity checks of `kvm_set_memory_region` |
    ///
    /// ```
    /// use memslots::{Config, Error, Flags, Memslots, Region};
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let low = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(low)?;
    /// let overlap = writer.create(Region { id: 1, ..low }).err().expect("the range is taken");
    /// assert_eq!(overlap.errno(), libc::EEXIST);
    /// let no_log = writer.get_dirty_log(low.key()).err().expect("no dirty log");
    /// assert_eq!(no_log.errno(), libc::ENOENT);
    /// assert_eq!(Error::GpaWraps.errno(), libc::EINVAL);
    /// assert_eq!(Error::Backend { code: libc::ENOSPC }.errno(), libc::ENOSPC);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn errno(&self) -> i32 {
        use code::*;
        // Exhaustive on purpose: a new variant must say which errno it is.
        match *self {
            Error::Overlap { .. } | Error::SlotExists { .. } => EEXIST,
            Error::DirtyLogDisabled { .. } => ENOENT,
            Error::Backend { code } => code,
            Error::MapFailed { errno } => errno,
            Error::ViewHeldByWriterThread => EDEADLK,
            Error::Poisoned => EIO,
            Error::InvalidConfig
            | Error::WriterBusy
            | Error::UnknownFlags { .. }
            | Error::ReadonlyToggle { .. }
            | Error::UnalignedSize { .. }
            | Error::UnalignedGpa { .. }
            | Error::UnalignedHva { .. }
            | Error::GpaWraps
            | Error::HvaWraps
            | Error::SlotTooLarge { .. }
            | Error::EmptySlot
            | Error::TotalPagesExceeded { .. }
            | Error::InvalidSlotId { .. }
            | Error::InvalidAddressSpace { .. }
            | Error::NoSuchSlot { .. }
            | Error::Resize { .. }
            | Error::HvaChange { .. }
            | Error::BeyondPhysAddrWidth { .. }
            | Error::DirtyLogRange { .. } => EINVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::code::*;
    use crate::error::Error;
    use crate::vocab::SlotKey;

    #[test]
    fn kvm_errnos() {
        let key = SlotKey { id: 1, as_id: 0 };
        assert_eq!(Error::Overlap { key, with: SlotKey { id: 2, as_id: 0 } }.errno(), EEXIST);
        assert_eq!(Error::UnknownFlags { bits: 4 }.errno(), EINVAL);
        assert_eq!(Error::NoSuchSlot { key }.errno(), EINVAL);
        assert_eq!(Error::DirtyLogDisabled { key }.errno(), ENOENT);
        assert_eq!(Error::Backend { code: 28 }.errno(), 28);
        assert_eq!(Error::MapFailed { errno: 12 }.errno(), 12);
        assert_eq!((EINVAL, EEXIST, ENOENT, EIO, EDEADLK), (22, 17, 2, 5, 35));
    }
}
