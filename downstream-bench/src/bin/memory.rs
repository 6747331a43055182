//! Heap bytes per slot, counted by a global allocator: both sets with every
//! index and cache, and the slot objects, built in ascending and in random
//! order, against vm-memory's `GuestMemoryMmap` (its heap only; each region
//! is also an mmap), `RwLock<BTreeMap>` and `ArcSwap<Vec>`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use memslots_downstream_bench::peers::{layout, ArcSwapVec, Lookup, RwLockBTree, VmMemory};
use memslots_downstream_bench::{build, shuffled};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn per_slot<T>(n: usize, make: impl FnOnce() -> T) -> f64 {
    let before = LIVE.load(Ordering::Relaxed);
    let built = make();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    drop(built);
    bytes as f64 / n as f64
}

fn main() {
    let sizes = [509, 4096, 32764];
    println!("| heap bytes per slot | 509 | 4096 | 32764 |\n| --- | --- | --- | --- |");
    let rows: [(&str, &dyn Fn(usize) -> f64); 5] = [
        ("memslots, ascending order", &|n| per_slot(n, || build(&layout(n), &(0..n).collect::<Vec<_>>()))),
        ("memslots, random order", &|n| per_slot(n, || build(&layout(n), &shuffled(n)))),
        ("vm-memory GuestMemoryMmap", &|n| per_slot(n, || VmMemory::build(&layout(n)))),
        ("RwLock<BTreeMap>", &|n| per_slot(n, || RwLockBTree::build(&layout(n)))),
        ("ArcSwap<Vec>", &|n| per_slot(n, || ArcSwapVec::build(&layout(n)))),
    ];
    for (name, measure) in rows {
        let cells: Vec<String> = sizes.iter().map(|&n| format!("{:.0}", measure(n))).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}
