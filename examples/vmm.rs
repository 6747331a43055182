//! A small VMM on the `kvm` backend: it boots a 64-bit guest that sums its
//! memory regions in a loop and reports each sum over port IO, and while the
//! guest runs it hot-plugs and unplugs a DIMM, moves a memory window back
//! and forth, and makes and deletes a scratch slot as fast as it can. It prints, second by second, what the guest saw and how many
//! slot changes the memory manager made.
//!
//! ```text
//! cargo run --release --features kvm --example vmm [seconds]
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memslots::kvm::kvm_ioctls::Kvm;
use memslots::kvm::{Exit, KvmBackend, KvmWriter, Vcpu, VcpuGate};
use memslots::{Flags, GuestRam, Memslots, SlotKey, Writer, PAGE_SIZE};

/// The guest (64-bit; `as` syntax). rdi points to a table of (gpa, qwords)
/// pairs ending with gpa 0. For each region it reports the region's gpa on
/// port 0x12 and the low half of the sum of its qwords on port 0x10; after
/// the table, it reports the end of a pass on port 0x11; then again.
#[rustfmt::skip]
const GUEST: [u8; 0x2d] = [
    0x48, 0x89, 0xfb,       // 00: outer: mov rbx, rdi
    0x48, 0x8b, 0x33,       // 03: next: mov rsi, [rbx]
    0x48, 0x85, 0xf6,       // 06: test rsi, rsi
    0x74, 0x1e,             // 09: jz end_pass
    0x48, 0x8b, 0x4b, 0x08, // 0b: mov rcx, [rbx+8]
    0x89, 0xf0,             // 0f: mov eax, esi
    0xe7, 0x12,             // 11: out 0x12, eax
    0x31, 0xc0,             // 13: xor eax, eax
    0x48, 0x03, 0x06,       // 15: lp: add rax, [rsi]
    0x48, 0x83, 0xc6, 0x08, // 18: add rsi, 8
    0x48, 0xff, 0xc9,       // 1c: dec rcx
    0x75, 0xf4,             // 1f: jnz lp
    0xe7, 0x10,             // 21: out 0x10, eax
    0x48, 0x83, 0xc3, 0x10, // 23: add rbx, 16
    0xeb, 0xda,             // 27: jmp next
    0xe7, 0x11,             // 29: end_pass: out 0x11, eax
    0xeb, 0xd3,             // 2b: jmp outer
];

/// Boot slot: page tables, code, the region table, the stack.
const BOOT: u64 = 0x20_0000;
const BOOT_SIZE: usize = 0x1_0000;
const CODE: u64 = BOOT + 0x8000;
const TABLE: u64 = BOOT + 0xc000;
/// Main RAM, always there.
const RAM: u64 = 0x40_0000;
const RAM_SIZE: usize = 1 << 20;
/// The hot-pluggable DIMM.
const DIMM: u64 = 0x1000_0000;
const DIMM_SIZE: usize = 1 << 20;
/// The window that moves between two places.
const WINDOW: [u64; 2] = [0x2000_0000, 0x3000_0000];
const WINDOW_SIZE: usize = 64 << 10;
/// Bytes the guest sums in each region (it is slow: about 0.7 µs an
/// instruction under nested KVM).
const SUMMED: u64 = 16 << 10;

const BOOT_KEY: SlotKey = SlotKey { id: 0, as_id: 0 };
const RAM_KEY: SlotKey = SlotKey { id: 1, as_id: 0 };
const DIMM_KEY: SlotKey = SlotKey { id: 2, as_id: 0 };
const WINDOW_KEY: SlotKey = SlotKey { id: 3, as_id: 0 };
/// A scratch page below the guest's memory.
const SCRATCH: u64 = 0x10_0000;
const SCRATCH_KEY: SlotKey = SlotKey { id: 4, as_id: 0 };
/// How often the window moves.
const WINDOW_PERIOD: Duration = Duration::from_millis(50);

/// What the vCPU thread saw, shared with the memory manager.
#[derive(Default)]
struct Seen {
    passes: AtomicU64,
    sums_ok: AtomicU64,
    sums_wrong: AtomicU64,
    /// Region sums that met a hole (an MMIO read) on the way.
    sums_torn: AtomicU64,
    mmio_reads: AtomicU64,
    kicks: AtomicU64,
    /// Per region (by gpa): sums reported.
    by_region: Mutex<HashMap<u64, u64>>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(3), |s| s.parse())?;
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            println!("vmm: /dev/kvm unavailable ({e})");
            return Ok(());
        }
    };
    let vm = kvm.create_vm()?;
    let config = KvmBackend::kernel_config(&vm);
    println!(
        "vmm: KVM has {} slot ids and {} address space(s); the slot map takes the same",
        config.max_slots, config.address_spaces
    );
    let slots = Memslots::new(config)?;
    let gate = VcpuGate::new()?;
    let backend = KvmBackend::new(vm, config)?.with_gate(gate.clone());
    let mut vcpu = Vcpu::new(backend.vm(), 0)?.with_gate(&gate)?;
    let mut writer = slots.writer_with(backend)?;

    // Boot slot and main RAM.
    let boot = writer.backend_mut().guest_ram(BOOT_SIZE)?;
    writer.create_ram(BOOT_KEY, BOOT >> 12, Flags::empty(), boot)?;
    let ram = writer.backend_mut().guest_ram(RAM_SIZE)?;
    writer.create_ram(RAM_KEY, RAM >> 12, Flags::empty(), ram)?;
    let window = writer.backend_mut().guest_ram(WINDOW_SIZE)?;
    writer.create_ram(WINDOW_KEY, WINDOW[0] >> 12, Flags::empty(), window)?;
    let mut expected = HashMap::new();
    {
        let reader = slots.device_reader();
        let view = reader.pin();
        Vcpu::load(&view, &GUEST, CODE)?;
        vcpu.setup_long_mode(&view, BOOT, CODE, BOOT + BOOT_SIZE as u64)?;
        let ram_sum = fill(&view, RAM, 1);
        let window_sum = fill(&view, WINDOW[0], 3);
        expected.insert(RAM, ram_sum);
        expected.insert(WINDOW[0], window_sum);
        expected.insert(WINDOW[1], window_sum);
        write_table(&view, &[RAM, WINDOW[0]]);
    }
    let mut regs = vcpu.regs()?;
    regs.rdi = TABLE;
    vcpu.fd().set_regs(&regs)?;
    println!(
        "vmm: guest sums {} KiB of each region: RAM at {RAM:#x}, a window at {:#x}; DIMM slot at {DIMM:#x}",
        SUMMED >> 10,
        WINDOW[0]
    );

    let expected = Arc::new(Mutex::new(expected));
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let vcpu_thread = {
        let (expected, seen, stop) = (expected.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || run_vcpu(vcpu, &expected, &seen, &stop))
    };

    let mut manager =
        Manager { writer, slots: slots.clone(), gate, expected, seen: seen.clone(), changes: 0, moves: 0 };
    let started = Instant::now();
    let mut plugged = false;
    let mut plugs = 0u32;
    let mut at = 0usize;
    let mut last = (Instant::now(), 0u64, Snapshot::take(&seen));
    let mut next_dimm = Instant::now() + Duration::from_millis(250);
    let mut next_move = Instant::now();
    let scratch = manager.writer.backend_mut().guest_ram(PAGE_SIZE as usize)?;
    while started.elapsed() < Duration::from_secs(seconds) {
        // In between, a scratch slot below the guest's memory comes and
        // goes every millisecond (the guest never reads it). A single
        // change is one ioctl, which KVM applies atomically: it does not
        // hold the vCPU (a batch of several holds it once).
        manager.writer.create_ram(SCRATCH_KEY, SCRATCH >> 12, Flags::empty(), scratch.clone())?;
        manager.writer.delete(SCRATCH_KEY)?;
        manager.changes += 2;
        std::thread::sleep(Duration::from_millis(1));
        if Instant::now() >= next_move {
            at ^= 1;
            manager.move_window(at, plugged)?;
            next_move += WINDOW_PERIOD;
        }
        if Instant::now() >= next_dimm {
            if plugged {
                manager.unplug_dimm(at)?;
            } else {
                plugs += 1;
                manager.plug_dimm(at, plugs)?;
            }
            plugged = !plugged;
            next_dimm += Duration::from_millis(250);
        }
        if last.0.elapsed() >= Duration::from_secs(1) {
            let now = Snapshot::take(&seen);
            let secs = last.0.elapsed().as_secs_f64();
            println!(
                "t={:>4.1}s  guest: {:>4} passes, {:>5} sums right, {} wrong, {:>3} met a hole ({} MMIO reads)  \
                 | {:>4.0} slot changes/s, {} vCPU kicks",
                started.elapsed().as_secs_f64(),
                now.passes - last.2.passes,
                now.ok - last.2.ok,
                now.wrong - last.2.wrong,
                now.torn - last.2.torn,
                now.mmio - last.2.mmio,
                (manager.changes - last.1) as f64 / secs,
                now.kicks - last.2.kicks,
            );
            last = (Instant::now(), manager.changes, now);
        }
    }
    stop.store(true, Relaxed);
    vcpu_thread.join().map_err(|_| "the vCPU thread panicked")??;

    let total = Snapshot::take(&seen);
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "vmm: {} slot changes in {elapsed:.1} s ({:.0}/s): {} DIMM plugs, {} window moves, the rest a scratch \
         slot made and deleted",
        manager.changes,
        manager.changes as f64 / elapsed,
        plugs,
        manager.moves
    );
    let by_region = seen.by_region.lock().unwrap();
    let mut regions: Vec<_> = by_region.iter().collect();
    regions.sort();
    for (gpa, count) in regions {
        let name = match *gpa {
            RAM => "RAM",
            DIMM => "DIMM",
            _ => "window",
        };
        println!("vmm: the guest summed {name:>6} at {gpa:#011x} {count} times");
    }
    println!(
        "vmm: {} passes; {} sums right, {} wrong; {} sums met a hole (the window moved while the guest was in \
         it: {} MMIO reads, answered 0)",
        total.passes, total.ok, total.wrong, total.torn, total.mmio
    );
    if total.wrong > 0 {
        return Err("the guest read wrong memory".into());
    }
    Ok(())
}

/// Fills a region with a pattern (seeded by `seed`) and returns the low
/// half of the sum of its first `SUMMED` bytes, as the guest reports it.
fn fill(view: &memslots::View<'_>, gpa: u64, seed: u64) -> u32 {
    let mut sum = 0u64;
    for i in 0..SUMMED / 8 {
        let value = (seed << 40) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        view.write_obj(gpa + 8 * i, value).expect("region mapped");
        sum = sum.wrapping_add(value);
    }
    sum as u32
}

/// Writes the region table the guest walks.
fn write_table(view: &memslots::View<'_>, regions: &[u64]) {
    let mut table = Vec::new();
    for &gpa in regions {
        table.extend_from_slice(&gpa.to_le_bytes());
        table.extend_from_slice(&(SUMMED / 8).to_le_bytes());
    }
    table.extend_from_slice(&[0; 16]);
    view.write(TABLE, &table).expect("boot slot mapped");
}

struct Manager {
    writer: Writer<KvmBackend>,
    slots: Memslots,
    gate: VcpuGate,
    expected: Arc<Mutex<HashMap<u64, u32>>>,
    seen: Arc<Seen>,
    changes: u64,
    moves: u64,
}

impl Manager {
    fn table(&self, window_at: usize, dimm: bool) {
        let mut regions = vec![RAM];
        if dimm {
            regions.push(DIMM);
        }
        regions.push(WINDOW[window_at]);
        write_table(&self.slots.device_reader().pin(), &regions);
    }

    /// Moves the window and points the table at its new place, with the
    /// vCPU held out meanwhile (the gate nests: the backend holds it again
    /// around the ioctl). A guest that was inside the window when it moved
    /// finishes that region on a hole (MMIO reads).
    fn move_window(&mut self, to: usize, dimm: bool) -> Result<(), Box<dyn Error>> {
        let held = self.gate.hold();
        let moved = self.writer.move_to(WINDOW_KEY, WINDOW[to] >> 12);
        if moved.is_ok() {
            self.table(to, dimm);
        }
        drop(held);
        moved?;
        self.changes += 1;
        self.moves += 1;
        Ok(())
    }

    /// Plugs a fresh DIMM, fills it, then lists it in the table.
    fn plug_dimm(&mut self, window_at: usize, seed: u32) -> Result<(), Box<dyn Error>> {
        let ram: Arc<GuestRam> = self.writer.backend_mut().guest_ram(DIMM_SIZE)?;
        self.writer.create_ram(DIMM_KEY, DIMM >> 12, Flags::empty(), ram)?;
        self.changes += 1;
        let sum = fill(&self.slots.device_reader().pin(), DIMM, 100 + u64::from(seed));
        self.expected.lock().unwrap().insert(DIMM, sum);
        let held = self.gate.hold();
        self.table(window_at, true);
        drop(held);
        println!("vmm: plugged a {} MiB DIMM at {DIMM:#x}", DIMM_SIZE >> 20);
        Ok(())
    }

    /// Takes the DIMM out of the table, waits until the guest has finished
    /// the pass that may still read it, then unplugs it: the guest never
    /// meets the hole.
    fn unplug_dimm(&mut self, window_at: usize) -> Result<(), Box<dyn Error>> {
        let held = self.gate.hold();
        self.table(window_at, false);
        drop(held);
        let pass = self.seen.passes.load(Relaxed);
        while self.seen.passes.load(Relaxed) < pass + 2 {
            std::thread::sleep(Duration::from_micros(200));
        }
        self.writer.delete(DIMM_KEY)?;
        self.changes += 1;
        println!("vmm: unplugged the DIMM ({} pages)", DIMM_SIZE as u64 / PAGE_SIZE);
        Ok(())
    }
}

fn run_vcpu(
    mut vcpu: Vcpu,
    expected: &Mutex<HashMap<u64, u32>>,
    seen: &Seen,
    stop: &AtomicBool,
) -> Result<(), memslots::kvm::kvm_ioctls::Error> {
    let mut region = 0u64;
    let mut hole = false;
    while !stop.load(Relaxed) {
        match vcpu.run()? {
            Exit::IoOut { port: 0x12, data, .. } => {
                (region, hole) = (u64::from(data), false);
            }
            Exit::IoOut { port: 0x10, data, .. } => {
                *seen.by_region.lock().unwrap().entry(region).or_default() += 1;
                let want = expected.lock().unwrap().get(&region).copied();
                if hole {
                    seen.sums_torn.fetch_add(1, Relaxed);
                } else if want == Some(data) {
                    seen.sums_ok.fetch_add(1, Relaxed);
                } else {
                    seen.sums_wrong.fetch_add(1, Relaxed);
                    eprintln!("vmm: region {region:#x}: guest sum {data:#x}, expected {want:x?}");
                }
            }
            Exit::IoOut { port: 0x11, .. } => {
                seen.passes.fetch_add(1, Relaxed);
            }
            Exit::MmioRead { .. } => {
                vcpu.respond(0);
                hole = true;
                seen.mmio_reads.fetch_add(1, Relaxed);
            }
            Exit::Interrupted => {
                seen.kicks.fetch_add(1, Relaxed);
            }
            other => panic!("unexpected exit {other:?}"),
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Snapshot {
    passes: u64,
    ok: u64,
    wrong: u64,
    torn: u64,
    mmio: u64,
    kicks: u64,
}

impl Snapshot {
    fn take(seen: &Seen) -> Snapshot {
        Snapshot {
            passes: seen.passes.load(Relaxed),
            ok: seen.sums_ok.load(Relaxed),
            wrong: seen.sums_wrong.load(Relaxed),
            torn: seen.sums_torn.load(Relaxed),
            mmio: seen.mmio_reads.load(Relaxed),
            kicks: seen.kicks.load(Relaxed),
        }
    }
}
