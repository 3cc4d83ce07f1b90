//! Real-thread stress: N mapper CPUs fault into one shared region while a pruner CPU collapses
//! spans into blocks, and now and then takes the MMU lock to unmap or write-protect ranges.
//!
//! Every mapping anyone ever installs maps `ipa -> RAM + ipa` (pages, 2 MiB and 1 GiB blocks
//! alike; attributes vary only in permissions and one software bit, so same-output remaps are
//! breaks-before-make of live leaves), so the model is a function: any translation found, at any
//! time, must equal it. The
//! mappers assert that continuously (after every map, and on random other pages); the pruner
//! checks every page and every table's refcount whenever it holds the MMU lock; at quiescence the
//! whole region is checked again, `barrier()` must leave nothing deferred, an unmap of the whole
//! space must leave no table behind, and `destroy()` must return every page to the pool.
//!
//! CI form (the default): mapper thread counts 2, 3 and 4, at least 10^6 operations in total.
//! Long form: `STAGE2_STRESS_OPS=10000000` (the total, split over the three runs). See the counts
//! and `Stage2::stats()` with
//! `cargo test -p stage2 --target x86_64-unknown-linux-gnu --test stress -- --nocapture`.
//! `STAGE2_STRESS_SEED` fixes the RNG seed (threads still interleave differently every run).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stage2::testing::{CountingPool, RecordingTlb, Rng, TlbOp};
use stage2::{
    Attrs, Config, DirtyBitmap, Error, Guard, HwAccess, Mapped, MemType, PagePool, Perms, Pte,
    Size, Stage2, Tlb, Translation,
};

type S2 = Stage2<Arc<CountingPool>, Arc<RecordingTlb>>;

const PAGE: u64 = 4096;
const MB2: u64 = 2 << 20;
const GB: u64 = 1 << 30;
const IPA_BITS: u32 = 32;
/// The shared region: four 2 MiB spans straddling the 1 GiB boundary, so two level-2 tables and
/// up to four level-3 tables are shared by every thread.
const REGION: u64 = GB - 2 * MB2;
const BLOCKS: u64 = 4;
const PAGES: u64 = BLOCKS * 512;
const REGION_END: u64 = REGION + BLOCKS * MB2;
const RAM: u64 = 0x4000_0000;
/// Operations per read-side section of a mapper.
const BATCH: u64 = 16;
/// Default total operations over the three runs (CI form).
const CI_OPS: u64 = 1_200_000;

/// The only output address any mapping may give `ipa`.
fn expected_pa(ipa: u64) -> u64 {
    RAM + ipa
}

/// Panics unless `t` (the translation of `ipa`) is one the model allows.
fn check_translation(ipa: u64, t: Option<Translation>) {
    if let Some(t) = t {
        assert_eq!(
            t.pa,
            expected_pa(ipa),
            "IPA {ipa:#x} translates to {:#x} at level {}",
            t.pa,
            t.level
        );
        assert_eq!(t.attrs.mem, MemType::NormalWb, "IPA {ipa:#x}");
        assert!(
            t.attrs.sw <= 1,
            "IPA {ipa:#x}: software bits {}",
            t.attrs.sw
        );
        assert!(
            t.attrs.perms == Perms::RWX || t.attrs.perms == Perms::RX,
            "IPA {ipa:#x}: perms {:?}",
            t.attrs.perms
        );
    }
}

/// Under the MMU lock nothing moves: every page of the region translates as the model says and
/// every table's count is 1 + its non-empty entries. Returns (mapped pages, tables).
fn check_all<P: PagePool, T: Tlb>(g: &Guard<'_, P, T>) -> (u64, u64) {
    assert!(g.is_exclusive());
    let mut mapped = 0;
    for p in 0..PAGES {
        let ipa = REGION + p * PAGE;
        let t = g.translate(ipa);
        check_translation(ipa, t);
        mapped += u64::from(t.is_some());
    }
    let mut tables = 0;
    g.for_each_table(|pa, level, count, used| {
        tables += 1;
        assert_eq!(
            count,
            used + 1,
            "table {pa:#x} at level {level}: refcount {count}, {used} entries used"
        );
    });
    (mapped, tables)
}

/// The recorder's log since the last call: every by-IPA invalidation (a break-before-make of a
/// leaf or a split) happened while the broken entry was LOCKED (or while a pruner had already
/// locked an ancestor, so the path no longer reaches it). Returns (by-IPA, ranges) seen.
fn check_tlb_log(s2: &S2) -> (u64, u64) {
    let (mut ipa_ops, mut ranges) = (0, 0);
    for op in s2.tlb().take() {
        match op {
            TlbOp::Ipa { ipa, level, entry } => {
                ipa_ops += 1;
                assert!(
                    entry.is_none() || entry == Some(Pte::LOCKED.0),
                    "TLBI of IPA {ipa:#x} at level {level} while its entry was {entry:#x?}"
                );
            }
            TlbOp::Range { .. } | TlbOp::Leaves { .. } => ranges += 1,
            TlbOp::Vmid | TlbOp::Local { .. } | TlbOp::Publish => {}
        }
    }
    (ipa_ops, ranges)
}

#[derive(Default, Debug)]
struct Counts {
    ops: AtomicU64,
    installed: AtomicU64,
    replaced: AtomicU64,
    spurious: AtomicU64,
    retry: AtomicU64,
    relax_ok: AtomicU64,
    relax_retry: AtomicU64,
    collapses: AtomicU64,
    collapse_retry: AtomicU64,
    unmaps: AtomicU64,
    write_protects: AtomicU64,
    translations: AtomicU64,
    full_checks: AtomicU64,
    tlbi_ipa_checked: AtomicU64,
    no_memory: AtomicU64,
}

impl Counts {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

fn mapper(s2: &S2, cpu: usize, ops: u64, seed: u64, counts: &Counts) {
    let mut rng = Rng(seed);
    let mut done = 0;
    let (mut installed, mut replaced, mut spurious, mut retry) = (0, 0, 0, 0);
    let (mut relax_ok, mut relax_retry, mut translations, mut no_memory) = (0, 0, 0, 0);
    while done < ops {
        {
            let g = s2.shared(cpu);
            for _ in 0..BATCH {
                let perms = if rng.chance(4) { Perms::RX } else { Perms::RWX };
                let page = REGION + rng.below(PAGES) * PAGE;
                if rng.chance(8) {
                    match g.relax_perms(page, Perms::W) {
                        Ok(()) => relax_ok += 1,
                        Err(Error::Retry) => relax_retry += 1,
                        Err(e) => panic!("relax {page:#x}: {e:?}"),
                    }
                } else {
                    let (ipa, size) = if rng.chance(32) {
                        (page & !(MB2 - 1), Size::Block2M)
                    } else {
                        (page, Size::Page4K)
                    };
                    // Software bits 1 now and then: the same output with other attributes is a
                    // break-before-make of a live leaf, which a concurrent prune must wait out.
                    let attrs = Attrs {
                        sw: u8::from(rng.chance(8)),
                        ..Attrs::normal(perms)
                    };
                    match g.map(ipa, expected_pa(ipa), size, attrs) {
                        Ok(Mapped::Installed) => installed += 1,
                        Ok(Mapped::Replaced) => replaced += 1,
                        Ok(Mapped::Spurious) => spurious += 1,
                        Err(Error::Retry) => retry += 1,
                        // Only the dry-pool run can run out of table pages.
                        Err(Error::NoMemory) => no_memory += 1,
                        Err(e) => panic!("map {ipa:#x} {size:?}: {e:?}"),
                    }
                }
                // What we just touched, and some other page, must be consistent.
                check_translation(page, g.translate(page));
                let other = REGION + rng.below(PAGES) * PAGE + rng.below(PAGE);
                check_translation(other, g.translate(other));
                translations += 2;
            }
        }
        done += BATCH;
        s2.reclaim(cpu);
    }
    Counts::add(&counts.ops, done);
    Counts::add(&counts.installed, installed);
    Counts::add(&counts.replaced, replaced);
    Counts::add(&counts.spurious, spurious);
    Counts::add(&counts.retry, retry);
    Counts::add(&counts.relax_ok, relax_ok);
    Counts::add(&counts.relax_retry, relax_retry);
    Counts::add(&counts.translations, translations);
    Counts::add(&counts.no_memory, no_memory);
}

/// A random range over the region: a few pages, a span, or all of it; sometimes unaligned.
fn random_range(rng: &mut Rng) -> (u64, u64) {
    let start = REGION + rng.below(PAGES) * PAGE + if rng.chance(4) { rng.below(PAGE) } else { 0 };
    let len = match rng.below(4) {
        0 => rng.below(16) + 1,
        1 => rng.below(PAGES) + 1,
        2 => 512,
        _ => PAGES,
    } * PAGE;
    (start, (start + len).min(REGION_END))
}

fn pruner(s2: &S2, cpu: usize, seed: u64, stop: &AtomicBool, counts: &Counts) {
    let mut rng = Rng(seed);
    let mut ops = 0;
    let (mut collapses, mut collapse_retry, mut unmaps, mut wps, mut checks) = (0, 0, 0, 0, 0);
    let mut tlbi_ipa_checked = 0;
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        i += 1;
        {
            let g = s2.shared(cpu);
            let perms = if rng.chance(4) { Perms::RX } else { Perms::RWX };
            // Mostly 2 MiB spans of the region; rarely the whole 1 GiB on either side.
            let (ipa, size) = if rng.chance(64) {
                (rng.below(2) * GB, Size::Block1G)
            } else {
                (REGION + rng.below(BLOCKS) * MB2, Size::Block2M)
            };
            match g.collapse(ipa, expected_pa(ipa), size, Attrs::normal(perms)) {
                Ok(_) => collapses += 1,
                Err(Error::Retry) => collapse_retry += 1,
                Err(Error::NoMemory) => collapse_retry += 1,
                Err(e) => panic!("collapse {ipa:#x} {size:?}: {e:?}"),
            }
            ops += 1;
        }
        if i.is_multiple_of(4) {
            let g = s2.exclusive(cpu);
            let (start, end) = random_range(&mut rng);
            if rng.chance(2) {
                g.unmap(start, end).unwrap();
                unmaps += 1;
            } else {
                g.write_protect(start, end).unwrap();
                wps += 1;
            }
            ops += 1;
            if i.is_multiple_of(64) {
                check_all(&g);
                checks += 1;
            }
            tlbi_ipa_checked += check_tlb_log(s2).0;
        }
        s2.reclaim(cpu);
    }
    Counts::add(&counts.ops, ops);
    Counts::add(&counts.collapses, collapses);
    Counts::add(&counts.collapse_retry, collapse_retry);
    Counts::add(&counts.unmaps, unmaps);
    Counts::add(&counts.write_protects, wps);
    Counts::add(&counts.full_checks, checks);
    Counts::add(&counts.tlbi_ipa_checked, tlbi_ipa_checked);
}

/// One run with `threads` mappers and one pruner over a pool of `pool_pages` pages; returns the
/// operations done.
fn run(threads: usize, ops: u64, seed: u64, pool_pages: usize) -> u64 {
    let cpus = threads + 1;
    let dry = pool_pages < 64;
    let pool = Arc::new(CountingPool::new(pool_pages));
    let tlb = Arc::new(RecordingTlb::new(pool.clone()));
    let mut cfg = Config::new(IPA_BITS, cpus);
    cfg.start_level = Some(1);
    let s2 = Stage2::new(cfg, pool.clone(), tlb.clone()).unwrap();
    tlb.attach(s2.root(), s2.geometry());
    let counts = Counts::default();
    let stop = AtomicBool::new(false);
    let per_thread = ops / threads as u64;
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        let mappers: Vec<_> = (0..threads)
            .map(|cpu| {
                let (s2, counts) = (&s2, &counts);
                sc.spawn(move || mapper(s2, cpu, per_thread, seed ^ (cpu as u64 + 1), counts))
            })
            .collect();
        let (s2r, stopr, countsr) = (&s2, &stop, &counts);
        let p = sc.spawn(move || pruner(s2r, threads, seed ^ 0xABCD, stopr, countsr));
        for m in mappers {
            m.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        p.join().unwrap();
    });
    let elapsed = t0.elapsed();

    // Quiescence: the region is consistent, the counts are right.
    let (mapped, tables) = check_all(&s2.exclusive(0));
    Counts::add(&counts.tlbi_ipa_checked, check_tlb_log(&s2).0);
    s2.barrier(0);
    for cpu in 0..cpus {
        assert_eq!(
            s2.deferred(cpu),
            0,
            "barrier left pages deferred on CPU {cpu}"
        );
    }
    let root = s2.geometry().root_pages() as u64;
    assert_eq!(
        pool.in_use() as u64,
        root + tables,
        "pool pages = root + live tables after the barrier"
    );
    // Unmapping everything leaves no table and no translation behind.
    {
        let g = s2.exclusive(0);
        g.unmap(0, 1 << IPA_BITS).unwrap();
        let (left, tables) = check_all(&g);
        assert_eq!((left, tables), (0, 0), "unmap of everything left something");
    }
    s2.barrier(0);
    assert_eq!(pool.in_use() as u64, root, "only the root is left");

    let total = Counts::get(&counts.ops);
    println!(
        "stress: {threads} mappers + 1 pruner: {total} ops in {elapsed:.2?} ({:.2} Mops/s); \
         {mapped} pages mapped and {tables} tables at the end",
        total as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!("  counts: {counts:?}");
    let stats = s2.stats();
    let fields: Vec<String> = stats.fields().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  stats: {}", fields.join(" "));
    println!("  broadcast TLBIs recorded: {}", tlb.broadcasts());

    assert_eq!(
        Counts::get(&counts.tlbi_ipa_checked),
        stats.tlbi_ipa,
        "every by-IPA invalidation was checked"
    );
    let st = s2.destroy(0).unwrap();
    assert_eq!(pool.in_use(), 0, "pages leaked");
    assert_eq!(pool.allocs(), pool.frees());
    assert_eq!(st.tables_alloc, pool.allocs());
    assert_eq!(st.tables_freed, pool.frees());
    // The run must have exercised the races, not just the easy paths.
    assert!(Counts::get(&counts.installed) > 0 && Counts::get(&counts.replaced) > 0);
    assert!(Counts::get(&counts.collapses) > 0 && Counts::get(&counts.unmaps) > 0);
    assert!(st.prunes > 0 && st.splits > 0 && st.grace_periods > 0);
    if dry {
        assert!(
            Counts::get(&counts.no_memory) > 0,
            "the dry pool never ran dry"
        );
    } else {
        assert_eq!(st.no_memory, 0, "the pool is large enough");
    }
    total
}

fn total_ops() -> u64 {
    std::env::var("STAGE2_STRESS_OPS")
        .ok()
        .map(|s| {
            s.replace('_', "")
                .parse()
                .expect("STAGE2_STRESS_OPS: a number")
        })
        .unwrap_or(CI_OPS)
}

fn seed() -> u64 {
    std::env::var("STAGE2_STRESS_SEED").ok().map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_nanos() as u64
        },
        |s| s.parse().expect("STAGE2_STRESS_SEED: a number"),
    )
}

/// 2, 3 and 4 mapper threads in turn (one test, so the runs do not compete for the host's CPUs).
#[test]
fn mappers_vs_pruner() {
    let target = total_ops();
    let seed = seed();
    println!("stress: seed {seed} (STAGE2_STRESS_SEED), target {target} ops (STAGE2_STRESS_OPS)");
    let t0 = Instant::now();
    let mut total = 0;
    for threads in 2..=4 {
        total += run(threads, target / 3, seed.wrapping_add(threads as u64), 4096);
    }
    println!("stress: {total} operations in {:.2?}", t0.elapsed());
    assert!(total >= target, "{total} < {target}");
}

/// A pool too small for the region (and for the pages waiting out grace periods): maps fail with
/// `NoMemory` all the time, possibly after installing a table further up, and nothing may be left
/// half-done — no LOCKED entry, no wrong count, no leaked page.
#[test]
fn mappers_vs_pruner_dry_pool() {
    let seed = seed();
    println!("stress (dry pool): seed {seed}");
    let ops = run(3, 150_000, seed, 10);
    assert!(ops >= 150_000);
}

// ---------------------------------------------------------------------------------------------
// Every shared range operation at once (issue 11): faults and dirty-log write faults, shared
// unmap, write-protect, get-and-clear, aging, eager split and prunes, over overlapping ranges,
// with a lost-write check at the end.

/// What the shared-range stress run counted.
#[derive(Default, Debug)]
struct RangeCounts {
    writes: AtomicU64,
    reads: AtomicU64,
    maps: AtomicU64,
    dirty_faults: AtomicU64,
    retries: AtomicU64,
    unmapped_leaves: AtomicU64,
    protected_leaves: AtomicU64,
    harvests: AtomicU64,
    harvested_pages: AtomicU64,
    young: AtomicU64,
    collapses: AtomicU64,
    splits: AtomicU64,
}

/// Per-page record of the run, stamped with one global clock: the last write a guest made
/// through a writable translation, and the last get-and-clear that reported the page (stamped
/// after it returned, i.e. after its invalidation).
struct WriteLog {
    clock: AtomicU64,
    last_write: Vec<AtomicU64>,
    reported: Vec<AtomicU64>,
}

impl WriteLog {
    fn new() -> WriteLog {
        WriteLog {
            clock: AtomicU64::new(1),
            last_write: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
            reported: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

/// A vCPU with dirty logging on: reads and writes random pages through the modelled hardware
/// walker (`hw_access`, HA on, HD off), and handles its faults as the hypervisor does: a
/// translation fault maps the page (or now and then its 2 MiB block) read-only, a permission
/// fault on a write is a dirty-log write fault (relax, then mark). A write is stamped *before*
/// the access that finds the translation writable, so a get-and-clear whose protection came
/// after the access is stamped later than the write.
fn logging_vcpu(
    s2: &S2,
    cpu: usize,
    ops: u64,
    seed: u64,
    log: &DirtyBitmap,
    wl: &WriteLog,
    counts: &RangeCounts,
) {
    let mut rng = Rng(seed);
    let (mut writes, mut reads, mut maps, mut dirty_faults, mut retries) = (0, 0, 0, 0, 0);
    let mut done = 0;
    while done < ops {
        {
            let g = s2.shared(cpu);
            for _ in 0..BATCH {
                let p = rng.below(PAGES);
                let ipa = REGION + p * PAGE;
                let write = !rng.chance(4);
                let stamp = wl.tick();
                match g.hw_access(ipa + rng.below(PAGE), write, true, false) {
                    HwAccess::Done { pa, .. } => {
                        assert_eq!(pa & !(PAGE - 1), expected_pa(ipa), "IPA {ipa:#x}");
                        if write {
                            wl.last_write[p as usize].fetch_max(stamp, Ordering::SeqCst);
                            writes += 1;
                        } else {
                            reads += 1;
                        }
                    }
                    HwAccess::Translation => {
                        // Logging is on: map read-only; the write faults again and is logged.
                        let (ipa, size) = if rng.chance(16) {
                            (ipa & !(MB2 - 1), Size::Block2M)
                        } else {
                            (ipa, Size::Page4K)
                        };
                        match g.map(ipa, expected_pa(ipa), size, Attrs::normal(Perms::RX)) {
                            Ok(_) => maps += 1,
                            Err(Error::Retry) => retries += 1,
                            Err(e) => panic!("map {ipa:#x} {size:?}: {e:?}"),
                        }
                    }
                    HwAccess::Permission => match g.dirty_write_fault(ipa, log) {
                        Ok(_) => dirty_faults += 1,
                        Err(Error::Retry) => retries += 1,
                        Err(e) => panic!("dirty write fault {ipa:#x}: {e:?}"),
                    },
                    HwAccess::AccessFlag => panic!("AccessFlag fault with HA on"),
                }
            }
        }
        done += BATCH;
        s2.reclaim(cpu);
    }
    Counts::add(&counts.writes, writes);
    Counts::add(&counts.reads, reads);
    Counts::add(&counts.maps, maps);
    Counts::add(&counts.dirty_faults, dirty_faults);
    Counts::add(&counts.retries, retries);
}

/// Get-and-clear of `[start, end)`, then stamp every reported page.
fn harvest<P: PagePool, T: Tlb>(
    g: &Guard<'_, P, T>,
    log: &DirtyBitmap,
    wl: &WriteLog,
    start: u64,
    end: u64,
) -> u64 {
    let mut pages = Vec::new();
    let h = g.dirty_log_clear(log, start, end, |word, bits| {
        let mut b = bits;
        while b != 0 {
            pages.push(word as u64 * 64 + u64::from(b.trailing_zeros()));
            b &= b - 1;
        }
    });
    assert_eq!(h.pages, pages.len() as u64);
    let stamp = wl.tick();
    for p in pages {
        wl.reported[p as usize].fetch_max(stamp, Ordering::SeqCst);
    }
    h.pages
}

/// A CPU running range operations in shared mode until `stop`: `kind` 0 does unmaps, prunes
/// (read-only 2 MiB collapses: logging is on, so no block may come back writable) and eager
/// splits; `kind` 1 does get-and-clear, write-protect and aging. Both use random overlapping
/// ranges.
#[allow(clippy::too_many_arguments)]
fn range_cpu(
    s2: &S2,
    cpu: usize,
    kind: u64,
    seed: u64,
    stop: &AtomicBool,
    log: &DirtyBitmap,
    wl: &WriteLog,
    counts: &RangeCounts,
) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Acquire) {
        {
            let g = s2.shared(cpu);
            let (start, end) = random_range(&mut rng);
            match (kind, rng.below(3)) {
                (0, 0) => {
                    let d = g.unmap(start, end).unwrap();
                    Counts::add(&counts.unmapped_leaves, d.leaves);
                }
                (0, 1) => {
                    let ipa = REGION + rng.below(BLOCKS) * MB2;
                    let ro = Attrs::normal(Perms::RX);
                    match g.collapse(ipa, expected_pa(ipa), Size::Block2M, ro) {
                        Ok(_) => Counts::add(&counts.collapses, 1),
                        Err(Error::Retry) => Counts::add(&counts.retries, 1),
                        Err(e) => panic!("collapse {ipa:#x}: {e:?}"),
                    }
                }
                (0, _) => Counts::add(&counts.splits, g.split_range(start, end).unwrap()),
                (_, 0) => {
                    let pages = harvest(&g, log, wl, start, end);
                    Counts::add(&counts.harvests, 1);
                    Counts::add(&counts.harvested_pages, pages);
                }
                (_, 1) => {
                    let d = g.write_protect(start, end).unwrap();
                    Counts::add(&counts.protected_leaves, d.leaves);
                }
                (_, _) => {
                    let a = if rng.chance(2) {
                        g.test_clear_young(start, end)
                    } else {
                        g.clear_flush_young(start, end)
                    };
                    // young_pages counts the 4 KiB pages the range touches in each young leaf.
                    let touched = end.div_ceil(PAGE) - start / PAGE;
                    assert!(a.young <= a.leaves && a.young_pages <= touched, "{a:?}");
                    Counts::add(&counts.young, a.young);
                }
            }
        }
        s2.reclaim(cpu);
    }
}

/// Two logging vCPUs and two CPUs running every shared range operation over the same 8 MiB
/// (dirty logging on for all of it), no exclusive section anywhere. At the end, after one
/// quiescent get-and-clear: no write was lost (every page's last write is older than the last
/// get-and-clear that reported it), no leaf is writable any more (a writable leaf would take
/// writes no log sees), every translation is `RAM + ipa`, every count is exact, and after a
/// shared unmap of everything and a barrier the pool holds only the root; `destroy()` returns
/// every page.
#[test]
fn shared_range_ops_vs_logging_vcpus() {
    let seed = seed();
    // Five times the CI total: these accesses are cheap (no table change on most of them).
    let ops = total_ops() * 5;
    println!("stress (shared range ops): seed {seed}, {ops} vCPU accesses");
    let (vcpus, cpus) = (2, 4);
    let pool = Arc::new(CountingPool::new(4096));
    let tlb = Arc::new(RecordingTlb::counting(pool.clone()));
    let mut cfg = Config::new(IPA_BITS, cpus);
    cfg.start_level = Some(1);
    let s2 = Stage2::new(cfg, pool.clone(), tlb.clone()).unwrap();
    tlb.attach(s2.root(), s2.geometry());
    let log = DirtyBitmap::new(REGION, PAGES);
    let wl = WriteLog::new();
    let counts = RangeCounts::default();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        let (s2, log, wl, counts, stop) = (&s2, &log, &wl, &counts, &stop);
        let workers: Vec<_> = (0..vcpus)
            .map(|cpu| {
                let seed = seed ^ (cpu as u64 + 1);
                sc.spawn(move || logging_vcpu(s2, cpu, ops / vcpus as u64, seed, log, wl, counts))
            })
            .collect();
        let ranges: Vec<_> = (0..2u64)
            .map(|kind| {
                let (cpu, seed) = (vcpus + kind as usize, seed ^ (0xABCD + kind));
                sc.spawn(move || range_cpu(s2, cpu, kind, seed, stop, log, wl, counts))
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        for r in ranges {
            r.join().unwrap();
        }
    });
    let elapsed = t0.elapsed();

    // Quiescent epilogue: CPU 0 writes every page once more (faulting as needed), so every
    // page is writable and logged when the last get-and-clear runs, whatever the range CPUs did
    // last.
    {
        let g = s2.shared(0);
        for p in 0..PAGES {
            let ipa = REGION + p * PAGE;
            loop {
                let stamp = wl.tick();
                match g.hw_access(ipa, true, true, false) {
                    HwAccess::Done { .. } => {
                        wl.last_write[p as usize].fetch_max(stamp, Ordering::SeqCst);
                        break;
                    }
                    HwAccess::Translation => {
                        g.map(
                            ipa,
                            expected_pa(ipa),
                            Size::Page4K,
                            Attrs::normal(Perms::RX),
                        )
                        .unwrap();
                    }
                    _ => {
                        g.dirty_write_fault(ipa, &log).unwrap();
                    }
                }
            }
        }
    }
    // One last get-and-clear, then every write must have been reported after it.
    let last = harvest(&s2.shared(0), &log, &wl, REGION, REGION_END);
    assert_eq!(
        last, PAGES,
        "the last get-and-clear reports every page the epilogue wrote"
    );
    for p in 0..PAGES as usize {
        let (w, r) = (
            wl.last_write[p].load(Ordering::SeqCst),
            wl.reported[p].load(Ordering::SeqCst),
        );
        assert!(
            w < r || w == 0,
            "lost write: page {:#x} written at {w}, last reported at {r}",
            REGION + p as u64 * PAGE
        );
    }
    assert_eq!(log.count(), 0);
    {
        let g = s2.exclusive(0);
        check_all(&g);
        for p in 0..PAGES {
            let ipa = REGION + p * PAGE;
            if let Some(t) = g.translate(ipa) {
                assert!(
                    !t.attrs.perms.write,
                    "IPA {ipa:#x} writable after the last get-and-clear"
                );
            }
        }
    }
    s2.barrier(0);
    for cpu in 0..cpus {
        assert_eq!(
            s2.deferred(cpu),
            0,
            "barrier left pages deferred on CPU {cpu}"
        );
    }
    // Teardown accounting: a shared unmap of everything leaves no table; the pool is back to the
    // root alone.
    let done = s2.shared(0).unmap(0, 1 << IPA_BITS).unwrap();
    s2.barrier(0);
    let root = s2.geometry().root_pages();
    assert_eq!(pool.in_use(), root, "only the root is left: {done:?}");
    assert_eq!(check_all(&s2.exclusive(0)), (0, 0));

    println!(
        "stress (shared range ops): {ops} accesses in {elapsed:.2?}; last harvest {last} pages"
    );
    println!("  counts: {counts:?}");
    let stats = s2.stats();
    let fields: Vec<String> = stats.fields().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  stats: {}", fields.join(" "));
    let st = s2.destroy(0).unwrap();
    assert_eq!(pool.in_use(), 0, "pages leaked");
    assert_eq!(pool.allocs(), pool.frees());
    assert_eq!(st.tables_alloc, pool.allocs());
    // The run must have exercised every operation, not just the easy paths.
    let c = &counts;
    for (what, n) in [
        ("writes", &c.writes),
        ("dirty-log write faults", &c.dirty_faults),
        ("unmapped leaves", &c.unmapped_leaves),
        ("write-protected leaves", &c.protected_leaves),
        ("harvested pages", &c.harvested_pages),
        ("young leaves", &c.young),
        ("collapses", &c.collapses),
        ("eager splits", &c.splits),
    ] {
        assert!(Counts::get(n) > 0, "no {what} in the run");
    }
    assert!(st.prunes > 0 && st.splits > 0 && st.grace_periods > 0);
}
