//! What the two vCPUs share: the slot map, the zap binner and the writer's
//! announcements. The writer vCPU makes it; the reader vCPU waits for it.

use alloc::boxed::Box;
use core::hint::spin_loop;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use memslots::{Config, Memslots, ZapBinner};

/// State shared by the vCPUs.
pub struct Shared {
    /// The slot map under test.
    pub slots: Memslots,
    /// Zap requests from both vCPUs.
    pub binner: ZapBinner,
    /// The last step whose change has returned to the writer.
    pub announced: AtomicU64,
    /// The reader vCPU has registered its reader.
    pub reader_ready: AtomicBool,
    /// The benchmark layout is in place.
    pub bench_ready: AtomicBool,
}

static SHARED: AtomicPtr<Shared> = AtomicPtr::new(core::ptr::null_mut());

/// Makes the shared state and hands it to the other vCPU. Once, after the
/// heap is ready.
pub fn publish() -> &'static Shared {
    let config = Config::new(1, 64);
    let shared = Box::new(Shared {
        slots: Memslots::new(config).unwrap_or_else(|e| panic!("Memslots::new: {e}")),
        binner: ZapBinner::new(),
        announced: AtomicU64::new(0),
        reader_ready: AtomicBool::new(false),
        bench_ready: AtomicBool::new(false),
    });
    let shared = Box::leak(shared);
    // Release: pairs with the Acquire load in `wait`, so the other vCPU
    // sees the state (and the heap) initialised.
    SHARED.store(shared, Ordering::Release);
    shared
}

/// The shared state, once the writer vCPU has published it.
pub fn wait() -> &'static Shared {
    loop {
        // Acquire: pairs with the Release store in `publish`.
        let shared = SHARED.load(Ordering::Acquire);
        // SAFETY: G2: a non-null pointer came from `Box::leak` in `publish`: it
        // lives for ever and is only shared, never mutated through.
        if let Some(shared) = unsafe { shared.as_ref() } {
            return shared;
        }
        spin_loop();
    }
}

/// Spins until `flag` is set.
pub fn wait_for(flag: &AtomicBool) {
    // Acquire: pairs with the Release store that sets the flag.
    while !flag.load(Ordering::Acquire) {
        spin_loop();
    }
}
