//! Loom model checks of memslots' concurrent protocols; the models are in
//! `tests/`. Run them with
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p loom-tests --release -- --nocapture --test-threads 1
//! ```
//!
//! `--cfg loom` swaps the crate's atomics, cells and spin-waits for loom's,
//! through `src/sync.rs`; the separate target directory keeps that build
//! from invalidating the normal one. Without `--cfg loom` this crate and its
//! tests are empty.
//!
//! | file | models |
//! |---|---|
//! | `tests/slots.rs` | 1 swap, grace period, catch-up; 2 DELETE/MOVE through INVALID; 3 the set's last-used cache; 4 the per-vCPU cache and the generation; 11 an atomic batch (negative control: published operation by operation) |
//! | `tests/zap.rs` | 5 the zap binner |
//! | `tests/grace.rs` | 6 the grace-period protocol (epoch words, fences); 7 readers registering and dropping during a grace period; 8 a reader moving between threads; 9 `repin` in a loop; 10 nested views |
//! | `tests/dirty.rs` | 12 dirty-bit marking against the harvest's swaps (negative control: a load-then-store clear); 13 the bit carries the write: a copy after taking a bit sees the write behind it (negative control: Relaxed marks and takes) |
//!
//! Each model states its preemption bound next to it: an unbounded model of
//! the spin-waits does not finish. `--nocapture` shows, per model, how many
//! executions loom explored and how long it took. `LOOM_TESTS_PREEMPTIONS=n`
//! runs every model with bound `n` instead, to explore deeper by hand.
//!
//! Negative controls break the protocol on purpose (`Memslots::loom_inject`
//! with a `LoomFault`) and check that loom reports it (`negative_control`).
//!
//! What loom checks and what it does not: loom models Acquire/Release and
//! SeqCst *fences* (a SeqCst fence joins a global order), but treats SeqCst
//! *accesses* as Acquire/Release. So under `--cfg loom` the reader publishes
//! its epoch with a Release store and a SeqCst fence, and that is the form
//! checked here; the non-loom form (one SeqCst swap, then the SeqCst load
//! of the active set, against the writer's fence) rests on the C++20 rules
//! for SeqCst operations and is not model-checked. In the fenced form the
//! fence also gives the reader's load of the global epoch acquire
//! semantics, so the models cannot tell whether that load needs to be
//! Acquire on its own (it does in the non-loom form).

#[cfg(loom)]
pub use models::*;

#[cfg(loom)]
mod models {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::time::Instant;

    use memslots::{Config, Flags, LoomFault, Memslots, Region, Slot, SlotKey, Writer};

    /// Executions started by [`check`] in this process, for the report of
    /// a negative control (printed from a panic hook, see
    /// [`negative_control`]).
    static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);

    /// Runs `f` under loom with at most `preemptions` preemptions per
    /// execution, and prints how many executions loom explored and how long
    /// that took.
    ///
    /// `LOOM_TESTS_PREEMPTIONS=n` in the environment replaces every model's
    /// bound with `n`, to explore deeper by hand.
    pub fn check(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
        let preemptions = bound(preemptions);
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(preemptions);
        // Spin-waits yield to loom, but each yield is a branch.
        builder.max_branches = 100_000;
        EXECUTIONS.store(0, Relaxed);
        let start = Instant::now();
        builder.check(move || {
            EXECUTIONS.fetch_add(1, Relaxed);
            f();
        });
        println!(
            "loom: {} executions, preemption bound {preemptions}, {:.1?}",
            EXECUTIONS.load(Relaxed),
            start.elapsed()
        );
    }

    /// `preemptions`, or the bound `LOOM_TESTS_PREEMPTIONS` asks for.
    fn bound(preemptions: usize) -> usize {
        match std::env::var("LOOM_TESTS_PREEMPTIONS") {
            Ok(n) => n.parse().expect("LOOM_TESTS_PREEMPTIONS: a number"),
            Err(_) => preemptions,
        }
    }

    /// The environment variable that makes a test binary run one negative
    /// control's model instead of checking it from outside.
    const CHILD: &str = "MEMSLOTS_LOOM_NEGATIVE_CONTROL";

    /// What loom (or the model's own assertions) say when they catch a
    /// broken protocol.
    ///
    /// - `Causality violation`: a tracked cell (a set, or a slot's liveness
    ///   cell, which the writer writes before freeing the slot) was written
    ///   while a read of it was not ordered before the write.
    /// - `currently reading from cell`: loom's assertion when the writer
    ///   starts writing a set while a reader's view of it is still alive
    ///   (its tracked read not yet ended).
    /// - `model:`: an assertion of the model itself (every model's messages
    ///   start with it).
    pub const VIOLATIONS: &[&str] = &["Causality violation", "currently reading from cell", "model:"];

    /// A negative control: `model` must fail under loom.
    ///
    /// Call it from the test named `test` with the model and its fault.
    ///
    /// Loom's report unwinds through tracked accesses whose destructors
    /// panic again, which aborts the process, so the model runs in a child
    /// process (this same test binary, filtered to `test`, which must be the
    /// name of the calling test) and this checks that the child failed with
    /// one of [`VIOLATIONS`]. The child's panic hook prints in which
    /// execution loom caught it.
    ///
    /// # Panics
    /// If loom explored every execution without a violation, or the child
    /// failed for another reason.
    pub fn negative_control(test: &str, preemptions: usize, model: impl Fn() + Sync + Send + 'static) {
        if std::env::var(CHILD).as_deref() == Ok(test) {
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                eprintln!("loom-tests: violation in execution {}", EXECUTIONS.load(Relaxed));
                hook(info);
            }));
            check(preemptions, model);
            eprintln!("loom-tests: no violation in {} executions", EXECUTIONS.load(Relaxed));
            return;
        }
        let start = Instant::now();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(CHILD, test)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "loom missed the broken protocol ({test}):\n{stdout}\n{stderr}");
        let report = stderr.lines().find(|l| VIOLATIONS.iter().any(|v| l.contains(v)));
        let Some(report) = report else {
            panic!("the child failed for another reason ({test}):\n{stdout}\n{stderr}");
        };
        let at = stderr.lines().find(|l| l.starts_with("loom-tests: violation in execution")).unwrap_or("");
        let preemptions = bound(preemptions);
        println!("loom caught it (preemption bound {preemptions}, {:.1?}): {report} [{at}]", start.elapsed());
    }

    /// Slot 0 of address space 0.
    pub const KEY: SlotKey = SlotKey { id: 0, as_id: 0 };
    /// Its host address.
    pub const HVA: u64 = 0x10_0000;

    /// One address space holding slot 0 at gfns 0..4, its writer, and
    /// `fault` injected (before any model thread starts).
    pub fn setup(fault: Option<LoomFault>) -> (Memslots, Writer) {
        let slots = Memslots::new(Config::new(1, 4)).unwrap();
        let mut w = slots.writer().unwrap();
        w.create(Region { id: 0, as_id: 0, base_gfn: 0, npages: 4, hva: HVA, flags: Flags::empty() }).unwrap();
        if let Some(fault) = fault {
            slots.loom_inject(fault);
        }
        (slots, w)
    }

    /// What a lookup saw: the slot's base and flags.
    pub fn state(slot: Option<&Slot>) -> Option<(u64, Flags)> {
        slot.map(|s| (s.base_gfn(), s.flags()))
    }

    /// Slot 0 before the flags change of the models.
    pub const BEFORE: Option<(u64, Flags)> = Some((0, Flags::empty()));
    /// Slot 0 after it.
    pub const AFTER: Option<(u64, Flags)> = Some((0, Flags::LOG_DIRTY_PAGES));
}
