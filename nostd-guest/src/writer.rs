//! vCPU 0, the writer: steps through the schedule of layouts with single
//! calls and batches, announces each step once its call has returned,
//! checks its own view of the result, asks for the ranges it deleted or
//! moved away from to be zapped, then puts the benchmark layout in place.

use core::sync::atomic::Ordering;

use memslots::{Reader, SlotKey, Writer};

use crate::layout::{Change, Layout, STEPS};
use crate::shared::{wait_for, Shared};
use crate::{bench, report, zaps};

#[derive(Default)]
struct Counts {
    creates: u64,
    deletes: u64,
    moves: u64,
    flags: u64,
    batches: u64,
    checks: u64,
    zaps: u64,
    mismatches: u64,
}

/// Runs the writer's part and reports it.
pub fn run(shared: &Shared) {
    let mut writer = shared.slots.writer().unwrap_or_else(|e| panic!("writer: {e}"));
    let own = shared.slots.reader();
    wait_for(&shared.reader_ready);
    let mut counts = Counts::default();
    let mut layout = Layout::default();
    for step in 1..=STEPS {
        apply(&mut writer, &layout, step, &mut counts);
        let old = layout;
        layout = layout.stepped(step);
        // Release: pairs with the reader's Acquire loads; the change has
        // returned, so every later view sees it.
        shared.announced.store(step, Ordering::Release);
        counts.checks += 1;
        if !exact(&own, &layout) {
            counts.mismatches += 1;
            report!("vcpu0 mismatch step={step} own view differs from layout");
        }
        for change in old.changes(step).filter(Change::invalidates) {
            let Some(gone) = change.old else { continue };
            counts.zaps += 1;
            if !zaps::zap(shared, gone.base_gfn..gone.end_gfn()) {
                counts.mismatches += 1;
                report!("vcpu0 mismatch step={step} zap of {gone:?} not covered");
            }
        }
    }
    let mut batch = writer.batch();
    for region in layout.present() {
        batch.delete(region.key());
    }
    batch.commit().unwrap_or_else(|e| panic!("clearing the layout: {}", e.error));
    bench::create(&mut writer).unwrap_or_else(|e| panic!("benchmark layout: {e}"));
    let Counts { creates, deletes, moves, flags, batches, checks, zaps, mismatches } = counts;
    report!(
        "vcpu0 writer steps={STEPS} creates={creates} deletes={deletes} moves={moves} flags={flags} \
         batches={batches} checks={checks} zaps={zaps} zap_passes={} mismatches={mismatches}",
        zaps::passes(shared)
    );
    // Last, so this vCPU is quiet while the reader times its loop.
    // Release: pairs with the Acquire in the reader's `wait_for`.
    shared.bench_ready.store(true, Ordering::Release);
}

/// Makes step `step` from `layout`: one call, or a batch for several
/// changes.
fn apply(writer: &mut Writer, layout: &Layout, step: u64, counts: &mut Counts) {
    let changes = || layout.changes(step);
    if changes().count() == 1 {
        for change in changes() {
            single(writer, change, counts).unwrap_or_else(|e| panic!("step {step} {change:?}: {e}"));
        }
        return;
    }
    counts.batches += 1;
    let mut batch = writer.batch();
    for change in changes() {
        match (change.old, change.new) {
            (None, Some(new)) => batch.create(new),
            (Some(old), None) => batch.delete(old.key()),
            (Some(old), Some(new)) if old.base_gfn != new.base_gfn => batch.move_to(old.key(), new.base_gfn),
            (Some(old), Some(new)) => batch.set_flags(old.key(), new.flags),
            (None, None) => continue,
        };
        count(change, counts);
    }
    batch.commit().unwrap_or_else(|e| panic!("step {step} batch: {}", e.error));
}

fn single(writer: &mut Writer, change: Change, counts: &mut Counts) -> Result<(), memslots::Error> {
    count(change, counts);
    match (change.old, change.new) {
        (None, Some(new)) => writer.create(new),
        (Some(old), None) => writer.delete(old.key()),
        (Some(old), Some(new)) if old.base_gfn != new.base_gfn => writer.move_to(old.key(), new.base_gfn),
        (Some(old), Some(new)) => writer.set_flags(old.key(), new.flags),
        (None, None) => return Ok(()),
    }
    .map(|_| ())
}

fn count(change: Change, counts: &mut Counts) {
    let counter = match (change.old, change.new) {
        (None, Some(_)) => &mut counts.creates,
        (Some(_), None) => &mut counts.deletes,
        (Some(old), Some(new)) if old.base_gfn != new.base_gfn => &mut counts.moves,
        (Some(_), Some(_)) => &mut counts.flags,
        (None, None) => return,
    };
    *counter += 1;
}

/// Whether a fresh view shows exactly `layout`: the writer's call has
/// returned, so nothing older may remain.
fn exact(own: &Reader, layout: &Layout) -> bool {
    let view = own.pin();
    let mut slots = view.slots().map(|slot| *slot.region());
    let same_slots = layout.present().all(|r| slots.next() == Some(*r)) && slots.next().is_none();
    same_slots
        && layout.present().all(|r| {
            view.gfn_to_hva(r.end_gfn() - 1) == Some(r.hva + ((r.npages - 1) << 12))
                && view.gfn_to_slot(r.base_gfn).map(|slot| slot.key()) == Some(SlotKey { id: r.id, as_id: 0 })
        })
}
