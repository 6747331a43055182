//! Loom model checks of memslots' concurrent protocols; the models are in
//! `tests/`. Run them with
//!
//! ```sh
//! RUSTFLAGS="--cfg loom --cfg crossbeam_loom" cargo test -p loom-tests --release
//! ```
//!
//! Each model states its preemption bound next to it: an unbounded model of
//! the spin-waits does not finish.

/// Runs `f` under loom with at most `preemptions` preemptions per execution.
#[cfg(loom)]
pub fn check(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    // Spin-waits yield to loom, but each yield is a branch.
    builder.max_branches = 100_000;
    builder.check(f);
}
