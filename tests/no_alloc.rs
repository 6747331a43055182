//! The read side never calls the allocator: two reader threads (a vCPU and a
//! device reader, registered before the measurement) look up, repin, walk
//! ranges and drop views while the writer moves a slot back and forth
//! thousands of times. A counting global allocator attributes every call
//! (alloc, dealloc, realloc) to the thread that makes it; the readers' count
//! must be zero, and the writer's must not be (so the counter works).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Barrier;
use std::thread;

use memslots::{Change, Config, Flags, Memslots, Reader, Region, SlotKey};

/// Whose allocator calls the current thread's are.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Uncounted,
    Reader,
    Writer,
}

thread_local! {
    // A const-initialized `Cell` of a `Copy` type: no lazy initialization and
    // no destructor, so reading it from inside the allocator cannot allocate
    // or recurse.
    static ROLE: Cell<Role> = const { Cell::new(Role::Uncounted) };
}

static READER_CALLS: AtomicU64 = AtomicU64::new(0);
static WRITER_CALLS: AtomicU64 = AtomicU64::new(0);

struct Counting;

impl Counting {
    fn count(&self) {
        // `try_with`: during thread teardown the thread-local may be gone.
        let role = ROLE.try_with(Cell::get).unwrap_or(Role::Uncounted);
        match role {
            Role::Reader => READER_CALLS.fetch_add(1, SeqCst),
            Role::Writer => WRITER_CALLS.fetch_add(1, SeqCst),
            Role::Uncounted => 0,
        };
    }
}

// SAFETY: forwards every call to `System` unchanged; counting touches only
// atomics and a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const HVA: u64 = 0x7f00_0000_0000;
/// Never changes: gfns 0..0x100.
const STATIC: Region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 0x100, hva: HVA, flags: Flags::empty() };
/// Moves between `A` and `B`.
const MOVING: SlotKey = SlotKey { id: 1, as_id: 0 };
const A: u64 = 0x1000;
const B: u64 = 0x1040;
const PAGES: u64 = 0x80;

/// What a reader thread did, counted without allocating.
#[derive(Debug, Default)]
struct Work {
    rounds: u64,
    lookups: u64,
    moving_hits: u64,
    ranged: u64,
}

/// One round of everything a reader does. Allocates nothing of its own.
fn read_round(reader: &Reader, round: u64, work: &mut Work) {
    // A pin per lookup.
    for gfn in [0x10, 0xff, A + 1, B + PAGES - 1, 0x5000, round % 0x2000] {
        let view = reader.pin();
        let hit = view.gfn_to_slot(gfn);
        if gfn < 0x100 {
            assert_eq!(hit.map(|s| s.base_gfn()), Some(0));
            assert_eq!(view.gfn_to_hva(gfn), Some(HVA + (gfn << 12)));
        }
        if let Some(slot) = hit.filter(|s| s.id() == MOVING.id) {
            assert!(slot.base_gfn() == A || slot.base_gfn() == B);
            work.moving_hits += 1;
        }
        work.lookups += 1;
        drop(view);
    }
    // A repin loop: one view moved on at quiescent points.
    let mut view = reader.pin();
    for i in 0..16 {
        view = view.repin();
        assert!(view.gfn_to_slot(i).is_some());
        work.moving_hits += u64::from(view.gfn_to_hva(A + PAGES - 1).is_some());
        work.lookups += 2;
    }
    drop(view);
    // Range queries, lookups by id, and two views at once.
    let view = reader.pin();
    let nested = reader.pin();
    work.ranged += view.slots_in_gfn_range(0..u64::MAX).count() as u64;
    work.ranged += view.slots_in_gfn_range(A..B + PAGES).count() as u64;
    work.ranged += view.slots_in_hva_range(0..u64::MAX).count() as u64;
    work.ranged += nested.slots_in_hva_range(HVA..HVA + 0x1000).count() as u64;
    assert!(view.slot_by_id(STATIC.id).is_some());
    work.moving_hits += u64::from(view.slot_by_id(MOVING.id).is_some());
    assert!(nested.gfn_to_slot(0x20).is_some());
    work.ranged += view.slots().count() as u64;
    drop(nested);
    drop(view);
    work.rounds += 1;
}

#[test]
fn readers_make_no_allocator_calls() {
    let moves: u64 = if cfg!(miri) { 50 } else { 20_000 };
    let slots = Memslots::new(Config::default()).unwrap();
    let mut w = slots.writer().unwrap();
    w.create(STATIC).unwrap();
    let moving = Region { id: MOVING.id, as_id: 0, base_gfn: A, npages: PAGES, hva: HVA + (1 << 32), ..STATIC };
    w.create(moving).unwrap();
    // Registered before the measurement starts: registering may allocate.
    let readers = [slots.reader(), slots.device_reader()];
    let start = Barrier::new(3);
    let stop = AtomicBool::new(false);
    // Rounds each reader has finished, so the writer can make sure the
    // readers keep reading while it moves the slot.
    let progress = [AtomicU64::new(0), AtomicU64::new(0)];

    let (works, writer_calls) = thread::scope(|s| {
        let threads: Vec<_> = readers
            .into_iter()
            .zip(&progress)
            .map(|(reader, progress)| {
                let (start, stop) = (&start, &stop);
                s.spawn(move || {
                    let mut work = Work::default();
                    start.wait();
                    ROLE.with(|r| r.set(Role::Reader));
                    // Until the writer is done, and at least a few rounds.
                    while !stop.load(SeqCst) || work.rounds < 4 {
                        read_round(&reader, work.rounds, &mut work);
                        progress.store(work.rounds, SeqCst);
                        // Leave the writer CPU time on a small machine (a
                        // system call, no allocation).
                        if work.rounds.is_multiple_of(16) {
                            thread::yield_now();
                        }
                    }
                    ROLE.with(|r| r.set(Role::Uncounted));
                    drop(reader);
                    work
                })
            })
            .collect();

        start.wait();
        ROLE.with(|r| r.set(Role::Writer));
        let mut seen = [0, 0];
        for i in 0..moves {
            let to = if i.is_multiple_of(2) { B } else { A };
            assert_eq!(w.move_to(MOVING, to), Ok(Change::Moved));
            // Every so often, wait until both readers have made progress,
            // so their reading overlaps the moves throughout.
            if i.is_multiple_of((moves / 50).max(1)) {
                for (seen, progress) in seen.iter_mut().zip(&progress) {
                    while progress.load(SeqCst) <= *seen {
                        thread::yield_now();
                    }
                    *seen = progress.load(SeqCst);
                }
            }
        }
        ROLE.with(|r| r.set(Role::Uncounted));
        let writer_calls = WRITER_CALLS.load(SeqCst);
        stop.store(true, SeqCst);
        let works: Vec<Work> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (works, writer_calls)
    });

    let reader_calls = READER_CALLS.load(SeqCst);
    println!("{moves} moves: writer made {writer_calls} allocator calls, readers {reader_calls}");
    for (kind, work) in ["vCPU", "device"].iter().zip(&works) {
        println!("{kind} reader: {work:?}");
        assert!(work.rounds >= 4 && work.lookups > 0 && work.ranged > 0, "{kind} reader did too little: {work:?}");
    }
    assert_eq!(reader_calls, 0, "the read side called the allocator");
    // The negative controls: each move allocates and frees slot objects,
    // and a reader thread's own allocation would have been counted.
    assert!(writer_calls >= moves, "the counter missed the writer's calls: {writer_calls}");
    ROLE.with(|r| r.set(Role::Reader));
    drop(std::hint::black_box(Vec::<u64>::with_capacity(4)));
    ROLE.with(|r| r.set(Role::Uncounted));
    assert_eq!(READER_CALLS.load(SeqCst), 2, "the counter missed an alloc and a dealloc");
    assert_eq!(slots.slot_objects(), 2);
}
