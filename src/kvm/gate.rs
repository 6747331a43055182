//! Quiescing vCPUs: a gate every `KVM_RUN` passes through, which the memory
//! writer can close while it changes several slots, so that no vCPU ever
//! runs on a half-applied batch.
//!
//! The kernel has no multi-slot ioctl: a batch of N changes is N
//! `KVM_SET_USER_MEMORY_REGION` calls, and a vCPU inside `KVM_RUN` between
//! two of them would see the first applied and not the second. The gate
//! closes the window: [`VcpuGate::hold`] kicks every vCPU out of `KVM_RUN`
//! and waits until none is inside; a vCPU that wants to enter waits at the
//! gate until [`VcpuGate::release`].
//!
//! A kick is the pair every VMM uses: `kvm_run.immediate_exit = 1`, so that
//! a vCPU about to enter `KVM_RUN` returns at once, and a signal to the
//! thread, so that a vCPU already inside returns with `EINTR`. Either way
//! the vCPU's run loop sees `EINTR`
//! ([`Exit::Interrupted`](super::Exit::Interrupted) with the
//! [`Vcpu`](super::Vcpu) helper), and its next entry waits at the gate.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};

/// How long a [`VcpuGate::hold`] waits for the vCPUs it kicked before it
/// kicks them again (a signal that arrived before the vCPU entered the
/// kernel, on a kernel without `KVM_CAP_IMMEDIATE_EXIT`).
const REKICK: Duration = Duration::from_millis(2);

/// The gate between the memory writer and the vCPU threads' `KVM_RUN`.
/// Cloning it shares the gate.
///
/// # What a VMM with its own run loop must do
///
/// - Call [`VcpuGate::run`] instead of [`VcpuFd::run`]. It waits while the
///   gate is held, enters `KVM_RUN`, and leaves the gate when `KVM_RUN`
///   returns.
/// - Treat `Err(e)` with `e.errno() == libc::EINTR` as "kicked": loop and
///   call `run` again (which waits at the gate while a batch is applied).
/// - Not block the gate's signal ([`VcpuGate::signal`], `SIGRTMIN` by
///   default) on vCPU threads ([`VcpuGate::run`] unblocks it on each thread
///   once), and not install `SIG_IGN` for it. If the VMM already has its own
///   handler for that signal, the gate keeps it: any handler interrupts
///   `KVM_RUN`.
/// - Not hold a [`View`](crate::View) (nor anything the memory writer waits
///   for) across `run`: the writer holds the vCPUs at the gate while it
///   waits for readers.
/// - Leave `kvm_run.immediate_exit` alone while inside `run`; the gate
///   clears it after a kick of its own.
///
/// Every hold kicks the running vCPUs, so holds back to back with no pause
/// starve them: put many slot changes in one batch (one hold) rather than
/// making them one by one in a tight loop.
#[derive(Clone)]
pub struct VcpuGate {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// vCPUs wait here while the gate is held.
    open: Condvar,
    /// The holder waits here for the running vCPUs to leave.
    drained: Condvar,
    signal: libc::c_int,
}

#[derive(Default)]
struct State {
    /// Nested holds; the gate is open at 0.
    holds: u32,
    /// vCPUs waiting at the gate (so that a release wakes someone only
    /// when there is someone: a condition variable's notify is a system
    /// call even without waiters).
    waiting: u32,
    /// The vCPUs between entering and leaving `KVM_RUN`.
    running: Vec<Running>,
    next_token: u64,
    stats: GateStats,
}

/// One vCPU inside [`VcpuGate::run`].
struct Running {
    token: u64,
    thread: libc::pthread_t,
    /// `kvm_run.immediate_exit` of the vCPU, valid while it is listed.
    immediate_exit: *const AtomicU8,
    /// The gate set `immediate_exit`; the vCPU clears it when it leaves.
    kicked: bool,
}

// SAFETY: the pointer is only dereferenced under the gate's lock while the
// vCPU it belongs to is listed, that is inside `VcpuGate::run`, which
// borrows the `VcpuFd` (and so its `kvm_run` mapping) for that time.
unsafe impl Send for Running {}

/// Counters of a gate, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Holds that found the gate open.
    pub holds: u64,
    /// Kicks sent (one per running vCPU and attempt).
    pub kicks: u64,
    /// `KVM_RUN` entries through the gate.
    pub entries: u64,
    /// Entries that had to wait for a release.
    pub waited: u64,
    /// Time holds spent waiting for running vCPUs to leave `KVM_RUN`, in
    /// nanoseconds.
    pub drain_ns: u64,
    /// The longest such wait.
    pub max_drain_ns: u64,
}

impl VcpuGate {
    /// A gate kicking with `SIGRTMIN`.
    ///
    /// # Errors
    /// The errno of `sigaction` if the signal handler cannot be installed.
    pub fn new() -> std::io::Result<VcpuGate> {
        VcpuGate::with_signal(libc::SIGRTMIN())
    }

    /// A gate kicking with `signal` (a real-time signal the VMM does not
    /// use otherwise, or one whose handler the VMM installed itself).
    ///
    /// # Errors
    /// `EINVAL` for a signal outside `1..=SIGRTMAX`; the errno of
    /// `sigaction`.
    pub fn with_signal(signal: libc::c_int) -> std::io::Result<VcpuGate> {
        install_handler(signal)?;
        let shared = Shared { state: Mutex::default(), open: Condvar::new(), drained: Condvar::new(), signal };
        Ok(VcpuGate { shared: Arc::new(shared) })
    }

    /// The signal that kicks vCPUs out of `KVM_RUN`.
    pub fn signal(&self) -> libc::c_int {
        self.shared.signal
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every
        // update is a single step), so a poisoned lock is used as is.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `KVM_RUN` through the gate: waits while the gate is held, runs, and
    /// leaves. A kick returns `Err` with `EINTR`, like a signal does for
    /// [`VcpuFd::run`].
    ///
    /// # Errors
    /// The errno of `KVM_RUN`.
    pub fn run<'a>(&self, vcpu: &'a mut VcpuFd) -> Result<VcpuExit<'a>, kvm_ioctls::Error> {
        unblock_on_this_thread(self.shared.signal);
        let run: *mut kvm_bindings::kvm_run = vcpu.get_kvm_run();
        // `immediate_exit` is a byte that user space owns and the kernel only
        // reads, and `AtomicU8` has the layout and alignment of `u8`. Only the
        // gate writes it while the vCPU is listed, with atomic accesses, and
        // the vCPU does not touch it then (see the type's docs).
        // SAFETY: `run` points to the vCPU's mapped `kvm_run`, which lives as
        // long as `vcpu`; the field projection reads nothing.
        let immediate_exit = unsafe { core::ptr::addr_of_mut!((*run).immediate_exit) }.cast::<AtomicU8>();
        let token = {
            let mut state = self.lock();
            state.stats.entries += 1;
            if state.holds > 0 {
                state.stats.waited += 1;
            }
            while state.holds > 0 {
                state.waiting += 1;
                state = self.shared.open.wait(state).unwrap_or_else(PoisonError::into_inner);
                state.waiting -= 1;
            }
            let token = state.next_token;
            state.next_token += 1;
            // SAFETY: `pthread_self` has no preconditions.
            let thread = unsafe { libc::pthread_self() };
            state.running.push(Running { token, thread, immediate_exit, kicked: false });
            token
        };
        let result = vcpu.run();
        let mut state = self.lock();
        if let Some(at) = state.running.iter().position(|r| r.token == token) {
            let me = state.running.swap_remove(at);
            if me.kicked {
                // Relaxed: the next `KVM_RUN` is on this thread.
                // SAFETY: as above; `vcpu` is still borrowed, and the exit
                // data returned in `result` does not cover this byte.
                unsafe { (*me.immediate_exit).store(0, Ordering::Relaxed) };
            }
        }
        if state.running.is_empty() && state.holds > 0 {
            self.shared.drained.notify_all();
        }
        drop(state);
        result
    }

    /// Closes the gate: kicks every vCPU inside `KVM_RUN` out and returns
    /// once none is inside; until [`VcpuGate::release`], vCPUs wait at the
    /// gate. Holds nest (the gate opens when every hold is released).
    ///
    /// Call it from a thread that is not itself inside [`VcpuGate::run`].
    pub fn hold(&self) {
        let mut state = self.lock();
        if state.holds == 0 {
            state.stats.holds += 1;
        }
        state.holds += 1;
        if state.running.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        while !state.running.is_empty() {
            let signal = self.shared.signal;
            let mut kicks = 0;
            for vcpu in state.running.iter_mut() {
                if !vcpu.kicked {
                    // Relaxed: the kernel reads it on entry to `KVM_RUN`,
                    // after the signal below; a vCPU already inside gets it.
                    // SAFETY: the vCPU is listed, so its `kvm_run` is mapped
                    // (see `Running`).
                    unsafe { (*vcpu.immediate_exit).store(1, Ordering::Relaxed) };
                    vcpu.kicked = true;
                }
                // SAFETY: a listed vCPU's thread is alive: it is inside
                // `run` and removes itself under this lock before leaving.
                unsafe { libc::pthread_kill(vcpu.thread, signal) };
                kicks += 1;
            }
            state.stats.kicks += kicks;
            state = self.shared.drained.wait_timeout(state, REKICK).unwrap_or_else(PoisonError::into_inner).0;
        }
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        state.stats.drain_ns = state.stats.drain_ns.saturating_add(waited);
        state.stats.max_drain_ns = state.stats.max_drain_ns.max(waited);
    }

    /// Opens the gate again after [`VcpuGate::hold`] (once every nested hold
    /// is released). A release without a hold does nothing.
    pub fn release(&self) {
        let mut state = self.lock();
        state.holds = state.holds.saturating_sub(1);
        if state.holds == 0 && state.waiting > 0 {
            self.shared.open.notify_all();
        }
    }

    /// Whether the gate is held.
    pub fn is_held(&self) -> bool {
        self.lock().holds > 0
    }

    /// vCPUs inside `KVM_RUN` (or about to enter it) right now.
    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// The gate's counters.
    pub fn stats(&self) -> GateStats {
        self.lock().stats
    }
}

impl core::fmt::Debug for VcpuGate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = self.lock();
        f.debug_struct("VcpuGate")
            .field("signal", &self.shared.signal)
            .field("holds", &state.holds)
            .field("running", &state.running.len())
            .field("stats", &state.stats)
            .finish()
    }
}

/// The kick handler: does nothing; its only effect is that a `KVM_RUN` in
/// progress on the thread returns `EINTR`.
extern "C" fn on_kick(_: libc::c_int) {}

/// Signals whose handler this process has checked or installed.
static INSTALLED: Mutex<u128> = Mutex::new(0);

/// Installs [`on_kick`] for `signal` unless a handler is there already.
///
/// `SA_RESTART` is set: `KVM_RUN` returns `EINTR` on a pending signal
/// whatever the flag (KVM returns `-EINTR`, which is never restarted), and
/// a kick that lands while the vCPU thread is in some other system call
/// then restarts that call instead of failing it.
fn install_handler(signal: libc::c_int) -> std::io::Result<()> {
    if signal < 1 || signal > libc::SIGRTMAX() || signal >= 128 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let bit = 1u128 << signal;
    if *installed & bit != 0 {
        return Ok(());
    }
    // SAFETY: all-zero is a valid `sigaction` (no handler, empty mask).
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: reads the current action into `old`.
    if unsafe { libc::sigaction(signal, core::ptr::null(), &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if old.sa_sigaction == libc::SIG_DFL || old.sa_sigaction == libc::SIG_IGN {
        // SAFETY: as above.
        let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
        action.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action.sa_mask` is a valid set to empty; the handler is
        // async-signal-safe (it does nothing).
        let ok = unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, core::ptr::null_mut())
        };
        if ok != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    *installed |= bit;
    Ok(())
}

std::thread_local! {
    /// Signals this thread has unblocked for the gate.
    static UNBLOCKED: core::cell::Cell<u128> = const { core::cell::Cell::new(0) };
}

/// Unblocks `signal` on the calling thread, once per thread.
fn unblock_on_this_thread(signal: libc::c_int) {
    let bit = 1u128 << signal;
    UNBLOCKED.with(|done| {
        if done.get() & bit == 0 {
            // SAFETY: a local signal set, filled and applied to this thread.
            unsafe {
                let mut set: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, signal);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
            }
            done.set(done.get() | bit);
        }
    });
}
