//! Layer 8, the `kvm` integration (feature `kvm`): a [`Backend`](crate::Backend) that mirrors every slot
//! change into a real KVM VM, the gate that keeps vCPUs out of `KVM_RUN`
//! while a batch is applied, and a small vCPU helper for tests and examples.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use memslots::kvm::{Exit, KvmBackend, KvmWriter, Vcpu, VcpuGate};
//! use memslots::{Flags, Memslots, SlotKey};
//! use memslots::kvm::kvm_ioctls::Kvm;
//!
//! let vm = Arc::new(Kvm::new()?.create_vm()?);
//! let slots = Memslots::new(KvmBackend::kernel_config(&vm))?;
//! let gate = VcpuGate::new()?;
//! let backend = KvmBackend::new(vm.clone(), slots.config())?.with_gate(gate.clone());
//! let mut vcpu = Vcpu::new(&vm, 0)?.with_gate(&gate)?;
//! let mut writer = slots.writer_with(backend)?;
//!
//! let ram = writer.backend_mut().guest_ram(0x10000)?;
//! writer.create_ram(SlotKey { id: 0, as_id: 0 }, 0, Flags::empty(), ram)?;
//! Vcpu::load(&slots.device_reader().pin(), &[0xf4], 0x1000)?; // hlt
//! vcpu.setup_real_mode(0x1000)?;
//! assert_eq!(vcpu.run()?, Exit::Hlt);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Linux only; the vCPU helper is x86-64 only.
//!
//! # Invariants
//!
//! The `unsafe` code of this module relies on these, and cites them by
//! number.
//!
//! 1. The crate reaches a vCPU's `kvm_run` area only through a mapping of
//!    its own (`RunMap`: `mmap` of the vCPU file, `VmFd::run_size` bytes),
//!    by raw pointers whose provenance is that whole mapping, never through
//!    the `&mut kvm_run` that kvm-ioctls hands out (`VcpuFd::get_kvm_run`,
//!    and the slices of a `VcpuExit`, which cover `struct kvm_run` only,
//!    while port IO data lies at `data_offset`, past it). kvm-ioctls keeps
//!    its own mapping: distinct memory to the compiler, and it makes its
//!    `&mut kvm_run` only inside `VcpuFd` methods (after `KVM_RUN` has
//!    returned) and the exit they return, none of which reads
//!    `immediate_exit` (kvm-ioctls 0.25 `VcpuFd::run` reads `exit_reason`
//!    and the exit union only). The kernel writes the area only inside
//!    `KVM_RUN`, on the vCPU's thread; apart from `immediate_exit`, the
//!    crate reads and writes it only from that thread, outside `KVM_RUN`.
//! 2. `immediate_exit` is user space's and the kernel only reads it
//!    (`KVM_RUN` returns `EINTR` at once when it is non-zero, after
//!    completing any pending IO). Every access of the crate to it is
//!    atomic. While a vCPU is registered with a gate, the gate owns the
//!    byte: it is 1 (parked) unless the vCPU is inside `GateVcpu::run`, and
//!    only the gate changes it: at registration, before anyone else knows
//!    the mapping, and under its lock at entry, kick, leave and
//!    unregistration.

mod backend;
mod gate;
mod run;
#[cfg(target_arch = "x86_64")]
mod vcpu;

pub use backend::{KvmBackend, KvmError, KvmStats, KvmWriter};
pub use gate::{GateHold, GateStats, GateVcpu, VcpuGate};
#[cfg(target_arch = "x86_64")]
pub use vcpu::{Exit, SetupError, Vcpu, LONG_MODE_CS, LONG_MODE_TABLES_SIZE};

/// The rust-vmm crates the backend is built on, re-exported so that a VMM
/// uses the same versions.
pub use {kvm_bindings, kvm_ioctls};
