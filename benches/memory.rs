//! Guest-memory copies against vm-memory 0.18's `Bytes` on the same layout:
//! two adjacent regions of 2 MiB. Reads and writes of 8 B, 4 KiB and 64 KiB,
//! inside the first region and across the boundary between the two, each
//! access on its own:
//!
//! - `memslots`: `reader.pin()` then `view.read` / `view.write` (a vCPU
//!   reader, owned RAM from `create_owned`);
//! - `vm-memory-atomic`: `GuestMemoryAtomic::memory()` then `read_slice` /
//!   `write_slice` on the loaded `GuestMemoryMmap`;
//! - `vm-memory-mmap`: `read_slice` / `write_slice` on the `GuestMemoryMmap`
//!   directly (no guard at all).
//!
//! And an 8-byte read through a cached translation: memslots' `GpaCache`
//! (`read_cached`, with a view per access and under one held view) against
//! vm-memory's `read_obj::<u64>` (which has no cache), with memslots'
//! `read_obj::<u64>` beside them.
//!
//! Each access stands alone: criterion's time per iteration is the latency
//! of one access.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memslots::{Config, Flags, GpaCache, GuestRam, Memslots, Reader, SlotKey};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// Bytes per region.
const REGION: u64 = 2 << 20;
/// Guest address of the first region (the second follows it).
const BASE: u64 = 1 << 30;
const SIZES: [(usize, &str); 3] = [(8, "8B"), (4096, "4KiB"), (65536, "64KiB")];

struct Fixture {
    // Declared first: a reader goes before the map it reads.
    reader: Reader,
    _slots: Memslots,
    atomic: GuestMemoryAtomic<GuestMemoryMmap>,
    mmap: GuestMemoryMmap,
}

fn fixture() -> Fixture {
    let slots = Memslots::new(Config::default().with_address_spaces(1)).expect("valid config");
    let mut w = slots.writer().expect("first writer");
    for id in 0..2u16 {
        let ram = Arc::new(GuestRam::new(REGION as usize).expect("guest RAM"));
        let base_gfn = (BASE + u64::from(id) * REGION) >> 12;
        w.create_owned(SlotKey { id, as_id: 0 }, base_gfn, Flags::empty(), ram).expect("valid layout");
    }
    drop(w);
    let ranges = [(GuestAddress(BASE), REGION as usize), (GuestAddress(BASE + REGION), REGION as usize)];
    let mmap = GuestMemoryMmap::<()>::from_ranges(&ranges).expect("anonymous mappings");
    let atomic = GuestMemoryAtomic::new(GuestMemoryMmap::<()>::from_ranges(&ranges).expect("anonymous mappings"));
    let f = Fixture { reader: slots.reader(), _slots: slots, atomic, mmap };
    // Touch every page once so that no benchmark pays for first faults.
    let page = vec![0x5a; 4096];
    for gpa in (BASE..BASE + 2 * REGION).step_by(4096) {
        f.reader.pin().write(gpa, &page).expect("mapped");
        f.mmap.write_slice(&page, GuestAddress(gpa)).expect("mapped");
        f.atomic.memory().write_slice(&page, GuestAddress(gpa)).expect("mapped");
    }
    f
}

/// Where an access of `len` bytes starts: inside the first region, or
/// straddling the boundary half and half.
fn placements(len: usize) -> [(&'static str, u64); 2] {
    [("within", BASE + 3 * 4096), ("across", BASE + REGION - len as u64 / 2)]
}

fn copies(c: &mut Criterion) {
    let f = fixture();
    for (len, size) in SIZES {
        for (place, gpa) in placements(len) {
            let addr = GuestAddress(gpa);
            let mut buf = vec![0u8; len];
            let data = vec![0xa5u8; len];

            let mut group = c.benchmark_group(format!("memory-read-{size}-{place}"));
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_function(BenchmarkId::from_parameter("memslots"), |b| {
                b.iter(|| f.reader.pin().read(black_box(gpa), black_box(&mut buf)).unwrap())
            });
            group.bench_function(BenchmarkId::from_parameter("vm-memory-atomic"), |b| {
                b.iter(|| f.atomic.memory().read_slice(black_box(&mut buf), black_box(addr)).unwrap())
            });
            group.bench_function(BenchmarkId::from_parameter("vm-memory-mmap"), |b| {
                b.iter(|| f.mmap.read_slice(black_box(&mut buf), black_box(addr)).unwrap())
            });
            group.finish();

            let mut group = c.benchmark_group(format!("memory-write-{size}-{place}"));
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_function(BenchmarkId::from_parameter("memslots"), |b| {
                b.iter(|| f.reader.pin().write(black_box(gpa), black_box(&data)).unwrap())
            });
            group.bench_function(BenchmarkId::from_parameter("vm-memory-atomic"), |b| {
                b.iter(|| f.atomic.memory().write_slice(black_box(&data), black_box(addr)).unwrap())
            });
            group.bench_function(BenchmarkId::from_parameter("vm-memory-mmap"), |b| {
                b.iter(|| f.mmap.write_slice(black_box(&data), black_box(addr)).unwrap())
            });
            group.finish();
        }
    }
}

fn cached(c: &mut Criterion) {
    let f = fixture();
    let gpa = BASE + 0x1238;
    let addr = GuestAddress(gpa);
    let mut cache = GpaCache::new(gpa, 8).expect("in range");
    let mut group = c.benchmark_group("memory-cached-u64-read");
    group.throughput(Throughput::Bytes(8));
    group.bench_function(BenchmarkId::from_parameter("memslots-gpacache"), |b| {
        b.iter(|| {
            let mut buf = [0u8; 8];
            f.reader.pin().read_cached(black_box(&mut cache), 0, &mut buf).unwrap();
            u64::from_ne_bytes(buf)
        })
    });
    group.bench_function(BenchmarkId::from_parameter("memslots-gpacache-held-view"), |b| {
        let view = f.reader.pin();
        b.iter(|| {
            let mut buf = [0u8; 8];
            view.read_cached(black_box(&mut cache), 0, &mut buf).unwrap();
            u64::from_ne_bytes(buf)
        })
    });
    group.bench_function(BenchmarkId::from_parameter("memslots-read_obj"), |b| {
        b.iter(|| f.reader.pin().read_obj::<u64>(black_box(gpa)).unwrap())
    });
    group.bench_function(BenchmarkId::from_parameter("vm-memory-atomic-read_obj"), |b| {
        b.iter(|| f.atomic.memory().read_obj::<u64>(black_box(addr)).unwrap())
    });
    group.bench_function(BenchmarkId::from_parameter("vm-memory-mmap-read_obj"), |b| {
        b.iter(|| f.mmap.read_obj::<u64>(black_box(addr)).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = copies, cached
}
criterion_main!(benches);
