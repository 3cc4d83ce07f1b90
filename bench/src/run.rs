//! One repetition: a fresh table, `threads` threads released together, each faulting its pages in.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use stage2::testing::CountingPool;
use stage2::{Attrs, Config, Error, Mapped, PagePool, Size, Stage2};

use crate::arch::{NopTlb, SlabPool, TlbCounts};
use crate::noise::CpuTimes;

/// 40-bit IPA: start level 1, two concatenated root tables (the hypervisor's geometry).
const IPA_BITS: u32 = 40;
/// Guest RAM starts at 1 GiB, as in the hypervisor's guest.
const RAM_IPA: u64 = 0x4000_0000;
/// Output addresses: an arbitrary aligned offset from the IPA.
const PA_OFFSET: u64 = 0x80_0000_0000;
const PAGE: u64 = 4096;

/// Which stage2 entry point serves each fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `Stage2::shared`: lock-free read-side section per fault.
    Shared,
    /// `Stage2::exclusive`: the MMU lock per fault (one global lock: the baseline).
    Locked,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Locked => "locked",
        }
    }
}

/// Which IPAs the threads fault on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Thread `t` faults on its own slice `[t * pages, (t + 1) * pages)` of one RAM region.
    Disjoint,
    /// Every thread faults on the same `pages` pages, in the same order.
    Overlap,
}

impl Region {
    pub fn name(self) -> &'static str {
        match self {
            Region::Disjoint => "disjoint",
            Region::Overlap => "overlap",
        }
    }
}

/// Which page pool backs the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// `stage2::testing::CountingPool` (global mutex free list, packed metadata).
    Counting,
    /// [`SlabPool`] (per-CPU slabs, one cache line of metadata per page).
    Slab,
}

impl PoolKind {
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Counting => "counting",
            PoolKind::Slab => "slab",
        }
    }
}

/// One benchmark cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub pool: PoolKind,
    pub mode: Mode,
    pub threads: usize,
    pub region: Region,
}

/// What one repetition measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// From the first thread's start to the last thread's end.
    pub wall: Duration,
    pub installed: u64,
    pub spurious: u64,
    /// `Error::Retry` results (the vCPU would re-run the access; the bench re-issues the map).
    pub retries: u64,
    pub tables_alloc: u64,
    /// Table pages freed at once because another thread published its table first.
    pub tables_raced: u64,
    pub tlb: TlbCounts,
    /// Share of the machine (0..1) other processes used while the threads ran.
    pub foreign: f64,
    /// Whether a quiet window was found before the run (set by the caller).
    pub quiet_start: bool,
}

impl Sample {
    /// Faults served per second: successful installs plus spurious faults.
    pub fn faults_per_sec(&self) -> f64 {
        (self.installed + self.spurious) as f64 / self.wall.as_secs_f64()
    }
}

struct ThreadResult {
    start: Instant,
    end: Instant,
    installed: u64,
    spurious: u64,
    retries: u64,
    tlb: TlbCounts,
}

/// Table pages one thread can need for `pages` 4 KiB pages: its level-3 tables, a level-3 table
/// at each end of an unaligned slice, and a few level-2 tables.
fn tables_per_thread(pages: u64) -> usize {
    (pages / 512) as usize + 2 + (pages / (512 * 512)) as usize + 4
}

/// Run one repetition of `cell` with `pages` pages per thread.
pub fn run(cell: Cell, pages: u64) -> Sample {
    let cfg = Config::new(IPA_BITS, cell.threads);
    let root_pages = stage2::Geometry::new(IPA_BITS, None)
        .expect("geometry")
        .root_pages();
    let per_thread = tables_per_thread(pages) + 16;
    match cell.pool {
        PoolKind::Counting => {
            let pool = CountingPool::new(root_pages + cell.threads * per_thread);
            let sample = run_with(cell, pages, cfg, &pool);
            assert_eq!(pool.in_use(), 0, "pages leaked");
            assert_eq!(pool.allocs(), pool.frees(), "table pages leaked");
            sample
        }
        PoolKind::Slab => {
            let pool = SlabPool::new(cell.threads, per_thread, root_pages);
            let sample = run_with(cell, pages, cfg, &pool);
            let (a, f) = pool.allocs_frees();
            assert_eq!(a, f, "table pages leaked");
            sample
        }
    }
}

fn run_with<P: PagePool>(cell: Cell, pages: u64, cfg: Config, pool: &P) -> Sample {
    let tlb = NopTlb;
    let s2 = Stage2::new(cfg, pool, &tlb).expect("Stage2::new");
    let barrier = Barrier::new(cell.threads);
    let cpu0 = CpuTimes::now();
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cell.threads)
            .map(|cpu| {
                let s2 = &s2;
                let barrier = &barrier;
                s.spawn(move || {
                    let base = match cell.region {
                        Region::Disjoint => RAM_IPA + cpu as u64 * pages * PAGE,
                        Region::Overlap => RAM_IPA,
                    };
                    NopTlb::take_thread_counts();
                    barrier.wait();
                    fault_loop(s2, cell.mode, cpu, base, pages)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let foreign = match (cpu0, CpuTimes::now()) {
        (Some(a), Some(b)) => b.foreign_since(&a),
        _ => 0.0,
    };
    let start = results.iter().map(|r| r.start).min().expect("a thread");
    let end = results.iter().map(|r| r.end).max().expect("a thread");
    let st = s2.stats();
    let mut sample = Sample {
        wall: end - start,
        tables_alloc: st.tables_alloc,
        tables_raced: st.tables_raced,
        foreign,
        ..Sample::default()
    };
    for r in &results {
        sample.installed += r.installed;
        sample.spurious += r.spurious;
        sample.retries += r.retries;
        sample.tlb = sample.tlb.add(r.tlb);
    }
    // The core's own counters must agree with what the threads saw.
    assert_eq!(st.maps, sample.installed, "maps counter");
    assert_eq!(st.spurious, sample.spurious, "spurious counter");
    assert_eq!(st.retries(), sample.retries, "retry counters");
    let expect_installed = match cell.region {
        Region::Disjoint => cell.threads as u64 * pages,
        Region::Overlap => pages,
    };
    assert_eq!(sample.installed, expect_installed, "every page mapped once");
    assert_eq!(
        sample.installed + sample.spurious,
        cell.threads as u64 * pages,
        "every fault served"
    );
    // Invalid -> valid needs no invalidation; every walk that stored something publishes: each
    // install, plus a walk that installed a table and then lost the leaf's race (a retry).
    assert_eq!(
        sample.tlb.broadcast + sample.tlb.local,
        0,
        "TLBI on demand map"
    );
    assert!(
        sample.tlb.publish >= sample.installed
            && sample.tlb.publish <= sample.installed + sample.retries,
        "one publish per install (+ one per retry that had stored a table): {} publishes, {} installs, {} retries",
        sample.tlb.publish,
        sample.installed,
        sample.retries
    );
    {
        // Spot-check translations (not timed).
        let g = s2.shared(0);
        for ipa in [RAM_IPA, RAM_IPA + (expect_installed - 1) * PAGE] {
            let t = g.translate(ipa).expect("mapped");
            assert_eq!((t.pa, t.level), (ipa + PA_OFFSET, 3));
        }
    }
    s2.destroy(0).expect("destroy");
    sample
}

/// The fault model: per fault, enter (shared or locked), map one page, leave, reclaim — as the
/// hypervisor's trap handler does. A `Retry` re-issues the same fault (the guest re-runs the
/// access). Pure table cost: no guest page is zeroed or touched.
fn fault_loop<P: PagePool>(
    s2: &Stage2<P, &NopTlb>,
    mode: Mode,
    cpu: usize,
    base: u64,
    pages: u64,
) -> ThreadResult {
    let attrs = Attrs::normal_rwx();
    let (mut installed, mut spurious, mut retries) = (0, 0, 0);
    let start = Instant::now();
    for i in 0..pages {
        let ipa = base + i * PAGE;
        loop {
            let g = match mode {
                Mode::Shared => s2.shared(cpu),
                Mode::Locked => s2.exclusive(cpu),
            };
            let r = g.map(ipa, ipa + PA_OFFSET, Size::Page4K, attrs);
            drop(g);
            s2.reclaim(cpu);
            match r {
                Ok(Mapped::Installed) => installed += 1,
                Ok(Mapped::Spurious) => spurious += 1,
                Err(Error::Retry) => {
                    retries += 1;
                    continue;
                }
                other => panic!("unexpected map result {other:?} at {ipa:#x}"),
            }
            break;
        }
    }
    let end = Instant::now();
    ThreadResult {
        start,
        end,
        installed,
        spurious,
        retries,
        tlb: NopTlb::take_thread_counts(),
    }
}
