//! Layer 8, the `kvm` integration (feature `kvm`): a [`Backend`](crate::Backend) that mirrors every slot
//! change into a real KVM VM, the gate that keeps vCPUs out of `KVM_RUN`
//! while a batch is applied, and a small vCPU helper for tests and examples.
//!
//! ```no_run
//! use memslots::kvm::{Exit, KvmBackend, KvmWriter, Vcpu, VcpuGate};
//! use memslots::{Flags, Memslots, SlotKey};
//! use memslots::kvm::kvm_ioctls::Kvm;
//!
//! let vm = Kvm::new()?.create_vm()?;
//! let slots = Memslots::new(KvmBackend::kernel_config(&vm))?;
//! let gate = VcpuGate::new()?;
//! let backend = KvmBackend::new(vm, slots.config())?.with_gate(gate.clone());
//! let mut vcpu = Vcpu::new(backend.vm(), 0)?.with_gate(gate);
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

mod backend;
mod gate;
#[cfg(target_arch = "x86_64")]
mod vcpu;

pub use backend::{KvmBackend, KvmError, KvmStats, KvmWriter};
pub use gate::{GateStats, VcpuGate};
#[cfg(target_arch = "x86_64")]
pub use vcpu::{Exit, SetupError, Vcpu, LONG_MODE_CS, LONG_MODE_TABLES_SIZE};

/// The rust-vmm crates the backend is built on, re-exported so that a VMM
/// uses the same versions.
pub use {kvm_bindings, kvm_ioctls};
