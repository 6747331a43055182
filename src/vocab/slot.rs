//! The words for a slot that every layer speaks: its key, its flags, the
//! region a caller describes, KVM's request shape, and the frame checks that
//! need nothing but numbers.

use core::fmt;

use crate::base::addr::{Gfn, Hva, GFN_LIMIT, MAX_SLOT_PAGES};

bitflags::bitflags! {
    /// Slot flags, with KVM's bit values. Unknown bits are kept (see
    /// [`Flags::from_bits_retain`]) so that validation can name them.
    ///
    /// ```
    /// use memslots::{Config, Error, Flags, Memslots, Region};
    ///
    /// // KVM_MEM_LOG_DIRTY_PAGES and KVM_MEM_READONLY.
    /// assert_eq!((Flags::LOG_DIRTY_PAGES | Flags::READONLY).bits(), 0b11);
    ///
    /// let slots = Memslots::new(Config::default())?;
    /// let mut writer = slots.writer()?;
    /// let region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    /// writer.create(region)?;
    /// let unknown = Flags::from_bits_retain(1 << 2);
    /// assert_eq!(writer.set_flags(region.key(), unknown), Err(Error::UnknownFlags { bits: 1 << 2 }));
    /// # Ok::<(), Error>(())
    /// ```
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Flags: u32 {
        /// Dirty pages are logged.
        const LOG_DIRTY_PAGES = 1 << 0;
        /// The guest may not write through this slot.
        const READONLY = 1 << 1;
    }
}

/// Names a slot: its id within its address space.
///
/// ```
/// use memslots::SlotKey;
///
/// let key = SlotKey { id: 5, as_id: 1 };
/// assert_eq!(key.to_string(), "1:5"); // address space, then id
/// assert_eq!(key.kvm_slot(), 0x0001_0005); // as KVM packs it
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotKey {
    /// The slot id, below the configured number of slots.
    pub id: u16,
    /// The address space.
    pub as_id: u16,
}

impl SlotKey {
    /// KVM's packed `slot` field: `(as_id << 16) | id`.
    pub const fn kvm_slot(self) -> u32 {
        ((self.as_id as u32) << 16) | self.id as u32
    }

    /// The key a kernel `slot` field names: address space from the upper
    /// 16 bits, id from the lower 16, as KVM splits it. Every `u32` names a
    /// key (whether the map has that id or address space is checked where
    /// the key is used); `SlotKey::from(slot)` does the same.
    ///
    /// ```
    /// use memslots::SlotKey;
    ///
    /// let key = SlotKey::from_kvm_slot(0x0001_0005);
    /// assert_eq!(key, SlotKey { id: 5, as_id: 1 });
    /// assert_eq!(key.kvm_slot(), 0x0001_0005);
    /// assert_eq!(SlotKey::from(0x0001_0005), key);
    /// ```
    pub const fn from_kvm_slot(slot: u32) -> SlotKey {
        SlotKey { id: slot as u16, as_id: (slot >> 16) as u16 }
    }
}

impl From<u32> for SlotKey {
    fn from(slot: u32) -> SlotKey {
        SlotKey::from_kvm_slot(slot)
    }
}

impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.as_id, self.id)
    }
}

/// A slot as the caller describes it to
/// [`Writer::create`](crate::Writer::create).
///
/// ```
/// use memslots::{Flags, Region, SlotKey, UserMemoryRegion};
///
/// let region = Region { id: 1, as_id: 0, base_gfn: 0x100, npages: 0x200, hva: 0x7f00_0000_0000, flags: Flags::empty() };
/// assert_eq!(region.key(), SlotKey { id: 1, as_id: 0 });
/// assert_eq!(region.end_gfn(), 0x300);
/// // The same slot as a `KVM_SET_USER_MEMORY_REGION` request.
/// let request = UserMemoryRegion::try_from(region)?;
/// assert_eq!((request.guest_phys_addr, request.memory_size), (0x10_0000, 0x20_0000));
/// # Ok::<(), memslots::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// The slot id.
    pub id: u16,
    /// The address space.
    pub as_id: u16,
    /// The first guest frame.
    pub base_gfn: Gfn,
    /// The number of pages.
    pub npages: u64,
    /// The host address backing `base_gfn`; page aligned.
    pub hva: Hva,
    /// `LOG_DIRTY_PAGES` and/or `READONLY`.
    pub flags: Flags,
}

impl Region {
    /// The slot's key.
    pub const fn key(&self) -> SlotKey {
        SlotKey { id: self.id, as_id: self.as_id }
    }

    /// One past the last guest frame.
    pub const fn end_gfn(&self) -> Gfn {
        self.base_gfn + self.npages
    }
}

/// A request in the shape of KVM's `struct kvm_userspace_memory_region`,
/// for [`Writer::set_region`](crate::Writer::set_region) (whose docs show
/// a create, a move and a delete made with it).
///
/// ```
/// use memslots::{Flags, SlotKey, UserMemoryRegion};
///
/// let request = UserMemoryRegion {
///     slot: 0x0001_0002, // address space 1, id 2
///     flags: Flags::empty(),
///     guest_phys_addr: 0xa_0000,
///     memory_size: 0x2_0000,
///     userspace_addr: 0x7f00_0000_0000,
/// };
/// assert_eq!(request.key(), SlotKey { id: 2, as_id: 1 });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserMemoryRegion {
    /// `(as_id << 16) | id`, as KVM packs it: see [`SlotKey::kvm_slot`].
    pub slot: u32,
    /// The slot's flags; unknown bits are refused with
    /// [`Error::UnknownFlags`](crate::Error::UnknownFlags).
    pub flags: Flags,
    /// The guest physical address of the first byte; page aligned.
    pub guest_phys_addr: u64,
    /// The size in bytes; page aligned; 0 deletes the slot.
    pub memory_size: u64,
    /// The host address backing `guest_phys_addr`; page aligned.
    pub userspace_addr: u64,
}

impl UserMemoryRegion {
    /// The key the `slot` field names: address space from the upper 16
    /// bits, id from the lower 16, as KVM splits it.
    pub const fn key(&self) -> SlotKey {
        SlotKey::from_kvm_slot(self.slot)
    }
}

/// Why a range of frames cannot be a slot's (see [`check_frames`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// More than [`MAX_SLOT_PAGES`] pages.
    TooLarge {
        /// The pages asked for.
        npages: u64,
    },
    /// The range's end does not fit a byte address.
    Wraps,
}

/// Checks that a gfn range given in frames converts to a byte range whose
/// end does not wrap (KVM's `gpa + size < gpa` check).
pub(crate) fn check_frames(base_gfn: Gfn, npages: u64) -> Result<(), FrameError> {
    if npages > MAX_SLOT_PAGES {
        return Err(FrameError::TooLarge { npages });
    }
    match base_gfn.checked_add(npages) {
        Some(end) if end < GFN_LIMIT => Ok(()),
        _ => Err(FrameError::Wraps),
    }
}
