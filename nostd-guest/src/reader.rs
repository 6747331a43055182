//! vCPU 1, the reader: looks slots up under views while the writer vCPU
//! changes them, and checks every answer of a view against the layouts the
//! view may show; then times the benchmark loop.
//!
//! A view taken after the writer announced step `before`, whose last
//! answer came before the reader read `after`, shows one state among:
//! layout `before` .. layout `after + 1` (the step under way may have been
//! published and not yet announced), or one of those steps while it is
//! being published (deleted and moved slots gone). All of a view's answers
//! must fit one and the same state.

use core::ops::Range;
use core::sync::atomic::Ordering;

use memslots::{Gfn, Hva, Region, View};

use crate::layout::{mix, Layout, Regions, END_GFN, FIRST_GFN, IDS, STEPS, STRETCH};
use crate::port::{marker, BENCH_END, BENCH_START};
use crate::shared::{wait_for, Shared};
use crate::{bench, report, zaps};

/// Slot lookups per view.
const LOOKUPS: usize = 6;

/// One question to a view and its answer.
#[derive(Debug)]
enum Query {
    /// `gfn_to_slot` and `gfn_to_hva`.
    Gfn { gfn: Gfn, slot: Option<Region>, hva: Option<Hva> },
    /// `slots_in_gfn_range`.
    GfnRange { gfns: Range<Gfn>, found: Regions },
    /// `slots_in_hva_range`.
    HvaRange { hvas: Range<Hva>, found: Regions },
    /// `slot_by_id`.
    ById { id: u16, slot: Option<Region> },
}

impl Query {
    /// Whether `layout` gives the same answer.
    fn fits(&self, layout: &Layout) -> bool {
        match self {
            Query::Gfn { gfn, slot, hva } => {
                let expected = layout.at(*gfn);
                *slot == expected && *hva == expected.map(|r| r.hva + ((gfn - r.base_gfn) << 12))
            }
            Query::GfnRange { gfns, found } => layout.in_gfn_range(gfns) == *found,
            Query::HvaRange { hvas, found } => layout.in_hva_range(hvas) == *found,
            Query::ById { id, slot } => layout.by_id(*id) == *slot,
        }
    }
}

/// A view's answers, with the window of steps it may show.
struct Answers {
    before: u64,
    after: u64,
    queries: [Query; LOOKUPS + 3],
}

#[derive(Default)]
struct Counts {
    views: u64,
    repins: u64,
    lookups: u64,
    gfn_ranges: u64,
    hva_ranges: u64,
    by_id: u64,
    /// Views that showed a different state than the view before.
    changes_seen: u64,
    /// Views that showed a step while it was being published.
    in_flight: u64,
    widest: u64,
    zaps: u64,
    mismatches: u64,
}

/// The reader's bookkeeping: layout `base_step`, kept close behind the
/// writer so windows are built from it in a few steps.
struct Checker {
    base: Layout,
    base_step: u64,
    /// The state the last view showed: (step, whether in flight).
    last: (u64, bool),
    seed: u64,
    counts: Counts,
}

/// Runs the reader's part and reports it.
pub fn run(shared: &Shared) {
    let reader = shared.slots.reader();
    // Release: pairs with the writer's `wait_for`.
    shared.reader_ready.store(true, Ordering::Release);
    let mut checker =
        Checker { base: Layout::default(), base_step: 0, last: (0, false), seed: 1, counts: Counts::default() };
    loop {
        // Acquire: pairs with the writer's Release. Once the last step is
        // announced nothing changes, and this round is the last.
        let before = shared.announced.load(Ordering::Acquire);
        let finished = before == STEPS;
        let view = reader.pin();
        let first = checker.ask(&view, before, shared);
        // Acquire: as above.
        let before = shared.announced.load(Ordering::Acquire);
        let view = view.repin();
        checker.counts.repins += 1;
        let second = checker.ask(&view, before, shared);
        drop(view);
        checker.check(&first);
        checker.check(&second);
        if checker.counts.views.is_multiple_of(16) {
            checker.zap(shared);
        }
        if finished {
            break;
        }
    }
    let c = &checker.counts;
    report!(
        "vcpu1 reader views={} repins={} lookups={} gfn_ranges={} hva_ranges={} by_id={} changes_seen={} \
         in_flight={} widest={} zaps={} mismatches={}",
        c.views,
        c.repins,
        c.lookups,
        c.gfn_ranges,
        c.hva_ranges,
        c.by_id,
        c.changes_seen,
        c.in_flight,
        c.widest,
        c.zaps,
        c.mismatches
    );
    wait_for(&shared.bench_ready);
    let table = bench::gfn_table();
    let view = reader.pin();
    marker(BENCH_START);
    let sum = bench::lookups(&view, &table, bench::LOOKUPS);
    marker(BENCH_END);
    drop(view);
    report!("vcpu1 bench slots={} lookups={} checksum={sum:#x}", bench::SLOTS, bench::LOOKUPS);
}

impl Checker {
    fn next(&mut self, below: u64) -> u64 {
        self.seed += 1;
        mix(self.seed) % below
    }

    /// A gfn near a slot of the base layout, or anywhere in the stretches.
    fn gfn(&mut self) -> Gfn {
        let id = self.next(IDS as u64) as u16;
        match self.base.by_id(id) {
            Some(r) if self.next(4) != 0 => r.base_gfn.saturating_sub(2) + self.next(r.npages + 4),
            _ => FIRST_GFN + self.next(END_GFN - FIRST_GFN),
        }
    }

    /// Asks `view` every kind of question; `before` was announced before
    /// the view was taken.
    fn ask(&mut self, view: &View<'_>, before: u64, shared: &Shared) -> Answers {
        let queries = core::array::from_fn(|i| match i {
            0..LOOKUPS => {
                let gfn = self.gfn();
                self.counts.lookups += 1;
                let slot = view.gfn_to_slot(gfn).map(|s| *s.region());
                Query::Gfn { gfn, slot, hva: view.gfn_to_hva(gfn) }
            }
            LOOKUPS => {
                let start = self.gfn();
                let gfns = start..start + self.next(3 * STRETCH);
                self.counts.gfn_ranges += 1;
                Query::GfnRange { found: collect(view.slots_in_gfn_range(gfns.clone())), gfns }
            }
            n if n == LOOKUPS + 1 => {
                // Host addresses encode the step that made the slot.
                let start = self.next(STEPS + 1) << 32;
                let hvas = start..start + (self.next(8) << 32);
                self.counts.hva_ranges += 1;
                Query::HvaRange { found: collect(view.slots_in_hva_range(hvas.clone())), hvas }
            }
            _ => {
                let id = self.next(IDS as u64) as u16;
                self.counts.by_id += 1;
                Query::ById { id, slot: view.slot_by_id(id).map(|s| *s.region()) }
            }
        });
        // Acquire: pairs with the writer's Release, read after the answers.
        let after = shared.announced.load(Ordering::Acquire);
        Answers { before, after, queries }
    }

    /// Finds the state the view showed, or reports a mismatch.
    fn check(&mut self, answers: &Answers) {
        self.counts.views += 1;
        while self.base_step < answers.before {
            self.base_step += 1;
            self.base = self.base.stepped(self.base_step);
        }
        let last = (answers.after + 1).min(STEPS);
        self.counts.widest = self.counts.widest.max(last - answers.before);
        let fits = |layout: &Layout| answers.queries.iter().all(|q| q.fits(layout));
        let mut layout = self.base;
        let mut shown = fits(&layout).then_some((answers.before, false));
        for step in answers.before + 1..=last {
            if shown.is_some() {
                break;
            }
            if fits(&layout.invalidated(step)) {
                shown = Some((step, true));
            }
            layout = layout.stepped(step);
            if shown.is_none() && fits(&layout) {
                shown = Some((step, false));
            }
        }
        match shown {
            Some(state) => {
                self.counts.in_flight += u64::from(state.1);
                self.counts.changes_seen += u64::from(state != self.last);
                self.last = state;
            }
            None => {
                self.counts.mismatches += 1;
                if self.counts.mismatches <= 4 {
                    let bad = answers.queries.iter().find(|q| !q.fits(&self.base));
                    report!(
                        "vcpu1 mismatch window={}..={last} first misfit vs layout {}: {bad:x?}",
                        answers.before,
                        answers.before
                    );
                }
            }
        }
    }

    /// Asks for a random range to be zapped, as after a guest MTRR change.
    fn zap(&mut self, shared: &Shared) {
        let start = self.gfn();
        self.counts.zaps += 1;
        if !zaps::zap(shared, start..start + 1 + self.next(64)) {
            self.counts.mismatches += 1;
            report!("vcpu1 mismatch zap from {start:#x} not covered");
        }
    }
}

fn collect<'v>(slots: impl Iterator<Item = &'v memslots::Slot>) -> Regions {
    let mut found = Regions::default();
    slots.for_each(|slot| found.push(*slot.region()));
    found
}
