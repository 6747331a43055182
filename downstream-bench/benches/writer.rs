//! The writer at 32764 slots, measured by hand rather than by criterion:
//! before each timed change the caches are flushed by walking a buffer twice
//! the size of the last-level cache, which criterion's batching cannot do.
//! The four kinds of change take turns, 101 samples each, in three rounds
//! (the machine's speed drifts between rounds); prints the median and 90th
//! percentile of all samples and each round's median as a markdown table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use memslots::{Change, Flags, Memslots, SlotKey, Writer};
use memslots_downstream_bench::peers::{layout, region};
use memslots_downstream_bench::{build, shuffled};

const N: usize = 32764;
const SAMPLES: usize = 101;
const ROUNDS: usize = 3;

/// Walks 64 MiB, one store per cache line, so the writer starts cold.
struct Evict(Vec<u8>);

impl Evict {
    fn run(&mut self) {
        for line in self.0.chunks_mut(64) {
            line[0] = line[0].wrapping_add(1);
        }
        black_box(&self.0);
    }
}

fn stats(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(t[t.len() / 2]), us(t[t.len() * 9 / 10]))
}

/// One cold-cache measurement: `prepare(i)` untimed, the caches flushed,
/// `change(i)` timed, `undo(i)` untimed.
struct Case<'a> {
    prepare: &'a dyn Fn(&mut Writer, usize),
    change: &'a dyn Fn(&mut Writer, usize) -> Change,
    undo: &'a dyn Fn(&mut Writer, usize),
}

fn cold(evict: &mut Evict, w: &mut Writer, case: &Case<'_>) -> Vec<Duration> {
    (0..SAMPLES)
        .map(|i| {
            (case.prepare)(w, i);
            evict.run();
            let t = Instant::now();
            black_box((case.change)(w, i));
            let d = t.elapsed();
            (case.undo)(w, i);
            d
        })
        .collect()
}

fn key(i: usize) -> SlotKey {
    SlotKey { id: i as u16, as_id: 0 }
}

fn main() {
    let spans = layout(N);
    let order = shuffled(N);
    let mut evict = Evict(vec![0; 64 << 20]);
    println!("| change at {N} slots, cold caches | median µs | p90 µs | round medians µs |\n| --- | --- | --- | --- |");

    let slots = build(&spans, &order);
    let _reader = slots.reader();
    let mut w = slots.writer().expect("first writer");
    // Samples pick slots spread over the map.
    let pick = |i: usize| order[i * 97 % N];
    let end = spans[N - 1].base_gfn + spans[N - 1].npages + 16;

    let none = |_: &mut Writer, _: usize| {};
    let create = |w: &mut Writer, i: usize| w.create(region(pick(i), &spans[pick(i)])).expect("create");
    let delete = |w: &mut Writer, i: usize| w.delete(key(pick(i))).expect("delete");
    let cases: [(&str, Case<'_>); 4] = [
        ("delete", Case { prepare: &none, change: &delete, undo: &|w, i| _ = create(w, i) }),
        ("create", Case { prepare: &|w, i| _ = delete(w, i), change: &create, undo: &none }),
        (
            "move",
            Case {
                prepare: &none,
                change: &|w, i| w.move_to(key(pick(i)), end).expect("move"),
                undo: &|w, i| _ = w.move_to(key(pick(i)), spans[pick(i)].base_gfn).expect("move back"),
            },
        ),
        (
            "set_flags (dirty logging on)",
            Case {
                prepare: &none,
                change: &|w, i| w.set_flags(key(pick(i)), Flags::LOG_DIRTY_PAGES).expect("flags"),
                undo: &|w, i| _ = w.set_flags(key(pick(i)), Flags::empty()).expect("flags back"),
            },
        ),
    ];
    let mut rounds: Vec<Vec<Vec<Duration>>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (c, (_, case)) in cases.iter().enumerate() {
            rounds[c].push(cold(&mut evict, &mut w, case));
        }
    }
    for ((name, _), rounds) in cases.iter().zip(rounds) {
        let each: Vec<String> = rounds.iter().map(|r| format!("{:.2}", stats(r.clone()).0)).collect();
        let (median, p90) = stats(rounds.concat());
        println!("| {name} | {median:.2} | {p90:.2} | {} |", each.join(" / "));
    }
    drop(w);

    println!("\n| build {N} slots one by one | median ms | p90 ms |\n| --- | --- | --- |");
    for (name, order) in [("random order", order.clone()), ("ascending order", (0..N).collect())] {
        let times: Vec<Duration> = (0..7)
            .map(|_| {
                let t = Instant::now();
                let built: Memslots = build(&spans, &order);
                let d = t.elapsed();
                drop(built);
                d
            })
            .collect();
        let (median, p90) = stats(times);
        println!("| {name} | {:.1} | {:.1} |", median / 1e3, p90 / 1e3);
    }
}
