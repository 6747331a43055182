//! The backend that mirrors every slot change into a KVM VM.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Weak};

use kvm_bindings::{kvm_userspace_memory_region, KVM_CAP_MULTI_ADDRESS_SPACE};
use kvm_ioctls::{Cap, VmFd};

use crate::backend::Backend;
use crate::base::addr::{Gfn, PAGE_SHIFT};
use crate::error::Error;
use crate::kvm::gate::VcpuGate;
use crate::map::{Config, Writer};
use crate::memory::GuestRam;
use crate::vocab::SlotChange;
use crate::vocab::{Change, Flags, Region, SlotKey};

/// A [`Backend`] that owns a KVM VM and applies every slot change to it with
/// `KVM_SET_USER_MEMORY_REGION` (slot field `(as_id << 16) | id`), so that
/// the kernel's slots and the crate's stay in step.
///
/// - The crate validates a change (KVM's rules, KVM's order) before the
///   backend sees it, so a bad request never reaches the kernel.
/// - [`Backend::prepare`] makes the ioctl. If the kernel refuses it, the
///   writer returns [`Error::Backend`] with the errno, after
///   [`Backend::abort`] undid the ioctls already made for the same batch:
///   both sides are as they were.
/// - With a [`VcpuGate`] ([`KvmBackend::with_gate`]), the vCPUs are held out
///   of `KVM_RUN` from before the first ioctl of a call or batch until the
///   crate has published it too (the first [`Backend::commit`], after the
///   writer's grace periods) or it is undone (the last [`Backend::abort`]),
///   so no vCPU runs on a half-applied batch, and none runs while the
///   kernel's slots and the map's differ.
///
/// # Guest memory
///
/// The kernel gets only host memory the crate owns: a slot made with
/// [`Writer::create_owned`] over a [`GuestRam`] that the backend was told of
/// with [`KvmBackend::admit`] (or allocated with
/// [`KvmBackend::guest_ram`]; [`KvmWriter::create_ram`] does both). Any
/// other new slot is refused with `EFAULT` (the backend cannot know that its
/// host address is memory that stays mapped). The backend keeps a reference
/// to the memory of every slot the kernel has, and drops it only after the
/// kernel has dropped the slot and the writer's grace period has passed (at
/// [`Backend::commit`]), so the memory is unmapped only then. Dropping the
/// backend deletes the kernel's slots first.
///
/// # Order of ioctls in a batch
///
/// The writer hands the changes over as deletes, then moves, then flag
/// changes, then creates, each kind by slot key; the backend applies them
/// in that order. Deletes before creates means a batch may reuse a freed
/// range. A move onto the old range of another slot that the same batch
/// moves away is refused by the kernel with `EEXIST` (and the batch undone)
/// when the moving-in slot has the lower key: the kernel sees it before the
/// range is free.
pub struct KvmBackend {
    // Declared first: dropped before the memory below (after `Drop` has
    // deleted every slot anyway).
    vm: VmFd,
    address_spaces: u16,
    max_slots: u16,
    gate: Option<VcpuGate>,
    /// What the kernel holds, per key, with the memory behind it.
    kernel: HashMap<SlotKey, KernelSlot>,
    /// Slots the kernel dropped in the current call; their memory is
    /// released when the call is committed.
    retired: Vec<(SlotKey, KernelSlot)>,
    /// Guest RAM that may be given to the kernel, by start address.
    admitted: BTreeMap<u64, Weak<GuestRam>>,
    /// `admitted.len()` after the last pruning of dead entries.
    admitted_live: usize,
    /// Changes prepared and not yet committed or aborted in this call.
    pending: usize,
    /// This backend holds the gate.
    holding: bool,
    stats: KvmStats,
}

struct KernelSlot {
    region: Region,
    /// Keeps the memory mapped while the kernel has the slot.
    _ram: Arc<GuestRam>,
}

/// Counters of a [`KvmBackend`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmStats {
    /// `KVM_SET_USER_MEMORY_REGION` calls made, including undo and refused
    /// ones.
    pub ioctls: u64,
    /// Calls the kernel refused.
    pub refused: u64,
    /// Ioctls made to undo a refused batch.
    pub undone: u64,
    /// Calls and batches that held the vCPUs.
    pub quiesces: u64,
}

/// Why a [`KvmBackend`] cannot be made for a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvmError {
    /// The configuration has more address spaces than the kernel
    /// (`KVM_CAP_MULTI_ADDRESS_SPACE`; 0 reads as one address space: no SMM
    /// address space, as under a kernel without `KVM_CAP_X86_SMM`).
    AddressSpaces {
        /// Address spaces configured.
        configured: u16,
        /// Address spaces the kernel has.
        kernel: u32,
    },
    /// The configuration has more slot ids than the kernel
    /// (`KVM_CAP_NR_MEMSLOTS`).
    Slots {
        /// Slot ids configured.
        configured: u16,
        /// Slot ids the kernel has.
        kernel: u32,
    },
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KvmError::AddressSpaces { configured, kernel } => write!(
                f,
                "the slot map has {configured} address spaces but KVM has {kernel} \
                 (KVM_CAP_MULTI_ADDRESS_SPACE); address space {kernel} and above cannot be given to KVM"
            ),
            KvmError::Slots { configured, kernel } => {
                write!(f, "the slot map has {configured} slot ids but KVM has {kernel} (KVM_CAP_NR_MEMSLOTS)")
            }
        }
    }
}

impl std::error::Error for KvmError {}

impl KvmBackend {
    /// The largest configuration the VM's kernel takes: its address spaces
    /// (`KVM_CAP_MULTI_ADDRESS_SPACE`, at least 1) and slot ids
    /// (`KVM_CAP_NR_MEMSLOTS`), no limit on total pages.
    pub fn kernel_config(vm: &VmFd) -> Config {
        let (address_spaces, slots) = kernel_limits(vm);
        Config::new(u16::try_from(address_spaces).unwrap_or(u16::MAX), u16::try_from(slots).unwrap_or(u16::MAX))
    }

    /// A backend owning `vm`, for a slot map with `config` (give it
    /// `slots.config()`).
    ///
    /// # Errors
    /// [`KvmError::AddressSpaces`] if `config` has more address spaces than
    /// the kernel, [`KvmError::Slots`] if it has more slot ids.
    pub fn new(vm: VmFd, config: Config) -> Result<KvmBackend, KvmError> {
        let (address_spaces, slots) = kernel_limits(&vm);
        if u32::from(config.address_spaces) > address_spaces {
            return Err(KvmError::AddressSpaces { configured: config.address_spaces, kernel: address_spaces });
        }
        if u32::from(config.max_slots) > slots {
            return Err(KvmError::Slots { configured: config.max_slots, kernel: slots });
        }
        Ok(KvmBackend {
            vm,
            address_spaces: config.address_spaces,
            max_slots: config.max_slots,
            gate: None,
            kernel: HashMap::new(),
            retired: Vec::new(),
            admitted: BTreeMap::new(),
            admitted_live: 0,
            pending: 0,
            holding: false,
            stats: KvmStats::default(),
        })
    }

    /// Holds the vCPUs that run through `gate` while a call or batch is
    /// applied to the kernel.
    pub fn with_gate(mut self, gate: VcpuGate) -> KvmBackend {
        self.gate = Some(gate);
        self
    }

    /// The VM, to create vCPUs and devices.
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// The gate, if any.
    pub fn gate(&self) -> Option<&VcpuGate> {
        self.gate.as_ref()
    }

    /// The backend's counters.
    pub fn stats(&self) -> KvmStats {
        self.stats
    }

    /// The slots the kernel has, by key.
    pub fn kernel_slots(&self) -> impl Iterator<Item = &Region> + '_ {
        self.kernel.values().map(|slot| &slot.region)
    }

    /// The slot with `key` as the kernel has it.
    pub fn kernel_slot(&self, key: SlotKey) -> Option<&Region> {
        self.kernel.get(&key).map(|slot| &slot.region)
    }

    /// Lets slots over `ram` be given to the kernel. The backend keeps a weak
    /// reference only: `ram` is unmapped when its last strong reference goes,
    /// which a slot over it holds.
    pub fn admit(&mut self, ram: &Arc<GuestRam>) {
        let start = ram.as_ptr() as u64;
        let end = start + ram.len() as u64;
        // Entries inside the new mapping are dead (live mappings do not
        // overlap): forget them.
        let stale: Vec<u64> = self.admitted.range(start..end).map(|(&at, _)| at).collect();
        for at in stale {
            self.admitted.remove(&at);
        }
        self.admitted.insert(start, Arc::downgrade(ram));
        if self.admitted.len() > 2 * self.admitted_live + 64 {
            self.admitted.retain(|_, ram| ram.strong_count() > 0);
            self.admitted_live = self.admitted.len();
        }
    }

    /// Maps `len` bytes of zeroed guest RAM and [admits](KvmBackend::admit)
    /// it.
    ///
    /// # Errors
    /// As [`GuestRam::new`].
    pub fn guest_ram(&mut self, len: usize) -> Result<Arc<GuestRam>, Error> {
        let ram = Arc::new(GuestRam::new(len)?);
        self.admit(&ram);
        Ok(ram)
    }

    /// The admitted RAM holding `hva .. hva + len`, if it is alive.
    fn owned_ram(&self, hva: u64, len: u64) -> Option<Arc<GuestRam>> {
        let (&start, ram) = self.admitted.range(..=hva).next_back()?;
        let ram = ram.upgrade()?;
        let end = hva.checked_add(len)?;
        (end <= start + ram.len() as u64).then_some(ram)
    }

    /// `KVM_SET_USER_MEMORY_REGION` for `region`, with `npages` pages (0
    /// deletes).
    fn ioctl(&mut self, region: &Region, npages: u64) -> Result<(), i32> {
        let mem = kvm_userspace_memory_region {
            slot: region.key().kvm_slot(),
            flags: region.flags.bits(),
            guest_phys_addr: region.base_gfn << PAGE_SHIFT,
            memory_size: npages << PAGE_SHIFT,
            userspace_addr: region.hva,
        };
        self.stats.ioctls += 1;
        // A region with pages is a slot over guest RAM this backend holds a
        // reference to (`kernel`) from before the kernel has the slot until
        // after it dropped it (`retired`, released at commit); the crate
        // validated that no two slots overlap; 0 pages hands over no memory.
        // SAFETY: so the host range stays mapped for as long as the kernel
        // may access it.
        let result = unsafe { self.vm.set_user_memory_region(mem) }.map_err(|e| e.errno());
        if result.is_err() {
            self.stats.refused += 1;
        }
        result
    }

    fn begin(&mut self) {
        if let Some(gate) = &self.gate {
            gate.hold();
            self.holding = true;
            self.stats.quiesces += 1;
        }
    }

    fn end(&mut self) {
        if self.holding {
            if let Some(gate) = &self.gate {
                gate.release();
            }
            self.holding = false;
        }
    }

    fn apply(&mut self, change: &SlotChange) -> Result<(), i32> {
        if change.key.as_id >= self.address_spaces || change.key.id >= self.max_slots {
            return Err(libc::EINVAL);
        }
        match (change.old, change.new) {
            (None, Some(new)) => {
                let ram = self.owned_ram(new.hva, new.npages << PAGE_SHIFT).ok_or(libc::EFAULT)?;
                self.ioctl(&new, new.npages)?;
                self.kernel.insert(change.key, KernelSlot { region: new, _ram: ram });
            }
            (Some(old), None) => {
                self.ioctl(&old, 0)?;
                if let Some(slot) = self.kernel.remove(&change.key) {
                    self.retired.push((change.key, slot));
                }
            }
            (Some(_), Some(new)) => {
                self.ioctl(&new, new.npages)?;
                if let Some(slot) = self.kernel.get_mut(&change.key) {
                    slot.region = new;
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// Undoes `apply`; a refusal leaves the kernel and the crate out of
    /// step, so it panics (which poisons the map).
    fn undo(&mut self, change: &SlotChange) {
        self.stats.undone += 1;
        let result = match (change.old, change.new) {
            (None, Some(new)) => {
                let result = self.ioctl(&new, 0);
                self.kernel.remove(&change.key);
                result
            }
            (Some(old), None) => {
                let result = self.ioctl(&old, old.npages);
                if let Some(at) = self.retired.iter().rposition(|(key, _)| *key == change.key) {
                    let (key, slot) = self.retired.remove(at);
                    self.kernel.insert(key, slot);
                }
                result
            }
            (Some(old), Some(_)) => {
                let result = self.ioctl(&old, old.npages);
                if let Some(slot) = self.kernel.get_mut(&change.key) {
                    slot.region = old;
                }
                result
            }
            (None, None) => Ok(()),
        };
        if let Err(errno) = result {
            self.end();
            panic!("kvm backend: undoing {change:?} failed with errno {errno}: the kernel's slots and the map's are out of step");
        }
    }
}

fn kernel_limits(vm: &VmFd) -> (u32, u32) {
    // 0 (no multi-address-space support) means the one address space.
    let spaces = vm.check_extension_raw(KVM_CAP_MULTI_ADDRESS_SPACE.into()).max(1);
    let slots = vm.check_extension_int(Cap::NrMemslots).max(0);
    (spaces as u32, slots as u32)
}

impl Backend for KvmBackend {
    fn prepare(&mut self, change: &SlotChange) -> Result<(), i32> {
        if self.pending == 0 {
            self.begin();
        }
        let result = self.apply(change);
        match result {
            Ok(()) => self.pending += 1,
            // Nothing of this call reached the kernel: no abort follows.
            Err(_) if self.pending == 0 => self.end(),
            Err(_) => {}
        }
        result
    }

    fn abort(&mut self, change: &SlotChange) {
        self.undo(change);
        self.pending = self.pending.saturating_sub(1);
        if self.pending == 0 {
            self.retired.clear();
            self.end();
        }
    }

    fn commit(&mut self, _change: &SlotChange) {
        // Every prepare of the call came before the first commit, and the
        // crate's sets are published: the vCPUs may run again.
        self.end();
        self.pending = self.pending.saturating_sub(1);
        if self.pending == 0 {
            // The kernel dropped these slots at `prepare`, and the writer's
            // grace period has passed: their memory may go.
            self.retired.clear();
        }
    }
}

impl Drop for KvmBackend {
    fn drop(&mut self) {
        self.end();
        // vCPU file descriptors keep the kernel's VM alive after `vm` is
        // closed: take every slot out of it before its memory is unmapped.
        let regions: Vec<Region> = self.kernel.values().map(|slot| slot.region).collect();
        for region in regions {
            let _ = self.ioctl(&region, 0);
        }
    }
}

impl fmt::Debug for KvmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvmBackend")
            .field("address_spaces", &self.address_spaces)
            .field("max_slots", &self.max_slots)
            .field("kernel_slots", &self.kernel.len())
            .field("gate", &self.gate)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The writer's KVM calls.
pub trait KvmWriter {
    /// [Admits](KvmBackend::admit) `ram` and creates the slot over it
    /// ([`Writer::create_owned`]).
    ///
    /// # Errors
    /// As [`Writer::create_owned`]; [`Error::Backend`] with the errno when
    /// the kernel refuses the slot.
    fn create_ram(&mut self, key: SlotKey, base_gfn: Gfn, flags: Flags, ram: Arc<GuestRam>) -> Result<Change, Error>;

    /// The dirty pages of a slot with `LOG_DIRTY_PAGES`, cleared: those the
    /// guest wrote (`KVM_GET_DIRTY_LOG`) and those written from the host
    /// side through the crate's accessors ([`Writer::get_dirty_log`]). Bit
    /// `i` of word `j` is page `64 * j + i` of the slot. A host-side page
    /// marked meanwhile is kept for the next call.
    ///
    /// # Errors
    /// As [`Writer::get_dirty_log`]; [`Error::Backend`] with the errno of
    /// `KVM_GET_DIRTY_LOG`.
    fn kvm_dirty_log(&mut self, key: SlotKey) -> Result<Vec<u64>, Error>;
}

impl KvmWriter for Writer<KvmBackend> {
    fn create_ram(&mut self, key: SlotKey, base_gfn: Gfn, flags: Flags, ram: Arc<GuestRam>) -> Result<Change, Error> {
        self.backend_mut().admit(&ram);
        self.create_owned(key, base_gfn, flags, ram)
    }

    fn kvm_dirty_log(&mut self, key: SlotKey) -> Result<Vec<u64>, Error> {
        let host = self.peek_dirty_log(key)?;
        let backend = self.backend();
        // The map has the slot, so the kernel has it too (they are in step).
        let npages = backend.kernel_slot(key).ok_or(Error::Backend { code: libc::ENOENT })?.npages;
        let size = usize::try_from(npages << PAGE_SHIFT).map_err(|_| Error::Backend { code: libc::EINVAL })?;
        let guest = backend.vm.get_dirty_log(key.kvm_slot(), size).map_err(|e| Error::Backend { code: e.errno() })?;
        self.clear_dirty_log(key, 0, &host)?;
        Ok(host.iter().zip(guest.iter().chain(core::iter::repeat(&0))).map(|(h, g)| h | g).collect())
    }
}
