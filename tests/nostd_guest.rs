//! The `no_std` claim on bare metal. Builds the test kernel in
//! `nostd-guest/` for `x86_64-unknown-none`, loads it into a VM through the
//! crate's own KVM backend and vCPU helper, runs its two vCPUs (vCPU 0
//! changes a slot map, vCPU 1 looks slots up and checks every answer against
//! the layouts vCPU 0 announces) and checks their reports. Then times the
//! kernel's lookup loop against the same loop, from the same source file, in
//! this process.
//!
//! Runs for real when `/dev/kvm` opens; otherwise prints one line,
//! `nostd_guest test skipped: /dev/kvm unavailable`, and passes.
//!
//! Guest physical memory, one 16 MiB slot at 0: page tables at
//! [`TABLES`], the two stacks below 1 MiB, the kernel at 2 MiB (its heap
//! is a static array in its `.bss`).

#![cfg(all(feature = "kvm", target_arch = "x86_64"))]

#[path = "../nostd-guest/src/bench.rs"]
mod bench;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use memslots::kvm::kvm_ioctls::Kvm;
use memslots::kvm::{Exit, KvmBackend, KvmWriter, Vcpu, VcpuGate, LONG_MODE_TABLES_SIZE};
use memslots::{Config, Flags, Memslots, SlotKey};

/// Guest RAM, from gpa 0.
const RAM: usize = 16 << 20;
/// The page tables and GDT of `Vcpu::setup_long_mode`.
const TABLES: u64 = 0x1_0000;
/// Top of each vCPU's 256 KiB stack.
const STACK_TOPS: [u64; 2] = [0x10_0000, 0xc_0000];
/// Where `nostd-guest/link.ld` links the kernel.
const KERNEL: u64 = 0x20_0000;
/// The guest's console port (text) and marker port (timestamps), as in
/// `nostd-guest/src/port.rs`.
const CONSOLE: u16 = 0xe9;
const MARKER: u16 = 0x30;
const BENCH_START: u32 = 1;
const BENCH_END: u32 = 2;
/// How long the guest may run before the test kicks it out and fails.
const PATIENCE: Duration = Duration::from_secs(300);

#[test]
fn nostd_guest_on_two_vcpus() {
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        // CI sets MEMSLOTS_REQUIRE_KVM where /dev/kvm is there: no skipping.
        Err(e) if std::env::var_os("MEMSLOTS_REQUIRE_KVM").is_some() => panic!("/dev/kvm: {e}"),
        Err(_) => {
            println!("nostd_guest test skipped: /dev/kvm unavailable");
            return;
        }
    };
    let elf = std::fs::read(build_kernel()).expect("reading the kernel");
    let started = Instant::now();
    let runs = run_guest(&kvm, &elf);
    let elapsed = started.elapsed();
    let console: String = runs.iter().map(|run| run.console.as_str()).collect();
    print!("{console}");
    for (index, run) in runs.iter().enumerate() {
        assert_eq!(run.exit, Some(Exit::Hlt), "vCPU {index} did not halt cleanly; console:\n{console}");
    }
    let failure = |line: &str| line.contains("panic") || line.split_whitespace().nth(1) == Some("mismatch");
    assert!(!console.lines().any(failure), "the guest reported a failure:\n{console}");

    let writer = fields(&console, "vcpu0 writer");
    let steps = writer["steps"];
    assert!(steps > 0 && writer["checks"] == steps, "{writer:?}");
    for kind in ["creates", "deletes", "moves", "flags", "batches", "zaps", "zap_passes"] {
        assert!(writer[kind] > 0, "the writer made no {kind}: {writer:?}");
    }
    let reader = fields(&console, "vcpu1 reader");
    let views = reader["views"];
    assert!(views >= 64, "too few checked views: {reader:?}");
    assert_eq!(reader["lookups"], 6 * views, "{reader:?}");
    for kind in ["gfn_ranges", "hva_ranges", "by_id"] {
        assert_eq!(reader[kind], views, "{reader:?}");
    }
    assert_eq!(reader["repins"], views / 2, "{reader:?}");
    assert!(reader["zaps"] > 0, "{reader:?}");
    // The reader saw the map change under it, not only a still map.
    assert!(reader["changes_seen"] >= 8, "the reader saw too few layouts: {reader:?}");
    assert_eq!((writer["mismatches"], reader["mismatches"]), (0, 0));

    let bench = fields(&console, "vcpu1 bench");
    assert_eq!((bench["slots"], bench["lookups"]), (bench::SLOTS as u64, bench::LOOKUPS));
    let markers = &runs[1].markers;
    let at = |marker| markers.iter().find(|(m, _)| *m == marker).map(|(_, t)| *t).expect("benchmark marker");
    let guest_time = at(BENCH_END) - at(BENCH_START);
    let (host_sum, host_time) = host_lookups();
    assert_eq!(bench["checksum"], host_sum, "the guest's lookups found other host addresses than the host's");
    let rate = |time: Duration| bench::LOOKUPS as f64 / time.as_secs_f64();
    println!(
        "nostd guest: {steps} writer steps, {views} checked views ({} lookups), run in {:.1} s",
        reader["lookups"],
        elapsed.as_secs_f64()
    );
    println!(
        "lookups/s, {} lookups over {} slots under one view (nested software KVM on this machine): \
         guest {:.3e} ({:.1} ms between markers), host process {:.3e} ({:.3} ms, best of 3), host/guest {:.0}x",
        bench::LOOKUPS,
        bench::SLOTS,
        rate(guest_time),
        guest_time.as_secs_f64() * 1e3,
        rate(host_time),
        host_time.as_secs_f64() * 1e3,
        guest_time.as_secs_f64() / host_time.as_secs_f64()
    );
}

/// Builds `nostd-guest` (a no-op when it is up to date) and returns the
/// kernel's path. The package's own `.cargo/config.toml` (static
/// relocation model) applies because cargo runs in its directory.
fn build_kernel() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target/nostd-guest");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "x86_64-unknown-none"])
        .current_dir(root.join("nostd-guest"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo");
    assert!(status.success(), "building nostd-guest failed (rustup target add x86_64-unknown-none?)");
    target_dir.join("x86_64-unknown-none/release/nostd-guest")
}

/// What one vCPU did.
#[derive(Debug, Default)]
struct Run {
    console: String,
    markers: Vec<(u32, Instant)>,
    /// The exit that ended the run; `None` when the test stopped it.
    exit: Option<Exit>,
}

/// Boots the kernel on two vCPUs and runs both until they halt (or fail,
/// or run out of time).
fn run_guest(kvm: &Kvm, elf: &[u8]) -> Vec<Run> {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let config = Config::new(1, 8);
    let slots = Memslots::new(config).unwrap();
    let gate = VcpuGate::new().unwrap();
    let backend = KvmBackend::new(vm, config).expect("configuration within KVM's limits");
    let mut writer = slots.writer_with(backend).unwrap();
    let ram = writer.backend_mut().guest_ram(RAM).unwrap();
    writer.create_ram(SlotKey { id: 0, as_id: 0 }, 0, Flags::empty(), ram).unwrap();
    assert!(TABLES + LONG_MODE_TABLES_SIZE <= STACK_TOPS[1] - 0x4_0000);

    let mut vcpus = Vec::new();
    {
        let reader = slots.device_reader();
        let view = reader.pin();
        let entry = load_elf(elf, |gpa, bytes| view.write(gpa, bytes).expect("the kernel fits in RAM"));
        for (index, stack) in STACK_TOPS.into_iter().enumerate() {
            let mut vcpu = Vcpu::new(writer.backend().vm(), index as u64)
                .expect("KVM_CREATE_VCPU")
                .with_gate(&gate)
                .expect("mmap");
            vcpu.setup_long_mode(&view, TABLES, entry, stack).unwrap();
            let mut regs = vcpu.regs().unwrap();
            regs.rdi = index as u64;
            vcpu.fd().set_regs(&regs).unwrap();
            vcpus.push(vcpu);
        }
    }

    let (stop, failed) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|scope| {
        let threads: Vec<_> = vcpus.iter_mut().map(|vcpu| scope.spawn(|| run_vcpu(vcpu, &stop, &failed))).collect();
        let deadline = Instant::now() + PATIENCE;
        let mut _held = None;
        while !threads.iter().all(|thread| thread.is_finished()) {
            if failed.load(SeqCst) || Instant::now() > deadline {
                // Kick the vCPUs still running out of `KVM_RUN` and keep
                // them out; they stop.
                stop.store(true, SeqCst);
                _held = Some(gate.hold());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        threads.into_iter().map(|thread| thread.join().expect("vCPU thread")).collect()
    })
}

/// Runs `vcpu` until an exit other than port IO: the console's bytes and
/// the markers' times are collected. Sets `failed` when the vCPU reports a
/// panic or ends any other way than `hlt`.
fn run_vcpu(vcpu: &mut Vcpu, stop: &AtomicBool, failed: &AtomicBool) -> Run {
    let mut run = Run::default();
    loop {
        match vcpu.run().expect("KVM_RUN") {
            Exit::IoOut { port: CONSOLE, data, .. } => {
                run.console.push(char::from(data as u8));
                if run.console.ends_with('\n') && run.console.lines().last().is_some_and(|l| l.contains("panic")) {
                    failed.store(true, SeqCst);
                }
            }
            Exit::IoOut { port: MARKER, data, .. } => run.markers.push((data, Instant::now())),
            Exit::Interrupted if !stop.load(SeqCst) => {}
            Exit::Interrupted => return run,
            exit => {
                if exit != Exit::Hlt {
                    failed.store(true, SeqCst);
                }
                run.exit = Some(exit);
                return run;
            }
        }
    }
}

/// Copies the `PT_LOAD` segments of an ELF64 x86-64 executable to guest
/// memory with `write` and returns its entry point. The rest of each
/// segment (`.bss`) stays as fresh guest RAM: zero.
fn load_elf(elf: &[u8], mut write: impl FnMut(u64, &[u8])) -> u64 {
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!((elf[4], elf[5]), (2, 1), "not ELF64 little-endian");
    // ET_EXEC: linked at a fixed address, with nothing left to relocate.
    assert_eq!((u16_at(16), u16_at(18)), (2, 62), "not an x86-64 executable (built without nostd-guest's config?)");
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, usize::from(u16_at(54)), usize::from(u16_at(56)));
    for header in (0..phnum).map(|i| phoff + i * phentsize) {
        const PT_LOAD: u32 = 1;
        if u32_at(header) != PT_LOAD {
            continue;
        }
        let (offset, vaddr, filesz, memsz) =
            (u64_at(header + 8) as usize, u64_at(header + 16), u64_at(header + 32) as usize, u64_at(header + 40));
        assert!(vaddr >= KERNEL && vaddr + memsz <= RAM as u64, "segment at {vaddr:#x} outside the kernel's place");
        write(vaddr, &elf[offset..offset + filesz]);
    }
    u64_at(24)
}

/// The `key=value` fields of the console line that starts with `prefix`.
fn fields(console: &str, prefix: &str) -> HashMap<String, u64> {
    let line = console.lines().find(|line| line.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line"));
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(key, value)| {
            let value = match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => value.parse(),
            };
            (key.to_owned(), value.unwrap_or_else(|_| panic!("bad field in `{line}`")))
        })
        .collect()
}

/// The kernel's benchmark loop in this process: same layout, same loop,
/// same number of lookups. Returns the checksum and the best time of 3.
fn host_lookups() -> (u64, Duration) {
    let slots = Memslots::new(Config::default()).unwrap();
    bench::create(&mut slots.writer().unwrap()).unwrap();
    let reader = slots.reader();
    let table = bench::gfn_table();
    let view = reader.pin();
    let mut best = (0, Duration::MAX);
    for _ in 0..3 {
        let started = Instant::now();
        let sum = bench::lookups(&view, &table, bench::LOOKUPS);
        best = (sum, best.1.min(started.elapsed()));
    }
    best
}
