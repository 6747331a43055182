//! How the crate waits for other threads: the writer for a grace period, a
//! vCPU for another vCPU's zap. The embedder chooses the strategy.

use crate::base::sync::model_yield;

/// A wait strategy: what the writer's grace-period wait and
/// [`ZapBinner::zap_or_wait`] do while another thread has to move first.
///
/// The default, [`SpinThenYield`], spins with [`core::hint::spin_loop`] for a
/// few steps and then yields the CPU (`std::thread::yield_now` with `std`; a
/// plain spin without it). A `no_std` hypervisor supplies its own, for
/// example `pause`/`hlt` or its scheduler's yield.
///
/// A strategy must be `Send + Sync`: the map shares it with every handle.
///
/// A strategy that counts its steps, while a view held on another thread
/// keeps the writer waiting:
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use memslots::{Config, Flags, Memslots, Region, Wait};
///
/// struct Counting(Arc<AtomicU32>);
/// impl Wait for Counting {
///     fn pause(&self, _step: u32) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         std::thread::yield_now();
///     }
/// }
///
/// let steps = Arc::new(AtomicU32::new(0));
/// let slots = Memslots::with_wait(Config::default(), Counting(steps.clone()))?;
/// let mut writer = slots.writer()?;
/// let vcpu = slots.reader();
/// let view = vcpu.pin();
/// std::thread::scope(|s| {
///     let create = s.spawn(move || {
///         writer.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })
///     });
///     while steps.load(Ordering::Relaxed) == 0 {
///         std::thread::yield_now(); // the writer is waiting for `view`...
///     }
///     drop(view); // ...until it ends
///     create.join().expect("the writer thread does not panic")
/// })?;
/// # Ok::<(), memslots::Error>(())
/// ```
///
/// [`ZapBinner::zap_or_wait`]: crate::ZapBinner::zap_or_wait
pub trait Wait: Send + Sync {
    /// One step of a wait. `step` counts from 0 within each wait.
    fn pause(&self, step: u32) {
        SpinThenYield.pause(step);
    }

    /// The wait has taken `stall.steps` steps: called at step
    /// [`STALL_STEPS`] and again each time the count doubles, so a VMM can
    /// log the reader that holds the writer up or kick its vCPU out of the
    /// guest. The wait goes on when it returns.
    fn stalled(&self, stall: &Stall) {
        let _ = stall;
    }
}

/// The first step at which [`Wait::stalled`] is called.
pub const STALL_STEPS: u32 = 1 << 16;

/// What a wait is held up by, for [`Wait::stalled`].
///
/// A VMM that maps reader ids to vCPUs learns which one to kick:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use memslots::{Config, Flags, Memslots, Region, Stall, Wait, STALL_STEPS};
///
/// struct Reports(Arc<Mutex<Vec<Stall>>>);
/// impl Wait for Reports {
///     fn pause(&self, _step: u32) {
///         std::thread::yield_now();
///     }
///     fn stalled(&self, stall: &Stall) {
///         self.0.lock().expect("no report panicked").push(*stall);
///     }
/// }
///
/// let reports = Arc::new(Mutex::new(Vec::new()));
/// let slots = Memslots::with_wait(Config::default(), Reports(reports.clone()))?;
/// let mut writer = slots.writer()?;
/// let stuck = slots.reader();
/// let view = stuck.pin(); // a vCPU that does not come back
/// std::thread::scope(|s| {
///     let create = s.spawn(move || {
///         writer.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 16, hva: 0x7f00_0000_0000, flags: Flags::empty() })
///     });
///     while reports.lock().expect("no report panicked").is_empty() {
///         std::thread::yield_now();
///     }
///     drop(view); // kicked
///     create.join().expect("the writer thread does not panic")
/// })?;
/// let first = reports.lock().expect("no report panicked")[0];
/// assert_eq!((first.reader, first.steps), (Some(stuck.id()), STALL_STEPS));
/// # Ok::<(), memslots::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stall {
    /// The reader the writer waits for ([`Reader::id`]: unique for the
    /// map's life, never reused after the reader drops), or `None` for a
    /// vCPU waiting for another vCPU's zap.
    ///
    /// [`Reader::id`]: crate::Reader::id
    pub reader: Option<u64>,
    /// Steps taken so far in this wait.
    pub steps: u32,
}

impl Stall {
    pub(crate) fn new(reader: Option<u64>, steps: u32) -> Stall {
        Stall { reader, steps }
    }

    /// Whether step `steps` of a wait reports a stall: [`STALL_STEPS`] and
    /// each doubling after it.
    pub(crate) fn due(steps: u32) -> bool {
        steps >= STALL_STEPS && steps.is_power_of_two()
    }
}

/// Spins with [`core::hint::spin_loop`], twice as long each step up to 64
/// hints, then yields the thread (`std`) or keeps spinning (`no_std`).
/// [`Memslots::new`](crate::Memslots::new) and
/// [`ZapBinner::new`](crate::ZapBinner::new) use it.
///
/// ```
/// use memslots::{Config, Memslots, SpinThenYield, ZapBinner};
///
/// // What `Memslots::new` and `ZapBinner::new` do, spelled out.
/// let slots = Memslots::with_wait(Config::default(), SpinThenYield)?;
/// assert!(slots.writer().is_ok());
/// let binner = ZapBinner::with_wait(SpinThenYield);
/// let mut zapped = Vec::new();
/// binner.zap_or_wait(0x100..0x200, |gfns| zapped.push(gfns));
/// assert_eq!(zapped, [0x100..0x200]);
/// # Ok::<(), memslots::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinThenYield;

/// Steps that spin before [`SpinThenYield`] starts yielding.
const SPIN_STEPS: u32 = 7;

impl Wait for SpinThenYield {
    fn pause(&self, step: u32) {
        if step < SPIN_STEPS || cfg!(not(feature = "std")) {
            for _ in 0..1u32 << step.min(SPIN_STEPS - 1) {
                core::hint::spin_loop();
            }
        } else {
            #[cfg(feature = "std")]
            std::thread::yield_now();
        }
    }
}

/// Waits for `done`, pausing with `wait` and reporting stalls on behalf of
/// the reader `reader` names when the stall is reported.
pub(crate) fn wait_until(
    wait: &(impl Wait + ?Sized),
    reader: impl Fn() -> Option<u64>,
    mut done: impl FnMut() -> bool,
) {
    let mut step = 0u32;
    while !done() {
        if !model_yield() {
            wait.pause(step);
        }
        step = step.saturating_add(1);
        if Stall::due(step) {
            wait.stalled(&Stall::new(reader(), step));
        }
    }
}
