//! Quiescing vCPUs: a gate every `KVM_RUN` passes through, which the memory
//! writer can close while it changes several slots, so that no vCPU ever
//! runs on a half-applied batch.
//!
//! The kernel has no multi-slot ioctl: a batch of N changes is N
//! `KVM_SET_USER_MEMORY_REGION` calls, and a vCPU inside `KVM_RUN` between
//! two of them would see the first applied and not the second. The gate
//! closes the window: [`VcpuGate::hold`] kicks every vCPU out of `KVM_RUN`
//! and waits until none is inside; a vCPU that wants to enter waits at the
//! gate until the [`GateHold`] it returned is dropped.
//!
//! A kick is the pair every VMM uses: `kvm_run.immediate_exit = 1`, so that
//! a vCPU about to enter `KVM_RUN` returns at once, and a signal to the
//! thread, so that a vCPU already inside returns with `EINTR`. Either way
//! the vCPU's run loop sees `EINTR`
//! ([`Exit::Interrupted`](super::Exit::Interrupted) with the
//! [`Vcpu`](super::Vcpu) helper), and its next entry waits at the gate.
//!
//! A registered vCPU is *parked* whenever it is not inside
//! [`GateVcpu::run`]: its `immediate_exit` stays 1 (module invariant 2), so
//! a run loop that calls [`VcpuFd::run`] on it directly, forgetting the
//! gate, gets `EINTR` at once, every time, and never runs the guest behind
//! the gate's back.

use core::sync::atomic::Ordering;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::kvm::run::RunMap;

/// How long a [`VcpuGate::hold`] waits for the vCPUs it kicked before it
/// kicks them again (a signal that arrived before the vCPU entered the
/// kernel, on a kernel without `KVM_CAP_IMMEDIATE_EXIT`).
const REKICK: Duration = Duration::from_millis(2);

/// The gate between the memory writer and the vCPU threads' `KVM_RUN`.
/// Cloning it shares the gate.
///
/// # What a VMM with its own run loop must do
///
/// - [Register](VcpuGate::register) every vCPU, and run it with
///   [`GateVcpu::run`] instead of [`VcpuFd::run`]. It waits while the gate
///   is held, enters `KVM_RUN`, and leaves the gate when `KVM_RUN` returns.
///   While registered, the vCPU's own [`VcpuFd::run`] returns `EINTR` at
///   once (it is parked): a loop that forgets the gate does not run the
///   guest at all. Dropping the [`GateVcpu`] unregisters it.
/// - Treat `Err(e)` with `e.errno() == libc::EINTR` as "kicked": loop and
///   call `run` again (which waits at the gate while a batch is applied).
/// - Not block the gate's signal ([`VcpuGate::signal`], `SIGRTMIN` by
///   default) on vCPU threads ([`GateVcpu::run`] unblocks it on each thread
///   once), and not install `SIG_IGN` for it. If the VMM already has its own
///   handler for that signal, the gate keeps it: any handler interrupts
///   `KVM_RUN`.
/// - Not hold a [`View`](crate::View) (nor anything the memory writer waits
///   for) across `run`: the writer may hold the vCPUs at the gate while it
///   waits for readers.
/// - Leave `kvm_run.immediate_exit` alone (no
///   [`VcpuFd::set_kvm_immediate_exit`]) while the vCPU is registered: the
///   gate owns it (module invariant 2; a debug build checks it at each
///   hold).
///
/// Every hold kicks the running vCPUs, so holds back to back with no pause
/// starve them: put many slot changes in one batch (one hold) rather than
/// holding the gate around each of many single changes.
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
    /// Every registered vCPU: its token and the gate's mapping of its
    /// `kvm_run`.
    registered: Vec<(u64, Arc<RunMap>)>,
    next_token: u64,
    stats: GateStats,
}

/// One vCPU inside [`GateVcpu::run`].
struct Running {
    token: u64,
    thread: libc::pthread_t,
    run: Arc<RunMap>,
}

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

/// A hold on a [`VcpuGate`] ([`VcpuGate::hold`]): no vCPU is inside
/// `KVM_RUN` through the gate while it lives. Dropping it, also while a
/// panic unwinds, releases the hold.
#[must_use = "the gate opens again when the hold is dropped"]
pub struct GateHold {
    shared: Arc<Shared>,
}

impl Drop for GateHold {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.holds = state.holds.saturating_sub(1);
        if state.holds == 0 && state.waiting > 0 {
            self.shared.open.notify_all();
        }
    }
}

impl core::fmt::Debug for GateHold {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GateHold").finish_non_exhaustive()
    }
}

/// A vCPU registered with a gate ([`VcpuGate::register`]); run it with
/// [`GateVcpu::run`]. Dropping it unregisters the vCPU (and unparks it).
pub struct GateVcpu {
    gate: VcpuGate,
    run: Arc<RunMap>,
    fd: RawFd,
    token: u64,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves the state consistent (every
    // update is a single step), so a poisoned lock is used as is.
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl VcpuGate {
    /// A gate kicking with `SIGRTMIN`.
    ///
    /// # Errors
    /// The errno of `sigaction` if the signal handler cannot be installed.
    pub fn new() -> io::Result<VcpuGate> {
        VcpuGate::with_signal(libc::SIGRTMIN())
    }

    /// A gate kicking with `signal` (a real-time signal the VMM does not
    /// use otherwise, or one whose handler the VMM installed itself).
    ///
    /// # Errors
    /// `EINVAL` for a signal outside `1..=SIGRTMAX`; the errno of
    /// `sigaction`.
    pub fn with_signal(signal: libc::c_int) -> io::Result<VcpuGate> {
        install_handler(signal)?;
        let shared = Shared { state: Mutex::default(), open: Condvar::new(), drained: Condvar::new(), signal };
        Ok(VcpuGate { shared: Arc::new(shared) })
    }

    /// The signal that kicks vCPUs out of `KVM_RUN`.
    pub fn signal(&self) -> libc::c_int {
        self.shared.signal
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Registers `vcpu` (of `vm`): maps its `kvm_run` for the gate and
    /// parks it, so that from now on it runs only through
    /// [`GateVcpu::run`].
    ///
    /// # Errors
    /// The errno of `mmap`.
    pub fn register(&self, vm: &VmFd, vcpu: &VcpuFd) -> io::Result<GateVcpu> {
        self.register_mapped(vcpu, vm.run_size())
    }

    /// [`VcpuGate::register`] for a `kvm_run` area of `len` bytes.
    pub(crate) fn register_mapped(&self, vcpu: &VcpuFd, len: usize) -> io::Result<GateVcpu> {
        let run = Arc::new(RunMap::new(vcpu, len)?);
        // Relaxed: the vCPU is parked before it can run through the gate;
        // its own thread reads the flag only inside `KVM_RUN` (module
        // invariant 2).
        run.immediate_exit().store(1, Ordering::Relaxed);
        let mut state = self.lock();
        let token = state.next_token;
        state.next_token += 1;
        state.registered.push((token, run.clone()));
        drop(state);
        Ok(GateVcpu { gate: self.clone(), run, fd: vcpu.as_raw_fd(), token })
    }

    /// Closes the gate: kicks every vCPU inside `KVM_RUN` out and returns
    /// once none is inside; until the returned [`GateHold`] is dropped,
    /// vCPUs wait at the gate. Holds nest (the gate opens when every hold is
    /// dropped).
    ///
    /// Call it from a thread that is not itself inside [`GateVcpu::run`].
    ///
    /// # Panics
    /// In a debug build, if a registered vCPU outside [`GateVcpu::run`] is
    /// not parked (its `immediate_exit` was cleared behind the gate's back,
    /// so it may be running outside the gate).
    pub fn hold(&self) -> GateHold {
        {
            let mut state = self.lock();
            if state.holds == 0 {
                state.stats.holds += 1;
            }
            state.holds += 1;
        }
        // Made once the hold is counted, so that dropping it (also on an
        // unwind from the wait below) undoes exactly this hold.
        let hold = GateHold { shared: self.shared.clone() };
        self.drain();
        hold
    }

    /// Kicks the running vCPUs until none is inside `KVM_RUN`.
    fn drain(&self) {
        let mut state = self.lock();
        #[cfg(debug_assertions)]
        for (token, run) in &state.registered {
            // Relaxed: written under this lock, or by the VMM in breach of
            // the gate's rules, which is what this looks for.
            let parked = run.immediate_exit().load(Ordering::Relaxed) == 1;
            let running = state.running.iter().any(|r| r.token == *token);
            assert!(
                parked || running,
                "memslots: a vCPU registered with the gate is not parked outside GateVcpu::run: \
                 something cleared its kvm_run.immediate_exit and may run it outside the gate"
            );
        }
        if state.running.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        while !state.running.is_empty() {
            let signal = self.shared.signal;
            for vcpu in &state.running {
                // Relaxed: the kernel reads it on entry to `KVM_RUN`, after
                // the signal below; a vCPU already inside gets the signal.
                vcpu.run.immediate_exit().store(1, Ordering::Relaxed);
                // SAFETY: a listed vCPU's thread is alive: it is inside
                // `run` and removes itself under this lock before leaving.
                unsafe { libc::pthread_kill(vcpu.thread, signal) };
            }
            state.stats.kicks += state.running.len() as u64;
            state = self.shared.drained.wait_timeout(state, REKICK).unwrap_or_else(PoisonError::into_inner).0;
        }
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        state.stats.drain_ns = state.stats.drain_ns.saturating_add(waited);
        state.stats.max_drain_ns = state.stats.max_drain_ns.max(waited);
    }

    /// Whether the gate is held.
    pub fn is_held(&self) -> bool {
        self.lock().holds > 0
    }

    /// vCPUs inside `KVM_RUN` (or about to enter it) right now.
    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// vCPUs registered with the gate.
    pub fn registered(&self) -> usize {
        self.lock().registered.len()
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
            .field("registered", &state.registered.len())
            .field("running", &state.running.len())
            .field("stats", &state.stats)
            .finish()
    }
}

impl GateVcpu {
    /// `KVM_RUN` through the gate: waits while the gate is held, runs, and
    /// leaves. A kick returns `Err` with `EINTR`, like a signal does for
    /// [`VcpuFd::run`].
    ///
    /// # Errors
    /// `EINVAL` if `vcpu` is not the vCPU this was registered for; the
    /// errno of `KVM_RUN`.
    pub fn run<'a>(&mut self, vcpu: &'a mut VcpuFd) -> Result<VcpuExit<'a>, kvm_ioctls::Error> {
        if vcpu.as_raw_fd() != self.fd {
            return Err(kvm_ioctls::Error::new(libc::EINVAL));
        }
        let shared = &*self.gate.shared;
        unblock_on_this_thread(shared.signal);
        {
            let mut state = lock(shared);
            state.stats.entries += 1;
            if state.holds > 0 {
                state.stats.waited += 1;
            }
            while state.holds > 0 {
                state.waiting += 1;
                state = shared.open.wait(state).unwrap_or_else(PoisonError::into_inner);
                state.waiting -= 1;
            }
            // SAFETY: `pthread_self` has no preconditions.
            let thread = unsafe { libc::pthread_self() };
            state.running.push(Running { token: self.token, thread, run: self.run.clone() });
            // Relaxed: under the lock a kick's store also takes, so no kick
            // is lost to this one; the kernel reads it on this thread's
            // `KVM_RUN` below.
            self.run.immediate_exit().store(0, Ordering::Relaxed);
        }
        // Leaves the gate when dropped, also if `run` unwinds: a vCPU left
        // listed as running would be kicked (a signal to its thread) and
        // waited for by every later hold.
        let _leave = Leave(self);
        vcpu.run()
    }

    /// Leaves the gate after `KVM_RUN`.
    fn leave(&self) {
        let shared = &*self.gate.shared;
        let mut state = lock(shared);
        // Parked again before the gate forgets the vCPU ran (module
        // invariant 2). Relaxed: as in `run`.
        self.run.immediate_exit().store(1, Ordering::Relaxed);
        if let Some(at) = state.running.iter().position(|r| r.token == self.token) {
            state.running.swap_remove(at);
        }
        if state.running.is_empty() && state.holds > 0 {
            shared.drained.notify_all();
        }
    }

    /// The gate.
    pub fn gate(&self) -> &VcpuGate {
        &self.gate
    }
}

/// Calls [`GateVcpu::leave`] when dropped.
struct Leave<'a>(&'a GateVcpu);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Drop for GateVcpu {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.registered.retain(|(token, _)| *token != self.token);
        // Unparked: the vCPU may run without the gate from now on. Relaxed:
        // as in `register_mapped`.
        self.run.immediate_exit().store(0, Ordering::Relaxed);
    }
}

impl core::fmt::Debug for GateVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GateVcpu").field("fd", &self.fd).field("gate", &self.gate).finish()
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
fn install_handler(signal: libc::c_int) -> io::Result<()> {
    if signal < 1 || signal > libc::SIGRTMAX() || signal >= 128 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
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
        return Err(io::Error::last_os_error());
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
            return Err(io::Error::last_os_error());
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
