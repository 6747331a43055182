//! The crate's own mapping of a vCPU's `kvm_run` area (module invariant 1):
//! the gate's `immediate_exit` and the vCPU helper's exit data go through
//! it, never through the `&mut kvm_run` of kvm-ioctls.

use core::mem::size_of;
use core::ptr::{addr_of, addr_of_mut, NonNull};
use std::io;
use std::os::fd::AsRawFd;

use kvm_bindings::kvm_run;
#[cfg(target_arch = "x86_64")]
use kvm_bindings::{kvm_run__bindgen_ty_1__bindgen_ty_4 as KvmIo, kvm_run__bindgen_ty_1__bindgen_ty_6 as KvmMmio};

// Not the loom shim (`base::sync`): this byte is in memory the kernel
// shares, so it must be a real `u8`-sized atomic; loom never runs KVM.
use core::sync::atomic::AtomicU8;

/// A shared mapping of the first `len` bytes of a vCPU file: `kvm_run`, and
/// after it the pages the kernel points into (port IO data at
/// `data_offset`).
pub(crate) struct RunMap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; the
// crate reads and writes it only as module invariant 1 says (atomically
// for `immediate_exit`, from the vCPU's own thread for the rest).
unsafe impl Send for RunMap {}
// SAFETY: as above; `&RunMap` gives out only the atomic `immediate_exit`.
unsafe impl Sync for RunMap {}

impl RunMap {
    /// Maps `len` bytes (`VmFd::run_size`) of `vcpu`'s file.
    pub(crate) fn new(vcpu: &impl AsRawFd, len: usize) -> io::Result<RunMap> {
        if len < size_of::<kvm_run>() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a new mapping at an address the kernel picks, so it
        // replaces nothing; the fd is open for the call.
        let addr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                0,
            )
        };
        RunMap::from_mmap(addr, len)
    }

    /// Anonymous memory the size of a `kvm_run` area, for unit tests (and
    /// miri, which cannot map a vCPU).
    #[cfg(test)]
    pub(crate) fn anonymous(len: usize) -> io::Result<RunMap> {
        // SAFETY: a new private mapping at an address the kernel picks.
        let addr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        RunMap::from_mmap(addr, len)
    }

    fn from_mmap(addr: *mut libc::c_void, len: usize) -> io::Result<RunMap> {
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(RunMap { base, len })
    }

    fn run(&self) -> *mut kvm_run {
        self.base.as_ptr().cast()
    }

    /// `kvm_run.immediate_exit`, which the kernel only reads.
    pub(crate) fn immediate_exit(&self) -> &AtomicU8 {
        // `len >= size_of::<kvm_run>()` (`new`), so the byte lies in the
        // mapping, which lives as long as `self`; `AtomicU8` has the size
        // and alignment of `u8`; every access of the crate to the byte is
        // atomic (module invariant 1).
        // SAFETY: as just said.
        unsafe { &*addr_of_mut!((*self.run()).immediate_exit).cast::<AtomicU8>() }
    }

    /// `kvm_run.exit_reason`.
    pub(crate) fn exit_reason(&self) -> u32 {
        // In the mapping (see `immediate_exit`); the kernel writes
        // it only inside `KVM_RUN`, and the caller is the vCPU's thread
        // outside it (module invariant 1).
        // SAFETY: as just said.
        unsafe { addr_of!((*self.run()).exit_reason).read() }
    }

    /// The port IO exit (`kvm_run.io`); meaningful after `KVM_EXIT_IO`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn io(&self) -> KvmIo {
        // As in `exit_reason`; every bit pattern is a valid `KvmIo`
        // (integers only), so reading the union field is sound whatever the
        // last exit was.
        // SAFETY: as just said.
        unsafe { addr_of!((*self.run()).__bindgen_anon_1.io).read() }
    }

    /// Where the MMIO exit's `data` lies in the mapping.
    #[cfg(target_arch = "x86_64")]
    pub(crate) const MMIO_DATA: usize =
        core::mem::offset_of!(kvm_run, __bindgen_anon_1) + core::mem::offset_of!(KvmMmio, data);

    /// Whether the MMIO exit (`kvm_run.mmio`) is a write, and its length;
    /// meaningful after `KVM_EXIT_MMIO`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn mmio(&self) -> (bool, u32) {
        // SAFETY: as in `io`: integers only.
        let mmio: KvmMmio = unsafe { addr_of!((*self.run()).__bindgen_anon_1.mmio).read() };
        (mmio.is_write != 0, mmio.len)
    }

    /// `len` bytes at `offset` from the start of the mapping, or `None` if
    /// they run past it (a kernel offset is checked, not trusted).
    pub(crate) fn bytes(&mut self, offset: u64, len: usize) -> Option<*mut u8> {
        let offset = usize::try_from(offset).ok()?;
        (offset.checked_add(len)? <= self.len).then(|| {
            // SAFETY: `offset + len <= self.len`, so the result stays in the
            // mapping, whose provenance `base` has (it came from `mmap`).
            unsafe { self.base.as_ptr().add(offset) }
        })
    }
}

impl Drop for RunMap {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` or `anonymous` with this
        // length, and nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::Ordering;

    use super::RunMap;

    /// Exit data past the end of `struct kvm_run` is reached with the
    /// mapping's provenance (the item miri checks: the old code derived it
    /// from a `&mut kvm_run`), while another thread stores `immediate_exit`
    /// atomically; an offset the mapping does not hold is refused.
    #[test]
    fn data_past_kvm_run_and_concurrent_immediate_exit() {
        let len = 2 * 4096;
        let mut map = RunMap::anonymous(len).expect("mmap");
        let at = map.bytes(4096, 8).expect("inside the mapping");
        std::thread::scope(|s| {
            let immediate_exit = map.immediate_exit();
            s.spawn(move || {
                for i in 0..100u8 {
                    // Relaxed: nothing else is published with it here.
                    immediate_exit.store(i & 1, Ordering::Relaxed);
                }
            });
            for i in 0..100u64 {
                // `bytes` checked that the 8 bytes lie in the
                // mapping, which outlives the scope; only this thread
                // touches them.
                // SAFETY: as just said.
                unsafe { at.cast::<u64>().write_unaligned(i) };
            }
            assert_eq!(map.exit_reason(), 0);
        });
        // SAFETY: as above.
        assert_eq!(unsafe { at.cast::<u64>().read_unaligned() }, 99);
        assert!(map.bytes(len as u64 - 4, 8).is_none());
        assert!(map.bytes(u64::MAX, 1).is_none());
        assert!(map.bytes(4096, usize::MAX).is_none());
    }
}
