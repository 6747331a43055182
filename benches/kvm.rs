//! One slot change through the crate with the `kvm` backend against the
//! bare `KVM_SET_USER_MEMORY_REGION` ioctl (kvm-ioctls), in a VM that has 1,
//! 509, 4096 and 32000 slots already (issue #14). The crate should add under
//! 10 % to the kernel's cost.
//!
//! The change is a MOVE of a one-page slot between two free guest
//! addresses, back and forth (KVM_MR_MOVE in the kernel both ways). Through
//! the crate it also validates, publishes an INVALID copy, swaps twice and
//! waits two grace periods, with a [`VcpuGate`] on the backend (no vCPU
//! runs) and one idle vCPU reader registered. The other slots are one page
//! each, each over its own page of guest RAM, in both VMs.
//!
//! The comparison that counts is the last table: moves timed alternately,
//! one bare and one through the crate, `PAIRS` of them, so that both see
//! the same load (a slot ioctl costs 7 to 170 µs here, varying from run to
//! run); it prints the medians and their ratio. The criterion groups
//! before it time each way on its own; `crate_without_kvm` is the same move
//! in the same map with no backend: the crate's own share.
//!
//! Without `/dev/kvm` it prints one line and measures nothing.
//!
//! ```text
//! cargo bench --features kvm --bench kvm
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use memslots::kvm::kvm_bindings::kvm_userspace_memory_region;
use memslots::kvm::kvm_ioctls::{Kvm, VmFd};
use memslots::kvm::{KvmBackend, KvmWriter, VcpuGate};
use memslots::{Config, Flags, GuestRam, Memslots, Region, SlotKey, Writer, PAGE_SIZE};

/// Slots already in the VM besides the one that moves.
const EXISTING: [u16; 4] = [1, 509, 4096, 32000];
/// The moving slot's two places, above every other slot.
const PLACES: [u64; 2] = [0x4000_0000, 0x5000_0000];
const MOVING: u16 = 32100;

fn region0() -> Region {
    Region { id: 0, as_id: 0, base_gfn: 0, npages: 1, hva: 0, flags: Flags::empty() }
}

fn config() -> Config {
    Config::new(1, 32764)
}

/// The crate's VM: `existing` slots at gfn `0..existing`, the moving slot
/// at `PLACES[0]`.
fn through_crate(kvm: &Kvm, existing: u16) -> (Memslots, Writer<KvmBackend>) {
    let slots = Memslots::new(config()).unwrap();
    let backend = KvmBackend::new(kvm.create_vm().unwrap(), config()).unwrap().with_gate(VcpuGate::new().unwrap());
    let mut writer = slots.writer_with(backend).unwrap();
    let rams: Vec<_> = (0..existing).map(|_| writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap()).collect();
    let mut batch = writer.batch();
    for (id, ram) in rams.into_iter().enumerate() {
        batch.create_owned(SlotKey { id: id as u16, as_id: 0 }, id as u64, Flags::empty(), ram);
    }
    batch.commit().unwrap();
    let ram = writer.backend_mut().guest_ram(PAGE_SIZE as usize).unwrap();
    writer.create_ram(SlotKey { id: MOVING, as_id: 0 }, PLACES[0] >> 12, Flags::empty(), ram).unwrap();
    (slots, writer)
}

/// The bare VM: the same slots, made with the ioctl, each over its own
/// page of guest RAM as in the crate's VM (so that both processes' memory
/// maps look alike).
struct Bare {
    vm: VmFd,
    _memory: Vec<GuestRam>,
    moving: kvm_userspace_memory_region,
}

fn bare(kvm: &Kvm, existing: u16) -> Bare {
    let vm = kvm.create_vm().unwrap();
    let memory: Vec<GuestRam> = (0..=existing).map(|_| GuestRam::new(PAGE_SIZE as usize).unwrap()).collect();
    let region = |slot: u32, gpa: u64, ram: &GuestRam| kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: gpa,
        memory_size: PAGE_SIZE,
        userspace_addr: ram.as_ptr() as u64,
    };
    for id in 0..existing {
        let at = u64::from(id) * PAGE_SIZE;
        // SAFETY: the page is in `memory`, which outlives the VM (`Bare`
        // drops `vm` first).
        unsafe { vm.set_user_memory_region(region(u32::from(id), at, &memory[usize::from(id)])).unwrap() };
    }
    let moving = region(u32::from(MOVING), PLACES[0], &memory[usize::from(existing)]);
    // SAFETY: as above.
    unsafe { vm.set_user_memory_region(moving).unwrap() };
    Bare { vm, _memory: memory, moving }
}

fn moves(c: &mut Criterion) {
    let Ok(kvm) = Kvm::new() else {
        println!("kvm bench skipped: /dev/kvm unavailable");
        return;
    };
    let mut group = c.benchmark_group("kvm_move");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let mut paired = Vec::new();
    for existing in EXISTING {
        let mut bare = bare(&kvm, existing);
        let (slots, mut writer) = through_crate(&kvm, existing);
        let _vcpu_reader = slots.reader();
        let key = SlotKey { id: MOVING, as_id: 0 };
        let mut bare_at = 0;
        let mut bare_move = move || {
            bare_at ^= 1;
            bare.moving.guest_phys_addr = PLACES[bare_at];
            // SAFETY: the same memory as when the slot was made.
            unsafe { bare.vm.set_user_memory_region(black_box(bare.moving)).unwrap() };
        };
        let mut crate_at = 0;
        let mut crate_move = || {
            crate_at ^= 1;
            writer.move_to(key, black_box(PLACES[crate_at] >> 12)).unwrap();
        };
        group.bench_with_input(BenchmarkId::new("bare_ioctl", existing), &existing, |b, _| b.iter(&mut bare_move));
        group.bench_with_input(BenchmarkId::new("crate", existing), &existing, |b, _| b.iter(&mut crate_move));
        paired.push((existing, interleaved(&mut bare_move, &mut crate_move)));
        assert_eq!(writer.backend().kernel_slots().count(), usize::from(existing) + 1);
        drop(writer);
        crate_alone(&mut group, existing);
    }
    group.finish();
    // The machine is shared and its load drifts between benchmarks; moves
    // timed alternately, one bare and one through the crate, compare the
    // two under the same load.
    println!("interleaved, {PAIRS} moves each way (medians; ratio = through the crate / bare):");
    for (existing, (bare, through)) in paired {
        println!(
            "  {existing:>5} existing slots: bare ioctl {:>6.2} µs, through the crate {:>6.2} µs: ratio {:.3} \
             ({:+.2} µs, {:+.1} %)",
            bare * 1e6,
            through * 1e6,
            through / bare,
            (through - bare) * 1e6,
            (through / bare - 1.0) * 100.0
        );
    }
}

/// Moves timed alternately by each way.
const PAIRS: usize = 4000;

/// Median seconds of one move each way, timed alternately.
fn interleaved(bare: &mut impl FnMut(), through: &mut impl FnMut()) -> (f64, f64) {
    let (mut a, mut b) = (Vec::with_capacity(PAIRS), Vec::with_capacity(PAIRS));
    for _ in 0..PAIRS {
        let t = Instant::now();
        bare();
        a.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        through();
        b.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut a), median(&mut b))
}

/// The crate's own share: the same map and move, no backend.
fn crate_alone(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, existing: u16) {
    let slots = Memslots::new(config()).unwrap();
    let mut writer = slots.writer().unwrap();
    let mut batch = writer.batch();
    for id in 0..existing {
        let hva = 0x1000_0000_0000 + (u64::from(id) << 21);
        batch.create(Region { id, as_id: 0, base_gfn: u64::from(id), npages: 1, hva, flags: Flags::empty() });
    }
    let moving = Region { id: MOVING, base_gfn: PLACES[0] >> 12, hva: 0x2000_0000_0000, ..region0() };
    batch.create(moving);
    batch.commit().unwrap();
    let _vcpu_reader = slots.reader();
    let mut at = 0;
    group.bench_with_input(BenchmarkId::new("crate_without_kvm", existing), &existing, |b, _| {
        b.iter(|| {
            at ^= 1;
            writer.move_to(moving.key(), black_box(PLACES[at] >> 12)).unwrap();
        })
    });
}

criterion_group!(benches, moves);
criterion_main!(benches);
