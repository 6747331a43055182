//! A small x86-64 vCPU helper for tests and examples: create a vCPU, load
//! guest code, set up real mode or 64-bit long mode, run, and read the exit.

use kvm_bindings::{kvm_regs, kvm_segment, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_MMIO, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::access::AccessError;
use crate::kvm::gate::{GateVcpu, VcpuGate};
use crate::kvm::run::RunMap;
use crate::map::View;

/// Bytes of guest memory [`Vcpu::setup_long_mode`] writes at `tables`: a
/// PML4, a PDPT and four page directories identity-mapping the first 4 GiB
/// with 2 MiB pages, then a GDT.
pub const LONG_MODE_TABLES_SIZE: u64 = 0x7000;

/// The 64-bit code selector [`Vcpu::setup_long_mode`] loads into CS.
pub const LONG_MODE_CS: u16 = 0x08;

/// Why a [`Vcpu::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `out`: `size` bytes (1, 2 or 4) to `port`, little-endian in `data`.
    IoOut {
        /// The port.
        port: u16,
        /// Bytes written.
        size: u8,
        /// The value written.
        data: u32,
    },
    /// `in` from `port`: the guest reads all ones unless
    /// [`Vcpu::respond`] gives a value before the next run.
    IoIn {
        /// The port.
        port: u16,
        /// Bytes read.
        size: u8,
    },
    /// A read from a guest address no slot backs: the guest reads all ones
    /// unless [`Vcpu::respond`] gives a value before the next run.
    MmioRead {
        /// The guest physical address.
        addr: u64,
        /// Bytes read (1 to 8).
        len: u8,
    },
    /// A write to a guest address no writable slot backs (a hole, or a
    /// `READONLY` slot).
    MmioWrite {
        /// The guest physical address.
        addr: u64,
        /// Bytes written (1 to 8).
        len: u8,
        /// The value written, little-endian.
        data: u64,
    },
    /// `hlt`.
    Hlt,
    /// A triple fault.
    Shutdown,
    /// `KVM_RUN` returned `EINTR`: a signal, or a kick by a [`VcpuGate`].
    /// Run again.
    Interrupted,
    /// Any other exit, with `kvm_run.exit_reason`.
    Other(u32),
}

/// Why [`Vcpu::setup_long_mode`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The page tables could not be written to guest memory.
    Memory(AccessError),
    /// A register ioctl failed.
    Kvm(kvm_ioctls::Error),
}

impl From<AccessError> for SetupError {
    fn from(error: AccessError) -> SetupError {
        SetupError::Memory(error)
    }
}

impl From<kvm_ioctls::Error> for SetupError {
    fn from(error: kvm_ioctls::Error) -> SetupError {
        SetupError::Kvm(error)
    }
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::Memory(error) => write!(f, "writing the page tables: {error}"),
            SetupError::Kvm(error) => write!(f, "setting the registers: {error}"),
        }
    }
}

impl std::error::Error for SetupError {}

/// An x86-64 vCPU for tests and examples.
pub struct Vcpu {
    fd: VcpuFd,
    /// The helper's own mapping of `kvm_run`, for the exit data (module
    /// invariant 1).
    run: RunMap,
    run_size: usize,
    gate: Option<GateVcpu>,
}

/// The errno of a failed `mmap`, as kvm-ioctls reports errors.
fn errno(error: &std::io::Error) -> kvm_ioctls::Error {
    kvm_ioctls::Error::new(error.raw_os_error().unwrap_or(libc::EINVAL))
}

impl Vcpu {
    /// Creates vCPU `id` of `vm`, with the CPUID the host's KVM supports.
    ///
    /// # Errors
    /// The errno of `KVM_CREATE_VCPU`, `mmap`, `KVM_GET_SUPPORTED_CPUID` or
    /// `KVM_SET_CPUID2`.
    pub fn new(vm: &VmFd, id: u64) -> Result<Vcpu, kvm_ioctls::Error> {
        let fd = vm.create_vcpu(id)?;
        let run = RunMap::new(&fd, vm.run_size()).map_err(|e| errno(&e))?;
        let cpuid = Kvm::new()?.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
        fd.set_cpuid2(&cpuid)?;
        Ok(Vcpu { fd, run, run_size: vm.run_size(), gate: None })
    }

    /// Registers the vCPU with `gate` and runs through it from now on, so
    /// that a [`KvmBackend`](super::KvmBackend) holding the gate keeps this
    /// vCPU out of `KVM_RUN` during a batch.
    ///
    /// # Errors
    /// The errno of [`VcpuGate::register`].
    pub fn with_gate(mut self, gate: &VcpuGate) -> Result<Vcpu, kvm_ioctls::Error> {
        self.gate = Some(gate.register_mapped(&self.fd, self.run_size).map_err(|e| errno(&e))?);
        Ok(self)
    }

    /// The vCPU's file descriptor, for other ioctls.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// The vCPU's file descriptor, mutably. With a gate, its own
    /// [`VcpuFd::run`] returns `EINTR` at once: the vCPU runs only through
    /// [`Vcpu::run`].
    pub fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    /// Copies `code` into guest memory at `at`.
    ///
    /// # Errors
    /// As [`View::write`] (no writable slot with host memory there).
    pub fn load(mem: &View<'_>, code: &[u8], at: u64) -> Result<(), AccessError> {
        mem.write(at, code)
    }

    /// Real mode at `entry` (below 1 MiB): CS holds `entry`'s 64 KiB
    /// segment, the data segments base 0, interrupts off.
    ///
    /// # Errors
    /// The errno of the register ioctls.
    pub fn setup_real_mode(&mut self, entry: u64) -> Result<(), kvm_ioctls::Error> {
        let mut sregs = self.fd.get_sregs()?;
        let selector = ((entry >> 4) & 0xf000) as u16;
        sregs.cs.selector = selector;
        sregs.cs.base = u64::from(selector) << 4;
        for seg in [&mut sregs.ds, &mut sregs.es, &mut sregs.fs, &mut sregs.gs, &mut sregs.ss] {
            seg.selector = 0;
            seg.base = 0;
        }
        self.fd.set_sregs(&sregs)?;
        let regs = kvm_regs { rip: entry - sregs.cs.base, rflags: 2, ..Default::default() };
        self.fd.set_regs(&regs)
    }

    /// 64-bit long mode at `entry` with `rsp`: writes identity-mapped page
    /// tables for the first 4 GiB (2 MiB pages) and a GDT into guest memory
    /// at `tables` ([`LONG_MODE_TABLES_SIZE`] bytes, page aligned, in a
    /// writable slot with host memory), then loads CR0/CR3/CR4/EFER and the
    /// segments.
    ///
    /// # Errors
    /// [`SetupError::Memory`] if the tables cannot be written,
    /// [`SetupError::Kvm`] for a refused register ioctl.
    pub fn setup_long_mode(&mut self, mem: &View<'_>, tables: u64, entry: u64, rsp: u64) -> Result<(), SetupError> {
        const PRESENT_WRITABLE: u64 = 0x3;
        const HUGE: u64 = 0x80;
        let mut image = vec![0u8; LONG_MODE_TABLES_SIZE as usize];
        let mut put = |offset: u64, value: u64| {
            let at = offset as usize;
            image[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        let (pml4, pdpt, pd, gdt) = (0, 0x1000, 0x2000, 0x6000);
        put(pml4, (tables + pdpt) | PRESENT_WRITABLE);
        for gib in 0..4u64 {
            put(pdpt + 8 * gib, (tables + pd + 0x1000 * gib) | PRESENT_WRITABLE);
            for i in 0..512u64 {
                let addr = (gib << 30) | (i << 21);
                put(pd + 0x1000 * gib + 8 * i, addr | PRESENT_WRITABLE | HUGE);
            }
        }
        // GDT: null, 64-bit code (0x08), data (0x10), 64-bit busy TSS (0x18,
        // two entries).
        put(gdt + 0x08, 0x00af_9b00_0000_ffff);
        put(gdt + 0x10, 0x00cf_9300_0000_ffff);
        put(gdt + 0x18, 0x0000_8b00_0000_0067);
        mem.write(tables, &image)?;

        let mut sregs = self.fd.get_sregs()?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: LONG_MODE_CS,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = kvm_segment { selector: 0x10, type_: 3, db: 1, l: 0, ..code };
        let tss = kvm_segment { base: 0, limit: 0x67, selector: 0x18, type_: 11, s: 0, l: 0, g: 0, ..code };
        sregs.cs = code;
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.tr = tss;
        sregs.gdt.base = tables + gdt;
        sregs.gdt.limit = 0x27;
        const CR0_PE: u64 = 1;
        const CR0_ET: u64 = 1 << 4;
        const CR0_NE: u64 = 1 << 5;
        const CR0_PG: u64 = 1 << 31;
        const CR4_PAE: u64 = 1 << 5;
        const EFER_LME: u64 = 1 << 8;
        const EFER_LMA: u64 = 1 << 10;
        sregs.cr3 = tables + pml4;
        sregs.cr4 = CR4_PAE;
        sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
        sregs.efer = EFER_LME | EFER_LMA;
        self.fd.set_sregs(&sregs)?;
        let regs = kvm_regs { rip: entry, rsp, rflags: 2, ..Default::default() };
        Ok(self.fd.set_regs(&regs)?)
    }

    /// Runs until the next exit to user space (through the gate, if any).
    ///
    /// # Errors
    /// The errno of `KVM_RUN`, except `EINTR`, which is
    /// [`Exit::Interrupted`]; `EFAULT` if the kernel put port IO data
    /// outside the `kvm_run` area.
    pub fn run(&mut self) -> Result<Exit, kvm_ioctls::Error> {
        let result = match &mut self.gate {
            Some(gate) => gate.run(&mut self.fd),
            None => self.fd.run(),
        };
        // Port IO data lies past `struct kvm_run`, beyond what the exit's
        // slices may reach (module invariant 1): only their lengths are
        // taken here, and the bytes go through the helper's own mapping
        // once the exit (and kvm-ioctls' borrow of `kvm_run`) has ended.
        let exit = match result {
            Ok(VcpuExit::IoOut(port, data)) => Some(Exit::IoOut { port, size: data.len() as u8, data: 0 }),
            Ok(VcpuExit::IoIn(port, data)) => Some(Exit::IoIn { port, size: data.len() as u8 }),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0xff);
                Some(Exit::MmioRead { addr, len: data.len() as u8 })
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let mut bytes = [0u8; 8];
                let len = data.len().min(8);
                bytes[..len].copy_from_slice(&data[..len]);
                Some(Exit::MmioWrite { addr, len: len as u8, data: u64::from_le_bytes(bytes) })
            }
            Ok(VcpuExit::Hlt) => Some(Exit::Hlt),
            Ok(VcpuExit::Shutdown) => Some(Exit::Shutdown),
            Ok(_) => None,
            Err(e) if e.errno() == libc::EINTR => Some(Exit::Interrupted),
            Err(e) => return Err(e),
        };
        match exit {
            Some(Exit::IoOut { port, size, .. }) => {
                let mut bytes = [0u8; 4];
                let data = self.io_data(usize::from(size).min(4))?;
                // SAFETY: `io_data` checked that the bytes lie in the
                // mapping; the kernel wrote them before `KVM_RUN` returned.
                unsafe { core::ptr::copy_nonoverlapping(data, bytes.as_mut_ptr(), usize::from(size).min(4)) };
                Ok(Exit::IoOut { port, size, data: u32::from_le_bytes(bytes) })
            }
            Some(Exit::IoIn { port, size }) => {
                let io = self.run.io();
                let len = usize::from(io.size) * io.count as usize;
                let data = self.io_data(len)?;
                // SAFETY: as above; the kernel reads them on the next
                // `KVM_RUN`, on this thread.
                unsafe { core::ptr::write_bytes(data, 0xff, len) };
                Ok(Exit::IoIn { port, size })
            }
            Some(exit) => Ok(exit),
            None => Ok(Exit::Other(self.run.exit_reason())),
        }
    }

    /// The port IO data of the last exit, `len` bytes, in the helper's
    /// mapping.
    fn io_data(&mut self, len: usize) -> Result<*mut u8, kvm_ioctls::Error> {
        let offset = self.run.io().data_offset;
        self.run.bytes(offset, len).ok_or_else(|| kvm_ioctls::Error::new(libc::EFAULT))
    }

    /// The value the guest reads for the last [`Exit::IoIn`] or
    /// [`Exit::MmioRead`] (little-endian, cut to the access size). Does
    /// nothing after any other exit.
    pub fn respond(&mut self, value: u64) {
        let bytes = value.to_le_bytes();
        let (at, len) = match self.run.exit_reason() {
            KVM_EXIT_IO => {
                let io = self.run.io();
                if u32::from(io.direction) != KVM_EXIT_IO_IN {
                    return;
                }
                let len = (usize::from(io.size) * io.count as usize).min(8);
                (self.run.bytes(io.data_offset, len), len)
            }
            KVM_EXIT_MMIO => {
                let (is_write, len) = self.run.mmio();
                if is_write {
                    return;
                }
                let len = (len as usize).min(8);
                (self.run.bytes(RunMap::MMIO_DATA as u64, len), len)
            }
            _ => return,
        };
        if let Some(at) = at {
            // SAFETY: `bytes` checked that the bytes lie in the mapping; the
            // kernel reads them on the next `KVM_RUN`, on this thread.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at, len) };
        }
    }

    /// The general registers.
    ///
    /// # Errors
    /// The errno of `KVM_GET_REGS`.
    pub fn regs(&self) -> Result<kvm_regs, kvm_ioctls::Error> {
        self.fd.get_regs()
    }
}

impl core::fmt::Debug for Vcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vcpu").field("gate", &self.gate.is_some()).finish_non_exhaustive()
    }
}
