//! The backend that mirrors every slot change into a KVM VM.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Weak};

use kvm_bindings::{kvm_userspace_memory_region, KVM_CAP_MULTI_ADDRESS_SPACE};
use kvm_ioctls::{Cap, Kvm, VmFd};

use crate::backend::Backend;
use crate::base::addr::{Gfn, PAGE_SHIFT, PAGE_SIZE};
use crate::error::Error;
use crate::kvm::gate::{GateHold, VcpuGate};
use crate::map::{Config, Writer};
use crate::memory::GuestRam;
use crate::vocab::SlotChange;
use crate::vocab::{Change, Flags, Region, SlotKey};

/// A [`Backend`] that applies every slot change to a KVM VM with
/// `KVM_SET_USER_MEMORY_REGION` (slot field `(as_id << 16) | id`), so that
/// the kernel's slots and the crate's stay in step. The VM is shared
/// ([`KvmBackend::vm`] is an `Arc<VmFd>`): vCPUs, devices and other VM
/// ioctls need not go through the writer.
///
/// - The crate validates a change (KVM's rules, KVM's order) before the
///   backend sees it, so a bad request never reaches the kernel.
/// - [`Backend::prepare`] makes the ioctl. If the kernel refuses it, the
///   writer returns [`Error::Backend`] with the errno, after
///   [`Backend::abort`] undid the ioctls already made for the same batch:
///   both sides are as they were.
/// - With a [`VcpuGate`] ([`KvmBackend::with_gate`]), a call or batch that
///   the kernel would otherwise see half-applied holds the vCPUs out of
///   `KVM_RUN`: from before its first ioctl that changes what the guest
///   sees (a create, delete or move) and is not its last ioctl, until the
///   kernel has every change ([`Backend::begin`] tells how many come) or
///   none (the last [`Backend::abort`]). So no vCPU runs on a half-applied
///   batch, and no hold outlives the ioctls: none spans the writer's grace
///   periods, which wait on device threads. A single change is one ioctl,
///   which KVM applies atomically: it never holds the vCPUs. Nor does a
///   flags change: it can only turn dirty logging on or off (`READONLY`
///   cannot be toggled), which changes what the kernel logs, not what the
///   guest reads or writes, so turning logging on for many slots, one by
///   one or in a batch, never pauses the guest. The hold is a [`GateHold`]
///   that lives on the stack while the backend's own code runs, so a panic
///   that unwinds through a hook releases it. Once the kernel has the
///   batch, vCPUs run on it while the writer publishes it in the map.
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
/// changes, then creates, each kind by slot key, a move after the moves
/// that free its new range; the backend applies them in that order, so
/// that no ioctl finds another slot of the batch in its way. Deletes
/// before creates means a batch may reuse a freed range. Slots trading
/// places (a cycle of moves, which no one-at-a-time order of moves can do)
/// come as a delete of one of them and a create of it after the other
/// moves: the kernel takes those, and the slot keeps its memory.
pub struct KvmBackend {
    // Declared first: dropped before the memory below (after `Drop` has
    // deleted every slot anyway).
    vm: Arc<VmFd>,
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
    /// Changes the writer announced for this call ([`Backend::begin`]).
    announced: usize,
    /// Changes prepared and not yet committed or aborted in this call.
    pending: usize,
    /// The hold on the gate while a call or batch reaches the kernel.
    hold: Option<GateHold>,
    stats: KvmStats,
}

struct KernelSlot {
    region: Region,
    /// Keeps the memory mapped while the kernel has the slot.
    _ram: Arc<GuestRam>,
    /// Dirty bits the kernel reported for this memory when the backend
    /// deleted a slot over it (one move of a cycle, split into a delete and
    /// a create; an undone delete), not yet harvested: the kernel's own log
    /// of the slot made again starts empty, so these go with the next
    /// [`KvmWriter::kvm_dirty_log`].
    carried: Vec<u64>,
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
    /// (`KVM_CAP_MULTI_ADDRESS_SPACE`, at least 1), slot ids
    /// (`KVM_CAP_NR_MEMSLOTS`), no limit on total pages, and the guest
    /// physical address width the kernel enforces for a slot.
    ///
    /// # The physical address width
    ///
    /// x86 KVM refuses to create or move a slot whose last page lies past
    /// `kvm_mmu_max_gfn()` (`EINVAL`, in `kvm_arch_prepare_memory_region`),
    /// which is `2^(max_gpa_bits - 12) - 1` with `max_gpa_bits` the host's
    /// physical address width under two-dimensional paging (EPT/NPT) but 52
    /// under shadow paging, whatever the CPUID the guest gets says. No
    /// ioctl reports it, and CPUID leaf `0x8000_0008` (`EAX[7:0]`, from
    /// `KVM_GET_SUPPORTED_CPUID`) is not it: on the machines this crate is
    /// tested on (nested KVM, shadow paging) CPUID says 48 bits, and the
    /// kernel takes a slot whose last page is just below `2^52` and refuses
    /// one at `2^52`. A width from CPUID would refuse slots the kernel
    /// takes. So the width is found by asking the kernel: in a scratch VM
    /// (`KVM_CREATE_VM` on a new `/dev/kvm` handle; `vm` itself is left
    /// alone), one-page slots whose last page lies just below `2^b` are
    /// created for a binary search over `b` (about six ioctls); the largest
    /// `b` taken is the width. The limit is the same for every VM of the
    /// kernel module, so the scratch VM stands for `vm`. If the probe cannot
    /// run (no `/dev/kvm`, a refusal for another reason), the width is 64,
    /// which refuses nothing the kernel takes (the kernel then refuses such
    /// a slot itself, [`Error::Backend`] with `EINVAL`, and nothing
    /// changes).
    pub fn kernel_config(vm: &VmFd) -> Config {
        let (address_spaces, slots) = kernel_limits(vm);
        Config::new(u16::try_from(address_spaces).unwrap_or(u16::MAX), u16::try_from(slots).unwrap_or(u16::MAX))
            .with_phys_addr_bits(probe_phys_addr_bits().unwrap_or(64))
    }

    /// A backend for `vm` (a `VmFd` or an `Arc<VmFd>` shared with the VMM),
    /// for a slot map with `config` (give it `slots.config()`).
    ///
    /// # Errors
    /// [`KvmError::AddressSpaces`] if `config` has more address spaces than
    /// the kernel, [`KvmError::Slots`] if it has more slot ids.
    pub fn new(vm: impl Into<Arc<VmFd>>, config: Config) -> Result<KvmBackend, KvmError> {
        let vm = vm.into();
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
            announced: 0,
            pending: 0,
            hold: None,
            stats: KvmStats::default(),
        })
    }

    /// Holds the vCPUs that run through `gate` while a call or batch is
    /// applied to the kernel.
    pub fn with_gate(mut self, gate: VcpuGate) -> KvmBackend {
        self.gate = Some(gate);
        self
    }

    /// The VM, to create vCPUs and devices, or to keep a handle of its own
    /// (clone the `Arc`).
    pub fn vm(&self) -> &Arc<VmFd> {
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

    fn apply(&mut self, change: &SlotChange) -> Result<(), i32> {
        if change.key.as_id >= self.address_spaces || change.key.id >= self.max_slots {
            return Err(libc::EINVAL);
        }
        match (change.old, change.new) {
            (None, Some(new)) => {
                let ram = self.owned_ram(new.hva, new.npages << PAGE_SHIFT).ok_or(libc::EFAULT)?;
                self.ioctl(&new, new.npages)?;
                // A slot over the memory a slot of this call was deleted from
                // takes the bits the kernel had for it.
                let carried = match self.retired_over(change.key, &new, &ram) {
                    Some(slot) if new.flags.contains(Flags::LOG_DIRTY_PAGES) => core::mem::take(&mut slot.carried),
                    _ => Vec::new(),
                };
                self.kernel.insert(change.key, KernelSlot { region: new, _ram: ram, carried });
            }
            (Some(old), None) => {
                // The kernel's log goes with the slot: keep what it holds.
                self.harvest_before(change.key, &old, None, |backend| backend.ioctl(&old, 0))?;
                if let Some(slot) = self.kernel.remove(&change.key) {
                    self.retired.push((change.key, slot));
                }
            }
            (Some(old), Some(new)) => {
                // A change that stops logging frees the kernel's log: keep
                // what it holds, for an undo (a refused later change).
                self.harvest_before(change.key, &old, Some(&new), |backend| backend.ioctl(&new, new.npages))?;
                if let Some(slot) = self.kernel.get_mut(&change.key) {
                    slot.region = new;
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// Runs `ioctl`, which ends the kernel's log of `old` (a delete, or a
    /// change to `new` without `LOG_DIRTY_PAGES`), after taking what the log
    /// holds into the slot's carried bits, so that no page the guest dirtied
    /// is lost whether the ioctl is refused, kept or undone.
    fn harvest_before(
        &mut self,
        key: SlotKey,
        old: &Region,
        new: Option<&Region>,
        ioctl: impl FnOnce(&mut Self) -> Result<(), i32>,
    ) -> Result<(), i32> {
        let logs = |r: &Region| r.flags.contains(Flags::LOG_DIRTY_PAGES);
        if !logs(old) || new.is_some_and(logs) {
            return ioctl(self);
        }
        let bits = self.kernel_dirty_log(old)?;
        let result = ioctl(self);
        if let Some(slot) = self.kernel.get_mut(&key) {
            or_into(&mut slot.carried, &bits);
        }
        result
    }

    /// The slot with `key` this call deleted from the kernel over the same
    /// memory as `region` (host range, READONLY and mapping), the latest if
    /// several.
    fn retired_over(&mut self, key: SlotKey, region: &Region, ram: &Arc<GuestRam>) -> Option<&mut KernelSlot> {
        let readonly = |r: &Region| r.flags.contains(Flags::READONLY);
        let same = |(k, slot): &&mut (SlotKey, KernelSlot)| {
            *k == key
                && (slot.region.hva, slot.region.npages, readonly(&slot.region))
                    == (region.hva, region.npages, readonly(region))
                && Arc::ptr_eq(&slot._ram, ram)
        };
        self.retired.iter_mut().rev().find(same).map(|(_, slot)| slot)
    }

    /// `KVM_GET_DIRTY_LOG` of a slot the kernel has: its dirty pages since
    /// the last harvest, cleared.
    fn kernel_dirty_log(&self, region: &Region) -> Result<Vec<u64>, i32> {
        let size = usize::try_from(region.npages << PAGE_SHIFT).map_err(|_| libc::EINVAL)?;
        self.vm.get_dirty_log(region.key().kvm_slot(), size).map_err(|e| e.errno())
    }

    /// Undoes `apply`; a refusal leaves the kernel and the crate out of
    /// step, so it panics (which poisons the map, and releases the gate:
    /// the caller's hold is on its stack).
    fn undo(&mut self, change: &SlotChange) {
        self.stats.undone += 1;
        let result = match (change.old, change.new) {
            (None, Some(new)) => {
                // Pages the guest dirtied since the create, and bits it took
                // from a deleted slot, go back there for the undo of that
                // delete.
                let result = self.harvest_before(change.key, &new, None, |backend| backend.ioctl(&new, 0));
                if let Some(slot) = self.kernel.remove(&change.key) {
                    if let Some(old) = self.retired_over(change.key, &new, &slot._ram) {
                        or_into(&mut old.carried, &slot.carried);
                    }
                }
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
            panic!("kvm backend: undoing {change:?} failed with errno {errno}: the kernel's slots and the map's are out of step");
        }
    }
}

/// ORs `bits` into `into`, growing it to fit.
fn or_into(into: &mut Vec<u64>, bits: &[u64]) {
    if into.len() < bits.len() {
        into.resize(bits.len(), 0);
    }
    into.iter_mut().zip(bits).for_each(|(word, bits)| *word |= bits);
}

fn kernel_limits(vm: &VmFd) -> (u32, u32) {
    // 0 (no multi-address-space support) means the one address space.
    let spaces = vm.check_extension_raw(KVM_CAP_MULTI_ADDRESS_SPACE.into()).max(1);
    let slots = vm.check_extension_int(Cap::NrMemslots).max(0);
    (spaces as u32, slots as u32)
}

/// Whether the guest can see `change` (a create, delete or move), or its
/// ioctl ends the kernel's dirty log (logging turned off): between the
/// harvest before that ioctl and the ioctl a running vCPU's writes would go
/// to a log about to be freed. A flags change otherwise only turns logging
/// on (validation refuses a `READONLY` toggle).
fn needs_hold(change: &SlotChange) -> bool {
    let logs = |r: Option<Region>| r.is_some_and(|r| r.flags.contains(Flags::LOG_DIRTY_PAGES));
    let stops_logging = logs(change.old) && !logs(change.new);
    stops_logging || !matches!(change.kind(), Change::FlagsChanged | Change::Unchanged)
}

impl Backend for KvmBackend {
    fn begin(&mut self, changes: usize) {
        self.announced = changes;
    }

    fn prepare(&mut self, change: &SlotChange) -> Result<(), i32> {
        // On this frame while the backend's code runs: an unwind releases it.
        let mut hold = self.hold.take();
        // The call's last ioctl, if no hold is on yet, is its only one the
        // guest can see, which the kernel applies atomically.
        let last = self.pending + 1 >= self.announced;
        if hold.is_none() && !last && needs_hold(change) {
            if let Some(gate) = &self.gate {
                hold = Some(gate.hold());
                self.stats.quiesces += 1;
            }
        }
        let result = self.apply(change);
        match result {
            Ok(()) => {
                self.pending += 1;
                if last {
                    // The kernel has the whole call: the vCPUs may run on
                    // it, before any grace period.
                    hold = None;
                }
            }
            // Nothing of this call reached the kernel: no abort follows.
            Err(_) if self.pending == 0 => hold = None,
            Err(_) => {}
        }
        self.hold = hold;
        result
    }

    fn abort(&mut self, change: &SlotChange) {
        let hold = self.hold.take();
        self.undo(change);
        self.pending = self.pending.saturating_sub(1);
        if self.pending == 0 {
            self.retired.clear();
        } else {
            self.hold = hold;
        }
    }

    fn commit(&mut self, change: &SlotChange) {
        // A slot that no longer logs has no use for bits kept for an undo.
        if let Some(new) = change.new.filter(|new| !new.flags.contains(Flags::LOG_DIRTY_PAGES)) {
            if let Some(slot) = self.kernel.get_mut(&new.key()) {
                slot.carried.clear();
            }
        }
        self.pending = self.pending.saturating_sub(1);
        if self.pending == 0 {
            // The kernel dropped these slots at `prepare`, and the writer's
            // grace period has passed: their memory may go.
            self.retired.clear();
        }
    }
}

/// The widest guest physical address the kernel takes for a slot, in bits
/// (see [`KvmBackend::kernel_config`]), or `None` if the probe cannot run.
fn probe_phys_addr_bits() -> Option<u8> {
    let kvm = Kvm::new().ok()?;
    // Declared before the VM, so dropped after it.
    let page = GuestRam::new(PAGE_SIZE as usize).ok()?;
    let vm = kvm.create_vm().ok()?;
    let mut slot = 0u32;
    // Whether a one-page slot whose last page lies just below `2^bits` is
    // taken: true up to the kernel's width, false above it.
    let mut takes = |bits: u32| {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: (1u64 << bits) - PAGE_SIZE,
            memory_size: PAGE_SIZE,
            userspace_addr: page.as_ptr() as u64,
        };
        slot += 1;
        // `page` outlives `vm` (declared before it), and `vm` has no vCPU,
        // so the kernel never touches the page.
        // SAFETY: as just said.
        unsafe { vm.set_user_memory_region(region) }.is_ok()
    };
    // Invariant: `takes(low)`, and not `takes(high)` (`2^64` wraps).
    let (mut low, mut high) = (13u32, 64u32);
    if !takes(low) {
        return None;
    }
    while high - low > 1 {
        let mid = (low + high) / 2;
        if takes(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    // 63 taken: nothing short of the top of the address space is refused.
    Some(if low == 63 { 64 } else { low as u8 })
}

impl Drop for KvmBackend {
    fn drop(&mut self) {
        self.hold = None;
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
            .field("holding", &self.hold.is_some())
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
        let backend = self.backend_mut();
        // The map has the slot, so the kernel has it too (they are in step).
        let region = *backend.kernel_slot(key).ok_or(Error::Backend { code: libc::ENOENT })?;
        let mut guest = backend.kernel_dirty_log(&region).map_err(|code| Error::Backend { code })?;
        if let Some(slot) = backend.kernel.get_mut(&key) {
            or_into(&mut guest, &core::mem::take(&mut slot.carried));
        }
        self.clear_dirty_log(key, 0, &host)?;
        Ok(host.iter().zip(guest.iter().chain(core::iter::repeat(&0))).map(|(h, g)| h | g).collect())
    }
}
