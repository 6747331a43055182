//! Copies between guest memory and the host's buffers.
//!
//! Guest memory can change under the host at any time (a vCPU writes it, a
//! device DMAs into it), so it is never reached through a Rust reference, only
//! through raw pointers. Accesses of up to 8 bytes are made in naturally
//! aligned volatile loads and stores of the widest size that fits, so an
//! aligned `u16`/`u32`/`u64` is read or written in one piece, as a guest's own
//! access would be; larger copies use `copy_nonoverlapping`, which may tear at
//! any byte, as it does between two vCPUs. vm-memory makes the same choice.

/// Copies `dst.len()` bytes from guest memory at `src`.
///
/// # Safety
/// `src..src + dst.len()` is mapped and readable guest memory (the rules of
/// the `memory` module: a slot's backing), not overlapping `dst`.
#[inline]
pub(crate) unsafe fn from_guest(src: *const u8, dst: &mut [u8]) {
    if dst.len() > 8 {
        // SAFETY: per the caller.
        unsafe { core::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        return;
    }
    let mut done = 0;
    while done < dst.len() {
        let width = width(src as usize + done, dst.len() - done);
        // SAFETY: `src + done` is valid for `width` bytes (per the caller)
        // and aligned to it (`width`); the host side may be unaligned.
        unsafe {
            let (from, to) = (src.add(done), dst.as_mut_ptr().add(done));
            match width {
                8 => to.cast::<u64>().write_unaligned(from.cast::<u64>().read_volatile()),
                4 => to.cast::<u32>().write_unaligned(from.cast::<u32>().read_volatile()),
                2 => to.cast::<u16>().write_unaligned(from.cast::<u16>().read_volatile()),
                _ => to.write(from.read_volatile()),
            }
        }
        done += width;
    }
}

/// Copies `src` into guest memory at `dst`.
///
/// # Safety
/// `dst..dst + src.len()` is mapped and writable guest memory, not
/// overlapping `src`.
#[inline]
pub(crate) unsafe fn to_guest(dst: *mut u8, src: &[u8]) {
    if src.len() > 8 {
        // SAFETY: per the caller.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        return;
    }
    let mut done = 0;
    while done < src.len() {
        let width = width(dst as usize + done, src.len() - done);
        // SAFETY: `dst + done` is valid for `width` bytes (per the caller)
        // and aligned to it (`width`); the host side may be unaligned.
        unsafe {
            let (from, to) = (src.as_ptr().add(done), dst.add(done));
            match width {
                8 => to.cast::<u64>().write_volatile(from.cast::<u64>().read_unaligned()),
                4 => to.cast::<u32>().write_volatile(from.cast::<u32>().read_unaligned()),
                2 => to.cast::<u16>().write_volatile(from.cast::<u16>().read_unaligned()),
                _ => to.write_volatile(from.read()),
            }
        }
        done += width;
    }
}

/// The widest access of at most `left` bytes that is naturally aligned at
/// guest address `at`.
#[inline]
fn width(at: usize, left: usize) -> usize {
    [8, 4, 2].into_iter().find(|&w| left >= w && at.is_multiple_of(w)).unwrap_or(1)
}
