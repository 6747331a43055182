//! Layer 3: the errors the writer and configuration return, and the errno
//! KVM gives for each (`errno`). On the vocabulary only.

mod errno;

use core::fmt;

use crate::base::addr::PAGE_SHIFT;
use crate::vocab::slot::{check_frames, FrameError, Region, SlotKey, UserMemoryRegion};

/// Why a request was refused. Every refusal leaves the slots, caches and
/// generations exactly as they were.
///
/// ```
/// use memslots::{Config, Error, Flags, Memslots, Region};
///
/// let slots = Memslots::new(Config::default())?;
/// let mut writer = slots.writer()?;
/// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// writer.create(region)?;
/// let generation = slots.reader().pin().generation();
///
/// let resized = Region { npages: 32, ..region };
/// let error = writer.set_region(resized.try_into()?).err().expect("a resize is refused");
/// assert_eq!(error, Error::Resize { key: region.key() });
/// assert_eq!(error.to_string(), "slot 0:0 cannot be resized");
/// assert_eq!(error.errno(), libc::EINVAL); // as KVM would say
/// assert_eq!(slots.reader().pin().generation(), generation); // nothing changed
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (no address space, no slot, or a
    /// physical address width outside 13..=64 bits).
    InvalidConfig,
    /// Another writer is alive; there is exactly one at a time.
    WriterBusy,
    /// Flag bits outside `LOG_DIRTY_PAGES | READONLY`.
    UnknownFlags {
        /// The unknown bits.
        bits: u32,
    },
    /// `READONLY` may not be toggled on an existing slot.
    ReadonlyToggle {
        /// The slot.
        key: SlotKey,
    },
    /// The size is not a multiple of the page size.
    UnalignedSize {
        /// The size given, in bytes.
        size: u64,
    },
    /// The guest physical address is not page aligned.
    UnalignedGpa {
        /// The address given.
        gpa: u64,
    },
    /// The host virtual address is not page aligned.
    UnalignedHva {
        /// The address given.
        hva: u64,
    },
    /// The guest range wraps around the end of the guest address space.
    GpaWraps,
    /// The host range wraps around the end of the host address space.
    HvaWraps,
    /// More than `MAX_SLOT_PAGES` (2^31 - 1) pages in one slot.
    SlotTooLarge {
        /// The pages asked for.
        npages: u64,
    },
    /// A new slot of zero pages (a size of zero means delete in
    /// `set_region`).
    EmptySlot,
    /// The total number of pages in all slots would pass the configured limit.
    TotalPagesExceeded {
        /// The configured limit.
        limit: u64,
    },
    /// The slot id is not below the configured number of slots.
    InvalidSlotId {
        /// The id given.
        id: u32,
    },
    /// The address space does not exist.
    InvalidAddressSpace {
        /// The address space given.
        as_id: u32,
    },
    /// No slot with this key exists.
    NoSuchSlot {
        /// The key given.
        key: SlotKey,
    },
    /// `create` of a slot id that is already in use.
    SlotExists {
        /// The key given.
        key: SlotKey,
    },
    /// An existing slot's size may not change (delete and re-create it).
    Resize {
        /// The slot.
        key: SlotKey,
    },
    /// An existing slot's host address may not change (delete and re-create
    /// it).
    HvaChange {
        /// The slot.
        key: SlotKey,
    },
    /// The change would wait for a grace period that a view held on the
    /// calling thread blocks forever; drop the view first. Detected with
    /// `std` only: without it such a change never returns (the map's
    /// [`Wait`](crate::Wait) strategy still reports the stall).
    ViewHeldByWriterThread,
    /// The backend refused the change ([`Backend::prepare`](crate::Backend::prepare));
    /// for the `kvm` backend the code is the errno.
    Backend {
        /// The backend's code.
        code: i32,
    },
    /// The slot does not log dirty pages (no `LOG_DIRTY_PAGES`).
    DirtyLogDisabled {
        /// The slot.
        key: SlotKey,
    },
    /// A dirty-log clear whose first page is not a multiple of 64 or whose
    /// mask runs past the slot.
    DirtyLogRange {
        /// The slot.
        key: SlotKey,
    },
    /// Mapping guest RAM failed ([`GuestRam::new`](crate::GuestRam::new)).
    MapFailed {
        /// The errno of `mmap`.
        errno: i32,
    },
    /// A writer panicked in the middle of a change (in a backend hook, for
    /// example): readers still see a consistent published layout, but the
    /// two sets may be out of step, so every writer call is refused. The
    /// slot objects the change had made and not yet put in both sets are
    /// leaked, not freed: nothing can tell any more which reader may reach
    /// them.
    Poisoned,
    /// The slot would reach past the guest physical address width
    /// ([`Config::phys_addr_bits`](crate::Config::phys_addr_bits)), as KVM
    /// on x86 refuses (`kvm_arch_prepare_memory_region`).
    BeyondPhysAddrWidth {
        /// The slot being created or moved.
        key: SlotKey,
        /// The width in bits.
        bits: u8,
    },
    /// The new guest range overlaps another slot of the same address space.
    Overlap {
        /// The slot being created or moved.
        key: SlotKey,
        /// The slot it collides with.
        with: SlotKey,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig => {
                write!(f, "configuration needs an address space, a slot and an address width of 13 to 64 bits")
            }
            Error::WriterBusy => write!(f, "another writer is active"),
            Error::UnknownFlags { bits } => write!(f, "unknown slot flag bits {bits:#x}"),
            Error::ReadonlyToggle { key } => write!(f, "READONLY cannot change on existing slot {key}"),
            Error::UnalignedSize { size } => write!(f, "size {size:#x} is not page aligned"),
            Error::UnalignedGpa { gpa } => write!(f, "guest address {gpa:#x} is not page aligned"),
            Error::UnalignedHva { hva } => write!(f, "host address {hva:#x} is not page aligned"),
            Error::GpaWraps => write!(f, "guest range wraps the guest address space"),
            Error::HvaWraps => write!(f, "host range wraps the host address space"),
            Error::SlotTooLarge { npages } => write!(f, "{npages} pages exceed the per-slot maximum"),
            Error::EmptySlot => write!(f, "a slot needs at least one page"),
            Error::TotalPagesExceeded { limit } => write!(f, "total pages would exceed the limit of {limit}"),
            Error::InvalidSlotId { id } => write!(f, "slot id {id} is out of range"),
            Error::InvalidAddressSpace { as_id } => write!(f, "address space {as_id} does not exist"),
            Error::NoSuchSlot { key } => write!(f, "no slot {key}"),
            Error::SlotExists { key } => write!(f, "slot {key} already exists"),
            Error::Resize { key } => write!(f, "slot {key} cannot be resized"),
            Error::HvaChange { key } => write!(f, "slot {key} cannot change its host address"),
            Error::ViewHeldByWriterThread => {
                write!(f, "the writer's thread holds a view, so the change could never finish")
            }
            Error::Backend { code } => write!(f, "the backend refused the change (code {code})"),
            Error::DirtyLogDisabled { key } => write!(f, "slot {key} does not log dirty pages"),
            Error::DirtyLogRange { key } => write!(f, "dirty-log range out of bounds for slot {key}"),
            Error::MapFailed { errno } => write!(f, "mapping guest RAM failed (errno {errno})"),
            Error::Poisoned => write!(f, "a writer panicked in the middle of a change; the slot map is poisoned"),
            Error::Overlap { key, with } => write!(f, "slot {key} would overlap slot {with}"),
            Error::BeyondPhysAddrWidth { key, bits } => {
                write!(f, "slot {key} would reach past the {bits}-bit guest physical address space")
            }
        }
    }
}

impl core::error::Error for Error {}

impl From<FrameError> for Error {
    fn from(error: FrameError) -> Error {
        match error {
            FrameError::TooLarge { npages } => Error::SlotTooLarge { npages },
            FrameError::Wraps => Error::GpaWraps,
        }
    }
}

impl TryFrom<Region> for UserMemoryRegion {
    type Error = Error;

    /// The request that sets a slot to `region`.
    ///
    /// # Errors
    /// [`Error::SlotTooLarge`] for more than
    /// [`MAX_SLOT_PAGES`](crate::MAX_SLOT_PAGES) pages, and
    /// [`Error::GpaWraps`] for a range that does not fit a byte address.
    fn try_from(region: Region) -> Result<UserMemoryRegion, Error> {
        check_frames(region.base_gfn, region.npages)?;
        Ok(UserMemoryRegion {
            slot: region.key().kvm_slot(),
            flags: region.flags,
            guest_phys_addr: region.base_gfn << PAGE_SHIFT,
            memory_size: region.npages << PAGE_SHIFT,
            userspace_addr: region.hva,
        })
    }
}
