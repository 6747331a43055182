//! Loom model checks of memslots' concurrent protocols; the models are in
//! `tests/`. Run them with
//!
//! ```sh
//! RUSTFLAGS="--cfg loom --cfg crossbeam_loom" cargo test -p loom-tests --release
//! ```
//!
//! Each model states its preemption bound next to it: an unbounded model of
//! the spin-waits does not finish.

/// Runs `f` under loom with at most `preemptions` preemptions per execution,
/// and prints how many executions loom explored.
#[cfg(loom)]
pub fn check(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;

    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    // Spin-waits yield to loom, but each yield is a branch.
    builder.max_branches = 100_000;
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = executions.clone();
    let start = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Relaxed);
        f();
    });
    println!("loom: {} executions, preemption bound {preemptions}, {:.1?}", executions.load(Relaxed), start.elapsed());
}
