//! Writes the downstream section of `docs/benchmarks.md` from the criterion
//! results of `run` (three profiles) and the writer and memory tables it
//! saved, between the `downstream:begin` and `downstream:end` markers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs;
use std::path::Path;

use memslots_downstream_bench::{SIZES, SWEEP_SIZES};

const PROFILES: [&str; 3] = ["release", "thin", "fat"];
/// Lookups per criterion iteration.
const BATCH: f64 = 4096.0;
const BEGIN: &str = "<!-- downstream:begin -->";
const END: &str = "<!-- downstream:end -->";

/// The number after `key` in `json`.
fn number_after(json: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(key)? + key.len()..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

/// Criterion's median (ns) for every benchmark under `dir`, by full id.
fn medians(dir: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "new") {
                let bench = fs::read_to_string(path.join("benchmark.json")).unwrap_or_default();
                let estimates = fs::read_to_string(path.join("estimates.json")).unwrap_or_default();
                let id = bench.split("\"full_id\":\"").nth(1).and_then(|s| s.split('"').next());
                let median =
                    estimates.find("\"median\"").and_then(|at| number_after(&estimates[at..], "\"point_estimate\":"));
                if let (Some(id), Some(median)) = (id, median) {
                    out.insert(id.to_string(), median);
                }
            } else if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runs: Vec<BTreeMap<String, f64>> =
        PROFILES.iter().map(|p| medians(&root.join("target").join(p).join("criterion"))).collect();
    let ns = |run: usize, id: &str| runs[run].get(id).map(|t| t / BATCH);
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "-".to_string(),
    };
    let mut md = String::new();
    writeln!(md, "{BEGIN}\n## Downstream: the read path as a user's binary gets it\n").unwrap();
    writeln!(md, "Measured from `downstream-bench/`, a separate crate that depends on memslots (`downstream-bench/run`), in three release profiles: cargo's default `release`, `thin` (`lto = \"thin\"`, `codegen-units = 1`) and `fat` (`lto = \"fat\"`). Slots built in random order. Nanoseconds per lookup (criterion medians of 4096 lookups); ratios against the bare sorted `Vec` (under one view) or `ArcSwap<Vec>` (pinned per lookup) of the same run.\n").unwrap();
    let mut profiles_table = |title: &str, group: &str, peer: &str, short: &str| {
        writeln!(md, "### {title}\n").unwrap();
        writeln!(md, "| N | profile | vCPU reader | device reader | {peer} | vCPU ÷ {short} | device ÷ {short} |")
            .unwrap();
        writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |").unwrap();
        for n in SIZES {
            for (run, profile) in PROFILES.iter().enumerate() {
                let [v, d, p] = ["vcpu", "device", peer].map(|k| ns(run, &format!("{group}/{n}/{k}")));
                let cells = [cell(v), cell(d), cell(p), ratio(v, p), ratio(d, p)];
                writeln!(md, "| {n} | {profile} | {} |", cells.join(" | ")).unwrap();
            }
        }
        writeln!(md).unwrap();
    };
    for pattern in ["uniform", "hot"] {
        profiles_table(&format!("Under one view, {pattern} gfns"), &format!("view/{pattern}"), "bare Vec", "Vec");
    }
    profiles_table("Pinned per lookup, uniform gfns", "pinned/uniform", "ArcSwap<Vec>", "ArcSwap");
    writeln!(md, "### Under one view, uniform gfns, sizes in between (release profile)\n").unwrap();
    writeln!(md, "`benches/sweep.rs`: the vCPU reader against the bare `Vec` at sizes between those above, where the tree gains a level (a root leaf holds 32 slots, a root over two leaves 33 to about 64).\n").unwrap();
    writeln!(md, "| N | vCPU reader | bare Vec | vCPU ÷ Vec |\n| --- | --- | --- | --- |").unwrap();
    for n in SWEEP_SIZES {
        let [v, p] = ["vcpu", "bare Vec"].map(|k| ns(0, &format!("sweep/uniform/{n}/{k}")));
        writeln!(md, "| {n} | {} | {} | {} |", cell(v), cell(p), ratio(v, p)).unwrap();
    }
    writeln!(md).unwrap();
    writeln!(md, "### Two readers on two cores (release profile)\n").unwrap();
    writeln!(md, "One reader alone, then the same reader while a second reader of the same kind runs the same loop on the other core; ns per lookup under one view.\n").unwrap();
    writeln!(md, "| gfns | N | kind | alone | beside another | ratio |\n| --- | --- | --- | --- | --- | --- |")
        .unwrap();
    for pattern in ["uniform", "hot"] {
        for n in [509, 32764] {
            for kind in ["vcpu", "device"] {
                let g = format!("two_readers/{pattern}/{n}/{kind}");
                let (a, b) = (ns(0, &format!("{g}/alone")), ns(0, &format!("{g}/beside another")));
                writeln!(md, "| {pattern} | {n} | {kind} | {} | {} | {} |", cell(a), cell(b), ratio(b, a)).unwrap();
            }
        }
    }
    for (title, file) in [("Writer, cold caches (release profile)", "writer.md"), ("Heap bytes per slot", "memory.md")]
    {
        let table =
            fs::read_to_string(root.join("target").join(file)).unwrap_or_else(|_| format!("(no {file}: run `run`)\n"));
        writeln!(md, "\n### {title}\n\n{}", table.trim_end()).unwrap();
    }
    writeln!(md, "{END}").unwrap();

    let doc = root.join("../docs/benchmarks.md");
    let old = fs::read_to_string(&doc).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{}{}", &old[..b], md.trim_end(), &old[e + END.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), md.trim_end()),
    };
    fs::write(&doc, new).expect("write docs/benchmarks.md");
    print!("{md}");
}
