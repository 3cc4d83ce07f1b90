//! The host benchmark of the stage2 crate (`bench host`): options, the cells, the runs, the
//! summary table and its CSV/JSON (see main.rs and docs/performance.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::run::{Cell, Mode, PoolKind, Region, Sample};

const USAGE: &str = "\
usage: bench host [--reps N] [--pages-log2 K] [--threads N] [--pool slab|counting|both] [--out DIR]

  --reps N         repetitions per cell (default 5, at least 5)
  --pages-log2 K   pages faulted per thread = 2^K (default 23)
  --threads N      the multi-thread count compared against 1 thread (default 2)
  --pool P         page pool: slab (per-thread), counting (stage2::testing), both (default)
  --out DIR        where host.csv and host.json go (default bench/out)
  --quiet-wait S   before each run, wait up to S seconds for 250 ms in which other processes
                   use < 5% of the machine (default 30; 0 disables)

Progress (one line per step, and every 5 s of waiting for a quiet window) goes to stderr.";

struct Opts {
    reps: usize,
    pages_log2: u32,
    threads: usize,
    pools: Vec<PoolKind>,
    out: PathBuf,
    quiet_wait: u64,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        reps: 5,
        pages_log2: 23,
        threads: 2,
        pools: vec![PoolKind::Slab, PoolKind::Counting],
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("out"),
        quiet_wait: 30,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--reps" => o.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--pages-log2" => {
                o.pages_log2 = val()?.parse().map_err(|e| format!("--pages-log2: {e}"))?;
            }
            "--threads" => o.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--pool" => {
                o.pools = match val()?.as_str() {
                    "slab" => vec![PoolKind::Slab],
                    "counting" => vec![PoolKind::Counting],
                    "both" => vec![PoolKind::Slab, PoolKind::Counting],
                    p => return Err(format!("unknown pool {p}")),
                }
            }
            "--out" => o.out = PathBuf::from(val()?),
            "--quiet-wait" => {
                o.quiet_wait = val()?.parse().map_err(|e| format!("--quiet-wait: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.reps < 5 {
        return Err("--reps must be at least 5".into());
    }
    if !(10..=24).contains(&o.pages_log2) {
        return Err("--pages-log2 must be 10..=24".into());
    }
    if o.threads < 2 {
        return Err("--threads must be at least 2".into());
    }
    Ok(o)
}

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = match args.first().map(String::as_str) {
        Some("host") => &args[1..],
        None => &args[..],
        Some(a) if a.starts_with('-') => &args[..],
        Some(other) => {
            eprintln!("unknown benchmark {other}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match parse(rest) {
        Ok(o) => host(&o),
        // `--help`: the usage on stdout, success.
        Err(e) if e.is_empty() => println!("{USAGE}"),
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    }
}

/// Where the wall time of the measured repetitions went (the warm-up is timed apart).
#[derive(Default)]
struct StepTimes {
    /// Waiting for quiet windows before the runs.
    waited: Duration,
    /// The runs whole: table setup, the timed threads, checks, teardown.
    runs: Duration,
    /// The timed part of the runs (first thread's start to last thread's end).
    timed: Duration,
}

/// Summary of one cell over its repetitions.
struct Summary {
    cell: Cell,
    samples: Vec<Sample>,
    median: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn new(cell: Cell, samples: Vec<Sample>) -> Summary {
        let mut r: Vec<f64> = samples.iter().map(Sample::faults_per_sec).collect();
        r.sort_by(f64::total_cmp);
        let n = r.len();
        let median = if n % 2 == 1 {
            r[n / 2]
        } else {
            (r[n / 2 - 1] + r[n / 2]) / 2.0
        };
        Summary {
            cell,
            median,
            min: r[0],
            max: r[n - 1],
            samples,
        }
    }

    /// Median share of the machine other processes used during this cell's runs.
    fn median_foreign(&self) -> f64 {
        let mut v: Vec<f64> = self.samples.iter().map(|x| x.foreign).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Median of a per-repetition count.
    fn median_of(&self, f: impl Fn(&Sample) -> u64) -> u64 {
        let mut v: Vec<u64> = self.samples.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    }
}

fn cells(pool: PoolKind, threads: usize) -> Vec<Cell> {
    let mut v = Vec::new();
    for mode in [Mode::Shared, Mode::Locked] {
        // With one thread, disjoint and overlapping are the same run.
        v.push(Cell {
            pool,
            mode,
            threads: 1,
            region: Region::Disjoint,
        });
        for region in [Region::Disjoint, Region::Overlap] {
            v.push(Cell {
                pool,
                mode,
                threads,
                region,
            });
        }
    }
    v
}

fn machine() -> (String, usize, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    (cpu, cores, loadavg())
}

/// The stage2 source measured: the commit, and whether `stage2/src` differs from it (the tree is
/// shared; an uncommitted change is part of what was measured).
fn stage2_source() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
    match git(&["status", "--porcelain", "--", "stage2/src"]) {
        Some(s) if s.is_empty() => format!("{head} (stage2/src clean)"),
        Some(s) => format!(
            "{head} + uncommitted stage2/src changes ({} files)",
            s.lines().count()
        ),
        None => head,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn mfmt(x: f64) -> String {
    format!("{:.2} M", x / 1e6)
}

fn host(o: &Opts) {
    let pages = 1u64 << o.pages_log2;
    let (cpu, cores, load0) = machine();
    let t_total = Instant::now();
    println!("host benchmark of stage2::Guard::map (4 KiB pages, pure table cost: no guest page is zeroed or touched)");
    println!("machine: {cpu}, {cores} logical CPUs available; load average before: {load0}");
    let src = stage2_source();
    println!("stage2 source: {src}");
    println!(
        "pages per thread: 2^{} = {pages}; repetitions: {} (cells interleaved); IPA 40-bit, start level 1",
        o.pages_log2, o.reps
    );
    println!("TLB: no-op with thread-local counts; fault = guard (shared|exclusive) + map + drop + reclaim; Retry re-issues the fault");
    if cores < o.threads {
        println!(
            "WARNING: {} threads on {cores} CPUs: threads are time-sliced, not parallel",
            o.threads
        );
    }

    let all: Vec<Cell> = o.pools.iter().flat_map(|&p| cells(p, o.threads)).collect();
    let steps = all.len() * o.reps;
    // Warm-up (discarded): code, allocator, CPU frequency.
    eprintln!(
        "bench-host: warm-up, {} cells at 2^{} pages per thread",
        all.len(),
        o.pages_log2.saturating_sub(3)
    );
    let t_warm = Instant::now();
    for &c in &all {
        crate::run::run(c, pages / 8);
    }
    let warm = t_warm.elapsed();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); all.len()];
    let mut timing = StepTimes::default();
    let mut step = 0;
    for rep in 1..=o.reps {
        for (i, &c) in all.iter().enumerate() {
            step += 1;
            let what = format!(
                "[{step:>2}/{steps}] rep {rep}/{} {} {} {}t {}",
                o.reps,
                c.pool.name(),
                c.mode.name(),
                c.threads,
                if c.threads == 1 {
                    "(any)"
                } else {
                    c.region.name()
                }
            );
            let quiet = if o.quiet_wait > 0 {
                let mut next_note = Duration::from_secs(5);
                let (w, q) = crate::noise::wait_quiet(
                    0.05,
                    Duration::from_secs(o.quiet_wait),
                    |waited, share| {
                        if waited >= next_note {
                            eprintln!(
                                "bench-host: {what}: waiting for a quiet window, {:.0} s of {} s; \
                                 other processes use {:.0}% of the machine",
                                waited.as_secs_f64(),
                                o.quiet_wait,
                                share * 100.0
                            );
                            next_note += Duration::from_secs(5);
                        }
                    },
                );
                timing.waited += w;
                q
            } else {
                false
            };
            let t_run = Instant::now();
            let mut s = crate::run::run(c, pages);
            let run_time = t_run.elapsed();
            timing.runs += run_time;
            timing.timed += s.wall;
            s.quiet_start = quiet;
            eprintln!(
                "bench-host: {what}: {} faults/s; run {:.2} s (timed {:.2} s){}; {:.0} s so far",
                mfmt(s.faults_per_sec()),
                run_time.as_secs_f64(),
                s.wall.as_secs_f64(),
                if o.quiet_wait == 0 {
                    String::new()
                } else if quiet {
                    String::from(", after a quiet window")
                } else {
                    format!(", no quiet window in {} s", o.quiet_wait)
                },
                t_total.elapsed().as_secs_f64()
            );
            samples[i].push(s);
        }
    }
    let load1 = loadavg();
    let sums: Vec<Summary> = all
        .iter()
        .zip(samples)
        .map(|(&c, s)| Summary::new(c, s))
        .collect();

    println!();
    println!(
        "{:<9} {:<7} {:>7} {:<9} {:>12} {:>21} {:>9} {:>10} {:>9} {:>8} {:>7}",
        "pool",
        "mode",
        "threads",
        "region",
        "faults/s",
        "min..max",
        "ns/fault",
        "spurious",
        "retries",
        "wall ms",
        "other%"
    );
    for s in &sums {
        let region = if s.cell.threads == 1 {
            "(any)"
        } else {
            s.cell.region.name()
        };
        // ns per fault per thread: what one vCPU waits for its fault, on average.
        let ns = 1e9 * s.cell.threads as f64 / s.median;
        let wall = s.samples.iter().map(|x| x.wall.as_secs_f64()).sum::<f64>()
            / s.samples.len() as f64
            * 1e3;
        println!(
            "{:<9} {:<7} {:>7} {:<9} {:>12} {:>21} {:>9.1} {:>10} {:>9} {:>8.0} {:>7.1}",
            s.cell.pool.name(),
            s.cell.mode.name(),
            s.cell.threads,
            region,
            mfmt(s.median),
            format!("{}..{}", mfmt(s.min), mfmt(s.max)),
            ns,
            s.median_of(|x| x.spurious),
            s.median_of(|x| x.retries),
            wall,
            s.median_foreign() * 100.0
        );
    }

    let find = |pool, mode, threads, region| {
        sums.iter()
            .find(|s| {
                s.cell
                    == Cell {
                        pool,
                        mode,
                        threads,
                        region,
                    }
            })
            .map(|s| s.median)
            .expect("cell")
    };
    let n = o.threads;
    let mut ratios: Vec<(String, f64)> = Vec::new();
    for &p in &o.pools {
        let pn = p.name();
        let s1 = find(p, Mode::Shared, 1, Region::Disjoint);
        let l1 = find(p, Mode::Locked, 1, Region::Disjoint);
        ratios.push((format!("{pn}.shared_over_locked.1t"), s1 / l1));
        for r in [Region::Disjoint, Region::Overlap] {
            let sn = find(p, Mode::Shared, n, r);
            let ln = find(p, Mode::Locked, n, r);
            ratios.push((
                format!("{pn}.shared_over_locked.{n}t.{}", r.name()),
                sn / ln,
            ));
        }
        for m in [Mode::Shared, Mode::Locked] {
            let one = find(p, m, 1, Region::Disjoint);
            for r in [Region::Disjoint, Region::Overlap] {
                ratios.push((
                    format!("{pn}.{n}t_over_1t.{}.{}", m.name(), r.name()),
                    find(p, m, n, r) / one,
                ));
            }
        }
        ratios.push((
            format!("{pn}.shared_{n}t_disjoint_over_locked_1t"),
            find(p, Mode::Shared, n, Region::Disjoint) / l1,
        ));
    }
    println!();
    println!("ratios of medians:");
    for (k, v) in &ratios {
        println!("  {k:<44} {v:>6.2}x");
    }
    println!();
    for &p in &o.pools {
        let g =
            find(p, Mode::Shared, n, Region::Disjoint) / find(p, Mode::Locked, n, Region::Disjoint);
        println!(
            "goal (issue 3): shared {n}t disjoint >= 1.8x locked {n}t disjoint, pool {}: {g:.2}x -> {}",
            p.name(),
            if g >= 1.8 { "met" } else { "NOT met" }
        );
    }
    let runs = sums.iter().map(|s| s.samples.len()).sum::<usize>();
    let quiet = sums
        .iter()
        .flat_map(|s| &s.samples)
        .filter(|x| x.quiet_start)
        .count();
    println!(
        "other% = median share of the machine used by other processes during a run; runs started after a quiet window: {quiet}/{runs}"
    );
    let total = t_total.elapsed().as_secs_f64();
    println!(
        "load average after: {load1}; total time {total:.1} s = warm-up {:.1} s + {runs} runs {:.1} s \
         (timed part {:.1} s; the rest is each run's table setup, checks and teardown) + waiting \
         for quiet windows {:.1} s + {:.1} s other",
        warm.as_secs_f64(),
        timing.runs.as_secs_f64(),
        timing.timed.as_secs_f64(),
        timing.waited.as_secs_f64(),
        total
            - warm.as_secs_f64()
            - timing.runs.as_secs_f64()
            - timing.waited.as_secs_f64()
    );

    let report = to_json(o, (&cpu, cores, &src), (&load0, &load1), &sums, &ratios);
    let json = serde_json::to_string(&report).expect("the report serialises");
    let pretty = serde_json::to_string_pretty(&report).expect("the report serialises");
    if let Err(e) = write_out(o, &sums, &pretty) {
        eprintln!("could not write results to {}: {e}", o.out.display());
    } else {
        println!(
            "wrote {} and {}",
            o.out.join("host.csv").display(),
            o.out.join("host.json").display()
        );
    }
    println!("bench-host: {json}");
}

/// `host.json` and the `bench-host:` line: the run's setting, every cell's summary and runs, the
/// ratios of medians. Rates in faults per second, rounded; shares 0..1.
#[derive(Serialize)]
struct Report<'a> {
    bench: &'static str,
    cpu: &'a str,
    cores: usize,
    stage2: &'a str,
    load_before: &'a str,
    load_after: &'a str,
    pages_per_thread: u64,
    reps: usize,
    cells: Vec<CellJson>,
    /// `{pool}.shared_over_locked.{n}t.{region}` and the like, see the printed ratio block.
    ratios: BTreeMap<&'a str, f64>,
}

#[derive(Serialize)]
struct CellJson {
    pool: &'static str,
    mode: &'static str,
    threads: usize,
    region: &'static str,
    median: u64,
    min: u64,
    max: u64,
    other_share: f64,
    /// Faults per second of each repetition, in run order.
    runs: Vec<u64>,
}

/// `x` rounded to `digits` decimals (the JSON carries no false precision).
fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn to_json<'a>(
    o: &Opts,
    (cpu, cores, src): (&'a str, usize, &'a str),
    load: (&'a str, &'a str),
    sums: &[Summary],
    ratios: &'a [(String, f64)],
) -> Report<'a> {
    Report {
        bench: "host",
        cpu,
        cores,
        stage2: src,
        load_before: load.0,
        load_after: load.1,
        pages_per_thread: 1u64 << o.pages_log2,
        reps: o.reps,
        cells: sums
            .iter()
            .map(|s| CellJson {
                pool: s.cell.pool.name(),
                mode: s.cell.mode.name(),
                threads: s.cell.threads,
                region: s.cell.region.name(),
                median: s.median.round() as u64,
                min: s.min.round() as u64,
                max: s.max.round() as u64,
                other_share: round(s.median_foreign(), 3),
                runs: s
                    .samples
                    .iter()
                    .map(|x| x.faults_per_sec().round() as u64)
                    .collect(),
            })
            .collect(),
        ratios: ratios
            .iter()
            .map(|(k, v)| (k.as_str(), round(*v, 3)))
            .collect(),
    }
}

fn write_out(o: &Opts, sums: &[Summary], json: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(&o.out)?;
    let mut csv = String::from(
        "pool,mode,threads,region,rep,wall_s,installed,spurious,retries,tables_alloc,tables_raced,publish,other_share,quiet_start,faults_per_s\n",
    );
    for s in sums {
        for (rep, x) in s.samples.iter().enumerate() {
            let _ = writeln!(
                csv,
                "{},{},{},{},{rep},{:.6},{},{},{},{},{},{},{:.3},{},{:.0}",
                s.cell.pool.name(),
                s.cell.mode.name(),
                s.cell.threads,
                s.cell.region.name(),
                x.wall.as_secs_f64(),
                x.installed,
                x.spurious,
                x.retries,
                x.tables_alloc,
                x.tables_raced,
                x.tlb.publish,
                x.foreign,
                x.quiet_start,
                x.faults_per_sec()
            );
        }
    }
    std::fs::write(o.out.join("host.csv"), csv)?;
    std::fs::write(o.out.join("host.json"), format!("{json}\n"))
}
