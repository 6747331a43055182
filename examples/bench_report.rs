//! A short run of the benchmarks (about 25 s) that writes
//! `docs/benchmarks.md` and `docs/lookup.svg`.
//!
//! `cargo run --release --example bench_report`
//!
//! `cargo run --release --example bench_report -- churn` runs only the
//! reader-under-churn section (about 15 s) and prints its table.
//!
//! Every figure is the median of several rounds, and every implementation is
//! measured in the same run on the same slot layouts, so the ratios hold even
//! on a noisy machine. `cargo bench --bench lookup` measures the lookups in
//! more depth with criterion.

#[path = "../benches/common/peers.rs"]
mod peers;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use memslots::{Flags, Memslots, SlotKey};
use peers::*;
use plotters::prelude::*;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

const SIZES: [usize; 6] = [1, 8, 32, 509, 4096, 32764];
const BATCH: usize = 4096;
const ROUNDS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Median ns per lookup over `ROUNDS` rounds of `BATCH` lookups.
fn time_lookups(mut round: impl FnMut()) -> f64 {
    round(); // warm the caches
    median(
        (0..ROUNDS)
            .map(|_| {
                let t = Instant::now();
                round();
                t.elapsed().as_nanos() as f64 / BATCH as f64
            })
            .collect(),
    )
}

/// Lookup medians for one implementation: (pattern, mode) -> ns per N.
type Curves = BTreeMap<(&'static str, &'static str), Vec<f64>>;

fn lookups<M: Lookup>() -> Curves {
    let mut curves = Curves::new();
    for n in SIZES {
        let spans = layout(n);
        let map = M::build(&spans);
        for (pattern, hot) in [("uniform", false), ("hot", true)] {
            let queries = gfns(&spans, BATCH, hot);
            let pinned = time_lookups(|| queries.iter().for_each(|&g| _ = black_box(map.find_pinned(black_box(g)))));
            let guard = time_lookups(|| {
                let guard = map.guard();
                queries.iter().for_each(|&g| _ = black_box(M::find(&guard, black_box(g))))
            });
            curves.entry((pattern, "pinned")).or_default().push(pinned);
            curves.entry((pattern, "guard")).or_default().push(guard);
        }
    }
    curves
}

/// Time to add `spans` one by one, in ms: the median of `rounds` builds.
fn build_ms(rounds: usize, mut build: impl FnMut()) -> f64 {
    median(
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                build();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn build_memslots(spans: &[Span]) -> Memslots {
    let slots = Memslots::new(memslots_config()).unwrap();
    let mut w = slots.writer().unwrap();
    for (id, s) in spans.iter().enumerate() {
        w.create(region(id, s)).unwrap();
    }
    drop(w);
    slots
}

fn build_rwlock(spans: &[Span]) -> RwLockBTree {
    let map = RwLockBTree(RwLock::new(BTreeMap::new()));
    for s in spans {
        map.0.write().unwrap().insert(s.base_gfn, *s);
    }
    map
}

fn build_arcswap(spans: &[Span]) -> ArcSwapVec {
    let map = ArcSwapVec(ArcSwap::from_pointee(Vec::new()));
    for s in spans {
        let mut next = Vec::clone(&map.0.load());
        next.insert(next.partition_point(|o| o.base_gfn < s.base_gfn), *s);
        map.0.store(Arc::new(next));
    }
    map
}

fn build_vm_memory(spans: &[Span]) -> VmMemory {
    let map = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    for s in spans {
        let guard = map.lock().unwrap();
        let next = map.memory().insert_region(vm_memory_region(s)).unwrap();
        guard.replace(next);
    }
    VmMemory(map)
}

/// Median µs of one writer change at `n` slots, grace period included.
fn single_changes(n: usize) -> [f64; 4] {
    let spans = layout(n);
    let slots = build_memslots(&spans[..n - 1]);
    let mut w = slots.writer().unwrap();
    let last = region(n - 1, &spans[n - 1]);
    let key = SlotKey { id: last.id, as_id: 0 };
    let far = spans[n - 1].base_gfn + 1000;
    let mut times = [const { Vec::new() }; 4];
    for _ in 0..301 {
        let mut step = |i: usize, f: &mut dyn FnMut() -> memslots::Change| {
            let t = Instant::now();
            f();
            times[i].push(t.elapsed().as_nanos() as f64 / 1e3);
        };
        step(0, &mut || w.create(last).unwrap());
        step(1, &mut || w.move_to(key, far).unwrap());
        step(2, &mut || w.set_flags(key, Flags::LOG_DIRTY_PAGES).unwrap());
        step(3, &mut || w.delete(key).unwrap());
    }
    times.map(median)
}

/// A calibrated cycle counter: `rdtsc` costs a few ns, `Instant` tens.
struct Tsc {
    ns_per_tick: f64,
    overhead: f64,
}

impl Tsc {
    fn now() -> u64 {
        // SAFETY: rdtsc has no preconditions on x86-64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    fn calibrate() -> Tsc {
        let (t, c) = (Instant::now(), Self::now());
        std::thread::sleep(Duration::from_millis(100));
        let ns_per_tick = t.elapsed().as_nanos() as f64 / (Self::now() - c) as f64;
        let empty: Vec<f64> =
            (0..10_000).map(|_| (Self::now().wrapping_neg().wrapping_add(Self::now())) as f64).collect();
        Tsc { ns_per_tick, overhead: median(empty) }
    }

    fn ns(&self, ticks: u64) -> f64 {
        (ticks as f64 - self.overhead).max(0.0) * self.ns_per_tick
    }
}

/// The churn grid: slot counts, reader kinds and writer rates.
const CHURN_SIZES: [usize; 2] = [509, 4096];
const CHURN_READERS: [ReaderKind; 2] = [ReaderKind::Vcpu, ReaderKind::Device];
/// Writer changes per second; `u64::MAX`: as fast as it can.
const CHURN_RATES: [u64; 4] = [0, 1_000, 10_000, u64::MAX];
/// How long the reader measures one cell.
const CHURN_CELL: Duration = Duration::from_millis(750);
/// Lookups timed together: one rdtsc pair per lookup would weigh as much as
/// the lookup itself.
const CHURN_BATCH: usize = 64;

#[derive(Clone, Copy)]
enum ReaderKind {
    Vcpu,
    Device,
}

impl ReaderKind {
    fn name(self) -> &'static str {
        match self {
            ReaderKind::Vcpu => "vCPU",
            ReaderKind::Device => "device",
        }
    }
}

/// One cell of the churn grid.
struct ChurnCell {
    /// Per lookup, from batches of `CHURN_BATCH`.
    p50: f64,
    p99: f64,
    changes: u64,
    changes_per_s: f64,
    /// The reader thread's voluntary and involuntary context switches.
    voluntary: i64,
    involuntary: i64,
}

/// The calling thread's (voluntary, involuntary) context switches so far.
fn thread_context_switches() -> (i64, i64) {
    // SAFETY: getrusage only writes the struct we pass; all-zero is a valid
    // `rusage`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0, "getrusage(RUSAGE_THREAD)");
        usage
    };
    (usage.ru_nvcsw, usage.ru_nivcsw)
}

/// Pinned lookups (a pin per lookup) at `n` slots on the calling thread while
/// a writer thread idles (`rate` 0) or churns the last slot: moves it away
/// and back and toggles LOG_DIRTY_PAGES, `rate` changes per second or as
/// fast as it can (`u64::MAX`). Each change waits out a grace period.
fn churn(tsc: &Tsc, n: usize, kind: ReaderKind, rate: u64) -> ChurnCell {
    let spans = layout(n);
    let slots = build_memslots(&spans);
    let queries = gfns(&spans, BATCH, false);
    let last = n - 1;
    let key = SlotKey { id: last as u16, as_id: 0 };
    // The last slot ends the layout, so the gfns past it are free.
    let (home, far) = (spans[last].base_gfn, spans[last].base_gfn + 1000);
    let (go, stop) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut w = slots.writer().unwrap();
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let start = Instant::now();
            let mut changes = 0u64;
            while rate > 0 && !stop.load(Ordering::Relaxed) {
                // Paced: spin until the schedule allows the next change.
                if rate != u64::MAX && changes as f64 >= start.elapsed().as_secs_f64() * rate as f64 {
                    std::hint::spin_loop();
                    continue;
                }
                let _ = match changes % 4 {
                    0 => w.move_to(key, far),
                    1 => w.set_flags(key, Flags::LOG_DIRTY_PAGES),
                    2 => w.move_to(key, home),
                    _ => w.set_flags(key, Flags::empty()),
                }
                .unwrap();
                changes += 1;
            }
            (changes, start.elapsed())
        });
        let reader = match kind {
            ReaderKind::Vcpu => slots.reader(),
            ReaderKind::Device => slots.device_reader(),
        };
        let lookup = |g: u64| black_box(reader.pin().gfn_to_hva(black_box(g)));
        queries.iter().for_each(|&g| _ = lookup(g)); // warm the caches
                                                     // Enough for the cell at a few ns per lookup: no reallocation while
                                                     // measuring.
        let mut batches: Vec<u64> = Vec::with_capacity(4 << 20);
        let before = thread_context_switches();
        go.store(true, Ordering::Release);
        let end = Instant::now() + CHURN_CELL;
        while Instant::now() < end {
            for batch in queries.chunks_exact(CHURN_BATCH) {
                let t = Tsc::now();
                batch.iter().for_each(|&g| _ = lookup(g));
                batches.push(Tsc::now() - t);
            }
        }
        let after = thread_context_switches();
        stop.store(true, Ordering::Relaxed);
        let (changes, elapsed) = writer.join().unwrap();
        let mut per_lookup: Vec<f64> = batches.into_iter().map(|t| tsc.ns(t) / CHURN_BATCH as f64).collect();
        per_lookup.sort_by(f64::total_cmp);
        ChurnCell {
            p50: percentile(&per_lookup, 0.5),
            p99: percentile(&per_lookup, 0.99),
            changes,
            changes_per_s: changes as f64 / elapsed.as_secs_f64(),
            voluntary: after.0 - before.0,
            involuntary: after.1 - before.1,
        }
    })
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |m| m.trim_start_matches([' ', '\t', ':']));
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap_or_default();
    let version = |name: &str| {
        let key = format!("name = \"{name}\"\nversion = \"");
        let at = lock.find(&key).map(|i| i + key.len());
        at.and_then(|i| lock[i..].split('"').next()).unwrap_or("?").to_string()
    };
    format!(
        "{model}, {} cores; {rustc}; memslots {}, vm-memory {}, arc-swap {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION"),
        version("vm-memory"),
        version("arc-swap"),
    )
}

fn plot(path: &str, lines: &[(&str, &[f64])]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = lines.iter().flat_map(|l| l.1.iter().copied()).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("gfn lookup, uniform random, one guard per lookup", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..40000f64).log_scale(), (1f64..max * 1.5).log_scale())?;
    chart.configure_mesh().x_desc("slots").y_desc("ns per lookup (median)").draw()?;
    for (i, (name, ys)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = SIZES.iter().map(|&n| n as f64).zip(ys.iter().copied()).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A named measurement of a layout (and, for builds, a round count).
type Bench<'a> = (&'a str, &'a dyn Fn(&[Span], usize) -> f64);

fn table_row(out: &mut String, first: &str, cells: impl IntoIterator<Item = String>) {
    let cells: Vec<String> = cells.into_iter().collect();
    writeln!(out, "| {first} | {} |", cells.join(" | ")).unwrap();
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        None => full_report(),
        // Only the churn table, to stdout; docs/ is left alone.
        Some("churn") => {
            let mut md = String::new();
            writeln!(md, "Machine: {}.\n", machine()).unwrap();
            churn_section(&mut md);
            print!("{md}");
        }
        Some(other) => {
            eprintln!("unknown section {other:?}; usage: bench_report [churn]");
            std::process::exit(2);
        }
    }
}

/// Where the sections this report does not write begin.
const KEPT: &str = "<!-- The sections below are written by other tools and kept by bench_report. -->";

/// Every section, written to `docs/benchmarks.md` and printed.
fn full_report() {
    let started = Instant::now();
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n\nWritten by `cargo run --release --example bench_report` on {}.\n", machine())
        .unwrap();
    writeln!(md, "Medians; every implementation measured in the same run on the same layouts: N slots of 1..16 pages after gaps of 0..3 pages.\n").unwrap();

    warm_up_cpu();
    pin_section(&mut md);
    lookup_section(&mut md);
    build_section(&mut md);
    change_section(&mut md);
    churn_section(&mut md);
    criterion_section(&mut md);
    writeln!(md, "\nReport run time: {:.0} s.", started.elapsed().as_secs_f64()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/benchmarks.md");
    // Sections written by other tools (downstream-bench/run, the no_std
    // guest test) follow the marker; keep them.
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let kept = old.find(KEPT).map_or(KEPT, |at| &old[at..]);
    write!(md, "\n{}", kept.trim_end()).unwrap();
    writeln!(md).unwrap();
    std::fs::write(path, &md).unwrap();
    println!("{md}");
}

/// Keeps the core busy for a second before the first measurement: a core
/// that was idle ran the first lookups measured after it up to 1.6 times
/// slower here, which would land on the first rows.
fn warm_up_cpu() {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        x = black_box(x.wrapping_mul(3).wrapping_add(1));
    }
}

/// Pin and unpin alone, one thread, against the figures measured with
/// crossbeam-epoch before (docs/readers-before.md).
fn pin_section(md: &mut String) {
    eprintln!("pins ...");
    writeln!(md, "## Taking and dropping a view, one thread (ns)\n").unwrap();
    writeln!(md, "| reader | now | with crossbeam-epoch (3b6bbf4, criterion, docs/readers-before.md) |").unwrap();
    writeln!(md, "| --- | --- | --- |").unwrap();
    let slots = build_memslots(&layout(509));
    for (kind, reader, before) in [("vCPU", slots.reader(), 6.73), ("device", slots.device_reader(), 6.72)] {
        let ns = time_lookups(|| {
            for _ in 0..BATCH {
                drop(black_box(reader.pin()));
            }
        });
        writeln!(md, "| {kind} | {ns:.1} | {before:.1} |").unwrap();
    }
    writeln!(md).unwrap();
}

/// The medians of the criterion benchmarks last run on this machine
/// (`cargo bench`, and `cargo bench --features kvm --bench kvm` with
/// `CARGO_TARGET_DIR=target/kvm`), as criterion left them in the target
/// directories, so that this page holds every figure.
fn criterion_section(md: &mut String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
    let mut rows = Vec::new();
    for dir in [format!("{root}/criterion"), format!("{root}/kvm/criterion")] {
        collect_estimates(std::path::Path::new(&dir), &dir, &mut rows);
    }
    if rows.is_empty() {
        return;
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    writeln!(md, "## Criterion benchmarks (medians of the last `cargo bench` runs on this machine)\n").unwrap();
    writeln!(md, "Benches: `readers` (pins, pinned lookups, asymmetric fences), `batch`, `memory` (against vm-memory's `Bytes`), `lookup`, `zap`, and `kvm` (`--features kvm`). Peers in one group ran in the same run.\n").unwrap();
    writeln!(md, "| benchmark | median |").unwrap();
    writeln!(md, "| --- | --- |").unwrap();
    for (id, ns) in rows {
        let shown = match ns {
            ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
            ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
            ns => format!("{ns:.2} ns"),
        };
        writeln!(md, "| {id} | {shown} |").unwrap();
    }
    writeln!(md).unwrap();
}

/// Finds `new/estimates.json` below `dir` and reads its median (ns).
fn collect_estimates(dir: &std::path::Path, root: &str, rows: &mut Vec<(String, f64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.ends_with("report") || path.ends_with("base") || path.ends_with("change") {
            continue;
        }
        if path.ends_with("new") {
            let Ok(json) = std::fs::read_to_string(path.join("estimates.json")) else { continue };
            // {"mean":{...},"median":{"confidence_interval":{...},"point_estimate":X,...
            let median = json.split("\"median\"").nth(1).and_then(|m| m.split("\"point_estimate\":").nth(1));
            let value = median.and_then(|m| m.split([',', '}']).next()).and_then(|v| v.trim().parse().ok());
            if let Some(ns) = value {
                let id = dir.to_string_lossy().trim_start_matches(root).trim_start_matches('/').to_string();
                rows.push((id, ns));
            }
        } else if path.is_dir() {
            collect_estimates(&path, root, rows);
        }
    }
}

fn lookup_section(md: &mut String) {
    eprintln!("lookups ...");
    let impls: [(&str, Curves); 5] = [
        (MemslotsMap::NAME, lookups::<MemslotsMap>()),
        (VmMemory::NAME, lookups::<VmMemory>()),
        (RwLockBTree::NAME, lookups::<RwLockBTree>()),
        (ArcSwapVec::NAME, lookups::<ArcSwapVec>()),
        (BareVec::NAME, lookups::<BareVec>()),
    ];
    for (pattern, what) in
        [("uniform", "uniform random gfns inside slots"), ("hot", "hot: 95% in the previous lookup's slot")]
    {
        for (mode, how) in [("pinned", "a guard per lookup"), ("guard", "all lookups under one guard")] {
            writeln!(md, "## Lookup, {what}, {how} (ns)\n").unwrap();
            table_row(md, "N", SIZES.iter().map(|n| n.to_string()));
            table_row(md, "---", SIZES.iter().map(|_| "---".to_string()));
            for (name, curves) in &impls {
                table_row(md, name, curves[&(pattern, mode)].iter().map(|v| format!("{v:.1}")));
            }
            let ours = &impls[0].1[&(pattern, mode)];
            for (name, curves) in &impls[1..] {
                let ratios = ours.iter().zip(&curves[&(pattern, mode)]).map(|(a, b)| format!("{:.2}", a / b));
                table_row(md, &format!("memslots ÷ {name}"), ratios);
            }
            md.push('\n');
        }
    }
    let svg = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/lookup.svg");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/docs")).unwrap();
    let memslots_guard = impls[0].1[&("uniform", "guard")].clone();
    let mut lines: Vec<(String, &[f64])> =
        impls.iter().map(|(name, c)| (name.to_string(), c[&("uniform", "pinned")].as_slice())).collect();
    lines.insert(1, ("memslots, one guard for many".to_string(), &memslots_guard));
    let lines: Vec<(&str, &[f64])> = lines.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    plot(svg, &lines).unwrap();
    writeln!(md, "![lookup latency against N](lookup.svg)\n").unwrap();
}

fn build_section(md: &mut String) {
    eprintln!("building ...");
    writeln!(md, "## Building N slots one by one (ms)\n").unwrap();
    let builds = [509, 4096, 32764];
    table_row(md, "N", builds.iter().map(|n| n.to_string()));
    table_row(md, "---", builds.iter().map(|_| "---".to_string()));
    let layouts: Vec<Vec<Span>> = builds.iter().map(|&n| layout(n)).collect();
    let rows: [Bench; 4] = [
        ("memslots", &|s, r| build_ms(r, || drop(build_memslots(s)))),
        ("vm-memory (insert_region + replace)", &|s, r| build_ms(r.min(3), || drop(build_vm_memory(s)))),
        ("RwLock<BTreeMap>", &|s, r| build_ms(r, || drop(build_rwlock(s)))),
        ("ArcSwap<Vec> (copy per insert)", &|s, r| build_ms(r.min(3), || drop(build_arcswap(s)))),
    ];
    for (name, build) in rows {
        table_row(md, name, layouts.iter().map(|s| format!("{:.2}", build(s, if s.len() > 4096 { 1 } else { 5 }))));
    }
    md.push('\n');
}

fn change_section(md: &mut String) {
    eprintln!("single changes ...");
    writeln!(md, "## One change at N slots, grace period included (µs, memslots)\n").unwrap();
    table_row(md, "N", ["create", "move", "flags", "delete"].map(String::from));
    table_row(md, "---", ["---"; 4].map(String::from));
    for n in [509, 4096, 32764] {
        table_row(md, &n.to_string(), single_changes(n).map(|v| format!("{v:.2}")));
    }
    md.push('\n');
}

fn churn_section(md: &mut String) {
    eprintln!("churn ...");
    let tsc = Tsc::calibrate();
    writeln!(md, "## Reader latency under writer churn (1 reader + 1 writer thread, ns per lookup)\n").unwrap();
    writeln!(
        md,
        "A pin per lookup; batches of {CHURN_BATCH} lookups timed with rdtsc (timer cost subtracted), p50 and p99 \
         over batches divided by {CHURN_BATCH}; {} ms per row. The writer moves the last slot away and back and \
         toggles LOG_DIRTY_PAGES, paced by spinning, each change waiting out a grace period. Context switches: the \
         reader thread's, from getrusage(RUSAGE_THREAD), during the measurement.\n",
        CHURN_CELL.as_millis()
    )
    .unwrap();
    table_row(
        md,
        "N",
        ["reader", "writer", "changes", "changes/s", "p50", "p99", "p99 ÷ idle p99", "vol. cs", "invol. cs"]
            .map(String::from),
    );
    table_row(md, "---", ["---"; 9].map(String::from));
    for n in CHURN_SIZES {
        for kind in CHURN_READERS {
            let mut idle_p99 = f64::NAN;
            for rate in CHURN_RATES {
                let cell = churn(&tsc, n, kind, rate);
                if rate == 0 {
                    idle_p99 = cell.p99;
                }
                let writer = match rate {
                    0 => "idle".to_string(),
                    u64::MAX => "full speed".to_string(),
                    r => format!("{r}/s"),
                };
                table_row(
                    md,
                    &n.to_string(),
                    [
                        kind.name().to_string(),
                        writer,
                        cell.changes.to_string(),
                        format!("{:.0}", cell.changes_per_s),
                        format!("{:.1}", cell.p50),
                        format!("{:.1}", cell.p99),
                        format!("{:.2}", cell.p99 / idle_p99),
                        cell.voluntary.to_string(),
                        cell.involuntary.to_string(),
                    ],
                );
            }
        }
    }
    md.push('\n');
}
