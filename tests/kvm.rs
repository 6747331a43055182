//! The `kvm` backend against a real KVM guest: every test boots a vCPU and
//! checks what the guest sees while slots change under it.
//!
//! Runs for real when `/dev/kvm` opens; otherwise prints one line,
//! `kvm tests skipped: /dev/kvm unavailable`, and passes.

#![cfg(all(feature = "kvm", target_arch = "x86_64"))]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use memslots::kvm::kvm_bindings::{kvm_userspace_memory_region, KVM_CAP_X86_SMM};
use memslots::kvm::kvm_ioctls::{Cap, Kvm, VmFd};
use memslots::kvm::{Exit, KvmBackend, KvmError, KvmWriter, Vcpu, VcpuGate};
use memslots::{
    Change, Config, Error, Flags, GuestRam, Memslots, Region, SlotKey, UserMemoryRegion, Writer, PAGE_SIZE,
};

// ---------------------------------------------------------------------------
// Guest code (64-bit; `as` syntax in the comments). Every program reports
// over port IO; registers carry its parameters.

/// Offsets of the programs in [`GUEST`].
const CHECKSUM: u64 = 0x00;
const PAIR: u64 = 0x38;
const READONLY_PROBE: u64 = 0x44;
const DIRTY: u64 = 0x53;
const SUM_LOOP: u64 = 0x66;

#[rustfmt::skip]
const GUEST: [u8; 0x7e] = [
    // checksum: rdi -> list of (base, qwords) pairs ending with base 0.
    // Adds every qword into rax and writes its complement back, then
    // reports rax on port 0x10 (low half, then high half) and halts.
    0x48, 0x89, 0xfb,             // 00: mov rbx, rdi
    0x31, 0xc0,                   // 03: xor eax, eax
    0x48, 0x8b, 0x33,             // 05: next: mov rsi, [rbx]
    0x48, 0x85, 0xf6,             // 08: test rsi, rsi
    0x74, 0x1f,                   // 0b: jz done
    0x48, 0x8b, 0x4b, 0x08,       // 0d: mov rcx, [rbx+8]
    0x48, 0x8b, 0x16,             // 11: lp: mov rdx, [rsi]
    0x48, 0x01, 0xd0,             // 14: add rax, rdx
    0x48, 0xf7, 0xd2,             // 17: not rdx
    0x48, 0x89, 0x16,             // 1a: mov [rsi], rdx
    0x48, 0x83, 0xc6, 0x08,       // 1d: add rsi, 8
    0x48, 0xff, 0xc9,             // 21: dec rcx
    0x75, 0xeb,                   // 24: jnz lp
    0x48, 0x83, 0xc3, 0x10,       // 26: add rbx, 16
    0xeb, 0xd9,                   // 2a: jmp next
    0xba, 0x10, 0x00, 0x00, 0x00, // 2c: done: mov edx, 0x10
    0xef,                         // 31: out dx, eax
    0x48, 0xc1, 0xe8, 0x20,       // 32: shr rax, 32
    0xef,                         // 36: out dx, eax
    0xf4,                         // 37: hlt
    // pair: forever read [rdi] and [rsi] back to back, then report them on
    // ports 0x10 and 0x11.
    0x8b, 0x07,                   // 38: mov eax, [rdi]
    0x8b, 0x1e,                   // 3a: mov ebx, [rsi]
    0xe7, 0x10,                   // 3c: out 0x10, eax
    0x89, 0xd8,                   // 3e: mov eax, ebx
    0xe7, 0x11,                   // 40: out 0x11, eax
    0xeb, 0xf4,                   // 42: jmp pair
    // readonly_probe: read [rdi], try to write it, read it again.
    0x8b, 0x07,                   // 44: mov eax, [rdi]
    0xe7, 0x10,                   // 46: out 0x10, eax
    0xc7, 0x07, 0x78, 0x56, 0x34, 0x12, // 48: mov dword [rdi], 0x12345678
    0x8b, 0x07,                   // 4e: mov eax, [rdi]
    0xe7, 0x11,                   // 50: out 0x11, eax
    0xf4,                         // 52: hlt
    // dirty: rsi -> list of addresses ending with 0; writes each address's
    // low half to itself; then reads [rdi] and halts.
    0x48, 0x8b, 0x06,             // 53: mov rax, [rsi]
    0x48, 0x85, 0xc0,             // 56: test rax, rax
    0x74, 0x08,                   // 59: jz 1f
    0x89, 0x00,                   // 5b: mov [rax], eax
    0x48, 0x83, 0xc6, 0x08,       // 5d: add rsi, 8
    0xeb, 0xf0,                   // 61: jmp dirty
    0x8b, 0x07,                   // 63: 1: mov eax, [rdi]
    0xf4,                         // 65: hlt
    // sum_loop: forever sum rbx qwords from rdi and report the low half
    // on port 0x10.
    0x48, 0x89, 0xfe,             // 66: mov rsi, rdi
    0x48, 0x89, 0xd9,             // 69: mov rcx, rbx
    0x31, 0xc0,                   // 6c: xor eax, eax
    0x48, 0x03, 0x06,             // 6e: 2: add rax, [rsi]
    0x48, 0x83, 0xc6, 0x08,       // 71: add rsi, 8
    0x48, 0xff, 0xc9,             // 75: dec rcx
    0x75, 0xf4,                   // 78: jnz 2b
    0xe7, 0x10,                   // 7a: out 0x10, eax
    0xeb, 0xe8,                   // 7c: jmp sum_loop
];

/// The code slot: page tables at its start, programs at `PROGRAMS`,
/// parameters at `PARAMS`, the stack at its end.
const CODE: u64 = 0x20_0000;
const CODE_SIZE: usize = 0x1_0000;
const PROGRAMS: u64 = CODE + 0x8000;
const PARAMS: u64 = CODE + 0xc000;
const STACK: u64 = CODE + CODE_SIZE as u64;
const CODE_KEY: SlotKey = SlotKey { id: 0, as_id: 0 };

/// What a guest reads from a guest address no slot backs (the helper's
/// default answer to an MMIO read).
const HOLE: u32 = 0xffff_ffff;

/// How long any wait for the guest may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Harness

/// `/dev/kvm`, or `None` after printing the skip line (once per binary).
fn kvm() -> Option<Kvm> {
    static SKIP: Once = Once::new();
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        // CI sets MEMSLOTS_REQUIRE_KVM where /dev/kvm is there: no skipping.
        Err(e) if std::env::var_os("MEMSLOTS_REQUIRE_KVM").is_some() => panic!("/dev/kvm: {e}"),
        Err(_) => {
            SKIP.call_once(|| println!("kvm tests skipped: /dev/kvm unavailable"));
            None
        }
    }
}

fn key(id: u16) -> SlotKey {
    SlotKey { id, as_id: 0 }
}

/// A VM with a long-mode vCPU, the code slot and the programs loaded.
struct Guest {
    /// The VM, shared with the backend: other VM ioctls need no writer.
    vm: Arc<VmFd>,
    slots: Memslots,
    writer: Writer<KvmBackend>,
    vcpu: Vcpu,
    gate: Option<VcpuGate>,
}

fn config(max_slots: u16) -> Config {
    Config::new(1, max_slots)
}

impl Guest {
    /// `quiesce`: the backend holds the vCPU at a gate during changes.
    fn new(kvm: &Kvm, quiesce: bool) -> Guest {
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        Guest::on(vm, config(512), quiesce)
    }

    fn on(vm: VmFd, config: Config, quiesce: bool) -> Guest {
        Guest::with_slots(vm, Memslots::new(config).unwrap(), quiesce)
    }

    fn with_slots(vm: VmFd, slots: Memslots, quiesce: bool) -> Guest {
        let vm = Arc::new(vm);
        let mut backend = KvmBackend::new(vm.clone(), slots.config()).expect("configuration within KVM's limits");
        let mut vcpu = Vcpu::new(&vm, 0).expect("KVM_CREATE_VCPU");
        let gate = quiesce.then(|| VcpuGate::new().unwrap());
        if let Some(gate) = &gate {
            backend = backend.with_gate(gate.clone());
            vcpu = vcpu.with_gate(gate).expect("registered with the gate");
        }
        let mut writer = slots.writer_with(backend).unwrap();
        let ram = writer.backend_mut().guest_ram(CODE_SIZE).unwrap();
        writer.create_ram(CODE_KEY, CODE >> 12, Flags::empty(), ram).unwrap();
        {
            let reader = slots.device_reader();
            let view = reader.pin();
            Vcpu::load(&view, &GUEST, PROGRAMS).unwrap();
            vcpu.setup_long_mode(&view, CODE, PROGRAMS, STACK).unwrap();
        }
        Guest { vm, slots, writer, vcpu, gate }
    }

    /// Creates slot `id` of `pages` fresh pages at `gpa`, returns its RAM.
    /// Runs the `dirty` program: the guest writes each address of `writes`
    /// and reads `read`, then halts.
    fn run_writes(&mut self, writes: &[u64], read: u64) {
        let mut list: Vec<u8> = writes.iter().flat_map(|a| a.to_le_bytes()).collect();
        list.extend_from_slice(&[0; 8]);
        self.write(PARAMS, &list);
        start(&mut self.vcpu, DIRTY, read, PARAMS, 0);
        assert_eq!(next_exit(&mut self.vcpu), Exit::Hlt);
    }

    fn slot(&mut self, id: u16, gpa: u64, pages: usize, flags: Flags) -> Arc<GuestRam> {
        let ram = self.writer.backend_mut().guest_ram(pages * PAGE_SIZE as usize).unwrap();
        self.writer.create_ram(key(id), gpa >> 12, flags, ram.clone()).unwrap();
        ram
    }

    fn write(&self, gpa: u64, bytes: &[u8]) {
        self.slots.device_reader().pin().write(gpa, bytes).unwrap();
    }

    fn read_u32(&self, gpa: u64) -> u32 {
        self.slots.device_reader().pin().read_obj::<u32>(gpa).unwrap()
    }
}

/// Points the vCPU at a program with its parameters.
fn start(vcpu: &mut Vcpu, program: u64, rdi: u64, rsi: u64, rbx: u64) {
    let mut regs = vcpu.regs().unwrap();
    (regs.rip, regs.rdi, regs.rsi, regs.rbx, regs.rflags) = (PROGRAMS + program, rdi, rsi, rbx, 2);
    vcpu.fd().set_regs(&regs).unwrap();
}

/// Runs until an exit other than `Interrupted`.
fn next_exit(vcpu: &mut Vcpu) -> Exit {
    loop {
        match vcpu.run().expect("KVM_RUN") {
            Exit::Interrupted => continue,
            exit => return exit,
        }
    }
}

/// One iteration of the `pair` program as the host saw it.
#[derive(Clone, Copy, Debug)]
struct Pair {
    first: u32,
    second: u32,
    /// Writer epoch when the first run of the iteration began and when its
    /// last run ended; equal and even: no change was under way meanwhile.
    epochs: (u64, u64),
    /// A kick (`EINTR`) came between the two reads' iteration start and the
    /// report, so a whole change may lie between the two reads.
    interrupted: bool,
    /// Guest addresses of the MMIO reads of the iteration.
    mmio: [Option<u64>; 2],
}

impl Pair {
    fn stable(&self) -> Option<u64> {
        (self.epochs.0 == self.epochs.1 && self.epochs.0.is_multiple_of(2)).then_some(self.epochs.0 / 2)
    }
}

/// Runs the `pair` program on this thread until `stop`, handing every
/// iteration to `seen`. `epoch` is bumped by the writer before and after
/// each change.
fn run_pairs(vcpu: &mut Vcpu, epoch: &AtomicU64, stop: &AtomicBool, mut seen: impl FnMut(Pair)) {
    let mut pair = Pair { first: 0, second: 0, epochs: (0, 0), interrupted: false, mmio: [None; 2] };
    let mut fresh = true;
    let deadline = Instant::now() + PATIENCE * 4;
    while !stop.load(SeqCst) {
        assert!(Instant::now() < deadline, "the vCPU loop ran too long");
        let before = epoch.load(SeqCst);
        if fresh {
            pair.epochs.0 = before;
            fresh = false;
        }
        let exit = vcpu.run().expect("KVM_RUN");
        pair.epochs.1 = epoch.load(SeqCst);
        match exit {
            Exit::Interrupted => pair.interrupted = true,
            Exit::MmioRead { addr, .. } => {
                let at = pair.mmio.iter().position(Option::is_none).expect("two reads per iteration");
                pair.mmio[at] = Some(addr);
            }
            Exit::IoOut { port: 0x10, data, .. } => pair.first = data,
            Exit::IoOut { port: 0x11, data, .. } => {
                pair.second = data;
                seen(pair);
                pair = Pair { first: 0, second: 0, epochs: (0, 0), interrupted: false, mmio: [None; 2] };
                fresh = true;
            }
            other => panic!("unexpected exit {other:?}"),
        }
    }
}

/// Waits until `count` has grown by `by` (the vCPU made progress).
fn wait_for(count: &AtomicU64, by: u64) {
    let target = count.load(SeqCst) + by;
    let deadline = Instant::now() + PATIENCE;
    while count.load(SeqCst) < target {
        assert!(Instant::now() < deadline, "the guest made no progress");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Fills every page of `ram` with its tag: page `p`'s first dword is
/// `base + p`.
fn tag_pages(guest: &Guest, gpa: u64, pages: u64, base: u32) {
    for p in 0..pages {
        guest.write(gpa + p * PAGE_SIZE, &(base + p as u32).to_le_bytes());
    }
}

// ---------------------------------------------------------------------------
// Tests

/// The guest sums three slots (writing each qword's complement back) and
/// reports a checksum that matches the host's; the host then sees the
/// guest's writes.
#[test]
fn checksum_over_several_slots() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let layout = [(1u16, 0x40_0000u64, 2usize), (2, 0x80_0000, 3), (3, 0x1_0000_0000 - 0x2000, 2)];
    let mut expected = 0u64;
    let mut list = Vec::new();
    for &(id, gpa, pages) in &layout {
        guest.slot(id, gpa, pages, Flags::empty());
        let qwords = pages * 512;
        for i in 0..qwords as u64 {
            let value = (u64::from(id) << 56) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            guest.write(gpa + 8 * i, &value.to_le_bytes());
            expected = expected.wrapping_add(value);
        }
        list.extend_from_slice(&gpa.to_le_bytes());
        list.extend_from_slice(&(qwords as u64).to_le_bytes());
    }
    list.extend_from_slice(&[0; 16]);
    guest.write(PARAMS, &list);

    start(&mut guest.vcpu, CHECKSUM, PARAMS, 0, 0);
    let low = next_exit(&mut guest.vcpu);
    let high = next_exit(&mut guest.vcpu);
    let (Exit::IoOut { port: 0x10, data: low, .. }, Exit::IoOut { port: 0x10, data: high, .. }) = (low, high) else {
        panic!("expected two reports, got {low:?} {high:?}");
    };
    assert_eq!(u64::from(high) << 32 | u64::from(low), expected, "guest checksum");
    assert_eq!(next_exit(&mut guest.vcpu), Exit::Hlt);

    let view = guest.slots.device_reader();
    let view = view.pin();
    for &(id, gpa, pages) in &layout {
        for i in [0u64, 1, (pages * 512 - 1) as u64] {
            let value = (u64::from(id) << 56) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(view.read_obj::<u64>(gpa + 8 * i).unwrap(), !value, "guest write at {:#x}", gpa + 8 * i);
        }
    }
    println!("checksum {expected:#018x} over {} slots: guest and host agree", layout.len());
}

/// A slot moves back and forth while the vCPU reads its old and its new
/// address: the guest only ever reads the slot's own page or a hole, reads
/// the data at the new address, and its access to the old address exits as
/// MMIO.
#[test]
fn move_while_running() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let (old, new) = (0x40_0000u64, 0x60_0000u64);
    // Neighbours on both sides, so that a stale translation would read one.
    guest.slot(2, old - 0x1000, 1, Flags::empty());
    guest.slot(3, new + 0x4000, 1, Flags::empty());
    tag_pages(&guest, old - 0x1000, 1, 0xb000_0000);
    tag_pages(&guest, new + 0x4000, 1, 0xc000_0000);
    guest.slot(1, old, 4, Flags::empty());
    tag_pages(&guest, old, 4, 0xa000_0000);
    let tag = 0xa000_0001; // page 1 of the slot
    start(&mut guest.vcpu, PAIR, old + 0x1000, new + 0x1000, 0);

    let (epoch, stop, iterations) = (AtomicU64::new(0), AtomicBool::new(false), AtomicU64::new(0));
    let moves = 20u64;
    let Guest { writer, vcpu, .. } = &mut guest;
    let checked = std::thread::scope(|s| {
        let observer = s.spawn(|| {
            let mut checked = [0u64; 3];
            run_pairs(vcpu, &epoch, &stop, |pair| {
                iterations.fetch_add(1, SeqCst);
                for v in [pair.first, pair.second] {
                    assert!(v == tag || v == HOLE, "the guest read a wrong page: {v:#x} in {pair:?}");
                }
                for addr in pair.mmio.iter().flatten() {
                    assert!(*addr == old + 0x1000 || *addr == new + 0x1000, "MMIO at {addr:#x}");
                }
                match pair.stable() {
                    Some(k) if k % 2 == 0 => {
                        assert_eq!((pair.first, pair.second), (tag, HOLE), "slot at the old address: {pair:?}");
                        assert_eq!(pair.mmio, [Some(new + 0x1000), None]);
                        checked[0] += 1;
                    }
                    Some(_) => {
                        assert_eq!((pair.first, pair.second), (HOLE, tag), "slot at the new address: {pair:?}");
                        assert_eq!(pair.mmio, [Some(old + 0x1000), None]);
                        checked[1] += 1;
                    }
                    None => checked[2] += 1,
                }
            });
            checked
        });
        for k in 0..moves {
            wait_for(&iterations, 5);
            let to = if k % 2 == 0 { new } else { old };
            epoch.fetch_add(1, SeqCst);
            assert_eq!(writer.move_to(key(1), to >> 12).unwrap(), Change::Moved);
            epoch.fetch_add(1, SeqCst);
        }
        wait_for(&iterations, 5);
        stop.store(true, SeqCst);
        observer.join().unwrap()
    });
    assert!(checked[0] >= moves / 2 * 3 && checked[1] >= moves / 2 * 3, "both layouts observed: {checked:?}");
    let gate = guest.gate.as_ref().unwrap().stats();
    println!(
        "{moves} moves under a running vCPU: {} reads at the old place, {} at the new, {} across a move; {} kicks",
        checked[0], checked[1], checked[2], gate.kicks
    );
}

/// A slot is deleted while the vCPU reads it (its access exits as MMIO),
/// then made again over fresh memory (the guest reads zeroes); the old
/// memory is unmapped once the delete has returned.
#[test]
fn delete_and_recreate_while_running() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let gpa = 0x40_0000u64;
    let first = guest.slot(1, gpa, 2, Flags::empty());
    tag_pages(&guest, gpa, 2, 0xd000_0000);
    let mut previous = Arc::downgrade(&first);
    drop(first);
    start(&mut guest.vcpu, PAIR, gpa + 0x1000, gpa + 0x1000, 0);

    let (epoch, stop, iterations) = (AtomicU64::new(0), AtomicBool::new(false), AtomicU64::new(0));
    let cycles = 6u64;
    let Guest { writer, vcpu, .. } = &mut guest;
    let checked = std::thread::scope(|s| {
        let observer = s.spawn(|| {
            let mut checked = [0u64; 3];
            run_pairs(vcpu, &epoch, &stop, |pair| {
                iterations.fetch_add(1, SeqCst);
                match pair.stable() {
                    Some(0) => assert_eq!((pair.first, pair.second), (0xd000_0001, 0xd000_0001), "{pair:?}"),
                    Some(k) if k % 2 == 1 => {
                        assert_eq!((pair.first, pair.second), (HOLE, HOLE), "deleted: {pair:?}");
                        assert_eq!(pair.mmio, [Some(gpa + 0x1000); 2]);
                    }
                    Some(_) => assert_eq!((pair.first, pair.second), (0, 0), "re-created over fresh memory: {pair:?}"),
                    None => {
                        for v in [pair.first, pair.second] {
                            assert!(v == 0 || v == HOLE || v == 0xd000_0001, "wrong page {v:#x}: {pair:?}");
                        }
                    }
                }
                let i = pair.stable().map_or(2, |k| (k % 2) as usize);
                checked[i] += 1;
            });
            checked
        });
        for _ in 0..cycles {
            wait_for(&iterations, 5);
            epoch.fetch_add(1, SeqCst);
            assert_eq!(writer.delete(key(1)).unwrap(), Change::Deleted);
            epoch.fetch_add(1, SeqCst);
            assert!(previous.upgrade().is_none(), "the deleted slot's memory is unmapped once delete returned");
            wait_for(&iterations, 5);
            let fresh = writer.backend_mut().guest_ram(2 * PAGE_SIZE as usize).unwrap();
            previous = Arc::downgrade(&fresh);
            epoch.fetch_add(1, SeqCst);
            writer.create_ram(key(1), gpa >> 12, Flags::empty(), fresh).unwrap();
            epoch.fetch_add(1, SeqCst);
        }
        wait_for(&iterations, 5);
        stop.store(true, SeqCst);
        observer.join().unwrap()
    });
    assert!(checked[0] >= cycles * 3 && checked[1] >= cycles * 3, "both states observed: {checked:?}");
    println!(
        "{cycles} delete/re-create cycles: {} reads of the slot, {} MMIO exits while deleted, {} across a change",
        checked[0], checked[1], checked[2]
    );
}

/// A READONLY slot: guest reads work, guest writes exit as MMIO and change
/// nothing.
#[test]
fn readonly_slot() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    if !guest.vm.check_extension(Cap::ReadonlyMem) {
        println!("readonly test skipped: no KVM_CAP_READONLY_MEM");
        return;
    }
    let gpa = 0x40_0000u64;
    let ram = guest.writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap();
    // The host fills the page before the slot exists (a READONLY slot
    // refuses host-side writes through the map).
    // SAFETY: the RAM is a fresh mapping of one page that nothing else uses.
    unsafe { ram.as_ptr().cast::<u32>().write(0x5eed_0001) };
    guest.writer.create_ram(key(1), gpa >> 12, Flags::READONLY, ram).unwrap();
    start(&mut guest.vcpu, READONLY_PROBE, gpa, 0, 0);
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0x5eed_0001 });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::MmioWrite { addr: gpa, len: 4, data: 0x1234_5678 });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x11, size: 4, data: 0x5eed_0001 });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::Hlt);
    assert_eq!(guest.read_u32(gpa), 0x5eed_0001);
    let refused = guest.slots.device_reader().pin().write(gpa, &[0]).unwrap_err();
    assert_eq!(refused.failure, memslots::AccessFailure::ReadOnly);
    // READONLY cannot be toggled: refused by validation before any ioctl.
    let ioctls = guest.writer.backend().stats().ioctls;
    let error = guest.writer.set_flags(key(1), Flags::empty()).unwrap_err();
    assert_eq!(error, Error::ReadonlyToggle { key: key(1) });
    assert_eq!(error.errno(), libc::EINVAL);
    assert_eq!(guest.writer.backend().stats().ioctls, ioctls);
}

/// Dirty logging reports exactly the pages the guest wrote plus the pages
/// the host wrote through the crate, and clears them.
#[test]
fn dirty_log_guest_and_host() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let gpa = 0x40_0000u64;
    guest.slot(1, gpa, 80, Flags::LOG_DIRTY_PAGES);
    let page = |p: u64| gpa + p * PAGE_SIZE;
    let bits = |pages: &[u64]| {
        let mut words = vec![0u64; 2];
        for &p in pages {
            words[(p / 64) as usize] |= 1 << (p % 64);
        }
        words
    };
    // Guest: pages 1, 5, 9 (twice), 70; reads page 7. Host: page 12.
    guest.run_writes(&[page(1), page(5), page(9), page(9) + 8, page(70) + 0xff0], page(7));
    guest.write(page(12) + 100, b"host");
    assert_eq!(guest.writer.kvm_dirty_log(key(1)).unwrap(), bits(&[1, 5, 9, 12, 70]));
    assert_eq!(guest.read_u32(page(5)), page(5) as u32, "the guest's write landed");
    assert_eq!(guest.writer.kvm_dirty_log(key(1)).unwrap(), bits(&[]), "harvesting clears");

    // Only the host.
    guest.write(page(63) + 4090, b"spans a page boundary");
    assert_eq!(guest.writer.kvm_dirty_log(key(1)).unwrap(), bits(&[63, 64]));
    // Only the guest, after the slot moved (KVM keeps the log across a MOVE).
    guest.writer.move_to(key(1), 0x80_0000 >> 12).unwrap();
    let moved = |p: u64| 0x80_0000 + p * PAGE_SIZE;
    guest.run_writes(&[moved(3), moved(79)], moved(0));
    assert_eq!(guest.writer.kvm_dirty_log(key(1)).unwrap(), bits(&[3, 79]));

    // A slot without the flag has no log.
    guest.slot(2, 0x10_0000, 1, Flags::empty());
    let error = guest.writer.kvm_dirty_log(key(2)).unwrap_err();
    assert_eq!(error, Error::DirtyLogDisabled { key: key(2) });
    assert_eq!(error.errno(), libc::ENOENT);
}

/// Two logging slots trading places in one batch: one of them reaches the
/// kernel as a delete and a create, whose kernel log starts empty. The pages
/// the guest wrote before the batch are still reported, for both slots, and
/// so are those it writes after.
#[test]
fn dirty_pages_survive_slots_trading_places() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let (a, b, free) = (0x40_0000u64, 0x50_0000u64, 0x60_0000u64);
    guest.slot(1, a, 4, Flags::LOG_DIRTY_PAGES);
    guest.slot(2, b, 4, Flags::LOG_DIRTY_PAGES);
    for id in [1, 2] {
        guest.writer.kvm_dirty_log(key(id)).unwrap();
    }
    // The guest writes page 1 of slot 1 and page 2 of slot 2; nobody
    // harvests before the slots trade places.
    guest.run_writes(&[a + PAGE_SIZE, b + 2 * PAGE_SIZE], a);
    let mut batch = guest.writer.batch();
    batch.move_to(key(1), free >> 12).move_to(key(2), a >> 12).move_to(key(1), b >> 12);
    assert_eq!(batch.commit().map_err(|e| e.error), Ok(vec![Change::Moved; 3]));
    assert_eq!(guest.writer.kvm_dirty_log(key(1)).unwrap(), [1 << 1], "slot 1's page from before the trade");
    assert_eq!(guest.writer.kvm_dirty_log(key(2)).unwrap(), [1 << 2], "slot 2's page from before the trade");
    // And the kernel logs both at their new places.
    guest.run_writes(&[b + 3 * PAGE_SIZE, a], a);
    assert_eq!(guest.writer.kvm_dirty_log(key(1)).unwrap(), [1 << 3]);
    assert_eq!(guest.writer.kvm_dirty_log(key(2)).unwrap(), [1 << 0]);
}

/// A dummy slot created and deleted at least 1000 times below the guest's
/// memory while the guest sums its memory: every sum is right, and the guest
/// finishes sums while the churn goes on.
#[test]
fn dummy_slot_churn_never_disturbs_the_guest() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let data = 0x40_0000u64;
    let qwords = 256u64;
    guest.slot(1, data, 1, Flags::empty());
    let mut expected = 0u64;
    for i in 0..qwords {
        let value = 0x0123_4567_89ab_cdefu64.rotate_left(i as u32) ^ i;
        guest.write(data + 8 * i, &value.to_le_bytes());
        expected = expected.wrapping_add(value);
    }
    let expected = expected as u32;
    let dummy = guest.writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap();
    start(&mut guest.vcpu, SUM_LOOP, data, 0, qwords);

    let (stop, sums) = (AtomicBool::new(false), AtomicU64::new(0));
    let cycles = 1000u64;
    let Guest { writer, vcpu, .. } = &mut guest;
    let started = Instant::now();
    let (interrupts, cycles, during) = std::thread::scope(|s| {
        let observer = s.spawn(|| {
            let mut interrupts = 0u64;
            let deadline = Instant::now() + PATIENCE * 4;
            while !stop.load(SeqCst) {
                assert!(Instant::now() < deadline);
                match vcpu.run().expect("KVM_RUN") {
                    Exit::IoOut { port: 0x10, data, .. } => {
                        assert_eq!(data, expected, "the guest's sum changed");
                        sums.fetch_add(1, SeqCst);
                    }
                    Exit::Interrupted => interrupts += 1,
                    other => panic!("unexpected exit {other:?}"),
                }
            }
            interrupts
        });
        wait_for(&sums, 2);
        let before = sums.load(SeqCst);
        // At least `cycles`, and on until the guest has finished sums while
        // the churn went on: on a loaded machine one sum can outlast 1000.
        let deadline = Instant::now() + PATIENCE;
        let mut done = 0;
        while (done < cycles || sums.load(SeqCst) - before < 2) && Instant::now() < deadline {
            writer.create_ram(key(2), 0x10_0000 >> 12, Flags::empty(), dummy.clone()).unwrap();
            writer.delete(key(2)).unwrap();
            done += 1;
        }
        let during = sums.load(SeqCst) - before;
        if during >= 2 {
            wait_for(&sums, 2);
        }
        stop.store(true, SeqCst);
        (observer.join().unwrap(), done, during)
    });
    let elapsed = started.elapsed();
    assert!(during >= 2, "the guest finished {during} sums during {cycles} create/delete cycles in {elapsed:.2?}");
    let gate = guest.gate.as_ref().unwrap().stats();
    println!(
        "{cycles} create/delete cycles in {elapsed:.2?} ({:.0} changes/s); the guest summed {during} times \
         meanwhile, all right; {interrupts} kicks, vCPU out of KVM_RUN after {:.1} µs on average, {:.1} µs at most",
        2.0 * cycles as f64 / elapsed.as_secs_f64(),
        gate.drain_ns as f64 / gate.kicks.max(1) as f64 / 1e3,
        gate.max_drain_ns as f64 / 1e3,
    );
}

/// Every slot id KVM has can be filled (`KVM_CAP_NR_MEMSLOTS`), and the
/// guest reads the first and the last; one more is refused before any
/// ioctl, with a clear error.
#[test]
fn fill_all_memslots() {
    let Some(kvm) = kvm() else { return };
    let vm = kvm.create_vm().unwrap();
    let nr = vm.check_extension_int(Cap::NrMemslots);
    let kernel = KvmBackend::kernel_config(&vm);
    assert_eq!(i64::from(kernel.max_slots), i64::from(nr));
    // A map with more ids than the kernel is refused when the backend is made.
    let over = kernel.with_max_slots(kernel.max_slots + 1);
    let error = KvmBackend::new(kvm.create_vm().unwrap(), over).unwrap_err();
    assert_eq!(error, KvmError::Slots { configured: kernel.max_slots + 1, kernel: nr as u32 });
    println!("{error}");

    // Slot i is the page at i * 4 KiB; the code slot is 16 pages at 2 MiB,
    // so ids below 512 leave that range alone.
    let config = kernel.with_address_spaces(1);
    let mut guest = Guest::on(vm, config, true);
    let started = Instant::now();
    let mut last_gpa = 0;
    let mut id = 1u16;
    let mut gfn = 0u64;
    while id < kernel.max_slots {
        if (CODE >> 12..(CODE + CODE_SIZE as u64) >> 12).contains(&gfn) {
            gfn += 1;
            continue;
        }
        let ram = guest.writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap();
        guest.writer.create_ram(key(id), gfn, Flags::empty(), ram).unwrap();
        last_gpa = gfn << 12;
        (id, gfn) = (id + 1, gfn + 1);
    }
    let filled = started.elapsed();
    assert_eq!(guest.writer.backend().kernel_slots().count(), usize::from(kernel.max_slots));
    guest.write(0, &0x0000_f157u32.to_le_bytes());
    guest.write(last_gpa, &0x0000_1a57u32.to_le_bytes());
    start(&mut guest.vcpu, PAIR, 0, last_gpa, 0);
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0xf157 });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x11, size: 4, data: 0x1a57 });

    let ioctls = guest.writer.backend().stats().ioctls;
    let ram = guest.writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap();
    let error = guest.writer.create_ram(key(kernel.max_slots), gfn, Flags::empty(), ram).unwrap_err();
    assert_eq!(error, Error::InvalidSlotId { id: u32::from(kernel.max_slots) });
    assert_eq!(error.errno(), libc::EINVAL);
    assert_eq!(guest.writer.backend().stats().ioctls, ioctls, "refused before any ioctl");
    println!("{} slots filled in {filled:.2?}; one more: {error}", kernel.max_slots);
}

/// A batch that moves two slots (and swaps two others out) while the vCPU
/// reads both addresses back to back: under quiesce the guest never sees a
/// mix of before and after. Without the gate, it does.
#[test]
fn quiesced_batch_is_never_seen_half_applied() {
    let Some(kvm) = kvm() else { return };
    let quiesced = batch_rounds(&kvm, true, 100);
    assert_eq!(quiesced.violations, 0, "{quiesced:?}");
    assert!(quiesced.consistent > 0);
    let control = batch_rounds(&kvm, false, 100);
    println!("batches under quiesce: {quiesced:?}");
    println!("batches without the gate (control): {control:?}");
    assert!(control.violations > 0, "the control run should catch a half-applied batch: {control:?}");
}

#[derive(Debug, Default)]
struct BatchReport {
    rounds: u64,
    /// Iterations that read both slots of one layout.
    consistent: u64,
    /// Iterations with a kick between their two reads (may straddle).
    interrupted: u64,
    /// Iterations that saw a hole or a mix without a kick in between.
    violations: u64,
    first_violation: Option<String>,
}

fn batch_rounds(kvm: &Kvm, quiesce: bool, rounds: u64) -> BatchReport {
    let mut guest = Guest::new(kvm, quiesce);
    let (g1, g2) = (0x40_0000u64, 0x50_0000u64);
    let (p1, p2) = (0x80_0000u64, 0x90_0000u64);
    let x1 = guest.slot(1, g1, 1, Flags::empty());
    let x2 = guest.slot(2, g2, 1, Flags::empty());
    guest.slot(3, p1, 1, Flags::empty());
    guest.slot(4, p2, 1, Flags::empty());
    for (gpa, tag) in [(g1, 0x1111_0001u32), (g2, 0x1111_0002), (p1, 0x2222_0001), (p2, 0x2222_0002)] {
        guest.write(gpa, &tag.to_le_bytes());
    }
    start(&mut guest.vcpu, PAIR, g1, g2, 0);
    let (epoch, stop, iterations) = (AtomicU64::new(0), AtomicBool::new(false), AtomicU64::new(0));
    let Guest { writer, vcpu, .. } = &mut guest;
    std::thread::scope(|s| {
        let observer = s.spawn(|| {
            let mut report = BatchReport::default();
            run_pairs(vcpu, &epoch, &stop, |pair| {
                iterations.fetch_add(1, SeqCst);
                let whole =
                    matches!((pair.first, pair.second), (0x1111_0001, 0x1111_0002) | (0x2222_0001, 0x2222_0002));
                let halves = [0x1111_0001, 0x2222_0001].contains(&pair.first)
                    && [0x1111_0002, 0x2222_0002].contains(&pair.second);
                if whole {
                    report.consistent += 1;
                } else if pair.interrupted && halves {
                    report.interrupted += 1;
                } else {
                    report.violations += 1;
                    report.first_violation.get_or_insert_with(|| format!("{pair:x?}"));
                }
            });
            report
        });
        for round in 0..rounds {
            wait_for(&iterations, 2);
            let mut batch = writer.batch();
            if round % 2 == 0 {
                // X out (deleted), Y in (moved).
                batch.delete(key(1)).delete(key(2)).move_to(key(3), g1 >> 12).move_to(key(4), g2 >> 12);
            } else {
                // Y out (moved), X in (made again over the same memory).
                batch.move_to(key(3), p1 >> 12).move_to(key(4), p2 >> 12);
                batch.create_owned(key(1), g1 >> 12, Flags::empty(), x1.clone());
                batch.create_owned(key(2), g2 >> 12, Flags::empty(), x2.clone());
            }
            epoch.fetch_add(1, SeqCst);
            batch.commit().unwrap();
            epoch.fetch_add(1, SeqCst);
        }
        wait_for(&iterations, 2);
        stop.store(true, SeqCst);
        let mut report = observer.join().unwrap();
        report.rounds = rounds;
        report
    })
}

/// A batch the kernel refuses halfway (a slot the map does not know of is
/// in the way) is undone on both sides, and the vCPUs run again.
#[test]
fn refused_batch_is_undone_in_the_kernel() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    // A slot made behind the map's back, id 600 (beyond the map's 512 ids).
    let foreign = GuestRam::new(PAGE_SIZE as usize).unwrap();
    let raw = kvm_userspace_memory_region {
        slot: 600,
        flags: 0,
        guest_phys_addr: 0x70_0000,
        memory_size: PAGE_SIZE,
        userspace_addr: foreign.as_ptr() as u64,
    };
    // SAFETY: `foreign` outlives the VM's use of it: the slot is deleted
    // below before `foreign` drops.
    unsafe { guest.vm.set_user_memory_region(raw).unwrap() };
    guest.slot(1, 0x40_0000, 1, Flags::empty());
    guest.slot(2, 0x50_0000, 1, Flags::empty());
    let before = guest.writer.backend().stats();
    let (a, b) =
        (guest.writer.backend_mut().guest_ram(4096).unwrap(), guest.writer.backend_mut().guest_ram(4096).unwrap());
    let mut batch = guest.writer.batch();
    batch.delete(key(1)).move_to(key(2), 0x60_0000 >> 12);
    batch.create_owned(key(3), 0x30_0000 >> 12, Flags::empty(), a);
    batch.create_owned(key(4), 0x70_0000 >> 12, Flags::empty(), b); // on the foreign slot
    let error = batch.commit().unwrap_err();
    assert_eq!(error.error, Error::Backend { code: libc::EEXIST });
    assert_eq!(error.error.errno(), libc::EEXIST);
    let stats = guest.writer.backend().stats();
    assert_eq!((stats.ioctls - before.ioctls, stats.refused - before.refused, stats.undone - before.undone), (7, 1, 3));
    assert!(!guest.gate.as_ref().unwrap().is_held());
    // The map is as before, and so is the kernel: slot 1 and 2 are where
    // they were (the guest reads them), 3 does not exist.
    assert_eq!(guest.slots.reader().pin().slots().count(), 3);
    guest.write(0x40_0000, &0x0101u32.to_le_bytes());
    guest.write(0x50_0000, &0x0202u32.to_le_bytes());
    start(&mut guest.vcpu, PAIR, 0x40_0000, 0x50_0000, 0);
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0x0101 });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x11, size: 4, data: 0x0202 });
    start(&mut guest.vcpu, PAIR, 0x30_0000, 0x60_0000, 0);
    assert_eq!(next_exit(&mut guest.vcpu), Exit::MmioRead { addr: 0x30_0000, len: 4 });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::MmioRead { addr: 0x60_0000, len: 4 });
    // SAFETY: deletes the foreign slot; no memory is handed over.
    unsafe { guest.vm.set_user_memory_region(kvm_userspace_memory_region { memory_size: 0, ..raw }).unwrap() };
}

/// The crate's errno for a bad request is the kernel's for the same request.
#[test]
fn errno_matches_the_kernel() {
    let Some(kvm) = kvm() else { return };
    let vm = kvm.create_vm().unwrap();
    let ram = GuestRam::new(16 * PAGE_SIZE as usize).unwrap();
    let hva = ram.as_ptr() as u64;
    let slot0 = UserMemoryRegion {
        slot: 0,
        flags: Flags::empty(),
        guest_phys_addr: 0x10_0000,
        memory_size: 16 * PAGE_SIZE,
        userspace_addr: hva,
    };
    let slot1 = UserMemoryRegion { slot: 1, guest_phys_addr: 0x20_0000, memory_size: 4 * PAGE_SIZE, ..slot0 };
    let kernel = |r: UserMemoryRegion| {
        let raw = kvm_userspace_memory_region {
            slot: r.slot,
            flags: r.flags.bits(),
            guest_phys_addr: r.guest_phys_addr,
            memory_size: r.memory_size,
            userspace_addr: r.userspace_addr,
        };
        // SAFETY: every region set here lies in `ram`, which outlives the VM.
        unsafe { vm.set_user_memory_region(raw) }.map_err(|e| e.errno())
    };
    kernel(slot0).unwrap();
    kernel(slot1).unwrap();
    let slots = Memslots::new(KvmBackend::kernel_config(&vm)).unwrap();
    let mut writer = slots.writer().unwrap();
    writer.set_region(slot0).unwrap();
    writer.set_region(slot1).unwrap();
    let ro = Flags::READONLY;
    let cases = [
        ("unknown flag", UserMemoryRegion { flags: Flags::from_bits_retain(1 << 7), ..slot0 }),
        ("unaligned size", UserMemoryRegion { memory_size: 0x800, ..slot0 }),
        ("unaligned gpa", UserMemoryRegion { guest_phys_addr: 0x10_0800, ..slot0 }),
        ("unaligned hva", UserMemoryRegion { userspace_addr: hva + 8, ..slot0 }),
        ("slot id out of range", UserMemoryRegion { slot: 40_000, ..slot1 }),
        ("address space out of range", UserMemoryRegion { slot: 1 << 16 | 5, ..slot1 }),
        ("gpa wraps", UserMemoryRegion { slot: 2, guest_phys_addr: u64::MAX - 0xfff, ..slot1 }),
        ("delete of an unknown slot", UserMemoryRegion { slot: 9, memory_size: 0, ..slot1 }),
        ("resize", UserMemoryRegion { memory_size: 8 * PAGE_SIZE, ..slot0 }),
        ("new hva", UserMemoryRegion { userspace_addr: hva + 0x1000, ..slot1 }),
        ("readonly toggle", UserMemoryRegion { flags: ro, ..slot1 }),
        ("create over another slot", UserMemoryRegion { slot: 3, guest_phys_addr: 0x10_2000, ..slot1 }),
        ("move over another slot", UserMemoryRegion { guest_phys_addr: 0x10_f000, ..slot1 }),
    ];
    for (what, request) in cases {
        let ours = writer.set_region(request).unwrap_err();
        let theirs = kernel(request).unwrap_err();
        assert_eq!(ours.errno(), theirs, "{what}: the map says {ours}, KVM says errno {theirs}");
    }
    drop(writer);
    drop(vm);
    drop(ram);
}

/// SMRAM lives in address space 1, which only a kernel with
/// `KVM_CAP_X86_SMM` has; without it the backend refuses a map with two
/// address spaces. With it, the guest reads SMRAM only in SMM.
#[test]
fn smram_in_address_space_one() {
    let Some(kvm) = kvm() else { return };
    let vm = kvm.create_vm().unwrap();
    let smm = vm.check_extension_raw(KVM_CAP_X86_SMM.into());
    let two = Config::new(2, 512);
    if smm <= 0 || KvmBackend::kernel_config(&vm).address_spaces < 2 {
        println!("SMRAM test skipped: this kernel has no KVM_CAP_X86_SMM (no address space 1)");
        let error = KvmBackend::new(vm, two).unwrap_err();
        assert!(matches!(error, KvmError::AddressSpaces { configured: 2, kernel: 1 }), "{error:?}");
        assert!(error.to_string().contains("KVM_CAP_MULTI_ADDRESS_SPACE"), "{error}");
        return;
    }
    smram_guest(vm, two);
}

/// Real mode below 1 MiB. Address space 0: RAM 0..1 MiB. Address space 1
/// (what the vCPU sees in SMM): the same RAM around SMRAM at
/// 0x30000..0x40000 (default SMBASE 0x30000; the SMI handler runs at
/// SMBASE + 0x8000). Outside SMM the guest reads 0x38100 from RAM; in SMM
/// it reads SMRAM. Written for kernels with SMM; these machines have none.
fn smram_guest(vm: VmFd, config: Config) {
    let slots = Memslots::new(config).unwrap();
    let backend = KvmBackend::new(vm, config).unwrap();
    let mut vcpu = Vcpu::new(backend.vm(), 0).unwrap();
    let mut writer = slots.writer_with(backend).unwrap();
    let ram = writer.backend_mut().guest_ram(0x10_0000).unwrap();
    let smram = writer.backend_mut().guest_ram(0x1_0000).unwrap();
    writer.create_ram(SlotKey { id: 0, as_id: 0 }, 0, Flags::empty(), ram.clone()).unwrap();
    // Address space 1: RAM below and above SMRAM (sub-ranges of the same
    // mapping; a raw registration, since `create_owned` takes a whole RAM).
    let below = Region { id: 0, as_id: 1, base_gfn: 0, npages: 0x30, hva: ram.as_ptr() as u64, flags: Flags::empty() };
    let above = Region { id: 2, base_gfn: 0x40, npages: 0xc0, hva: ram.as_ptr() as u64 + 0x4_0000, ..below };
    // SAFETY: both ranges lie in `ram`, which the backend keeps mapped
    // while the slots exist (it was admitted), and nothing else touches it.
    unsafe {
        writer.create_raw(below).unwrap();
        writer.create_raw(above).unwrap();
    }
    writer.create_ram(SlotKey { id: 1, as_id: 1 }, 0x30, Flags::empty(), smram).unwrap();
    // Non-SMM code at 0x1000 (16-bit): read the dword at 0x38100 and report
    // it, forever.
    #[rustfmt::skip]
    let normal = [
        0xb8, 0x00, 0x38,       // mov ax, 0x3800
        0x8e, 0xd8,             // mov ds, ax
        0x66, 0xa1, 0x00, 0x01, // 1: mov eax, [0x100] (0x38100)
        0x66, 0xe7, 0x10,       // out 0x10, eax
        0xeb, 0xf7,             // jmp 1b
    ];
    // SMI handler at 0x38000 in SMRAM: report the same dword, then rsm.
    #[rustfmt::skip]
    let handler = [
        0xb8, 0x00, 0x38,       // mov ax, 0x3800
        0x8e, 0xd8,             // mov ds, ax
        0x66, 0xa1, 0x00, 0x01, // mov eax, [0x100] (0x38100)
        0x66, 0xe7, 0x11,       // out 0x11, eax
        0x0f, 0xaa,             // rsm
    ];
    let reader = slots.device_reader();
    Vcpu::load(&reader.pin(), &normal, 0x1000).unwrap();
    Vcpu::load(&reader.pin(), &0x0000_aaaau32.to_le_bytes(), 0x38100).unwrap();
    let mut smm_reader = slots.device_reader();
    smm_reader.set_smm(true).unwrap();
    Vcpu::load(&smm_reader.pin(), &handler, 0x38000).unwrap();
    Vcpu::load(&smm_reader.pin(), &0x0000_5353u32.to_le_bytes(), 0x38100).unwrap();
    vcpu.setup_real_mode(0x1000).unwrap();
    assert_eq!(next_exit(&mut vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0xaaaa });
    vcpu.fd().smi().unwrap();
    assert_eq!(next_exit(&mut vcpu), Exit::IoOut { port: 0x11, size: 4, data: 0x5353 });
    assert_eq!(next_exit(&mut vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0xaaaa });
    println!("SMRAM in address space 1: read only in SMM");
}

/// The smallest guest: real mode, 16-bit code at 0x1000.
#[test]
fn real_mode_guest() {
    let Some(kvm) = kvm() else { return };
    let vm = kvm.create_vm().unwrap();
    let slots = Memslots::new(config(8)).unwrap();
    let backend = KvmBackend::new(vm, config(8)).unwrap();
    let mut vcpu = Vcpu::new(backend.vm(), 0).unwrap();
    let mut writer = slots.writer_with(backend).unwrap();
    let ram = writer.backend_mut().guest_ram(0x10_0000).unwrap();
    writer.create_ram(key(0), 0, Flags::empty(), ram).unwrap();
    #[rustfmt::skip]
    let code = [
        0x66, 0xa1, 0x00, 0x81, // mov eax, [0x8100]
        0x66, 0xe7, 0x10,       // out 0x10, eax
        0xe4, 0x20,             // in al, 0x20
        0xe6, 0x21,             // out 0x21, al
        0xf4,                   // hlt
    ];
    let reader = slots.device_reader();
    Vcpu::load(&reader.pin(), &code, 0x1000).unwrap();
    reader.pin().write_obj(0x8100, 0xcafe_f00du32).unwrap();
    vcpu.setup_real_mode(0x1000).unwrap();
    assert_eq!(next_exit(&mut vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0xcafe_f00d });
    assert_eq!(next_exit(&mut vcpu), Exit::IoIn { port: 0x20, size: 1 });
    vcpu.respond(0x5a);
    assert_eq!(next_exit(&mut vcpu), Exit::IoOut { port: 0x21, size: 1, data: 0x5a });
    assert_eq!(next_exit(&mut vcpu), Exit::Hlt);
}

/// Only memory the crate owns reaches the kernel: a slot made from a host
/// address number alone, or over RAM the backend was not told of, is
/// refused (`EFAULT`) and changes nothing on either side.
#[test]
fn slots_without_owned_memory_are_refused() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let before = (guest.slots.reader().pin().slots().count(), guest.writer.backend().kernel_slots().count());
    let address_only =
        Region { id: 1, as_id: 0, base_gfn: 0x400, npages: 1, hva: 0x7f00_0000_0000, flags: Flags::empty() };
    let error = guest.writer.create(address_only).unwrap_err();
    assert_eq!(error, Error::Backend { code: libc::EFAULT });
    let stranger = Arc::new(GuestRam::new(PAGE_SIZE as usize).unwrap());
    let error = guest.writer.create_owned(key(1), 0x400, Flags::empty(), stranger.clone()).unwrap_err();
    assert_eq!(error, Error::Backend { code: libc::EFAULT });
    let after = (guest.slots.reader().pin().slots().count(), guest.writer.backend().kernel_slots().count());
    assert_eq!(before, after);
    assert_eq!(guest.writer.backend().stats().refused, 0, "no ioctl was made");
    // Once admitted, the same RAM is taken.
    guest.writer.create_ram(key(1), 0x400, Flags::empty(), stranger).unwrap();
    assert!(!guest.gate.as_ref().unwrap().is_held());
}

/// A batch whose moves chain (B leaves, A takes B's old place): the backend
/// hears B's move first, whatever the keys, so the kernel takes both. Two
/// slots trading places cannot be done one move at a time: one of them
/// reaches the kernel as a delete and a later create (the ioctls a VMM would
/// make), which the kernel takes; the guest then reads each slot's memory at
/// its new address.
#[test]
fn chained_moves_in_one_batch() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let (a, b, free) = (0x40_0000u64, 0x50_0000u64, 0x60_0000u64);
    guest.slot(1, a, 1, Flags::empty());
    guest.slot(2, b, 1, Flags::empty());
    guest.write(a, &0xaaaa_aaaau32.to_le_bytes());
    guest.write(b, &0xbbbb_bbbbu32.to_le_bytes());
    // Slot 1 (the lower key) moves into the range slot 2 leaves.
    let mut batch = guest.writer.batch();
    batch.move_to(key(2), free >> 12).move_to(key(1), b >> 12);
    assert_eq!(batch.commit().map_err(|e| e.error), Ok(vec![Change::Moved, Change::Moved]));
    start(&mut guest.vcpu, PAIR, b, free, 0);
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0xaaaa_aaaa });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x11, size: 4, data: 0xbbbb_bbbb });
    // Trading places (through a free range inside the batch): the net moves
    // form a cycle.
    let ioctls = guest.writer.backend().stats().ioctls;
    let mut batch = guest.writer.batch();
    batch.move_to(key(2), 0x70_0000 >> 12).move_to(key(1), free >> 12).move_to(key(2), b >> 12);
    assert_eq!(batch.commit().map_err(|e| e.error), Ok(vec![Change::Moved; 3]));
    assert_eq!(guest.writer.backend().stats().ioctls - ioctls, 3, "a move, a delete and a create");
    start(&mut guest.vcpu, PAIR, b, free, 0);
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0xbbbb_bbbb });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x11, size: 4, data: 0xaaaa_aaaa });
}

/// Runs the `pair` program on its own thread until `stop`, counting its
/// iterations; a kick (`Interrupted`) is just run again.
fn spin_pairs<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    vcpu: &'s mut Vcpu,
    stop: &'s AtomicBool,
    iterations: &'s AtomicU64,
) -> std::thread::ScopedJoinHandle<'s, ()> {
    s.spawn(move || {
        let deadline = Instant::now() + PATIENCE * 4;
        while !stop.load(SeqCst) {
            assert!(Instant::now() < deadline, "the vCPU loop ran too long");
            match vcpu.run().expect("KVM_RUN") {
                Exit::IoOut { port: 0x11, .. } => {
                    iterations.fetch_add(1, SeqCst);
                }
                Exit::IoOut { port: 0x10, .. } | Exit::Interrupted => {}
                other => panic!("unexpected exit {other:?}"),
            }
        }
    })
}

/// Turning dirty logging on for several slots, one by one or in a batch,
/// and off one by one, never holds the vCPUs (a flags change does not change
/// what the guest sees), while the guest keeps running. A batch that turns
/// logging off for several slots holds them once: each ioctl frees a log
/// the backend harvested just before, and a write between the two must not
/// be lost if a later change of the batch is refused.
#[test]
fn dirty_logging_never_pauses_the_guest() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    for id in 1..=4u16 {
        guest.slot(id, 0x40_0000 + u64::from(id) * 0x10_0000, 1, Flags::empty());
    }
    start(&mut guest.vcpu, PAIR, 0x50_0000, 0x60_0000, 0);
    let gate = guest.gate.clone().unwrap();
    let quiesces = guest.writer.backend().stats().quiesces;
    let (stop, iterations) = (AtomicBool::new(false), AtomicU64::new(0));
    let Guest { writer, vcpu, .. } = &mut guest;
    std::thread::scope(|s| {
        let observer = spin_pairs(s, vcpu, &stop, &iterations);
        wait_for(&iterations, 5);
        let before = gate.stats();
        for flags in [Flags::LOG_DIRTY_PAGES, Flags::empty()] {
            for id in 1..=4u16 {
                assert_eq!(writer.set_flags(key(id), flags), Ok(Change::FlagsChanged));
                wait_for(&iterations, 1);
            }
        }
        let mut batch = writer.batch();
        for id in 1..=4u16 {
            batch.set_flags(key(id), Flags::LOG_DIRTY_PAGES);
        }
        assert_eq!(batch.commit().map_err(|e| e.error), Ok(vec![Change::FlagsChanged; 4]));
        wait_for(&iterations, 1);
        let on = gate.stats();
        assert_eq!((on.holds, on.kicks), (before.holds, before.kicks), "turning logging on held the vCPU");
        let mut batch = writer.batch();
        for id in 1..=4u16 {
            batch.set_flags(key(id), Flags::empty());
        }
        assert_eq!(batch.commit().map_err(|e| e.error), Ok(vec![Change::FlagsChanged; 4]));
        wait_for(&iterations, 1);
        let off = gate.stats();
        stop.store(true, SeqCst);
        observer.join().unwrap();
        assert_eq!(off.holds - on.holds, 1, "a batch that stops logging on several slots holds once");
    });
    assert_eq!(guest.writer.backend().stats().quiesces, quiesces + 1);
}

/// A refused batch leaves dirty logging as it was, with every page the
/// guest dirtied: here a batch turns logging off for one slot and then
/// creates a slot over memory the backend was never given (`EFAULT`), so the
/// first change is undone in the kernel.
#[test]
fn a_refused_batch_keeps_the_dirty_pages_of_a_slot_it_stopped_logging() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let a = 0x40_0000u64;
    guest.slot(1, a, 4, Flags::LOG_DIRTY_PAGES);
    guest.writer.kvm_dirty_log(key(1)).unwrap();
    guest.run_writes(&[a + 2 * PAGE_SIZE], a);
    let foreign =
        Region { id: 2, as_id: 0, base_gfn: 0x80_0000 >> 12, npages: 1, hva: 0x7e00_0000_0000, flags: Flags::empty() };
    let mut batch = guest.writer.batch();
    batch.set_flags(key(1), Flags::empty()).create(foreign);
    assert_eq!(batch.commit().map_err(|e| e.error), Err(Error::Backend { code: libc::EFAULT }));
    assert_eq!(guest.writer.kvm_dirty_log(key(1)).unwrap(), [1 << 2], "the page dirtied before the refused batch");
}

/// A single create, move or delete is one ioctl, which KVM applies
/// atomically: it does not hold the vCPU, and the guest keeps running. A
/// batch of two such changes does hold it.
#[test]
fn single_change_does_not_pause_a_running_vcpu() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    guest.slot(1, 0x40_0000, 1, Flags::empty());
    guest.slot(2, 0x50_0000, 1, Flags::empty());
    start(&mut guest.vcpu, PAIR, 0x40_0000, 0x50_0000, 0);
    let gate = guest.gate.clone().unwrap();
    let (x, y) =
        (guest.writer.backend_mut().guest_ram(4096).unwrap(), guest.writer.backend_mut().guest_ram(4096).unwrap());
    let (stop, iterations) = (AtomicBool::new(false), AtomicU64::new(0));
    let Guest { writer, vcpu, .. } = &mut guest;
    let (singles, batch) = std::thread::scope(|s| {
        let observer = spin_pairs(s, vcpu, &stop, &iterations);
        wait_for(&iterations, 5);
        let before = gate.stats();
        for round in 0..20u64 {
            writer.create_ram(key(3), (0x80_0000 + round * 0x1000) >> 12, Flags::empty(), x.clone()).unwrap();
            writer.move_to(key(3), 0x90_0000 >> 12).unwrap();
            writer.delete(key(3)).unwrap();
        }
        wait_for(&iterations, 1);
        let singles = gate.stats();
        let mut batch = writer.batch();
        batch.create_owned(key(3), 0x80_0000 >> 12, Flags::empty(), x.clone());
        batch.create_owned(key(4), 0x90_0000 >> 12, Flags::empty(), y.clone());
        batch.commit().unwrap();
        wait_for(&iterations, 1);
        let batch = gate.stats();
        stop.store(true, SeqCst);
        observer.join().unwrap();
        ((before, singles), batch)
    });
    let ((before, singles), batch) = (singles, batch);
    assert_eq!((singles.holds, singles.kicks), (before.holds, before.kicks), "60 single changes held the vCPU");
    assert_eq!(batch.holds, singles.holds + 1, "a batch of two creates holds the vCPU once");
    println!(
        "60 single changes: no hold; a batch of two: {} hold, {} kicks",
        batch.holds - singles.holds,
        batch.kicks - singles.kicks
    );
}

/// A `Wait` that panics once armed.
#[derive(Clone, Default)]
struct PanickingWait(Arc<AtomicBool>);

impl memslots::Wait for PanickingWait {
    fn pause(&self, step: u32) {
        if self.0.swap(false, SeqCst) {
            panic!("the wait strategy panics");
        }
        memslots::SpinThenYield.pause(step);
    }
}

/// A panic that unwinds out of a batch (here the writer's wait strategy,
/// in a grace period held up by a device thread) while the writer lives on
/// does not leave the vCPUs held at the gate: they run again.
#[test]
fn gate_is_released_when_a_batch_unwinds() {
    let Some(kvm) = kvm() else { return };
    let armed = PanickingWait::default();
    let slots = Memslots::with_wait(config(512), armed.clone()).unwrap();
    let mut guest = Guest::with_slots(kvm.create_vm().unwrap(), slots, true);
    guest.slot(1, 0x40_0000, 1, Flags::empty());
    guest.slot(2, 0x50_0000, 1, Flags::empty());
    guest.write(0x40_0000, &0x0101u32.to_le_bytes());
    guest.write(0x50_0000, &0x0202u32.to_le_bytes());
    let (pinned_tx, pinned) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let device = std::thread::spawn({
        let reader = guest.slots.device_reader();
        move || {
            let view = reader.pin();
            pinned_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(view);
        }
    });
    pinned.recv().unwrap();
    armed.0.store(true, SeqCst);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut batch = guest.writer.batch();
        batch.move_to(key(1), 0x60_0000 >> 12).move_to(key(2), 0x70_0000 >> 12);
        batch.commit()
    }));
    assert!(unwound.is_err(), "the wait strategy's panic reaches the caller");
    release.send(()).unwrap();
    device.join().unwrap();
    let gate = guest.gate.as_ref().unwrap();
    assert!(!gate.is_held(), "the unwound batch left the vCPUs held");
    // The vCPU runs: the kernel has the whole batch (the map is poisoned).
    start(&mut guest.vcpu, PAIR, 0x60_0000, 0x70_0000, 0);
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0x0101 });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x11, size: 4, data: 0x0202 });
    assert_eq!(guest.writer.move_to(key(1), 0x40_0000 >> 12), Err(Error::Poisoned));
}

/// A vCPU registered with a gate runs only through it: a run loop that
/// calls `VcpuFd::run` directly (forgetting the gate) gets `EINTR` at once
/// and the guest does not move; through the gate it runs.
#[test]
fn registered_vcpu_runs_only_through_the_gate() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let gate = guest.gate.clone().unwrap();
    assert_eq!(gate.registered(), 1);
    guest.slot(1, 0x40_0000, 1, Flags::empty());
    guest.write(0x40_0000, &0x0101u32.to_le_bytes());
    start(&mut guest.vcpu, PAIR, 0x40_0000, 0x40_0000, 0);
    let rip = guest.vcpu.regs().unwrap().rip;
    for _ in 0..3 {
        let error = guest.vcpu.fd_mut().run().map(|_| ()).expect_err("a registered vCPU is parked");
        assert_eq!(error.errno(), libc::EINTR);
    }
    assert_eq!(guest.vcpu.regs().unwrap().rip, rip, "the guest did not run outside the gate");
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0x0101 });
    // A registration for another vCPU cannot run this one.
    let other = guest.vm.create_vcpu(1).unwrap();
    let mut seat = gate.register(&guest.vm, &other).unwrap();
    assert_eq!(gate.registered(), 2);
    let error = seat.run(guest.vcpu.fd_mut()).map(|_| ()).unwrap_err();
    assert_eq!(error.errno(), libc::EINVAL);
    drop(seat);
    assert_eq!(gate.registered(), 1);
}

/// In a debug build, a hold that finds a registered vCPU unparked behind the
/// gate's back (its `immediate_exit` cleared, so it may run outside the
/// gate) panics, and the panic leaves the gate open.
#[test]
#[cfg(debug_assertions)]
fn unparked_registered_vcpu_is_caught_at_a_hold() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let gate = guest.gate.clone().unwrap();
    drop(gate.hold());
    guest.vcpu.fd_mut().set_kvm_immediate_exit(0);
    let caught = std::panic::catch_unwind(|| drop(gate.hold()));
    assert!(caught.is_err(), "the hold saw the unparked vCPU");
    assert!(!gate.is_held());
}

/// The VM is shared: the VMM keeps its own handle for vCPUs and VM ioctls
/// while the writer owns the backend, with no `dup`.
#[test]
fn vm_is_shared_with_the_backend() {
    let Some(kvm) = kvm() else { return };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let slots = Memslots::new(config(8)).unwrap();
    let mut writer = slots.writer_with(KvmBackend::new(vm.clone(), config(8)).unwrap()).unwrap();
    assert!(Arc::ptr_eq(writer.backend().vm(), &vm));
    let ram = writer.backend_mut().guest_ram(0x10_0000).unwrap();
    writer.create_ram(key(0), 0, Flags::LOG_DIRTY_PAGES, ram).unwrap();
    // A VM ioctl and a vCPU through the VMM's own handle.
    let log = vm.get_dirty_log(0, 0x10_0000).unwrap();
    assert!(log.iter().all(|&word| word == 0));
    let mut vcpu = Vcpu::new(&vm, 0).unwrap();
    let reader = slots.device_reader();
    Vcpu::load(&reader.pin(), &[0xf4], 0x1000).unwrap();
    vcpu.setup_real_mode(0x1000).unwrap();
    assert_eq!(vcpu.run().unwrap(), Exit::Hlt);
    drop(writer);
    assert_eq!(Arc::strong_count(&vm), 1, "the backend's handle went with it");
}

/// `KVM_GET_SUPPORTED_CPUID` leaf 0x8000_0008, `EAX[7:0]`.
fn cpuid_phys_bits(kvm: &Kvm) -> u32 {
    let cpuid = kvm.get_supported_cpuid(memslots::kvm::kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
    cpuid.as_slice().iter().find(|e| e.function == 0x8000_0008).map_or(0, |e| e.eax & 0xff)
}

/// The guest physical address width of `kernel_config` is the kernel's: a
/// slot whose last page lies just past it is refused by the crate with the
/// kernel's errno and changes nothing; one just inside is taken by both.
/// A width from CPUID alone would refuse slots the kernel takes.
#[test]
fn phys_addr_width_matches_the_kernel() {
    let Some(kvm) = kvm() else { return };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let config = KvmBackend::kernel_config(&vm).with_address_spaces(1).with_max_slots(512);
    let bits = u32::from(config.phys_addr_bits);
    let cpuid = cpuid_phys_bits(&kvm);
    println!("phys_addr_bits: {bits} from the kernel; CPUID 0x8000_0008 says {cpuid}");
    // x86 KVM's limit is at most 52 bits (`kvm_mmu_max_gfn`): 64 would mean
    // the probe found none.
    assert!((13..=52).contains(&bits), "the kernel's width was not found: {bits}");
    let mut guest = Guest::on(Arc::try_unwrap(vm).unwrap(), config, true);
    let bare = kvm.create_vm().unwrap();
    let page = GuestRam::new(PAGE_SIZE as usize).unwrap();
    let kernel = |slot: u32, gpa: u64| {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: PAGE_SIZE,
            userspace_addr: page.as_ptr() as u64,
        };
        // SAFETY: `page` outlives `bare`, which has no vCPU.
        unsafe { bare.set_user_memory_region(region) }.map_err(|e| e.errno())
    };
    let top = (1u64 << bits) - PAGE_SIZE;
    let state = |guest: &Guest| {
        (
            guest.slots.reader().pin().slots().count(),
            guest.writer.backend().kernel_slots().count(),
            guest.writer.backend().stats(),
        )
    };
    let before = state(&guest);
    // Just past: created there, and moved there.
    let ram = guest.writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap();
    let ours = guest.writer.create_ram(key(1), (1u64 << bits) >> 12, Flags::empty(), ram).unwrap_err();
    assert_eq!(ours, Error::BeyondPhysAddrWidth { key: key(1), bits: bits as u8 });
    assert_eq!(Err(ours.errno()), kernel(1, 1u64 << bits), "create past 2^{bits}");
    assert_eq!(state(&guest), before, "nothing changed");
    let ours = guest.writer.move_to(CODE_KEY, ((1u64 << bits) - CODE_SIZE as u64 + PAGE_SIZE) >> 12).unwrap_err();
    assert_eq!(ours, Error::BeyondPhysAddrWidth { key: CODE_KEY, bits: bits as u8 });
    assert_eq!(kernel(2, 0x10_0000), Ok(()));
    assert_eq!(Err(ours.errno()), kernel(2, 1u64 << bits), "move past 2^{bits}");
    assert_eq!(state(&guest), before, "nothing changed");
    // Just inside: both take it.
    let ram = guest.writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap();
    guest.writer.create_ram(key(1), top >> 12, Flags::empty(), ram).unwrap();
    assert_eq!(kernel(3, top), Ok(()));
    // At the CPUID width the kernel may take more than CPUID says: so does
    // the crate.
    if (13..bits).contains(&cpuid) {
        assert_eq!(kernel(4, 1u64 << cpuid), Ok(()));
        let ram = guest.writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap();
        guest.writer.create_ram(key(2), (1u64 << cpuid) >> 12, Flags::empty(), ram).unwrap();
    }
    drop(guest);
    drop(bare);
}

/// Two slots deleted and made again with the same ids and the same memory
/// at each other's guest addresses, in one batch: KVM takes that order of
/// ioctls (delete, delete, create, create), so the batch succeeds, and the
/// guest reads each slot's memory at its new address.
#[test]
fn slots_recreated_at_swapped_addresses_in_one_batch() {
    let Some(kvm) = kvm() else { return };
    let mut guest = Guest::new(&kvm, true);
    let (a, b) = (0x40_0000u64, 0x50_0000u64);
    let one = guest.slot(1, a, 1, Flags::empty());
    let two = guest.slot(2, b, 1, Flags::empty());
    guest.write(a, &0x1111_1111u32.to_le_bytes());
    guest.write(b, &0x2222_2222u32.to_le_bytes());
    let mut batch = guest.writer.batch();
    batch.delete(key(1)).delete(key(2));
    batch.create_owned(key(1), b >> 12, Flags::empty(), one);
    batch.create_owned(key(2), a >> 12, Flags::empty(), two);
    let changes = batch.commit().map_err(|e| e.error);
    assert_eq!(changes, Ok(vec![Change::Deleted, Change::Deleted, Change::Created, Change::Created]));
    assert_eq!(guest.writer.backend().kernel_slot(key(1)).map(|r| r.base_gfn), Some(b >> 12));
    start(&mut guest.vcpu, PAIR, a, b, 0);
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x10, size: 4, data: 0x2222_2222 });
    assert_eq!(next_exit(&mut guest.vcpu), Exit::IoOut { port: 0x11, size: 4, data: 0x1111_1111 });
}
