//! The `vm-memory` feature against vm-memory's own `GuestMemoryMmap` (and
//! `GuestMemoryAtomic`) of the same layout, as the reference model: the
//! accessors, the region queries, the dirty log, virtio-queue processing
//! descriptor chains, and a slot hot-plugged under a running device.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use memslots::vm_memory::GuestMemorySlots;
use memslots::{Config, Error, Flags, GuestRam, Memslots, Region, SlotKey, Writer};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::bitmap::Bitmap;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemory, GuestMemoryAtomic, GuestMemoryBackend,
    GuestMemoryError, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress, Permissions,
};

const PAGE: u64 = 4096;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// Adjacent pairs, holes, a one-page slot: (guest address, bytes).
const LAYOUT: [(u64, u64); 5] =
    [(0x0, 0x1_0000), (0x1_0000, 0x1_0000), (0x3_0000, 0x2_0000), (0x10_0000, PAGE), (0x10_1000, 0x20_0000)];

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn map(address_spaces: u16) -> Memslots {
    Memslots::new(Config::default().with_address_spaces(address_spaces)).expect("valid config")
}

/// Owned-RAM slots with ids 0.. for `layout` in address space `as_id`.
fn add_slots(writer: &mut Writer, as_id: u16, layout: &[(u64, u64)], flags: Flags) {
    for (id, &(gpa, len)) in layout.iter().enumerate() {
        let ram = Arc::new(GuestRam::new(len as usize).expect("guest RAM"));
        let key = SlotKey { id: id as u16, as_id };
        writer.create_owned(key, gpa / PAGE, flags, ram).expect("valid layout");
    }
}

fn mmap(layout: &[(u64, u64)]) -> GuestMemoryMmap {
    let ranges: Vec<_> = layout.iter().map(|&(gpa, len)| (GuestAddress(gpa), len as usize)).collect();
    GuestMemoryMmap::<()>::from_ranges(&ranges).expect("anonymous mappings")
}

/// Our address space and a `GuestMemoryMmap`, same layout, all zero.
fn pair(layout: &[(u64, u64)]) -> (Memslots, Writer, GuestMemorySlots, GuestMemoryMmap) {
    let slots = map(1);
    let mut writer = slots.writer().expect("first writer");
    add_slots(&mut writer, 0, layout, Flags::empty());
    let space = GuestMemorySlots::new(slots.clone());
    (slots, writer, space, mmap(layout))
}

/// The whole layout's bytes.
fn contents<M: GuestMemory + ?Sized>(mem: &M, layout: &[(u64, u64)]) -> Vec<u8> {
    let mut all = Vec::new();
    for &(gpa, len) in layout {
        let mut buf = vec![0; len as usize];
        mem.read_slice(&mut buf, GuestAddress(gpa)).expect("inside the layout");
        all.extend(buf);
    }
    all
}

/// A guest address near a region boundary, in a hole, or past the end.
fn address(rng: &mut Rng, layout: &[(u64, u64)]) -> u64 {
    let (gpa, len) = layout[rng.below(layout.len() as u64) as usize];
    match rng.below(4) {
        0 => gpa + len - 1 - rng.below(64),
        1 => gpa + rng.below(len),
        2 => (gpa + len + rng.below(64)).saturating_sub(32),
        _ => rng.below(0x40_0000),
    }
}

/// Both results, compared by their debug form (vm-memory's errors are not
/// `PartialEq`).
fn same<T: std::fmt::Debug>(ours: Result<T, GuestMemoryError>, theirs: Result<T, GuestMemoryError>, what: &str) {
    assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{what}");
}

#[test]
fn bytes_match_mmap() {
    let (_slots, _writer, space, theirs) = pair(&LAYOUT);
    let ours = space.memory();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for step in 0..4000 {
        let at = GuestAddress(address(&mut rng, &LAYOUT));
        let len = if rng.below(8) == 0 { 1 + rng.below(0x3_0000) } else { 1 + rng.below(300) } as usize;
        let what = format!("step {step} at {:#x} len {len}", at.0);
        match rng.below(8) {
            0 => {
                let buf = rng.bytes(len);
                same(ours.write(&buf, at), theirs.write(&buf, at), &what);
            }
            1 => {
                let buf = rng.bytes(len);
                same(ours.write_slice(&buf, at), theirs.write_slice(&buf, at), &what);
            }
            2 => {
                let (mut a, mut b) = (vec![0; len], vec![0; len]);
                same(ours.read(&mut a, at), theirs.read(&mut b, at), &what);
                assert_eq!(a, b, "{what}");
            }
            3 => {
                let (mut a, mut b) = (vec![0; len], vec![0; len]);
                same(ours.read_slice(&mut a, at), theirs.read_slice(&mut b, at), &what);
                assert_eq!(a, b, "{what}");
            }
            4 => {
                let value = rng.next();
                same(ours.write_obj(value, at), theirs.write_obj(value, at), &what);
                same(ours.write_obj(value as u16, at), theirs.write_obj(value as u16, at), &what);
            }
            5 => {
                same(ours.read_obj::<u64>(at), theirs.read_obj::<u64>(at), &what);
                same(ours.read_obj::<u32>(at), theirs.read_obj::<u32>(at), &what);
                same(ours.read_obj::<[u8; 3]>(at), theirs.read_obj::<[u8; 3]>(at), &what);
            }
            6 => {
                let at = GuestAddress(at.0 & !7);
                let value = rng.next();
                same(ours.store(value, at, Ordering::Release), theirs.store(value, at, Ordering::Release), &what);
                same(ours.load::<u64>(at, Ordering::Acquire), theirs.load::<u64>(at, Ordering::Acquire), &what);
            }
            _ => {
                let src = rng.bytes(len);
                let (a, b) = (&mut src.as_slice(), &mut src.as_slice());
                same(ours.read_volatile_from(at, a, len), theirs.read_volatile_from(at, b, len), &what);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                same(ours.write_volatile_to(at, &mut a, len), theirs.write_volatile_to(at, &mut b, len), &what);
                assert_eq!(a, b, "{what}");
            }
        }
    }
    assert_eq!(contents(&*ours, &LAYOUT), contents(&theirs, &LAYOUT));
    // The crate's own accessor reads what vm-memory wrote.
    let mut direct = vec![0; LAYOUT[4].1 as usize];
    ours.view().read(LAYOUT[4].0, &mut direct).expect("mapped");
    let mut reference = vec![0; direct.len()];
    theirs.read_slice(&mut reference, GuestAddress(LAYOUT[4].0)).expect("mapped");
    assert_eq!(direct, reference);
}

#[test]
fn regions_match_mmap() {
    let (_slots, _writer, space, theirs) = pair(&LAYOUT);
    let mem = space.memory();
    let ours = mem.regions();
    let shape: Vec<_> = ours.iter().map(|r| (r.start_addr(), r.len())).collect();
    assert_eq!(shape, theirs.iter().map(|r| (r.start_addr(), r.len())).collect::<Vec<_>>());
    assert_eq!(ours.num_regions(), theirs.num_regions());
    assert_eq!(GuestMemoryBackend::last_addr(ours), GuestMemoryBackend::last_addr(&theirs));

    let mut probes = vec![0, u64::MAX, 0x2_8000, 0x5_0000, 0x30_1000, 0x30_0fff];
    for &(gpa, len) in &LAYOUT {
        probes.extend([gpa, gpa + 1, gpa + len - 1, gpa + len, gpa.wrapping_sub(1), gpa + len / 2]);
    }
    for &probe in &probes {
        let at = GuestAddress(probe);
        let what = format!("{probe:#x}");
        let ranges = (
            ours.find_region(at).map(|r| (r.start_addr(), r.len())),
            theirs.find_region(at).map(|r| (r.start_addr(), r.len())),
        );
        assert_eq!(ranges.0, ranges.1, "find_region {what}");
        assert_eq!(GuestMemoryBackend::check_address(ours, at), GuestMemoryBackend::check_address(&theirs, at));
        assert_eq!(GuestMemoryBackend::address_in_range(ours, at), GuestMemoryBackend::address_in_range(&theirs, at));
        assert_eq!(
            ours.to_region_addr(at).map(|(r, a)| (r.start_addr(), a)),
            theirs.to_region_addr(at).map(|(r, a)| (r.start_addr(), a)),
            "to_region_addr {what}"
        );
        assert_eq!(ours.get_host_address(at).is_ok(), theirs.get_host_address(at).is_ok(), "host address {what}");
        for count in [0, 1, 8, 0x1000, 0x1_0001, 0x20_0000] {
            let what = format!("{what} count {count:#x}");
            assert_eq!(
                GuestMemoryBackend::checked_offset(ours, at, count),
                GuestMemoryBackend::checked_offset(&theirs, at, count),
                "checked_offset {what}"
            );
            assert_eq!(
                GuestMemoryBackend::check_range(ours, at, count),
                GuestMemoryBackend::check_range(&theirs, at, count),
                "check_range {what}"
            );
            assert_eq!(
                GuestMemory::check_range(&*mem, at, count, Permissions::ReadWrite),
                GuestMemory::check_range(&theirs, at, count, Permissions::ReadWrite),
                "GuestMemory::check_range {what}"
            );
            same(ours.get_slice(at, count).map(|s| s.len()), theirs.get_slice(at, count).map(|s| s.len()), &what);
            let region = (ours.find_region(at), theirs.find_region(at));
            if let (Some(a), Some(b)) = region {
                let offset = a.to_region_addr(at).expect("found there");
                assert_eq!(Some(offset), b.to_region_addr(at));
                assert_eq!(a.check_address(offset), b.check_address(offset));
                assert_eq!(a.checked_offset(offset, count), b.checked_offset(offset, count));
                same(a.get_slice(offset, count).map(|s| s.len()), b.get_slice(offset, count).map(|s| s.len()), &what);
                same(a.get_host_address(offset).map(|_| ()), b.get_host_address(offset).map(|_| ()), &what);
            }
        }
    }

    // Slices and host addresses point at the slot's memory.
    let at = GuestAddress(0x3_1234);
    let slice = ours.get_slice(at, 16).expect("inside a slot");
    slice.copy_from(&[0xab_u8; 16]);
    let mut direct = [0; 16];
    mem.view().read(at.0, &mut direct).expect("mapped");
    assert_eq!(direct, [0xab; 16]);
    let host = ours.get_host_address(GuestAddress(0x10_1ff8)).expect("inside a slot");
    // SAFETY: an aligned address inside a slot of owned RAM, which stays
    // mapped while `mem` is held.
    unsafe { host.cast::<u64>().write_volatile(0x1122_3344_5566_7788) };
    assert_eq!(mem.read_obj::<u64>(GuestAddress(0x10_1ff8)).expect("mapped"), 0x1122_3344_5566_7788);
    let region = ours.find_region(at).expect("inside a slot");
    assert_eq!(region.as_volatile_slice().map(|s| s.len()).ok(), Some(0x2_0000));
    assert_eq!(region.slot().key(), SlotKey { id: 2, as_id: 0 });
    assert!(matches!(
        region.get_host_address(MemoryRegionAddress(0x2_0000)),
        Err(GuestMemoryError::InvalidBackendAddress)
    ));
}

#[test]
fn dirty_log_follows_vm_memory_writes() {
    let slots = map(1);
    let mut writer = slots.writer().expect("first writer");
    // 16 logged pages at 0x10_0000, then 4 unlogged pages right after.
    let logged = SlotKey { id: 0, as_id: 0 };
    let ram = Arc::new(GuestRam::new(16 * PAGE as usize).expect("guest RAM"));
    writer.create_owned(logged, 0x100, Flags::LOG_DIRTY_PAGES, ram).expect("valid slot");
    let ram = Arc::new(GuestRam::new(4 * PAGE as usize).expect("guest RAM"));
    writer.create_owned(SlotKey { id: 1, as_id: 0 }, 0x110, Flags::empty(), ram).expect("valid slot");
    let space = GuestMemorySlots::new(slots.clone());
    let page = |n: u64| GuestAddress(0x10_0000 + n * PAGE);

    let mem = space.memory();
    mem.write_obj(7u32, page(1)).expect("mapped");
    // Pages 3 and 4.
    mem.write_slice(&[1; 16], page(4).unchecked_sub(8)).expect("mapped");
    mem.store(9u64, page(7), Ordering::Relaxed).expect("mapped");
    mem.regions().get_slice(page(9), 8).expect("mapped").copy_from(&[2u8; 8]);
    mem.read_volatile_from(page(12), &mut [3u8; 8].as_slice(), 8).expect("mapped");
    // Page 15 and the unlogged slot.
    mem.write_slice(&[4; 16], page(16).unchecked_sub(8)).expect("mapped");
    // Reads mark nothing.
    mem.read_obj::<u64>(page(14)).expect("mapped");
    let mut buf = [0; 64];
    mem.read_slice(&mut buf, page(13)).expect("mapped");
    // A raw pointer write is the caller's to mark.
    let host = mem.regions().get_host_address(page(5)).expect("mapped");
    // SAFETY: an aligned address inside a mapped slot, `mem` held.
    unsafe { host.cast::<u64>().write_volatile(5) };

    let region = mem.regions().find_region(page(0)).expect("mapped");
    let marked = [1, 3, 4, 7, 9, 12, 15];
    for n in 0..16u64 {
        let offset = (n * PAGE + 0x900) as usize;
        assert_eq!(region.bitmap().dirty_at(offset), marked.contains(&n), "page {n}");
        assert_eq!(region.bitmap().slice_at(0x800).dirty_at(offset - 0x800), marked.contains(&n), "page {n}");
    }
    let unlogged = mem.regions().find_region(page(16)).expect("mapped");
    assert!(!unlogged.bitmap().dirty_at(0));
    drop(mem);
    let mask: u64 = marked.iter().map(|n| 1 << n).sum();
    assert_eq!(writer.get_dirty_log(logged).expect("logging"), vec![mask]);

    let mem = space.memory();
    mem.regions().find_region(page(5)).expect("mapped").bitmap().mark_dirty(5 * PAGE as usize, 8);
    drop(mem);
    assert_eq!(writer.get_dirty_log(logged).expect("logging"), vec![1 << 5]);
}

/// Writes a split queue of `size` entries into `mem` and `chains` chains of
/// descriptors whose buffers lie in `buffers` (which may straddle slots).
/// Returns the queue's ring addresses.
fn post_chains<M: GuestMemory>(mem: &M, rng: &mut Rng, rings: [u64; 3], chains: u16, buffers: &[(u64, u32)]) {
    let [desc, avail, _] = rings;
    let mut index = 0u16;
    for chain in 0..chains {
        mem.write_obj(index, GuestAddress(avail + 4 + 2 * u64::from(chain))).expect("ring mapped");
        let parts = 2 + rng.below(3) as u16;
        for part in 0..parts {
            let (gpa, len) = buffers[rng.below(buffers.len() as u64) as usize];
            let writable = part + 1 == parts || (part > 0 && rng.below(2) == 0);
            let flags = if part + 1 < parts { DESC_F_NEXT } else { 0 } | if writable { DESC_F_WRITE } else { 0 };
            let descriptor = Descriptor::new(gpa, len, flags, index + 1);
            mem.write_obj(descriptor, GuestAddress(desc + 16 * u64::from(index))).expect("table mapped");
            if !writable {
                mem.write_slice(&rng.bytes(len as usize), GuestAddress(gpa)).expect("buffer mapped");
            }
            index += 1;
        }
    }
    mem.store(chains, GuestAddress(avail + 2), Ordering::Release).expect("ring mapped");
}

fn queue<M: GuestMemory>(mem: &M, size: u16, rings: [u64; 3]) -> Queue {
    let mut queue = Queue::new(size).expect("valid size");
    queue.set_size(size);
    queue.try_set_desc_table_address(GuestAddress(rings[0])).expect("aligned");
    queue.try_set_avail_ring_address(GuestAddress(rings[1])).expect("aligned");
    queue.try_set_used_ring_address(GuestAddress(rings[2])).expect("aligned");
    queue.set_ready(true);
    assert!(queue.is_valid(mem));
    queue
}

/// What a device saw of one chain: its head, the bytes it read, the bytes
/// it wrote.
type Seen = (u16, Vec<u8>, u32);

/// Processes every available chain under one snapshot: reads the readable
/// part, writes it back reversed and incremented into the writable part.
fn device<S: GuestAddressSpace>(space: &S, queue: &mut Queue) -> Result<Vec<Seen>, String> {
    let mem = space.memory();
    let mut seen = Vec::new();
    let chains: Vec<_> = queue.iter(mem.clone()).map_err(|e| e.to_string())?.collect();
    for chain in chains {
        let head = chain.head_index();
        let mut input = Vec::new();
        chain.clone().reader(&*mem).map_err(|e| e.to_string())?.read_to_end(&mut input).map_err(|e| e.to_string())?;
        let mut out = chain.writer(&*mem).map_err(|e| e.to_string())?;
        let reply: Vec<u8> = input.iter().rev().map(|b| b.wrapping_add(1)).take(out.available_bytes()).collect();
        out.write_all(&reply).map_err(|e| e.to_string())?;
        let written = reply.len() as u32;
        queue.add_used(&*mem, head, written).map_err(|e| e.to_string())?;
        seen.push((head, input, written));
    }
    Ok(seen)
}

#[test]
fn virtio_queue_matches_atomic_mmap() {
    // Three adjacent slots and one past a hole; the descriptor table
    // straddles the second and third slots, buffers the first and second.
    let layout = [(0x0, 0x1_0000), (0x1_0000, 0x1_0000), (0x2_0000, 0x1_0000), (0x5_0000, 0x1_0000)];
    let rings = [0x1_ff00, 0x2000, 0x3000];
    let buffers =
        [(0xff00, 0x200), (0xfffe, 4), (0x1_8000, 0x800), (0x2_0400, 0x800), (0x5_0010, 0x300), (0x8000, 0x1000)];
    let (_slots, _writer, ours, theirs) = pair(&layout);
    let theirs = GuestMemoryAtomic::new(theirs);
    for (seed, chains) in [(1, 8), (2, 16), (3, 3)] {
        let size = 64;
        post_chains(&*ours.memory(), &mut Rng(seed), rings, chains, &buffers);
        post_chains(&*theirs.memory(), &mut Rng(seed), rings, chains, &buffers);
        let mut our_queue = queue(&*ours.memory(), size, rings);
        let mut their_queue = queue(&*theirs.memory(), size, rings);
        let seen = device(&ours, &mut our_queue).expect("valid chains");
        assert_eq!(seen.len(), usize::from(chains));
        assert!(seen.iter().all(|(_, input, written)| !input.is_empty() && *written > 0));
        assert_eq!(Ok(seen), device(&theirs, &mut their_queue));
        assert_eq!(our_queue.next_used(), their_queue.next_used());
        assert_eq!(contents(&*ours.memory(), &layout), contents(&*theirs.memory(), &layout));
    }
}

/// A ROM the VMM mapped `PROT_READ`, registered with `create_raw` as a
/// `READONLY` slot right after guest RAM. A guest that points a writable
/// descriptor (or its used ring) into the ROM gets an error from the device
/// side; the VMM does not take SIGSEGV. Reads of the ROM work.
#[test]
fn device_writes_to_a_read_only_rom_fail() {
    const ROM: u64 = 0x10_0000;
    const ROM_LEN: usize = 4 * PAGE as usize;
    const RINGS: [u64; 3] = [0x1000, 0x2000, 0x3000];
    let image: Vec<u8> = (0..ROM_LEN).map(|i| (i as u8).wrapping_mul(31) ^ 0x5a).collect();
    // SAFETY: a new anonymous private mapping, placed by the kernel.
    let rom = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ROM_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(rom, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    // SAFETY: the mapping above is `ROM_LEN` bytes, read-write, and no
    // reference into it exists.
    unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), rom.cast::<u8>(), ROM_LEN) };
    // SAFETY: the mapping above.
    assert_eq!(unsafe { libc::mprotect(rom, ROM_LEN, libc::PROT_READ) }, 0);

    let slots = map(1);
    let mut writer = slots.writer().expect("first writer");
    add_slots(&mut writer, 0, &[(0, ROM)], Flags::empty());
    let key = SlotKey { id: 1, as_id: 0 };
    let region = Region {
        id: key.id,
        as_id: 0,
        base_gfn: ROM / PAGE,
        npages: ROM_LEN as u64 / PAGE,
        hva: rom.expose_provenance() as u64,
        flags: Flags::READONLY,
    };
    // SAFETY: `rom` stays mapped and readable until the slot's delete below
    // has returned (a READONLY slot need not be writable); nothing makes
    // references into it.
    unsafe { writer.create_raw(region) }.expect("valid slot");
    let space = GuestMemorySlots::new(slots.clone());
    let mem = space.memory();
    let permission_denied =
        |e: &GuestMemoryError| matches!(e, GuestMemoryError::IOError(e) if e.kind() == ErrorKind::PermissionDenied);

    // A chain that has the device read 0x100 bytes of the ROM, then write
    // 0x100 bytes of RAM and 0x100 of the ROM.
    let descriptors = [
        Descriptor::new(ROM + 0x100, 0x100, DESC_F_NEXT, 1),
        Descriptor::new(0x8000, 0x100, DESC_F_NEXT | DESC_F_WRITE, 2),
        Descriptor::new(ROM + 0x2000, 0x100, DESC_F_WRITE, 0),
    ];
    for (i, descriptor) in descriptors.into_iter().enumerate() {
        mem.write_obj(descriptor, GuestAddress(RINGS[0] + 16 * i as u64)).expect("table in RAM");
    }
    mem.write_obj(0u16, GuestAddress(RINGS[1] + 4)).expect("ring in RAM");
    mem.store(1u16, GuestAddress(RINGS[1] + 2), Ordering::Release).expect("ring in RAM");
    let mut queue = queue(&*mem, 16, RINGS);
    let chain = queue.pop_descriptor_chain(mem.clone()).expect("one chain");
    let mut input = Vec::new();
    chain.clone().reader(&*mem).expect("readable ROM").read_to_end(&mut input).expect("ROM read");
    assert_eq!(input, image[0x100..0x200]);
    // Without the check, `write_all` fills the RAM buffer, then stores to
    // the PROT_READ page: SIGSEGV.
    let written = chain.writer(&*mem).map(|mut out| out.write_all(&vec![0xee; out.available_bytes()]));
    assert!(matches!(written, Err(virtio_queue::Error::InvalidChain)), "{written:?}");
    assert_eq!(mem.read_obj::<u64>(GuestAddress(0x8000)).expect("RAM"), 0, "no part of the chain is written");
    queue.add_used(&*mem, 0, 0).expect("used ring in RAM");

    // A used ring in the ROM: the queue is not valid, and completions fail.
    let mut in_rom = Queue::new(16).expect("valid size");
    in_rom.try_set_desc_table_address(GuestAddress(RINGS[0])).expect("aligned");
    in_rom.try_set_avail_ring_address(GuestAddress(RINGS[1])).expect("aligned");
    in_rom.try_set_used_ring_address(GuestAddress(ROM + 0x1000)).expect("aligned");
    in_rom.set_ready(true);
    assert!(!in_rom.is_valid(&*mem));
    assert!(matches!(in_rom.add_used(&*mem, 0, 0), Err(virtio_queue::Error::GuestMemory(e)) if permission_denied(&e)));

    // Every write `Bytes` offers is refused; one from RAM into the ROM
    // stops at the ROM, as at a hole.
    let at = GuestAddress(ROM + 0x800);
    let refused = [
        mem.write(&[1; 8], at).map(|_| ()),
        mem.write_slice(&[1; 8], at),
        mem.write_obj(1u64, at),
        mem.store(1u64, at, Ordering::Relaxed),
        mem.read_volatile_from(at, &mut [1u8; 8].as_slice(), 8).map(|_| ()),
        GuestMemory::get_slices(&*mem, at, 8, Permissions::Write)
            .and_then(|mut s| s.next().expect("one slice").map(|_| ())),
    ];
    for result in refused {
        assert!(result.as_ref().is_err_and(permission_denied), "{result:?}");
    }
    assert_eq!(mem.write(&[7; 16], GuestAddress(ROM - 8)).expect("RAM part"), 8);
    assert!(matches!(
        mem.write_slice(&[7; 16], GuestAddress(ROM - 8)),
        Err(GuestMemoryError::PartialBuffer { expected: 16, completed: 8 })
    ));
    assert!(!GuestMemory::check_range(&*mem, at, 8, Permissions::Write));
    assert!(!GuestMemory::check_range(&*mem, GuestAddress(ROM - 8), 16, Permissions::ReadWrite));
    assert!(GuestMemory::check_range(&*mem, at, 8, Permissions::Read));

    // Region accessors: `Bytes` reads and refuses writes; a slice or a host
    // pointer, which the caller may write through, is refused.
    let regions = mem.physical_memory().expect("no IOMMU");
    let region = regions.find_region(at).expect("the ROM");
    assert_eq!(region.read_obj::<u64>(MemoryRegionAddress(0x800)).expect("ROM"), mem.read_obj::<u64>(at).expect("ROM"));
    assert!(region.write_obj(1u64, MemoryRegionAddress(0x800)).as_ref().is_err_and(permission_denied));
    assert!(region.store(1u64, MemoryRegionAddress(0x800), Ordering::Relaxed).as_ref().is_err_and(permission_denied));
    assert!(region.get_slice(MemoryRegionAddress(0x800), 8).is_err());
    assert!(region.as_volatile_slice().is_err());
    assert!(region.get_host_address(MemoryRegionAddress(0x800)).is_err());
    assert!(regions.get_slice(at, 8).is_err());
    assert!(regions.get_host_address(at).is_err());
    assert!(regions.read_obj::<u64>(at).is_err(), "reads go through `mem`");

    // Reads of the ROM through the adapter.
    let mut whole = vec![0; ROM_LEN];
    mem.read_slice(&mut whole, GuestAddress(ROM)).expect("ROM");
    assert_eq!(whole, image);
    assert_eq!(
        mem.load::<u32>(GuestAddress(ROM + 0x2000), Ordering::Acquire).expect("ROM").to_ne_bytes(),
        image[0x2000..0x2004]
    );
    let mut copied = Vec::new();
    mem.write_all_volatile_to(GuestAddress(ROM - 8), &mut copied, 16).expect("RAM and ROM");
    assert_eq!(copied[..8], [7; 8]);
    assert_eq!(copied[8..], image[..8]);
    let mut sliced = [0; 8];
    for slice in GuestMemory::get_slices(&*mem, at, 8, Permissions::Read).expect("slices") {
        slice.expect("readable").copy_to(&mut sliced);
    }
    assert_eq!(sliced, image[0x800..0x808]);
    region.read_slice(&mut sliced, MemoryRegionAddress(ROM_LEN as u64 - 8)).expect("ROM");
    assert_eq!(sliced, image[ROM_LEN - 8..]);

    drop(mem);
    writer.delete(key).expect("no snapshot held");
    // SAFETY: the slot is deleted, so nothing reaches the mapping any more.
    assert_eq!(unsafe { libc::munmap(rom, ROM_LEN) }, 0);
}

#[test]
fn hot_plugged_slots_reach_a_running_device() {
    const RINGS: [u64; 3] = [0x1000, 0x2000, 0x3000];
    const PLUG: u64 = 0x1000_0000;
    const PLUG_LEN: u64 = 0x10_0000;
    const ROUNDS: u16 = 24;
    let slots = map(1);
    let mut writer = slots.writer().expect("first writer");
    add_slots(&mut writer, 0, &[(0, 0x10_0000)], Flags::empty());
    let space = GuestMemorySlots::new(slots.clone());
    let mut queue = queue(&*space.memory(), 256, RINGS);
    let stop = Arc::new(AtomicBool::new(false));

    let device_thread = {
        let (space, stop) = (space.clone(), stop.clone());
        thread::spawn(move || -> Result<usize, String> {
            let mut processed = 0;
            while !stop.load(Ordering::Relaxed) {
                {
                    // Both plugged slots or neither, in every snapshot.
                    let mem = space.memory();
                    let plugged =
                        [PLUG, PLUG + PLUG_LEN].map(|gpa| mem.regions().find_region(GuestAddress(gpa)).is_some());
                    let count = mem.regions().num_regions();
                    if plugged[0] != plugged[1] || count != if plugged[0] { 3 } else { 1 } {
                        return Err(format!("torn layout: {plugged:?}, {count} regions"));
                    }
                }
                processed += device(&space, &mut queue)?.len();
                thread::yield_now();
            }
            Ok(processed)
        })
    };

    let mut rng = Rng(7);
    for round in 0..ROUNDS {
        let keys = [SlotKey { id: 1, as_id: 0 }, SlotKey { id: 2, as_id: 0 }];
        let mut batch = writer.batch();
        for (i, key) in keys.iter().enumerate() {
            let ram = Arc::new(GuestRam::new(PLUG_LEN as usize).expect("guest RAM"));
            batch.create_owned(*key, (PLUG + i as u64 * PLUG_LEN) / PAGE, Flags::empty(), ram);
        }
        batch.commit().expect("plugged");
        // The chain reads across the two new slots and writes into the second.
        let input = rng.bytes(0x2000);
        let (src, dst) = (PLUG + PLUG_LEN - 0x1000, PLUG + PLUG_LEN + 0x8000);
        {
            let mem = space.memory();
            mem.write_slice(&input, GuestAddress(src)).expect("plugged memory");
            let slot = (u64::from(round) % 128) * 2;
            let read = Descriptor::new(src, 0x2000, DESC_F_NEXT, (slot + 1) as u16);
            let write = Descriptor::new(dst, 0x2000, DESC_F_WRITE, 0);
            mem.write_obj(read, GuestAddress(RINGS[0] + 16 * slot)).expect("table");
            mem.write_obj(write, GuestAddress(RINGS[0] + 16 * (slot + 1))).expect("table");
            mem.write_obj(slot as u16, GuestAddress(RINGS[1] + 4 + 2 * u64::from(round % 256))).expect("ring");
            mem.store(round + 1, GuestAddress(RINGS[1] + 2), Ordering::Release).expect("ring");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while space.memory().load::<u16>(GuestAddress(RINGS[2] + 2), Ordering::Acquire).expect("ring") != round + 1 {
            assert!(Instant::now() < deadline, "device stalled in round {round}");
            assert!(!device_thread.is_finished(), "device stopped in round {round}");
            thread::yield_now();
        }
        let mut output = vec![0; 0x2000];
        space.memory().read_slice(&mut output, GuestAddress(dst)).expect("plugged memory");
        let expected: Vec<u8> = input.iter().rev().map(|b| b.wrapping_add(1)).collect();
        assert_eq!(output, expected, "round {round}");
        let mut batch = writer.batch();
        for key in keys {
            batch.delete(key);
        }
        batch.commit().expect("unplugged");
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(device_thread.join().expect("device thread"), Ok(usize::from(ROUNDS)));
}

#[test]
fn snapshots_on_one_thread_share_a_layout_and_hold_the_writer() {
    let (slots, writer, space, _) = pair(&LAYOUT[..2]);
    let first = space.memory();
    let generation = first.view().generation();
    let (done_tx, done_rx) = mpsc::channel();
    let writer_thread = thread::spawn(move || {
        let mut writer = writer;
        let region =
            Region { id: 9, as_id: 0, base_gfn: 0x800, npages: 1, hva: 0x7f00_0000_0000, flags: Flags::empty() };
        writer.create(region).expect("valid slot");
        done_tx.send(()).expect("test waiting");
        writer
    });
    // Wait until the writer has published the new layout: it now waits for
    // `first`, and a newer layout than the snapshots' exists.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while slots.reader().pin().generation() == generation {
        assert!(std::time::Instant::now() < deadline, "the writer never published");
        thread::yield_now();
    }
    // The change cannot complete while `first` is held.
    assert_eq!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty));
    let again = space.memory();
    let clone = first.clone();
    for snapshot in [&again, &clone] {
        assert_eq!(snapshot.view().generation(), generation);
        assert!(snapshot.regions().find_region(GuestAddress(0x80_0000)).is_none());
        assert_eq!(snapshot.regions().num_regions(), 2);
    }
    drop(first);
    drop(again);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty), "a clone still holds the layout");
    drop(clone);
    done_rx.recv_timeout(Duration::from_secs(20)).expect("writer done once every snapshot is dropped");
    let mut writer = writer_thread.join().expect("writer thread");
    let fresh = space.memory();
    assert_eq!(fresh.regions().num_regions(), 3);
    assert!(fresh.regions().find_region(GuestAddress(0x80_0000)).is_some());
    // Without host memory: a region, but no access.
    assert!(matches!(fresh.read_obj::<u8>(GuestAddress(0x80_0000)), Err(GuestMemoryError::HostAddressNotAvailable)));

    // A snapshot held on the writer's thread makes it refuse.
    let key = SlotKey { id: 9, as_id: 0 };
    assert_eq!(writer.delete(key), Err(Error::ViewHeldByWriterThread));
    drop(fresh);
    writer.delete(key).expect("no snapshot held");
    assert_eq!(GuestMemorySlots::new(slots).memory().regions().num_regions(), 2);
}

#[test]
fn handles_name_an_address_space() {
    let slots = map(2);
    let mut writer = slots.writer().expect("first writer");
    add_slots(&mut writer, 0, &[(0, 0x1_0000)], Flags::empty());
    add_slots(&mut writer, 1, &[(0x3_0000, PAGE)], Flags::empty());
    let normal = GuestMemorySlots::new(slots.clone());
    let smm = GuestMemorySlots::with_address_space(slots.clone(), 1).expect("two address spaces");
    assert_eq!(smm.address_space(), 1);
    smm.memory().write_obj(0x5a_u8, GuestAddress(0x3_0000)).expect("SMRAM");
    assert!(normal.memory().read_obj::<u8>(GuestAddress(0x3_0000)).is_err());
    assert_eq!(smm.memory().read_obj::<u8>(GuestAddress(0x3_0000)).expect("SMRAM"), 0x5a);
    // Snapshots of two handles on one thread are independent.
    let (a, b) = (normal.memory(), smm.memory());
    assert_eq!((a.regions().num_regions(), b.regions().num_regions()), (1, 1));
    assert_eq!(
        GuestMemorySlots::with_address_space(slots, 2).map(|_| ()),
        Err(Error::InvalidAddressSpace { as_id: 2 })
    );
}

#[test]
fn a_thread_lets_go_of_a_dropped_handle() {
    let ram = Arc::new(GuestRam::new(PAGE as usize).expect("guest RAM"));
    let slots = map(1);
    slots
        .writer()
        .expect("first writer")
        .create_owned(SlotKey { id: 0, as_id: 0 }, 0, Flags::empty(), ram.clone())
        .expect("valid slot");
    let space = GuestMemorySlots::new(slots);
    thread::spawn(move || {
        space.memory().write_obj(1u8, GuestAddress(0)).expect("mapped");
        drop(space);
        // This thread's reader still holds the map, and the map the RAM.
        assert_eq!(Arc::strong_count(&ram), 2);
        // The first snapshot of another handle drops it.
        let other = GuestMemorySlots::new(map(1));
        assert_eq!(other.memory().regions().num_regions(), 0);
        assert_eq!(Arc::strong_count(&ram), 1);
    })
    .join()
    .expect("test thread");
}
