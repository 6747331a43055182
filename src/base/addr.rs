//! Guest-frame and host-address arithmetic.

/// A guest frame number: one 4 KiB page of guest physical memory.
pub type Gfn = u64;

/// A host virtual address (an integer in the embedding hypervisor's address
/// space).
pub type Hva = u64;

/// log2 of the guest page size.
pub const PAGE_SHIFT: u32 = 12;

/// The guest page size in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// One past the highest gfn: a gfn range never ends beyond this, so that
/// `gfn << PAGE_SHIFT` cannot wrap.
pub const GFN_LIMIT: Gfn = 1 << (64 - PAGE_SHIFT);

/// The largest number of pages one slot may hold (KVM's
/// `KVM_MEM_MAX_NR_PAGES`).
pub const MAX_SLOT_PAGES: u64 = (1 << 31) - 1;

/// The guest physical address of a gfn.
///
/// ```
/// use memslots::{gfn_to_gpa, gpa_to_gfn, PAGE_SIZE};
///
/// assert_eq!(gfn_to_gpa(0x100), 0x10_0000);
/// assert_eq!(gpa_to_gfn(gfn_to_gpa(0x100) + PAGE_SIZE - 1), 0x100);
/// ```
#[inline]
pub const fn gfn_to_gpa(gfn: Gfn) -> u64 {
    gfn << PAGE_SHIFT
}

/// The gfn holding a guest physical address.
///
/// ```
/// use memslots::gpa_to_gfn;
///
/// assert_eq!(gpa_to_gfn(0xfee0_0300), 0xfee00); // the local APIC page
/// ```
#[inline]
pub const fn gpa_to_gfn(gpa: u64) -> Gfn {
    gpa >> PAGE_SHIFT
}

#[inline]
pub(crate) const fn is_page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}
