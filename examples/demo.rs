//! A realistic x86 VM layout under load: one vCPU reader thread per core
//! looks up random guest addresses while the memory manager hot-plugs and
//! unplugs DIMMs and toggles dirty logging.
//!
//! `cargo run --release --example demo [seconds] [vcpu threads]`
//!
//! With a busy reader on every core the writer must wait for a core to run
//! on, so updates/s falls from ~10^5 to ~10^2: each update's grace-period
//! wait yields to the scheduler. Real vCPU threads spend their time in
//! `KVM_RUN`, unpinned, so the second argument lets you leave a core free.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memslots::{gpa_to_gfn, Config, Flags, Memslots, Region, SlotKey};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const HOST: u64 = 0x7f00_0000_0000;

/// (id, guest address, size, host address): low RAM below 640 KiB, RAM from
/// 1 MiB up to the PCI hole at 3 GiB, and 13 GiB of RAM above 4 GiB.
const RAM: [(u16, u64, u64, u64); 3] =
    [(0, 0, 640 * KIB, HOST), (1, MIB, 3 * GIB - MIB, HOST + MIB), (2, 4 * GIB, 13 * GIB, HOST + 3 * GIB)];
/// SMRAM (the legacy A-segment), visible only to vCPUs in SMM.
const SMRAM: (u16, u64, u64, u64) = (3, 640 * KIB, 128 * KIB, HOST + 16 * GIB);
/// Hot-pluggable DIMMs: 8 slots of 128 MiB above 32 GiB.
const DIMMS: u16 = 8;

fn region((id, gpa, size, hva): (u16, u64, u64, u64), as_id: u16) -> Region {
    Region { id, as_id, base_gfn: gpa_to_gfn(gpa), npages: gpa_to_gfn(size), hva, flags: Flags::empty() }
}

fn dimm(i: u16) -> Region {
    let gpa = 32 * GIB + u64::from(i) * 128 * MIB;
    region((10 + i, gpa, 128 * MIB, HOST + 64 * GIB + u64::from(i) * 128 * MIB), 0)
}

fn main() -> Result<(), memslots::Error> {
    let seconds = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let slots = Memslots::new(Config::default())?;
    let mut writer = slots.writer()?;
    // Address space 1 (SMM) sees all RAM plus SMRAM, as in KVM.
    for as_id in 0..2 {
        for ram in RAM {
            writer.create(region(ram, as_id))?;
        }
    }
    writer.create(region(SMRAM, 1))?;

    let vcpus = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    println!("memslots demo: {vcpus} vCPU reader threads, 1 memory-manager thread, {seconds} s");
    println!("layout: low RAM 640 KiB, RAM 1 MiB..3 GiB, RAM 4..17 GiB; SMRAM 128 KiB at 640 KiB in address space 1");
    println!("        {DIMMS} hot-plug DIMM slots of 128 MiB at 32 GiB");
    {
        let reader = slots.reader();
        let view = reader.pin();
        for gpa in [0x9_f000, 0xa_0000, 2 * GIB, 3 * GIB + 5, 5 * GIB] {
            match view.gfn_to_slot(gpa_to_gfn(gpa)) {
                Some(slot) => println!(
                    "  gpa {gpa:#011x} -> slot {} hva {:#x}",
                    slot.id(),
                    slot.gfn_to_hva(gpa_to_gfn(gpa)).unwrap()
                ),
                None => println!("  gpa {gpa:#011x} -> no slot (MMIO)"),
            }
        }
    }

    let stop = AtomicBool::new(false);
    let lookups = AtomicU64::new(0);
    let smm_hits = AtomicU64::new(0);
    let run = Duration::from_secs_f64(seconds);
    let (updates, elapsed) = std::thread::scope(|s| {
        for cpu in 0..vcpus {
            let (slots, stop, lookups, smm_hits) = (&slots, &stop, &lookups, &smm_hits);
            s.spawn(move || {
                let mut vcpu = slots.reader();
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ cpu as u64;
                let mut done = 0u64;
                let mut smram = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // One in 64 exits is an SMI, handled in SMM.
                    vcpu.set_smm(seed.is_multiple_of(64)).expect("two address spaces");
                    // One pin per exit, many lookups under it.
                    let view = vcpu.pin();
                    for _ in 0..256 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let gfn = gpa_to_gfn(seed % (34 * GIB));
                        if let Some(slot) = view.gfn_to_slot(gfn) {
                            smram += u64::from(slot.id() == SMRAM.0);
                        }
                    }
                    done += 256;
                }
                lookups.fetch_add(done, Ordering::Relaxed);
                smm_hits.fetch_add(smram, Ordering::Relaxed);
            });
        }
        let start = Instant::now();
        let mut updates = 0u64;
        let mut plugged = [false; DIMMS as usize];
        let mut i = 0usize;
        while start.elapsed() < run {
            let d = (i % DIMMS as usize) as u16;
            let key = SlotKey { id: 10 + d, as_id: 0 };
            if plugged[d as usize] {
                // Start dirty logging (as for migration), then unplug.
                writer.set_flags(key, Flags::LOG_DIRTY_PAGES).expect("re-flag");
                writer.delete(key).expect("unplug");
                updates += 2;
            } else {
                writer.create(dimm(d)).expect("hot-plug");
                updates += 1;
            }
            plugged[d as usize] ^= true;
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        (updates, start.elapsed())
    });
    let secs = elapsed.as_secs_f64();
    let total = lookups.load(Ordering::Relaxed);
    println!(
        "lookups: {:.1} M/s total, {:.1} M/s per vCPU ({total} in {secs:.2} s)",
        total as f64 / secs / 1e6,
        total as f64 / secs / 1e6 / vcpus as f64
    );
    println!(
        "updates: {:.0}/s (hot-plug, dirty-log on, unplug; each waits for its grace periods)",
        updates as f64 / secs
    );
    if vcpus >= std::thread::available_parallelism().map_or(2, |n| n.get()) {
        println!("(every core ran a busy reader, so the writer waited for CPU time; try `demo 3 1`)");
    }
    println!("SMRAM hits from vCPUs in SMM: {}", smm_hits.load(Ordering::Relaxed));
    println!("slot objects alive: {} (one shared copy per slot)", slots.slot_objects());
    Ok(())
}
