//! A delete racing with copies through the same slot never touches unmapped
//! memory. Reader threads read and write guest memory through views of an
//! owned slot (and through `GuestRange` handles that outlive their views)
//! while the writer moves the slot, deletes it and creates it again over
//! fresh `GuestRam`. Every read sees the pattern of one incarnation of the
//! slot (never garbage, never an incarnation older than one it already saw),
//! every reader's own write reads back within its view, and each
//! incarnation's RAM is freed once it is deleted and no handle holds it.
//!
//! `MEMSLOTS_STRESS_MS` sets the run time (default 1000 ms). Under miri the
//! writer makes a few incarnations only; miri then also checks that no access
//! races with the free of the RAM.

mod common;

use common::rng::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use memslots::{AccessFailure, Change, Config, Flags, GpaCache, GuestRam, Memslots, Reader, SlotKey, PAGE_SIZE};

const PAGE: u64 = PAGE_SIZE;
const KEY: SlotKey = SlotKey { id: 0, as_id: 0 };
/// The two places the slot alternates between.
const BASES: [u64; 2] = [0x100, 0x180];
/// Reader threads; reader `r` owns page `r` of the slot for its own writes.
const READERS: u64 = 2;
/// The page every incarnation fills with its tag; readers only read it.
const TAG_PAGE: u64 = READERS;
/// Bytes of the tag page readers read at once.
const SPAN: usize = 64;

fn npages() -> u64 {
    READERS + 1
}

/// The tag byte of incarnation `n` (never 0: a fresh page is all zeros).
fn tag(n: u64) -> u8 {
    (n % 255 + 1) as u8
}

/// Fresh RAM for incarnation `n`: the tag page filled with `tag(n)`, the
/// readers' pages zero.
fn incarnation(n: u64) -> Arc<GuestRam> {
    let ram = GuestRam::new((npages() * PAGE) as usize).expect("guest RAM");
    // SAFETY: the RAM was just mapped and nothing else refers to it; the tag
    // page lies inside it.
    unsafe { std::ptr::write_bytes(ram.as_ptr().add((TAG_PAGE * PAGE) as usize), tag(n), PAGE as usize) };
    Arc::new(ram)
}

/// What one reader checked.
#[derive(Default, Debug)]
struct Tally {
    /// Tag reads that found the slot.
    tags: u64,
    /// Accesses that found no slot (deleted or moving).
    misses: u64,
    /// Own writes read back.
    writes: u64,
    /// Accesses through handles that outlived their view.
    handles: u64,
}

/// Checks that `bytes` are one incarnation's tag (all equal, not torn, not
/// garbage), not older than the last one this reader saw, and at most
/// `newest + 1`: `newest` is loaded after the view that read the bytes, and
/// an incarnation a view sees was created after incarnation `newest` was
/// published (the create of `newest + 1` may be visible before it
/// returns). With more than 255 incarnations tags repeat and the check
/// takes the oldest match, so it only gets weaker.
fn check_tag(bytes: &[u8], last: &mut u64, newest: u64) {
    let first = bytes[0];
    assert!(bytes.iter().all(|&b| b == first), "torn or garbage tag page: {bytes:?}");
    let Some(n) = (*last..=newest + 1).find(|&n| tag(n) == first) else {
        panic!("tag {first} is no incarnation in {}..={} (last seen, newest published + 1)", *last, newest + 1)
    };
    *last = n;
}

/// Rounds a reader makes at most under miri.
const MIRI_ROUNDS: u64 = 40;

fn reader_loop(reader: Reader, r: u64, stop: &AtomicBool, published: &AtomicU64) -> Tally {
    let mut rng = Rng(r + 7);
    let mut tally = Tally::default();
    let mut last = 1;
    let mut cache = GpaCache::new(BASES[0] * PAGE + TAG_PAGE * PAGE, SPAN).unwrap();
    let mut round = 0u64;
    while (!stop.load(Ordering::Acquire) || round < 4) && !(cfg!(miri) && round >= MIRI_ROUNDS) {
        round += 1;
        // Tag spans read in this round, checked once the view has ended.
        let mut seen: Vec<[u8; SPAN]> = Vec::new();
        let mut buf = [0u8; SPAN];
        let view = reader.pin();
        // 1. At a fixed place, without looking the slot up: the slot may be
        //    there, at the other place, or gone.
        let base = BASES[rng.below(2) as usize];
        let at = (base + TAG_PAGE) * PAGE + rng.below(PAGE - SPAN as u64);
        match view.read(at, &mut buf) {
            Ok(()) => {
                seen.push(buf);
                tally.tags += 1;
            }
            Err(e) => {
                // A hole, or the slot's INVALID copy while it moves or goes.
                assert_eq!((e.gpa, e.done), (at, 0));
                assert!(matches!(e.failure, AccessFailure::NotMapped | AccessFailure::Changing), "{e}");
                tally.misses += 1;
            }
        }
        // 2. Through a cached translation of the tag page at the first place.
        match view.read_cached(&mut cache, 0, &mut buf) {
            Ok(()) => seen.push(buf),
            Err(e) => assert!(matches!(e.failure, AccessFailure::NotMapped | AccessFailure::Changing), "{e}"),
        }
        // 3. Where the slot is now: write into the reader's own page and
        //    read it back in the same view; read the last bytes of the slot.
        if let Some(slot) = view.slot_by_id(KEY.id) {
            let (slot_base, has) = (slot.base_gfn(), slot.has_host_memory());
            assert!(has && BASES.contains(&slot_base), "a slot that was never made: {:?}", slot.region());
            let mine = (slot_base + r) * PAGE + rng.below(PAGE / 8) * 8;
            let value = (r << 56) | round;
            view.write_obj(mine, value).expect("write into a slot the view holds");
            assert_eq!(view.read_obj::<u64>(mine), Ok(value), "own write lost within one view");
            let end = (slot_base + npages()) * PAGE;
            view.read(end - SPAN as u64, &mut buf).expect("read from a slot the view holds");
            seen.push(buf);
            tally.writes += 1;
            // 4. Now and then a handle on the reader's own page, used after
            //    the view ends, while the writer may delete the slot.
            if round.is_multiple_of(8) {
                let range = view.range((slot_base + r) * PAGE, PAGE as usize).expect("a range in the slot");
                drop(view);
                let at = rng.below(PAGE / 8) as usize * 8;
                range.write(at, &value.to_ne_bytes()).unwrap();
                let mut back = [0u8; 8];
                range.read(at, &mut back).unwrap();
                assert_eq!(u64::from_ne_bytes(back), value, "a handle lost its own write");
                tally.handles += 1;
            }
        } else {
            tally.misses += 1;
        }
        // Acquire: pairs with the writer's Release store after a create.
        let newest = published.load(Ordering::Acquire);
        for bytes in &seen {
            check_tag(bytes, &mut last, newest);
        }
    }
    tally
}

#[test]
fn delete_racing_with_copies_never_touches_unmapped_memory() {
    let (run, max_incarnations) = if cfg!(miri) {
        (Duration::MAX, 3)
    } else {
        let ms = std::env::var("MEMSLOTS_STRESS_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
        (Duration::from_millis(ms), u64::MAX)
    };
    let slots = Memslots::new(Config::new(1, 4)).unwrap();
    let mut w = slots.writer().unwrap();
    // Incarnations published so far (the create has returned).
    let published = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut freed: Vec<Weak<GuestRam>> = Vec::new();

    let tallies = std::thread::scope(|s| {
        let threads: Vec<_> = (0..READERS)
            .map(|r| {
                let reader = if r == 0 { slots.reader() } else { slots.device_reader() };
                let (stop, published) = (&stop, &published);
                s.spawn(move || reader_loop(reader, r, stop, published))
            })
            .collect();

        let start = Instant::now();
        let mut n = 0;
        while n < max_incarnations && start.elapsed() < run {
            n += 1;
            let ram = incarnation(n);
            let weak = Arc::downgrade(&ram);
            assert_eq!(w.create_owned(KEY, BASES[0], Flags::LOG_DIRTY_PAGES, ram), Ok(Change::Created));
            published.store(n, Ordering::Release);
            for i in 0..4 {
                if cfg!(miri) {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
                assert_eq!(w.move_to(KEY, BASES[(i + 1) % 2]), Ok(Change::Moved));
                // The log moves along; harvest it now and then.
                if i == 1 {
                    w.get_dirty_log(KEY).unwrap();
                }
            }
            assert_eq!(w.delete(KEY), Ok(Change::Deleted));
            // Once the delete returned no view can reach the RAM; only a
            // reader's handle may still hold it.
            assert!(weak.strong_count() <= READERS as usize, "more holders than handles");
            freed.push(weak);
        }
        stop.store(true, Ordering::Release);
        let tallies: Vec<Tally> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        println!("{n} incarnations in {:.1?}", start.elapsed());
        tallies
    });
    for (r, tally) in tallies.iter().enumerate() {
        println!("reader {r}: {tally:?}");
    }
    assert!(freed.iter().all(|weak| weak.strong_count() == 0), "RAM of a deleted incarnation was not freed");
    if !cfg!(miri) {
        let total = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
        assert!(total(|t| t.tags) > 0 && total(|t| t.writes) > 0, "the readers never met the slot");
        assert!(freed.len() >= 2, "fewer than two incarnations");
    }
}
