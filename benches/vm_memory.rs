//! The `vm-memory` feature's `GuestMemorySlots` against
//! `GuestMemoryAtomic<GuestMemoryMmap>` on the same layout: 8, 509 or 4096
//! regions of 64 KiB, each followed by a 64 KiB hole. The slots are
//! registered with `create_raw` over a second `GuestMemoryMmap` of that
//! layout, so both sides read the same kind of host mapping (`GuestRam`
//! aligns every slot to 2 MiB, which for 64 KiB regions adds page-walk cache
//! misses this comparison is not about).
//!
//! - `vm-memory-read_obj-{random,hot}/{n}`: `memory()` then
//!   `read_obj::<u64>`, at addresses cycling through all regions in a fixed
//!   pseudo-random order, or always at one address. One iteration is one
//!   `memory()` and one read.
//! - `vm-memory-chain-walk/{n}`: one `memory()`, then virtio-queue pops 64
//!   descriptor chains of four 64-byte buffers in pseudo-random regions
//!   (three read through its `Reader`, one written through its `Writer`)
//!   and adds each to the used ring. One iteration is the whole pass.

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use memslots::vm_memory::GuestMemorySlots;
use memslots::{Config, Flags, Memslots, Region, SlotKey, Writer};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemory, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
};

const REGION: u64 = 64 << 10;
const COUNTS: [usize; 3] = [8, 509, 4096];
/// Addresses the random read cycles through.
const ADDRESSES: usize = 1024;
const CHAINS: u16 = 64;
const PARTS: u16 = 4;
const BUFFER: u32 = 64;
/// Descriptor table, available ring, used ring: all in the first region.
const RINGS: [u64; 3] = [0x0, 0x1000, 0x2000];

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn gpa(region: u64) -> u64 {
    region * 2 * REGION
}

struct Fixture {
    slots: GuestMemorySlots,
    atomic: GuestMemoryAtomic<GuestMemoryMmap>,
    writer: Writer,
    regions: usize,
    /// The slots' host memory; outlives them (`Drop`).
    _backing: GuestMemoryMmap,
}

fn layout(regions: usize) -> Vec<(GuestAddress, usize)> {
    (0..regions as u64).map(|r| (GuestAddress(gpa(r)), REGION as usize)).collect()
}

fn fixture(regions: usize) -> Fixture {
    let map = Memslots::new(Config::default().with_address_spaces(1)).expect("valid config");
    let mut writer = map.writer().expect("first writer");
    let backing = GuestMemoryMmap::<()>::from_ranges(&layout(regions)).expect("anonymous mappings");
    for id in 0..regions {
        let host = backing.get_host_address(GuestAddress(gpa(id as u64))).expect("mapped");
        let hva = host.expose_provenance() as u64;
        let region = Region {
            id: id as u16,
            as_id: 0,
            base_gfn: gpa(id as u64) >> 12,
            npages: REGION >> 12,
            hva,
            flags: Flags::empty(),
        };
        // SAFETY: `backing` maps the region, read-write, until `Fixture::drop`
        // has deleted the slot; nothing makes references into it.
        unsafe { writer.create_raw(region) }.expect("valid layout");
    }
    let mmap = GuestMemoryMmap::<()>::from_ranges(&layout(regions)).expect("anonymous mappings");
    Fixture {
        slots: GuestMemorySlots::new(map),
        atomic: GuestMemoryAtomic::new(mmap),
        writer,
        regions,
        _backing: backing,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in 0..self.regions {
            self.writer.delete(SlotKey { id: id as u16, as_id: 0 }).expect("no snapshot held");
        }
    }
}

/// Pseudo-random 8-byte-aligned addresses, one region after another.
fn addresses(regions: usize) -> Vec<GuestAddress> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..ADDRESSES).map(|_| GuestAddress(gpa(rng.below(regions as u64)) + rng.below(REGION / 8) * 8)).collect()
}

fn read_obj(c: &mut Criterion) {
    for regions in COUNTS {
        let f = fixture(regions);
        let all = addresses(regions);
        for (pattern, mask) in [("random", ADDRESSES - 1), ("hot", 0)] {
            let mut group = c.benchmark_group(format!("vm-memory-read_obj-{pattern}"));
            let mut i = 0;
            group.bench_function(BenchmarkId::new("memslots", regions), |b| {
                b.iter(|| {
                    i = (i + 1) & mask;
                    f.slots.memory().read_obj::<u64>(black_box(all[i])).unwrap()
                })
            });
            group.bench_function(BenchmarkId::new("atomic-mmap", regions), |b| {
                b.iter(|| {
                    i = (i + 1) & mask;
                    f.atomic.memory().read_obj::<u64>(black_box(all[i])).unwrap()
                })
            });
            group.finish();
        }
    }
}

/// Writes the queue's chains into `mem`: buffers at the same pseudo-random
/// places on both sides.
fn post<M: GuestMemory>(mem: &M, regions: usize) -> Queue {
    let mut rng = Rng(7);
    for chain in 0..CHAINS {
        let head = chain * PARTS;
        mem.write_obj(head, GuestAddress(RINGS[1] + 4 + 2 * u64::from(chain))).unwrap();
        for part in 0..PARTS {
            let index = head + part;
            // Region 0 from 16 KiB on, clear of the rings.
            let region = rng.below(regions as u64);
            let offset = 0x4000 + rng.below((REGION - 0x4000) / u64::from(BUFFER)) * u64::from(BUFFER);
            let last = part + 1 == PARTS;
            let flags = if last { 2 } else { 1 };
            let descriptor = Descriptor::new(gpa(region) + offset, BUFFER, flags, index + 1);
            mem.write_obj(descriptor, GuestAddress(RINGS[0] + 16 * u64::from(index))).unwrap();
        }
    }
    mem.store(CHAINS, GuestAddress(RINGS[1] + 2), Ordering::Release).unwrap();
    let mut queue = Queue::new(256).unwrap();
    queue.set_size(256);
    queue.try_set_desc_table_address(GuestAddress(RINGS[0])).unwrap();
    queue.try_set_avail_ring_address(GuestAddress(RINGS[1])).unwrap();
    queue.try_set_used_ring_address(GuestAddress(RINGS[2])).unwrap();
    queue.set_ready(true);
    assert!(queue.is_valid(mem));
    queue
}

/// One device pass over every posted chain.
fn walk<S: GuestAddressSpace>(space: &S, queue: &mut Queue) -> usize {
    let mem = space.memory();
    queue.set_next_avail(0);
    queue.set_next_used(0);
    let mut buf = [0u8; (BUFFER as usize) * PARTS as usize];
    let mut read = 0;
    while let Some(chain) = queue.pop_descriptor_chain(mem.clone()) {
        let head = chain.head_index();
        read += chain.clone().reader(&*mem).unwrap().read(&mut buf).unwrap();
        chain.writer(&*mem).unwrap().write_all(&buf[..BUFFER as usize]).unwrap();
        queue.add_used(&*mem, head, BUFFER).unwrap();
    }
    read
}

fn chain_walk(c: &mut Criterion) {
    let mut group = c.benchmark_group("vm-memory-chain-walk");
    for regions in COUNTS {
        let f = fixture(regions);
        let mut ours = post(&*f.slots.memory(), regions);
        let mut theirs = post(&*f.atomic.memory(), regions);
        let expected = BUFFER as usize * usize::from(PARTS - 1) * usize::from(CHAINS);
        assert_eq!((walk(&f.slots, &mut ours), walk(&f.atomic, &mut theirs)), (expected, expected));
        group.bench_function(BenchmarkId::new("memslots", regions), |b| b.iter(|| walk(&f.slots, &mut ours)));
        group.bench_function(BenchmarkId::new("atomic-mmap", regions), |b| b.iter(|| walk(&f.atomic, &mut theirs)));
    }
    group.finish();
}

criterion_group!(benches, read_obj, chain_walk);
criterion_main!(benches);
