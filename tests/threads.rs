//! Handles built on one thread and used on others, as a VMM builds its vCPU
//! objects on one thread and moves them: readers (`Send`) and the writer
//! (`Send + Sync`, also behind a mutex) do their lookups and changes on the
//! threads they were moved to. Readers also come and go on one thread while
//! the writer works on another.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use memslots::{Change, Config, Error, Flags, Memslots, Reader, Region, SlotKey, Writer};

/// The slot that never changes: gfns 0..0x100.
const STATIC: Region = Region { id: 0, as_id: 0, base_gfn: 0, npages: 0x100, hva: hva_of(0), flags: Flags::empty() };

const fn hva_of(id: u16) -> u64 {
    0x7f00_0000_0000 + ((id as u64) << 32)
}

fn region(id: u16, base_gfn: u64, npages: u64) -> Region {
    Region { id, as_id: 0, base_gfn, npages, hva: hva_of(id), flags: Flags::empty() }
}

fn key(id: u16) -> SlotKey {
    SlotKey { id, as_id: 0 }
}

/// How many rounds each thread makes: a few under miri.
fn rounds(normal: u32) -> u32 {
    if cfg!(miri) {
        4
    } else {
        normal
    }
}

/// Joins `handle`, failing the test if the thread has not finished within a
/// minute (a hang) or panicked.
fn join_within<T>(handle: JoinHandle<T>, what: &str) -> T {
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what} hung");
        thread::sleep(Duration::from_millis(1));
    }
    handle.join().unwrap_or_else(|_| panic!("{what} panicked"))
}

/// One batch of lookups under one view: the static slot is always there,
/// and every other slot the view holds is consistent with itself and with
/// the gfn lookups. Returns the slots' regions.
fn check_view(reader: &Reader) -> Vec<Region> {
    let view = reader.pin();
    assert_eq!(view.gfn_to_slot(0x10).map(|s| *s.region()), Some(STATIC));
    assert_eq!(view.gfn_to_hva(0x10), Some(STATIC.hva + 0x10_000));
    let regions: Vec<Region> = view.slots().map(|s| *s.region()).collect();
    for r in &regions {
        assert_eq!(r.hva, hva_of(r.id), "corrupt slot {r:?}");
        assert_eq!(view.slot_by_id(r.id).map(|s| *s.region()), Some(*r));
        for gfn in [r.base_gfn, r.end_gfn() - 1] {
            assert_eq!(view.gfn_to_slot(gfn).map(|s| s.key()), Some(r.key()), "gfn {gfn:#x}");
        }
        assert_eq!(view.slots_in_gfn_range(r.base_gfn..r.end_gfn()).map(|s| s.key()).collect::<Vec<_>>(), [r.key()]);
    }
    regions
}

#[test]
fn handles_built_on_one_thread_work_on_others() {
    let slots = Memslots::new(Config::default()).unwrap();
    let mut writer = slots.writer().unwrap();
    writer.create(STATIC).unwrap();
    let vcpu = slots.reader();
    let device = slots.device_reader();
    let ids = (vcpu.id(), device.id());
    assert_ne!(ids.0, ids.1, "two live readers share an id");
    let done = Arc::new(AtomicBool::new(false));

    // The readers move to threads of their own and look up until the
    // writer is done; then they hand themselves back.
    let spawn_reader = |reader: Reader| {
        let done = done.clone();
        thread::spawn(move || {
            let id = reader.id();
            let mut batches = 0u64;
            loop {
                let finished = done.load(SeqCst);
                let regions = check_view(&reader);
                batches += 1;
                if finished {
                    return (reader, id, batches, regions);
                }
                thread::yield_now();
            }
        })
    };
    let vcpu_thread = spawn_reader(vcpu);
    let device_thread = spawn_reader(device);

    // The writer moves to a thread of its own too.
    let n = rounds(40) as u16;
    let writer_thread = thread::spawn(move || {
        let mut changes = Vec::new();
        for id in 1..=n {
            changes.push(writer.create(region(id, 0x1000 * u64::from(id), 4)).unwrap());
            changes.push(writer.move_to(key(id), 0x1000 * u64::from(id) + 0x800).unwrap());
            changes.push(writer.set_flags(key(id), Flags::LOG_DIRTY_PAGES).unwrap());
            if id.is_multiple_of(2) {
                changes.push(writer.delete(key(id)).unwrap());
            }
        }
        (writer, changes)
    });

    let (mut writer, changes) = join_within(writer_thread, "the writer thread");
    let expected_changes: Vec<Change> = (1..=n)
        .flat_map(|id| {
            let deleted = id.is_multiple_of(2).then_some(Change::Deleted);
            [Change::Created, Change::Moved, Change::FlagsChanged].into_iter().chain(deleted)
        })
        .collect();
    assert_eq!(changes, expected_changes);
    done.store(true, SeqCst);
    let (vcpu, vcpu_id, vcpu_batches, vcpu_final) = join_within(vcpu_thread, "the vCPU reader thread");
    let (device, device_id, device_batches, device_final) = join_within(device_thread, "the device reader thread");
    assert_eq!((vcpu_id, device_id), ids, "a reader's id changed when it moved");
    assert!(vcpu_batches > 0 && device_batches > 0);
    println!("lookup batches: vCPU {vcpu_batches}, device {device_batches}");

    // The final views were taken after the writer finished: exactly the
    // static slot and the odd slots, moved and re-flagged.
    let mut want = vec![STATIC];
    want.extend(
        (1..=n)
            .filter(|id| id % 2 == 1)
            .map(|id| Region { flags: Flags::LOG_DIRTY_PAGES, ..region(id, 0x1000 * u64::from(id) + 0x800, 4) }),
    );
    assert_eq!(vcpu_final, want);
    assert_eq!(device_final, want);
    assert_eq!(slots.slot_objects(), want.len());

    // Back on this thread, the handles still work together.
    writer.delete(key(1)).unwrap();
    for reader in [&vcpu, &device] {
        assert!(reader.pin().slot_by_id(1).is_none());
        assert_eq!(check_view(reader).len(), want.len() - 1);
    }
}

#[test]
fn a_writer_behind_a_mutex_serves_several_threads() {
    let slots = Memslots::new(Config::default()).unwrap();
    let writer: Arc<Mutex<Writer>> = Arc::new(Mutex::new(slots.writer().unwrap()));
    writer.lock().unwrap().create(STATIC).unwrap();
    let threads: Vec<_> = (0..2u16)
        .map(|t| {
            // Built here, used there.
            let (writer, reader) = (writer.clone(), if t == 0 { slots.reader() } else { slots.device_reader() });
            thread::spawn(move || {
                // Thread `t` owns slots 10t+1..=10t+5, in its own gfn window.
                let ids: Vec<u16> = (1..=5).map(|i| 10 * t + i).collect();
                let base = |id: u16, round: u32| {
                    0x10_0000 * u64::from(t + 1) + 0x100 * u64::from(id % 10) + u64::from(round % 2) * 0x40
                };
                for round in 0..rounds(50) {
                    for &id in &ids {
                        // Never lock the writer while holding a view: the
                        // writer would wait for this thread.
                        let exists = reader.pin().slot_by_id(id).is_some();
                        let mut w = writer.lock().unwrap();
                        let change = if exists {
                            w.move_to(key(id), base(id, round))
                        } else {
                            w.create(region(id, base(id, round), 0x10))
                        };
                        drop(w);
                        assert_eq!(change, Ok(if exists { Change::Moved } else { Change::Created }));
                        // Holding a view, this thread's change is refused.
                        // Only `try_lock` here: blocking on the mutex while
                        // the other thread's change waits for this view
                        // would deadlock.
                        loop {
                            let view = reader.pin();
                            assert_eq!(view.gfn_to_slot(base(id, round) + 0xf).map(|s| s.key()), Some(key(id)));
                            if let Ok(mut w) = writer.try_lock() {
                                assert_eq!(w.delete(key(id)), Err(Error::ViewHeldByWriterThread));
                                break;
                            }
                            drop(view);
                            thread::yield_now();
                        }
                        check_view(&reader);
                    }
                    if round % 10 == 9 {
                        let mut w = writer.lock().unwrap();
                        for &id in &ids {
                            assert_eq!(w.delete(key(id)), Ok(Change::Deleted));
                        }
                    }
                }
                (reader, ids)
            })
        })
        .collect();
    let mut live = vec![STATIC];
    for (i, t) in threads.into_iter().enumerate() {
        let (reader, ids) = join_within(t, "a writer thread");
        // The last round was odd: every slot sits 0x40 up (deleted after
        // every tenth round, so after a multiple of ten rounds none is left).
        let t = i as u16;
        let view = reader.pin();
        for &id in &ids {
            let want = (!rounds(50).is_multiple_of(10)).then(|| {
                let base =
                    0x10_0000 * u64::from(t + 1) + 0x100 * u64::from(id % 10) + u64::from((rounds(50) - 1) % 2) * 0x40;
                region(id, base, 0x10)
            });
            assert_eq!(view.slot_by_id(id).map(|s| *s.region()), want);
            live.extend(want);
        }
    }
    let device = slots.device_reader();
    let mut all: Vec<Region> = device.pin().slots().map(|s| *s.region()).collect();
    all.sort_by_key(|r| r.id);
    live.sort_by_key(|r| r.id);
    assert_eq!(all, live);
    assert_eq!(slots.slot_objects(), live.len());
    // The writer, back from the threads, is still the only one.
    assert_eq!(slots.writer().err(), Some(Error::WriterBusy));
    drop(Arc::try_unwrap(writer).expect("threads still hold the writer").into_inner().unwrap());
    assert!(slots.writer().is_ok());
}

#[test]
fn readers_come_and_go_while_the_writer_works() {
    let slots = Memslots::new(Config::default()).unwrap();
    let mut writer = slots.writer().unwrap();
    writer.create(STATIC).unwrap();
    let (a, b) = (0x1000, 0x3000);
    writer.create(region(1, a, 0x100)).unwrap();
    let moves = rounds(2000);
    let done = Arc::new(AtomicBool::new(false));

    let churn = {
        let (slots, done) = (slots.clone(), done.clone());
        thread::spawn(move || {
            let mut registered = 0u64;
            let mut ids = std::collections::BTreeSet::new();
            while !done.load(SeqCst) || registered < 10 {
                let reader = if registered.is_multiple_of(2) { slots.reader() } else { slots.device_reader() };
                ids.insert(reader.id());
                check_view(&reader);
                // The moving slot is at one place or the other, whole.
                let view = reader.pin();
                let at_a = view.gfn_to_slot(a + 5).map(|s| *s.region());
                let at_b = view.gfn_to_slot(b + 5).map(|s| *s.region());
                assert!(at_a.is_none() || at_b.is_none(), "the slot is in two places");
                for r in at_a.iter().chain(&at_b) {
                    assert!(r.base_gfn == a || r.base_gfn == b, "{r:?}");
                    assert_eq!((r.id, r.npages, r.hva), (1, 0x100, hva_of(1)));
                }
                drop(view);
                drop(reader);
                registered += 1;
            }
            (registered, ids)
        })
    };
    let writer_thread = thread::spawn(move || {
        for i in 0..moves {
            let to = if i.is_multiple_of(2) { b } else { a };
            assert_eq!(writer.move_to(key(1), to), Ok(Change::Moved));
        }
        writer
    });
    let writer = join_within(writer_thread, "the writer");
    done.store(true, SeqCst);
    let (registered, ids) = join_within(churn, "the reader churn");
    println!("{registered} readers registered and dropped during {moves} moves; ids used: {ids:?}");
    // Dropped readers give their epoch word back: one thread making one
    // reader at a time needs only one or two; and no id is used twice.
    assert!(slots.reader_words() <= 2, "epoch words are not reused: {}", slots.reader_words());
    assert_eq!(ids.len() as u64, registered, "a reader id was used twice");
    drop(writer);
    let reader = slots.reader();
    let view = reader.pin();
    assert_eq!(view.gfn_to_slot(a + 5).map(|s| s.base_gfn()), Some(if moves.is_multiple_of(2) { a } else { b }));
    assert_eq!(slots.slot_objects(), 2);
}
