//! Hardware walkers with their own TLBs and walk caches, run against the real stage-2 table.
//!
//! Every simulated CPU is a host thread, but only one runs at a time: a deterministic scheduler
//! driven by a seeded RNG hands the CPU over at every descriptor access (the page pool's
//! `table()`), at every step of a modelled hardware walk, and in every busy-wait loop of the
//! crate (`testing::set_spin_hook`). A seed therefore replays exactly.
//!
//! Each CPU runs a script of guest accesses (most steps) and of every data-path operation the
//! crate offers: the fault handlers (`map`, `relax_perms`, `dirty_write_fault`), `map` of a 2 MiB
//! block (break-before-make, lazy split, prune), `collapse_contiguous`, `eager_split`, shared
//! `unmap` and `write_protect`, dirty logging (enable, get-and-clear, disable), hardware dirty
//! state (enable, harvest, disable), aging (`test_age`, `test_clear_young`, `clear_flush_young`,
//! `mark_young`), with `reclaim` after each operation (the trap exit). At the end `barrier` and
//! `destroy` run on the main thread.
//!
//! The modelled hardware (the most permissive the Arm ARM allows, so that every invalidation the
//! code relies on is really needed):
//! - a guest access looks up the CPU's TLB (leaf entries, any level), else walks the descriptor
//!   memory, starting from the deepest walk-cache entry (cached table descriptors) that covers
//!   the IPA, and caches every table descriptor it reads and the leaf it ends on — also a leaf
//!   that causes a permission fault (only Translation and Access flag faults are never cached).
//!   With VTCR_EL2.HA/HD it sets AF and S2AP[1] (DBM) by compare-exchange on the descriptor, so
//!   a write through a cached writable-clean entry walks again; a write through a cached dirty
//!   (S2AP[1] = 1) entry does not look at memory at all;
//! - entries stay cached until an invalidation whose scope covers them reaches the CPU: every
//!   `Tlb` call is delivered to every CPU (its `DSB` completes it) before it returns:
//!   `invalidate_ipa(ipa, level)` = `TLBI IPAS2E1IS` with a level hint: only leaf entries *at
//!   that level* holding `ipa`, no walk-cache entries; `invalidate_leaves` = `TLBI RIPAS2LE1IS`:
//!   leaf entries overlapping the range, no walk-cache entries; `invalidate_range` = `TLBI
//!   RIPAS2E1IS` without a level hint: leaf and walk-cache entries whose span overlaps the range;
//!   `invalidate_vmid` = `TLBI VMALLS12E1IS`: everything; `invalidate_ipa_local` = `TLBI
//!   IPAS2E1` on the calling CPU only. A walk in flight whose path an invalidation covers is
//!   restarted (completion of a TLBI waits for walks that use what it invalidates);
//! - hardware walkers take no RCU read lock: nothing but the invalidation before a table is
//!   retired keeps them out of freed pages.
//!
//! Invariants, checked as the run goes (the first violation ends the run):
//! - (a) **no stale translation**: a translation a CPU uses (from its TLB or from a walk) maps
//!   the IPA to the output the table maps it to now, with write permission only if the table's
//!   leaf has S2AP[1] now — unless an operation whose footprint (its range rounded out to 2 MiB)
//!   covers the entry is still running: its invalidation may be pending. When an operation
//!   returns, every CPU's TLB is scanned the same way ("has returned" = the call returned to its
//!   caller; it guarantees that no CPU can use a translation the table no longer allows, except
//!   through entries other running operations are responsible for). Every range operation
//!   (unmap, write-protect, dirty-log enable/clear, the hardware harvest) promises more: no
//!   entry cached before it started and overlapping its range survives its return, whatever
//!   else runs (an earlier version of write-protect and the harvest broke this: they skipped
//!   leaves another CPU had protected, locked or zapped without covering them, seeds 0 and 3);
//! - (b) **no table page freed under a walker**: when a table page goes back to the pool (RCU
//!   reclaim, `destroy`), no CPU's walk cache holds a descriptor pointing at it and no walk in
//!   flight is inside it; a walk that reads a page that is not a live table page fails too;
//! - (c) **a handled permission fault does not come back from the TLB**: when `relax_perms` or
//!   `dirty_write_fault` returns `Ok` on a CPU, that CPU's TLB holds no entry for the IPA that
//!   would fault the retried write while the table allows it (KVM's permission-fault livelock:
//!   a TLB may cache the entry that caused the fault);
//! - and the run ends: no CPU spins for ever, no assertion of the crate fires.
//!
//! Not modelled: speculative walks (the model walks only for accesses; speculation could only
//! add cached entries at times an access could also have made them), TLB conflict aborts from
//! overlapping entries (a break-before-make violation that leaves both entries consistent is
//! invisible here), stage 1 and combined stage-1+2 entries, memory ordering (every descriptor
//! store is visible at once, so `publish`, the `DSB ISHST`, is a no-op here), and eviction (a
//! TLB keeps everything up to `TLB_CAP` entries, the most permissive choice).
//!
//! `every_invalidation_is_required` removes each `Tlb` call site of `stage2/src` in turn (the
//! trait is `#[track_caller]` with feature `testing`, so the model sees the caller's file and
//! line) and asserts the model notices. See `docs/testing.md`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::panic::{self, AssertUnwindSafe, Location};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use stage2::desc::{level_shift, level_size, Pte, ENTRIES, PAGE_SIZE};
use stage2::testing::{set_spin_hook, CountingPool, Rng};
use stage2::{
    Attrs, Config, DirtyBitmap, DirtyFault, Geometry, PageMeta, PagePool, Perms, Size, Stage2,
    Table, Tlb,
};

const IPA_BITS: u32 = 32;
const MB2: u64 = 2 << 20;
const GB: u64 = 1 << 30;
/// Two regions side by side in the first GiB (one level-2 table), one alone in the second GiB
/// (its level-2 table is unlinked when the region empties, invalidated by its 1 GiB span).
const REGIONS: [u64; 3] = [0, MB2, GB];
/// The pages of a region that guest accesses touch (indices), dense at the start so that tables
/// fill, spread to reach other parts of a block.
const HOT: [u64; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 64, 255, 256, 511];
/// Output of `ipa` in the two layouts a region can be mapped with (remaps are BBMs).
const RAM: [u64; 2] = [0x1_0000_0000, 0x2_0000_0000];
const CPUS: usize = 3;
/// Script steps per CPU per run.
const STEPS: usize = 400;
/// Percent of scheduling points that switch CPU.
const SWITCH_PCT: u64 = 25;
/// Scheduling points after which a run counts as hung.
const YIELD_LIMIT: u64 = 3_000_000;
/// Entries a TLB or walk cache keeps before it evicts its oldest.
const TLB_CAP: usize = 512;

fn pa_of(ipa: u64, layout: usize) -> u64 {
    RAM[layout] + ipa
}

/// Which invariant a run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Inv {
    /// (a) a stale translation was used or left usable after an operation returned.
    Stale,
    /// (b) a table page was freed while a walk cache or a walk pointed into it.
    Freed,
    /// (c) a handled permission fault would recur from the CPU's own TLB.
    Livelock,
    /// The run did not end (a CPU spun for ever).
    Hang,
    /// The crate panicked.
    Panic,
}

/// A `Tlb` call site: file name (in `stage2/src`) and line.
type Site = (String, u32);

fn site_of(loc: &Location<'_>) -> Site {
    let file = Path::new(loc.file())
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    (file, loc.line())
}

/// A cached leaf: the descriptor at `level` that maps `[base, base + level_size(level))`.
#[derive(Clone, Copy, Debug)]
struct Leaf {
    base: u64,
    level: u8,
    pte: Pte,
    /// When it was cached (`HwState::clock`).
    filled: u64,
}

/// A cached table descriptor at `level` (span `[base, base + level_size(level))`) pointing at
/// the table page `table`.
#[derive(Clone, Copy, Debug)]
struct WalkEntry {
    base: u64,
    level: u8,
    table: u64,
}

/// A hardware walk in flight: it holds the table page it is about to read, reached through a
/// descriptor with span `[base, base + size)`.
#[derive(Clone, Copy, Debug)]
struct InWalk {
    base: u64,
    size: u64,
    table: u64,
    killed: bool,
}

#[derive(Default)]
struct CpuHw {
    tlb: Vec<Leaf>,
    wc: Vec<WalkEntry>,
    walk: Option<InWalk>,
}

/// What an invalidation covers.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// Leaf entries at `level` holding `ipa` (a level hint), no walk-cache entries.
    LeafAt { ipa: u64, level: u8 },
    /// Leaf entries overlapping `[lo, hi)`, no walk-cache entries.
    Leaves { lo: u64, hi: u64 },
    /// Leaf and walk-cache entries overlapping `[lo, hi)`.
    All { lo: u64, hi: u64 },
    /// Everything.
    Vmid,
}

fn overlaps(base: u64, size: u64, lo: u64, hi: u64) -> bool {
    base < hi && lo < base + size
}

impl CpuHw {
    fn invalidate(&mut self, scope: Scope) {
        match scope {
            Scope::LeafAt { ipa, level } => self.tlb.retain(|e| {
                !(e.level == level && overlaps(e.base, level_size(e.level), ipa, ipa + 1))
            }),
            Scope::Leaves { lo, hi } => self
                .tlb
                .retain(|e| !overlaps(e.base, level_size(e.level), lo, hi)),
            Scope::All { lo, hi } => {
                self.tlb
                    .retain(|e| !overlaps(e.base, level_size(e.level), lo, hi));
                self.wc
                    .retain(|e| !overlaps(e.base, level_size(e.level), lo, hi));
                if let Some(w) = &mut self.walk {
                    if overlaps(w.base, w.size, lo, hi) {
                        w.killed = true;
                    }
                }
            }
            Scope::Vmid => {
                self.tlb.clear();
                self.wc.clear();
                if let Some(w) = &mut self.walk {
                    w.killed = true;
                }
            }
        }
    }
}

/// The model's view of the machine: the CPUs' caches, the operations running, the live pages.
struct HwState {
    cpus: Vec<CpuHw>,
    /// The footprint of the operation each CPU is running.
    inflight: Vec<Option<(u64, u64)>>,
    /// Table and root pages handed out and not freed.
    live: HashSet<u64>,
    /// The call site whose invalidations are dropped (the mutation).
    drop_site: Option<Site>,
    /// Every call site seen (dropped or not).
    hits: BTreeSet<Site>,
    violation: Option<(Inv, String)>,
    root: u64,
    geom: Option<Geometry>,
    /// Per region: 0 no dirty logging, 1 software, 2 hardware (DBM).
    logging: [u8; 3],
    /// Per region: which output layout faults map.
    layout: [usize; 3],
    /// What the run did, by event (for the report and the coverage assertions).
    counts: BTreeMap<&'static str, u64>,
    /// Logical time: ticks at every TLB fill and every operation start.
    clock: u64,
    /// With `WALKERS_TRACE`: (clock, span, event) for every operation, invalidation and fill,
    /// printed (the events overlapping the IPA) with a violation.
    trace: Option<Vec<(u64, u64, u64, String)>>,
}

impl HwState {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn note(&mut self, lo: u64, hi: u64, what: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push((self.clock, lo, hi, what()));
        }
    }

    /// The traced events overlapping `ipa`.
    fn history(&self, ipa: u64) -> String {
        self.trace.as_ref().map_or_else(String::new, |t| {
            t.iter()
                .filter(|(_, lo, hi, _)| overlaps(ipa, 1, *lo, *hi))
                .map(|(c, _, _, e)| format!("\n  {c:#x}: {e}"))
                .collect()
        })
    }
}

struct Sched {
    current: usize,
    live: Vec<bool>,
    rng: Rng,
    yields: u64,
    aborted: bool,
}

/// The payload a CPU thread unwinds with when the run is aborted.
struct Abort;

/// Which invariants a run checks, and how the model's hardware behaves.
#[derive(Clone, Copy, Debug)]
struct Mode {
    stale: bool,
    freed: bool,
    livelock: bool,
    /// Model check: `invalidate_range` drops leaf entries only, as `TLBI RIPAS2LE1IS` would.
    range_leaves_only: bool,
}

impl Mode {
    const ALL: Mode = Mode {
        stale: true,
        freed: true,
        livelock: true,
        range_leaves_only: false,
    };

    fn only(inv: Inv) -> Mode {
        Mode {
            stale: inv == Inv::Stale,
            freed: inv == Inv::Freed,
            livelock: inv == Inv::Livelock,
            range_leaves_only: false,
        }
    }

    fn checks(self, inv: Inv) -> bool {
        match inv {
            Inv::Stale => self.stale,
            Inv::Freed => self.freed,
            Inv::Livelock => self.livelock,
            Inv::Hang | Inv::Panic => true,
        }
    }
}

struct Hw {
    mode: Mode,
    st: Mutex<HwState>,
    sched: Mutex<Sched>,
    cv: Condvar,
    mem: CountingPool,
}

std::thread_local! {
    static CTX: RefCell<Option<(Arc<Hw>, usize)>> = const { RefCell::new(None) };
}

fn ctx() -> Option<(Arc<Hw>, usize)> {
    CTX.with(|c| c.borrow().clone())
}

/// A scheduling point of the current CPU thread (none on the main thread).
fn yield_point(forced: bool) {
    if let Some((hw, me)) = ctx() {
        hw.yield_now(me, forced);
    }
}

fn spin() {
    yield_point(true);
}

impl Hw {
    fn new(seed: u64, drop_site: Option<Site>, mode: Mode) -> Hw {
        Hw {
            mode,
            st: Mutex::new(HwState {
                cpus: (0..CPUS).map(|_| CpuHw::default()).collect(),
                inflight: vec![None; CPUS],
                live: HashSet::new(),
                drop_site,
                hits: BTreeSet::new(),
                violation: None,
                root: 0,
                geom: None,
                logging: [0; 3],
                layout: [0; 3],
                counts: BTreeMap::new(),
                clock: 0,
                trace: std::env::var_os("WALKERS_TRACE").map(|_| Vec::new()),
            }),
            sched: Mutex::new(Sched {
                current: 0,
                live: vec![true; CPUS],
                rng: Rng(seed ^ 0x005E_ED0F_5C4E_D01E),
                yields: 0,
                aborted: false,
            }),
            cv: Condvar::new(),
            mem: CountingPool::new(4096),
        }
    }

    /// Record the first violation and stop every CPU at its next scheduling point.
    fn violate(&self, st: &mut HwState, inv: Inv, what: String) {
        if !self.mode.checks(inv) {
            return;
        }
        if st.violation.is_none() {
            st.violation = Some((inv, what));
        }
        self.sched.lock().unwrap().aborted = true;
        self.cv.notify_all();
    }

    fn yield_now(&self, me: usize, forced: bool) {
        let mut s = self.sched.lock().unwrap();
        if s.aborted {
            drop(s);
            panic::resume_unwind(Box::new(Abort));
        }
        s.yields += 1;
        let hung = s.yields > YIELD_LIMIT;
        let others: Vec<usize> = (0..CPUS).filter(|&c| s.live[c] && c != me).collect();
        if hung || (forced && others.is_empty()) {
            drop(s);
            let mut st = self.st.lock().unwrap();
            self.violate(
                &mut st,
                Inv::Hang,
                format!("CPU {me} waits for ever (forced={forced})"),
            );
            drop(st);
            panic::resume_unwind(Box::new(Abort));
        }
        if others.is_empty() || !(forced || s.rng.pct(SWITCH_PCT)) {
            return;
        }
        let next = others[s.rng.below(others.len() as u64) as usize];
        s.current = next;
        self.cv.notify_all();
        while s.current != me && !s.aborted {
            s = self.cv.wait(s).unwrap();
        }
        if s.aborted {
            drop(s);
            panic::resume_unwind(Box::new(Abort));
        }
    }

    fn start(&self, me: usize) -> bool {
        let mut s = self.sched.lock().unwrap();
        while s.current != me && !s.aborted {
            s = self.cv.wait(s).unwrap();
        }
        !s.aborted
    }

    fn finish(&self, me: usize) {
        let mut s = self.sched.lock().unwrap();
        s.live[me] = false;
        let live: Vec<usize> = (0..CPUS).filter(|&c| s.live[c]).collect();
        if !live.is_empty() {
            s.current = live[s.rng.below(live.len() as u64) as usize];
        }
        self.cv.notify_all();
    }

    fn aborted(&self) -> bool {
        self.sched.lock().unwrap().aborted
    }

    /// Deliver an invalidation from call site `loc` to `cpus` (all, or the caller only).
    fn invalidate(&self, loc: &Location<'_>, scope: Scope, local: bool) {
        let site = site_of(loc);
        let mut st = self.st.lock().unwrap();
        st.hits.insert(site.clone());
        let (lo, hi) = match scope {
            Scope::LeafAt { ipa, .. } => (ipa, ipa + 1),
            Scope::Leaves { lo, hi } | Scope::All { lo, hi } => (lo, hi),
            Scope::Vmid => (0, u64::MAX),
        };
        let me = ctx().map_or(0, |(_, me)| me);
        st.note(lo, hi, || format!("CPU {me} {scope:x?} from {site:?}"));
        if st.drop_site.as_ref() == Some(&site) {
            return;
        }
        let before: usize = st.cpus.iter().map(|c| c.tlb.len() + c.wc.len()).sum();
        if local {
            let me = ctx().map_or(0, |(_, me)| me);
            st.cpus[me].invalidate(scope);
        } else {
            for c in &mut st.cpus {
                c.invalidate(scope);
            }
        }
        let after: usize = st.cpus.iter().map(|c| c.tlb.len() + c.wc.len()).sum();
        if after < before {
            st.count("TLBI that dropped cached entries");
        }
    }
}

/// The descriptor at `level` for `ipa` in `table` (the root may be several concatenated pages).
fn slot(st: &HwState, table: u64, level: u8, ipa: u64) -> (u64, usize) {
    let geom = st.geom.unwrap();
    let shift = level_shift(level);
    if level == geom.start_level() {
        let idx = ((ipa >> shift) as usize) & (geom.root_entries() - 1);
        (table + (idx / ENTRIES) as u64 * PAGE_SIZE, idx % ENTRIES)
    } else {
        (table, ((ipa >> shift) as usize) & (ENTRIES - 1))
    }
}

impl HwState {
    /// What the table maps `ipa` to now: the leaf and its level, `None` if nothing valid does.
    fn current(&self, mem: &CountingPool, ipa: u64) -> Option<(Pte, u8)> {
        let mut level = self.geom.unwrap().start_level();
        let mut table = self.root;
        loop {
            let (page, i) = slot(self, table, level, ipa);
            if !self.live.contains(&page) {
                return None;
            }
            let e = Pte(mem.table(page)[i].load(std::sync::atomic::Ordering::SeqCst));
            if e.is_table(level) {
                table = e.addr();
                level += 1;
            } else if e.is_leaf(level) {
                return Some((e, level));
            } else {
                return None;
            }
        }
    }

    /// Whether the table still allows a use of `leaf` for `ipa` (a write if `write`).
    fn allows(&self, mem: &CountingPool, leaf: &Leaf, ipa: u64, write: bool) -> bool {
        let pa = leaf.pte.addr() + (ipa & (level_size(leaf.level) - 1));
        self.current(mem, ipa).is_some_and(|(cur, l)| {
            cur.addr() + (ipa & (level_size(l) - 1)) == pa && (!write || cur.perms().write)
        })
    }

    /// Whether an operation running on a CPU other than `except` covers `[base, base + size)`.
    fn excused(&self, base: u64, size: u64, except: Option<usize>) -> bool {
        self.inflight.iter().enumerate().any(|(c, f)| {
            Some(c) != except && f.is_some_and(|(lo, hi)| overlaps(base, size, lo, hi))
        })
    }

    /// Scan every CPU's TLB for an entry the table no longer allows that no running operation
    /// (other than `except`'s) excuses. Checks the hot pages inside each entry's span.
    ///
    /// `revoked`: the operation returning on `except` revokes translations in `[lo, hi)`
    /// (unmap, write-protect, dirty-state cleaning); an entry cached before it `started` that
    /// overlaps the range is then never excused: whoever else is changing that entry, this
    /// operation's return promises that the translation it found is gone.
    fn stale_entry(
        &self,
        mem: &CountingPool,
        except: Option<usize>,
        revoked: Option<(u64, u64, u64)>,
    ) -> Option<String> {
        for (c, cpu) in self.cpus.iter().enumerate() {
            for e in &cpu.tlb {
                let size = level_size(e.level);
                let promised = revoked.is_some_and(|(started, lo, hi)| {
                    e.filled < started && overlaps(e.base, size, lo, hi)
                });
                if !promised && self.excused(e.base, size, except) {
                    continue;
                }
                for r in REGIONS {
                    for p in HOT {
                        let ipa = r + p * PAGE_SIZE;
                        if !overlaps(e.base, size, ipa, ipa + 1) {
                            continue;
                        }
                        if !self.allows(mem, e, ipa, e.pte.perms().write) {
                            return Some(format!(
                                "CPU {c} TLB keeps {e:x?} for IPA {ipa:#x}; the table now has {:x?}{}",
                                self.current(mem, ipa),
                                self.history(ipa)
                            ));
                        }
                    }
                }
            }
        }
        None
    }
}

/// The page pool of the model: the crate's counting pool, plus a scheduling point at every
/// descriptor access and the check (b) at every free.
struct ModelPool(Arc<Hw>);

impl PagePool for ModelPool {
    fn alloc_table(&self, cpu: usize) -> Option<u64> {
        let pa = self.0.mem.alloc_table(cpu)?;
        self.0.st.lock().unwrap().live.insert(pa);
        Some(pa)
    }

    fn free_table(&self, cpu: usize, pa: u64) {
        let mut st = self.0.st.lock().unwrap();
        st.live.remove(&pa);
        st.count("table page freed");
        let mut bad = None;
        for (c, hw) in st.cpus.iter().enumerate() {
            if let Some(e) = hw.wc.iter().find(|e| e.table == pa) {
                bad = Some(format!(
                    "page {pa:#x} freed while CPU {c}'s walk cache holds {e:x?}"
                ));
            } else if let Some(w) = hw.walk.filter(|w| w.table == pa && !w.killed) {
                bad = Some(format!(
                    "page {pa:#x} freed while CPU {c} walks in it ({w:x?})"
                ));
            }
        }
        if let Some(what) = bad {
            self.0.violate(&mut st, Inv::Freed, what);
        }
        drop(st);
        self.0.mem.free_table(cpu, pa);
    }

    fn alloc_root(&self, pages: usize) -> Option<u64> {
        let pa = self.0.mem.alloc_root(pages)?;
        let mut st = self.0.st.lock().unwrap();
        for i in 0..pages as u64 {
            st.live.insert(pa + i * PAGE_SIZE);
        }
        Some(pa)
    }

    fn free_root(&self, pa: u64, pages: usize) {
        let mut st = self.0.st.lock().unwrap();
        for i in 0..pages as u64 {
            st.live.remove(&(pa + i * PAGE_SIZE));
        }
        drop(st);
        self.0.mem.free_root(pa, pages);
    }

    fn table(&self, pa: u64) -> &Table {
        yield_point(false);
        self.0.mem.table(pa)
    }

    fn meta(&self, pa: u64) -> &PageMeta {
        self.0.mem.meta(pa)
    }
}

/// The TLB maintenance of the model: each call is delivered to the modelled CPUs with the scope
/// of the instruction the hypervisor issues for it, unless it comes from the dropped site.
struct ModelTlb(Arc<Hw>);

impl Tlb for ModelTlb {
    fn invalidate_ipa(&self, ipa: u64, level: u8) {
        self.0
            .invalidate(Location::caller(), Scope::LeafAt { ipa, level }, false);
    }

    fn invalidate_range(&self, ipa: u64, size: u64) {
        let (lo, hi) = (ipa, ipa + size);
        let scope = if self.0.mode.range_leaves_only {
            Scope::Leaves { lo, hi }
        } else {
            Scope::All { lo, hi }
        };
        self.0.invalidate(Location::caller(), scope, false);
    }

    fn invalidate_leaves(&self, ipa: u64, size: u64) {
        let (lo, hi) = (ipa, ipa + size);
        self.0
            .invalidate(Location::caller(), Scope::Leaves { lo, hi }, false);
    }

    fn invalidate_vmid(&self) {
        self.0.invalidate(Location::caller(), Scope::Vmid, false);
    }

    fn invalidate_ipa_local(&self, ipa: u64, level: u8) {
        self.0
            .invalidate(Location::caller(), Scope::LeafAt { ipa, level }, true);
    }

    fn publish(&self) {
        // Descriptor stores are visible at once in this model: nothing to do but count the site.
        let site = site_of(Location::caller());
        self.0.st.lock().unwrap().hits.insert(site);
    }
}

type S2 = Stage2<ModelPool, ModelTlb>;

/// How a modelled guest access ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Done,
    Translation,
    Permission,
    /// The run was aborted by a violation.
    Stopped,
}

/// One guest access by CPU `me`'s hardware: TLB, else a walk (see the module comment).
fn access(hw: &Hw, me: usize, ipa: u64, write: bool) -> Access {
    'again: loop {
        let mut level = {
            let mut st = hw.st.lock().unwrap();
            let hit = st.cpus[me]
                .tlb
                .iter()
                .position(|e| overlaps(e.base, level_size(e.level), ipa, ipa + 1));
            st.count("access");
            if let Some(i) = hit {
                st.count("tlb hit");
                let e = st.cpus[me].tlb[i];
                if !write || e.pte.perms().write {
                    return use_translation(hw, &mut st, me, &e, ipa, write);
                }
                if !e.pte.dbm() {
                    return Access::Permission; // the cached entry faults
                }
                // Writable-clean: the hardware must set S2AP[1] in the descriptor: walk.
                st.cpus[me].tlb.remove(i);
            }
            // Start from the deepest walk-cache entry that covers the IPA (the oldest of equals).
            let start = st.cpus[me]
                .wc
                .iter()
                .filter(|e| overlaps(e.base, level_size(e.level), ipa, ipa + 1))
                .fold(None::<WalkEntry>, |best, e| match best {
                    Some(b) if b.level >= e.level => Some(b),
                    _ => Some(*e),
                });
            let geom = st.geom.unwrap();
            st.count(if start.is_some() {
                "walk from walk cache"
            } else {
                "walk from root"
            });
            let (walk, level) = match start {
                Some(e) => (
                    InWalk {
                        base: e.base,
                        size: level_size(e.level),
                        table: e.table,
                        killed: false,
                    },
                    e.level + 1,
                ),
                None => (
                    InWalk {
                        base: 0,
                        size: geom.ipa_limit(),
                        table: st.root,
                        killed: false,
                    },
                    geom.start_level(),
                ),
            };
            st.cpus[me].walk = Some(walk);
            level
        };
        loop {
            yield_point(false);
            let mut st = hw.st.lock().unwrap();
            let w = st.cpus[me].walk.unwrap();
            if w.killed {
                st.count("walk killed by a TLBI");
                st.cpus[me].walk = None;
                continue 'again;
            }
            let (page, i) = slot(&st, w.table, level, ipa);
            if !st.live.contains(&page) {
                let what = format!(
                    "CPU {me} walks into page {page:#x}, which is not a live table ({w:x?})"
                );
                hw.violate(&mut st, Inv::Freed, what);
                st.cpus[me].walk = None;
                return if hw.mode.freed {
                    Access::Stopped
                } else {
                    Access::Translation
                };
            }
            let entry = &hw.mem.table(page)[i];
            let old = Pte(entry.load(std::sync::atomic::Ordering::SeqCst));
            let size = level_size(level);
            let base = ipa & !(size - 1);
            if old.is_table(level) {
                let cpu = &mut st.cpus[me];
                cpu.wc.push(WalkEntry {
                    base,
                    level,
                    table: old.addr(),
                });
                if cpu.wc.len() > TLB_CAP {
                    cpu.wc.remove(0);
                }
                cpu.walk = Some(InWalk {
                    base,
                    size,
                    table: old.addr(),
                    killed: false,
                });
                level += 1;
                continue;
            }
            st.cpus[me].walk = None;
            if !old.is_leaf(level) {
                return Access::Translation; // invalid, LOCKED or zapped: never cached
            }
            let mut new = old.with_young(true); // VTCR_EL2.HA
            if write && !old.perms().write {
                if !old.dbm() {
                    // A permission fault; the entry may be cached all the same.
                    let filled = st.tick();
                    push_leaf(
                        &mut st.cpus[me],
                        Leaf {
                            base,
                            level,
                            pte: old,
                            filled,
                        },
                    );
                    st.note(base, base + size, || {
                        format!("CPU {me} caches {old:x?} (permission fault)")
                    });
                    return Access::Permission;
                }
                new = new.with_write(true); // VTCR_EL2.HD
            }
            if new != old
                && entry
                    .compare_exchange(
                        old.0,
                        new.0,
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                    )
                    .is_err()
            {
                continue 'again; // the descriptor changed under the update: walk again
            }
            let leaf = Leaf {
                base,
                level,
                pte: new,
                filled: st.tick(),
            };
            push_leaf(&mut st.cpus[me], leaf);
            st.note(base, base + size, || format!("CPU {me} caches {leaf:x?}"));
            return use_translation(hw, &mut st, me, &leaf, ipa, write);
        }
    }
}

fn push_leaf(cpu: &mut CpuHw, leaf: Leaf) {
    if cpu
        .tlb
        .iter()
        .any(|e| e.base == leaf.base && e.level == leaf.level && e.pte == leaf.pte)
    {
        return;
    }
    cpu.tlb.push(leaf);
    if cpu.tlb.len() > TLB_CAP {
        cpu.tlb.remove(0);
    }
}

/// Invariant (a) at the moment of use.
fn use_translation(
    hw: &Hw,
    st: &mut HwState,
    me: usize,
    leaf: &Leaf,
    ipa: u64,
    write: bool,
) -> Access {
    if !st.allows(&hw.mem, leaf, ipa, write) {
        if st.excused(leaf.base, level_size(leaf.level), None) {
            // Allowed: the operation that changed it has not returned (its TLBI may be pending).
            st.count("stale use while its operation runs");
            return Access::Done;
        }
        let what = format!(
            "CPU {me} {} IPA {ipa:#x} through {leaf:x?}; the table now has {:x?}",
            if write { "writes" } else { "reads" },
            st.current(&hw.mem, ipa)
        );
        hw.violate(st, Inv::Stale, what);
        if hw.mode.stale {
            return Access::Stopped;
        }
    }
    st.count("translation used");
    Access::Done
}

/// Everything a CPU thread needs.
struct Run<'a> {
    hw: &'a Arc<Hw>,
    s2: &'a S2,
    logs: &'a [DirtyBitmap; 3],
}

/// A random IPA range for a range operation: part of a region, a whole region, or two.
fn random_range(rng: &mut Rng) -> (u64, u64) {
    let r = rng.below(3) as usize;
    let base = REGIONS[r];
    match rng.below(6) {
        0 => (base, base + MB2),
        1 => (0, 2 * MB2),
        2 => {
            let p = HOT[rng.below(HOT.len() as u64) as usize];
            (base + p * PAGE_SIZE, base + (p + 1) * PAGE_SIZE)
        }
        _ => {
            let a = rng.below(512);
            let b = (a + 1 + rng.below(16)).min(512);
            (base + a * PAGE_SIZE, base + b * PAGE_SIZE)
        }
    }
}

fn footprint((lo, hi): (u64, u64)) -> (u64, u64) {
    (lo & !(MB2 - 1), hi.next_multiple_of(MB2))
}

fn region_of(ipa: u64) -> usize {
    REGIONS
        .iter()
        .position(|&r| ipa >= r && ipa < r + MB2)
        .unwrap()
}

impl Run<'_> {
    /// Run `op` as an operation with footprint `range`, then the checks of a returned operation.
    fn op<R>(&self, me: usize, name: &'static str, range: (u64, u64), op: impl FnOnce() -> R) -> R {
        self.op_with(me, name, range, false, op)
    }

    /// [`Run::op`] for an operation that revokes translations in `range` (see
    /// `HwState::stale_entry`).
    fn revoking<R>(
        &self,
        me: usize,
        name: &'static str,
        range: (u64, u64),
        op: impl FnOnce() -> R,
    ) -> R {
        self.op_with(me, name, range, true, op)
    }

    fn op_with<R>(
        &self,
        me: usize,
        name: &'static str,
        range: (u64, u64),
        revokes: bool,
        op: impl FnOnce() -> R,
    ) -> R {
        let started = {
            let mut st = self.hw.st.lock().unwrap();
            st.inflight[me] = Some(footprint(range));
            st.count(name);
            st.tick()
        };
        self.hw.st.lock().unwrap().note(range.0, range.1, || {
            format!("CPU {me} starts {name} [{:#x}, {:#x})", range.0, range.1)
        });
        let r = op();
        let mut st = self.hw.st.lock().unwrap();
        st.inflight[me] = None;
        st.note(range.0, range.1, || format!("CPU {me} returns from {name}"));
        let revoked = revokes.then_some((started, range.0, range.1));
        if let Some(what) = st.stale_entry(&self.hw.mem, Some(me), revoked) {
            self.hw.violate(
                &mut st,
                Inv::Stale,
                format!(
                    "after {name} [{:#x}, {:#x}) (started at {started:#x}) returned on CPU {me}: {what}",
                    range.0, range.1
                ),
            );
        }
        drop(st);
        self.s2.reclaim(me);
        r
    }

    fn attrs(&self, rng: &mut Rng, region: usize, write: bool) -> Attrs {
        let logging = self.hw.st.lock().unwrap().logging[region];
        let w = logging != 1 && (write || rng.pct(50));
        Attrs::normal(if w { Perms::RWX } else { Perms::RX })
    }

    /// The fault handler for an access that faulted: map, relax or the dirty-log write fault.
    fn handle(&self, me: usize, rng: &mut Rng, ipa: u64, write: bool, fault: Access) {
        let r = region_of(ipa);
        let page = ipa & !(PAGE_SIZE - 1);
        match fault {
            Access::Translation => {
                let layout = self.hw.st.lock().unwrap().layout[r];
                let attrs = self.attrs(rng, r, write);
                if rng.pct(10) {
                    let base = REGIONS[r];
                    self.op(me, "fault: map 2 MiB block", (base, base + MB2), || {
                        let _ =
                            self.s2
                                .shared(me)
                                .map(base, pa_of(base, layout), Size::Block2M, attrs);
                    });
                } else {
                    self.op(me, "fault: map page", (page, page + PAGE_SIZE), || {
                        let g = self.s2.shared(me);
                        if g.map(page, pa_of(page, layout), Size::Page4K, attrs)
                            .is_ok()
                            && attrs.perms.write
                        {
                            self.logs[r].mark(page);
                        }
                    });
                }
            }
            Access::Permission => {
                let logging = self.hw.st.lock().unwrap().logging[r];
                let ok = self.op(
                    me,
                    "fault: relax_perms/dirty_write_fault",
                    (page, page + PAGE_SIZE),
                    || {
                        let g = self.s2.shared(me);
                        if logging == 1 {
                            matches!(
                                g.dirty_write_fault(ipa, &self.logs[r]),
                                Ok(DirtyFault::Relaxed | DirtyFault::Spurious)
                            )
                        } else {
                            g.relax_perms(ipa, Perms::W).is_ok()
                        }
                    },
                );
                if ok {
                    self.check_retry(me, ipa);
                }
            }
            Access::Done | Access::Stopped => {}
        }
    }

    /// Invariant (c): after a handled permission fault, the retried write must not fault from
    /// this CPU's TLB while the table allows it.
    fn check_retry(&self, me: usize, ipa: u64) {
        let mut st = self.hw.st.lock().unwrap();
        let allowed = st
            .current(&self.hw.mem, ipa)
            .is_some_and(|(cur, _)| cur.perms().write);
        if !allowed {
            return;
        }
        let stale = st.cpus[me].tlb.iter().copied().find(|e| {
            overlaps(e.base, level_size(e.level), ipa, ipa + 1)
                && !e.pte.perms().write
                && !e.pte.dbm()
        });
        if let Some(e) = stale {
            let what = format!(
                "CPU {me}: permission fault at {ipa:#x} handled, but its TLB still holds {e:x?}: the retried write faults again"
            );
            self.hw.violate(&mut st, Inv::Livelock, what);
        }
    }

    /// One random operation other than a fault handler.
    fn random_op(&self, me: usize, rng: &mut Rng) {
        let range = random_range(rng);
        let (lo, hi) = range;
        let r = region_of(lo);
        let base = REGIONS[r];
        let region = (base, base + MB2);
        let s2 = self.s2;
        let log = &self.logs[r];
        match rng.below(18) {
            0 => {
                // Remap a page to the other layout: break-before-make of a leaf, or a lazy split.
                let p = base + HOT[rng.below(HOT.len() as u64) as usize] * PAGE_SIZE;
                let attrs = self.attrs(rng, r, false);
                let layout = {
                    let mut st = self.hw.st.lock().unwrap();
                    st.layout[r] ^= 1;
                    st.layout[r]
                };
                self.op(
                    me,
                    "map page, other output (BBM or lazy split)",
                    (p, p + PAGE_SIZE),
                    || {
                        let _ = s2.shared(me).map(p, pa_of(p, layout), Size::Page4K, attrs);
                    },
                );
            }
            1 => {
                // A block over whatever is there: prune, BBM or install.
                let layout = self.hw.st.lock().unwrap().layout[r];
                let attrs = self.attrs(rng, r, false);
                self.op(
                    me,
                    "collapse (map block over a table: prune)",
                    region,
                    || {
                        let _ =
                            s2.shared(me)
                                .collapse(base, pa_of(base, layout), Size::Block2M, attrs);
                    },
                );
            }
            2 => {
                self.op(me, "collapse_contiguous", region, || {
                    let _ = s2.shared(me).collapse_contiguous(base, Size::Block2M);
                });
            }
            3 => {
                // Now and then with a pool that runs dry half-way (the error path).
                let dry = rng.pct(20);
                if dry {
                    self.hw.mem.set_budget(rng.below(2));
                }
                self.op(me, "eager_split", region, || {
                    let _ = s2.eager_split(me, base, base + MB2, MB2);
                });
                if dry {
                    self.hw.mem.set_budget(u64::MAX);
                }
            }
            4 | 5 => {
                self.revoking(me, "unmap", range, || {
                    let _ = s2.shared(me).unmap(lo, hi);
                });
            }
            6 => {
                self.op(me, "write_protect", range, || {
                    let _ = s2.shared(me).write_protect(lo, hi);
                });
            }
            7 => {
                // Dirty logging on: the flag first (faults map read-only), then protect.
                self.hw.st.lock().unwrap().logging[r] = 1;
                self.op(me, "dirty log enable (write_protect)", region, || {
                    let _ = s2.shared(me).write_protect(base, base + MB2);
                });
            }
            8 => {
                self.op(me, "dirty_log_clear", range, || {
                    s2.shared(me).dirty_log_clear(log, lo, hi, |_, _| {});
                });
            }
            9 => {
                self.hw.st.lock().unwrap().logging[r] = 0;
            }
            10 => {
                self.hw.st.lock().unwrap().logging[r] = 2;
                self.op(me, "dirty_log_enable_hw", region, || {
                    s2.shared(me).dirty_log_enable_hw(base, base + MB2);
                });
            }
            11 => {
                self.op(me, "dirty_log_harvest_hw", range, || {
                    s2.shared(me).dirty_log_harvest_hw(log, lo, hi, |_, _| {});
                });
            }
            12 => {
                self.op(me, "dirty_log_disable_hw", region, || {
                    s2.shared(me).dirty_log_disable_hw(base, base + MB2);
                });
                self.hw.st.lock().unwrap().logging[r] = 0;
            }
            13 => {
                self.op(me, "test_clear_young", range, || {
                    s2.shared(me).test_clear_young(lo, hi);
                });
            }
            14 => {
                self.op(me, "clear_flush_young", range, || {
                    s2.shared(me).clear_flush_young(lo, hi);
                });
            }
            15 => {
                self.op(me, "test_age + mark_young", range, || {
                    s2.shared(me).test_age(lo, hi);
                    let _ = s2.shared(me).mark_young(lo);
                });
            }
            16 => {
                self.op(me, "relax_perms", range, || {
                    let _ = s2.shared(me).relax_perms(lo, Perms::W);
                });
            }
            _ => {
                // The exclusive mode (the locked baseline): plain stores under the MMU lock.
                self.revoking(me, "exclusive unmap/write_protect", range, || {
                    let g = s2.exclusive(me);
                    if rng.pct(50) {
                        let _ = g.unmap(lo, hi);
                    } else {
                        let _ = g.write_protect(lo, hi);
                    }
                });
            }
        }
    }

    fn cpu(&self, me: usize, seed: u64) {
        let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(me as u64 + 1));
        for _ in 0..STEPS {
            yield_point(false);
            if rng.pct(25) {
                self.random_op(me, &mut rng);
                continue;
            }
            let r = rng.below(3) as usize;
            let ipa = REGIONS[r] + HOT[rng.below(HOT.len() as u64) as usize] * PAGE_SIZE;
            let write = rng.pct(50);
            // The guest re-runs a faulting access after its handler, at most a few times.
            for _ in 0..3 {
                match access(self.hw, me, ipa, write) {
                    Access::Done | Access::Stopped => break,
                    fault => self.handle(me, &mut rng, ipa, write, fault),
                }
            }
        }
    }
}

/// What one run found.
struct Outcome {
    violation: Option<(Inv, String)>,
    hits: BTreeSet<Site>,
    counts: BTreeMap<&'static str, u64>,
    /// The table's own counters (`Stage2::stats`), summed over CPUs.
    stats: BTreeMap<&'static str, u64>,
}

/// One run of `CPUS` CPUs with `seed`, dropping the invalidations of `drop_site`.
fn run(seed: u64, drop_site: Option<Site>, mode: Mode) -> Outcome {
    let hw = Arc::new(Hw::new(seed, drop_site, mode));
    let s2: S2 = Stage2::new(
        Config::new(IPA_BITS, CPUS),
        ModelPool(hw.clone()),
        ModelTlb(hw.clone()),
    )
    .expect("table");
    {
        let mut st = hw.st.lock().unwrap();
        st.root = s2.root();
        st.geom = Some(s2.geometry());
    }
    let logs: [DirtyBitmap; 3] = REGIONS.map(|r| DirtyBitmap::new(r, MB2 / PAGE_SIZE));
    let run = Run {
        hw: &hw,
        s2: &s2,
        logs: &logs,
    };
    std::thread::scope(|sc| {
        for me in 0..CPUS {
            let run = &run;
            let hw = hw.clone();
            sc.spawn(move || {
                CTX.with(|c| *c.borrow_mut() = Some((hw.clone(), me)));
                set_spin_hook(Some(spin));
                if hw.start(me) {
                    let r = panic::catch_unwind(AssertUnwindSafe(|| run.cpu(me, seed)));
                    if let Err(e) = r {
                        if !e.is::<Abort>() {
                            let msg = e
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                                .unwrap_or_default();
                            let mut st = hw.st.lock().unwrap();
                            hw.violate(&mut st, Inv::Panic, format!("CPU {me} panicked: {msg}"));
                        }
                    }
                }
                hw.finish(me);
                set_spin_hook(None);
                CTX.with(|c| *c.borrow_mut() = None);
            });
        }
    });
    let stats = s2.stats().fields().collect();
    if !hw.aborted() {
        // Quiescence: every deferred table freed, then teardown (its VMID invalidation must
        // come before the pages go back: the walk caches still hold them).
        s2.barrier(0);
        let _ = s2.destroy(0);
    }
    let st = hw.st.lock().unwrap();
    Outcome {
        violation: st.violation.clone(),
        hits: st.hits.clone(),
        counts: st.counts.clone(),
        stats,
    }
}

/// Every `Tlb` call site in `stage2/src`, with the method it calls.
fn call_sites() -> BTreeMap<Site, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sites = BTreeMap::new();
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if let Some(at) = line.find("tlb.") {
                let method: String = line[at + 4..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if method == "invalidate_ipa"
                    || method == "invalidate_range"
                    || method == "invalidate_leaves"
                    || method == "invalidate_vmid"
                    || method == "invalidate_ipa_local"
                    || method == "publish"
                {
                    sites.insert((name.clone(), i as u32 + 1), method);
                }
            }
        }
    }
    sites
}

/// Seeds of the unmutated runs: `0..24`; `WALKERS_SEEDS=n` for `0..n` (a longer search),
/// `WALKERS_SEED=n` to replay seed `n` alone.
fn seeds() -> std::ops::Range<u64> {
    let env = |name| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    match (env("WALKERS_SEED"), env("WALKERS_SEEDS")) {
        (Some(seed), _) => seed..seed + 1,
        (None, n) => 0..n.unwrap_or(24),
    }
}
/// Seeds a mutant may take before it counts as undetected.
const MUTANT_SEEDS: u64 = 8;

#[test]
fn hardware_walkers_never_use_a_stale_translation() {
    let mut hits = BTreeSet::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in seeds() {
        let out = run(seed, None, Mode::ALL);
        if let Some((inv, what)) = out.violation {
            panic!("seed {seed}: invariant {inv:?} broken: {what}");
        }
        hits.extend(out.hits);
        for (k, v) in out.counts.into_iter().chain(out.stats) {
            *counts.entry(k).or_default() += v;
        }
    }
    println!("{counts:#?}");
    // The model must really have cached, reused and lost entries, freed tables, used entries
    // in the window before their invalidation, and raced.
    for what in [
        "tlb hit",
        "walk from walk cache",
        "walk killed by a TLBI",
        "TLBI that dropped cached entries",
        "table page freed",
        "stale use while its operation runs",
        "prunes",
        "splits",
        "bbm",
        "retry_locked",
        "retry_cas",
        "no_memory",
    ] {
        assert!(
            counts.get(what).copied().unwrap_or(0) > 0,
            "no {what:?} in {counts:?}"
        );
    }
    // Every call site must be exercised, else removing it could not be detected; and every call
    // the model received must come from a site the source scan found (else the mutation test
    // would skip it).
    let sites: BTreeSet<Site> = call_sites().into_keys().collect();
    let missing: Vec<_> = sites.difference(&hits).collect();
    assert!(
        missing.is_empty(),
        "call sites never reached by the model: {missing:?}"
    );
    let unscanned: Vec<_> = hits.difference(&sites).collect();
    assert!(
        unscanned.is_empty(),
        "calls from sites the source scan missed: {unscanned:?}"
    );
}

#[test]
fn same_seed_same_run() {
    let a = run(7, None, Mode::ALL);
    let b = run(7, None, Mode::ALL);
    assert_eq!(a.hits, b.hits);
    assert_eq!(a.violation, b.violation);
    assert_eq!(a.counts, b.counts);
}

/// Removing any one invalidation must be noticed. `publish` (`DSB ISHST`) is not an
/// invalidation: it only makes new entries visible sooner (a walker that misses one takes a
/// spurious translation fault); this model's stores are visible at once, so it cannot notice
/// its removal, and the sites are only checked to be reached.
#[test]
fn every_invalidation_is_required() {
    let sites = call_sites();
    let invalidations: Vec<_> = sites
        .iter()
        .filter(|(_, m)| m.as_str() != "publish")
        .collect();
    assert!(invalidations.len() >= 7, "found only {invalidations:?}");
    let mut table = Vec::new();
    let mut undetected = Vec::new();
    for ((file, line), method) in invalidations {
        let site = (file.clone(), *line);
        let found = (0..MUTANT_SEEDS).find_map(|seed| {
            run(seed, Some(site.clone()), Mode::ALL)
                .violation
                .map(|(inv, what)| (seed, inv, what))
        });
        match &found {
            Some((seed, inv, what)) => {
                table.push(format!(
                    "{file}:{line} {method}: detected, seed {seed}, {inv:?}: {what}"
                ));
            }
            None => {
                table.push(format!("{file}:{line} {method}: NOT detected"));
                undetected.push(site);
            }
        }
    }
    if std::env::var_os("WALKERS_BREAKDOWN").is_some() {
        // Which invariant notices each removal on its own (slow: a report, not a check).
        for ((file, line), method) in sites.iter().filter(|(_, m)| m.as_str() != "publish") {
            let by: Vec<Inv> = [Inv::Stale, Inv::Freed, Inv::Livelock]
                .into_iter()
                .filter(|&inv| {
                    (0..MUTANT_SEEDS).any(|seed| {
                        run(seed, Some((file.clone(), *line)), Mode::only(inv))
                            .violation
                            .is_some_and(|(i, _)| i == inv)
                    })
                })
                .collect();
            table.push(format!("{file}:{line} {method}: detected alone by {by:?}"));
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        undetected.is_empty(),
        "removals not detected: {undetected:?}\n{}",
        table.join("\n")
    );
}

/// Invariant (b) alone must notice a missing invalidation before a table page is freed: every
/// site that invalidates walk-cache entries (`invalidate_range`, `invalidate_vmid`) is removed in
/// turn with only (b) checked.
#[test]
fn freed_tables_need_their_walk_cache_invalidation() {
    for ((file, line), method) in call_sites() {
        if method != "invalidate_range" && method != "invalidate_vmid" {
            continue;
        }
        let site = (file.clone(), line);
        let found = (0..MUTANT_SEEDS)
            .find_map(|seed| run(seed, Some(site.clone()), Mode::only(Inv::Freed)).violation);
        assert!(
            matches!(found, Some((Inv::Freed, _))),
            "{file}:{line} {method} removed: (b) did not notice ({found:?})"
        );
    }
}

/// The model is strong enough to tell a leaf-only invalidation from one that reaches the walk
/// caches: if `invalidate_range` were `TLBI RIPAS2LE1IS` (last level only), table pages would be
/// freed while walk caches still point at them. This is why the table unlink of a prune or an
/// unmap must use the all-levels form (or VMALLS12E1IS), never a last-level or level-hinted one.
#[test]
fn table_unlink_needs_an_all_levels_invalidation() {
    let mode = Mode {
        range_leaves_only: true,
        ..Mode::only(Inv::Freed)
    };
    let found = (0..MUTANT_SEEDS).find_map(|seed| run(seed, None, mode).violation);
    assert!(matches!(found, Some((Inv::Freed, _))), "{found:?}");
}
