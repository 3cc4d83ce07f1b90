//! loom models of every race the parallel fault path has (issue 3).
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p stage2 --features testing --target x86_64-unknown-linux-gnu --target-dir target/loom --release --test loom`
//!
//! Under `--cfg loom` every PTE, page-metadata word and RCU word is a loom atomic (`src/sync.rs`),
//! so loom explores the thread interleavings *and* the weak-memory outcomes the orderings allow.
//! The [`CountingPool`] never reuses a page under loom and panics on any access to a freed page,
//! so a use after free anywhere in any explored execution fails the model.
//!
//! Each model uses two CPUs (loom threads; three in the RCU and MMU-lock-handoff models), the
//! smallest pool that can serve it (every page is 512 loom atomics), and one operation per thread. Every model ends by checking each table's
//! refcount (`1 + non-empty entries`), destroying the table and checking the pool got every page
//! back. Each model runs in both thread orders and must reach the outcomes it lists (see
//! [`model`]); it prints its executions, runtime and outcomes (`--nocapture`). See
//! `docs/testing.md` ("loom models") for what each asserts and how long it takes.

#![cfg(loom)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool as StdBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use loom::sync::atomic::AtomicBool;
use loom::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use loom::sync::Notify;
use loom::thread;
use stage2::desc::level_shift;
use stage2::testing::{CountingPool, RecordingTlb, TlbOp};
use stage2::{
    Attrs, Config, DirtyBitmap, Error, HwAccess, Mapped, PagePool, Perms, Pte, RangeDone, Size,
    Stage2, Translation,
};

type S2 = Stage2<Arc<CountingPool>, Arc<RecordingTlb>>;

const MB2: u64 = 2 << 20;
const RAM: u64 = 0x4000_0000;

/// The outcomes a model reached over all its executions. Each model lists the outcomes it must
/// reach at least once, so a model that silently stopped exercising its race (a changed setup, a
/// too-tight preemption bound) fails instead of passing vacuously.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<BTreeSet<String>>>);

impl Seen {
    fn hit(&self, outcome: impl Into<String>) {
        self.0.lock().unwrap().insert(outcome.into());
    }
}

/// Run `f` under loom's model checker twice, once per `flip` (which CPU is the spawned thread and
/// which is the main thread), printing how many executions each took and how long, then check
/// every outcome in `expect` was reached by some execution.
///
/// Both CPUs must exist for the whole race, so one is the main thread: with a spawned thread per
/// CPU, loom (0.7) may run the first to the end before the second is spawned. And loom's DPOR
/// remembers only the last access to each atomic, so it can miss orders (tokio-rs/loom#166,
/// #392): the relax model reaches "relax completes before the map starts" only with relax on
/// the spawned thread, and "the map completes before relax starts" only the other way round.
/// Running both orders and checking the outcomes is what keeps that from going unnoticed.
///
/// `preemption_bound: None` explores every interleaving loom's DPOR finds; a bound is used only
/// where the unbounded model does not finish in well under a minute, and the model says why.
fn model<F>(name: &str, preemption_bound: Option<usize>, expect: &[&str], f: F)
where
    F: Fn(&Seen, bool) + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let seen = Seen::default();
    for flip in [false, true] {
        let mut b = loom::model::Builder::new();
        // Every atomic access is a loom branch point, and a prune locks all 512 entries of each
        // table it unlinks (1024 accesses per page) while `destroy` reads every entry of every
        // table: the default limit of 1000 branches per execution is far too low for a table walk.
        b.max_branches = 50_000;
        if b.preemption_bound.is_none() {
            b.preemption_bound = preemption_bound;
        }
        let iterations = Arc::new(AtomicUsize::new(0));
        let (n, s, f) = (iterations.clone(), seen.clone(), f.clone());
        let start = Instant::now();
        b.check(move || {
            n.fetch_add(1, SeqCst);
            f(&s, flip);
        });
        eprintln!(
            "loom model {name} (flip {flip}): {} executions in {:.2?} (preemption bound {:?})",
            iterations.load(SeqCst),
            start.elapsed(),
            b.preemption_bound,
        );
    }
    let seen = seen.0.lock().unwrap();
    eprintln!("loom model {name}: outcomes {seen:?}");
    for e in expect {
        assert!(seen.contains(*e), "{name}: no execution reached {e:?}");
    }
}

/// A 32-bit IPA space starting at level 1 (one root page of 4 entries, so a 4 KiB page needs a
/// level-2 and a level-3 table), two CPUs, `pages` pool pages (the root is one of them).
fn setup(pages: usize) -> (Arc<S2>, Arc<CountingPool>, Arc<RecordingTlb>) {
    let pool = Arc::new(CountingPool::new(pages));
    // Only the relax model reads the log; elsewhere the recorder would walk the table on every
    // invalidation, adding loom branch points that are not part of the protocol.
    let tlb = Arc::new(RecordingTlb::counting(pool.clone()));
    setup_with(pool, tlb)
}

fn setup_with(
    pool: Arc<CountingPool>,
    tlb: Arc<RecordingTlb>,
) -> (Arc<S2>, Arc<CountingPool>, Arc<RecordingTlb>) {
    setup_cpus(pool, tlb, 2)
}

/// As [`setup_with`], for `cpus` CPUs (the three-CPU models).
fn setup_cpus(
    pool: Arc<CountingPool>,
    tlb: Arc<RecordingTlb>,
    cpus: usize,
) -> (Arc<S2>, Arc<CountingPool>, Arc<RecordingTlb>) {
    let mut cfg = Config::new(32, cpus);
    cfg.start_level = Some(1);
    let s2 = Stage2::new(cfg, pool.clone(), tlb.clone()).unwrap();
    tlb.attach(s2.root(), s2.geometry());
    (Arc::new(s2), pool, tlb)
}

/// One CPU of a two-CPU race: a spawned loom thread, or a closure the main thread runs.
enum Cpu<R> {
    Thread(thread::JoinHandle<R>),
    Later(Box<dyn FnOnce() -> R>),
    Done(R),
}

/// The CPU a model writes first: spawned, or (`flip`) run by the main thread when it is joined.
fn first<R: Send + 'static>(flip: bool, f: impl FnOnce() -> R + Send + 'static) -> Cpu<R> {
    if flip {
        Cpu::Later(Box::new(f))
    } else {
        Cpu::Thread(thread::spawn(f))
    }
}

/// The CPU a model writes second: run by the main thread now, or (`flip`) spawned.
fn second<R: Send + 'static>(flip: bool, f: impl FnOnce() -> R + Send + 'static) -> Cpu<R> {
    if flip {
        Cpu::Thread(thread::spawn(f))
    } else {
        Cpu::Done(f())
    }
}

impl<R> Cpu<R> {
    /// Its result. Models join the first CPU first, so a `Later` one runs while the other CPU's
    /// thread exists.
    fn join(self) -> R {
        match self {
            Cpu::Thread(t) => t.join().unwrap(),
            Cpu::Later(f) => f(),
            Cpu::Done(r) => r,
        }
    }
}

/// `map` in a fresh read-side section per attempt until it stops saying `Retry` (a vCPU re-running
/// the faulting instruction). Returns the first and the final result.
fn map_until_done(
    s2: &S2,
    cpu: usize,
    ipa: u64,
    pa: u64,
    size: Size,
    attrs: Attrs,
) -> (Result<Mapped, Error>, Result<Mapped, Error>) {
    let mut first = None;
    loop {
        let r = s2.shared(cpu).map(ipa, pa, size, attrs);
        first.get_or_insert(r);
        if r != Err(Error::Retry) {
            return (first.unwrap(), r);
        }
        // The other CPU owns an entry on the path: let it finish (loom needs the yield to end).
        thread::yield_now();
    }
}

fn translate(s2: &S2, ipa: u64) -> Option<Translation> {
    s2.exclusive(0).translate(ipa)
}

/// Every reachable table's refcount is 1 + its non-empty entries.
fn check_counts(s2: &S2) {
    s2.exclusive(0).for_each_table(|pa, level, count, used| {
        assert_eq!(
            count,
            used + 1,
            "table {pa:#x} at level {level}: refcount {count}, {used} entries used"
        );
    });
}

/// Check the counts, tear down (which takes the exclusive lock and asserts on any LOCKED entry it
/// meets, and waits for every deferred free), and check every page came back.
fn finish(s2: Arc<S2>, pool: &CountingPool) {
    check_counts(&s2);
    let s2 = Arc::try_unwrap(s2).unwrap_or_else(|_| panic!("a thread still holds the table"));
    s2.destroy(0).unwrap();
    assert_eq!(pool.in_use(), 0, "table pages leaked");
    assert_eq!(pool.allocs(), pool.frees(), "table pages leaked");
}

/// Pool invariant while the table is alive: every table page ever allocated was either freed or
/// is still in use (the root is in use but is not a table allocation).
fn check_pool(pool: &CountingPool) {
    assert_eq!(
        pool.allocs(),
        pool.frees() + (pool.in_use() as u64 - 1),
        "allocs != frees + in use"
    );
}

/// Model 1: two CPUs fault on the same IPA of an empty table. Both walk the fresh-table path and
/// race to install the level-2 table, the level-3 table and the leaf.
///
/// Exactly one wins the leaf (`Installed`); the other finds it (`Spurious`) or lost the leaf's
/// compare-exchange (`Retry`, and re-running then finds it). Every table page a loser allocated
/// and failed to publish was freed at once: only the two published tables remain in use.
#[test]
fn two_cpus_map_the_same_ipa() {
    let expect = [
        "other: Spurious",
        "other: Retry, then Spurious",
        "a table install lost",
    ];
    model("two_cpus_map_the_same_ipa", None, &expect, |seen, flip| {
        // Root + at most one level-2 and one level-3 table per CPU (a loser's page is never reused
        // under loom).
        let (s2, pool, _) = setup(5);
        let attrs = Attrs::normal_rwx();
        let fault = |cpu| {
            let s2 = s2.clone();
            move || map_until_done(&s2, cpu, 0x1000, RAM + 0x5000, Size::Page4K, attrs)
        };
        let cpu0 = first(flip, fault(0));
        let cpu1 = second(flip, fault(1));
        let results = [cpu0.join(), cpu1.join()];

        let installed = results
            .iter()
            .filter(|r| r.0 == Ok(Mapped::Installed))
            .count();
        assert_eq!(installed, 1, "exactly one CPU installs: {results:?}");
        for &(first, last) in &results {
            match first {
                Ok(Mapped::Installed) => assert_eq!(last, first),
                Ok(Mapped::Spurious) => {
                    assert_eq!(last, first);
                    seen.hit("other: Spurious");
                }
                // Lost the leaf's compare-exchange: re-running finds the winner's leaf.
                Err(Error::Retry) => {
                    assert_eq!(last, Ok(Mapped::Spurious), "{results:?}");
                    seen.hit("other: Retry, then Spurious");
                }
                other => panic!("unexpected map result {other:?}"),
            }
        }

        let t = translate(&s2, 0x1abc).expect("the mapping is there");
        assert_eq!((t.pa, t.level, t.attrs), (RAM + 0x5abc, 3, attrs));
        // The loser's unpublished pages were freed at once (not through RCU), and only the
        // winner's level-2 and level-3 tables are in use.
        let st = s2.stats();
        assert_eq!(pool.in_use(), 1 + 2, "root + one table per level");
        assert_eq!(pool.frees(), st.tables_raced, "lost installs free at once");
        assert_eq!(st.tables_retired, 0);
        if st.tables_raced > 0 {
            seen.hit("a table install lost");
        }
        check_pool(&pool);
        finish(s2, &pool);
    });
}

/// Model 2: one CPU maps a page into a 2 MiB span while the other collapses the span into a
/// block (pruning the level-3 table: every descendant entry locked, one range invalidation, the
/// block published, the table freed through RCU).
///
/// Either the map landed first (the block replaced it) or the collapse did (the map then splits
/// the block); both translate the page to the same output. No walker ever writes into the pruned
/// table after it was freed (the pool would panic), counts stay exact, nothing leaks.
#[test]
fn map_vs_collapse_of_the_same_span() {
    let expect = ["block last", "split last", "map retried"];
    model(
        "map_vs_collapse_of_the_same_span",
        None,
        &expect,
        |seen, flip| {
            // Root, level-2, level-3, and one table for a split of the block.
            let (s2, pool, _) = setup(4);
            let attrs = Attrs::normal_rwx();
            s2.shared(0)
                .map(MB2, RAM, Size::Page4K, attrs)
                .expect("premap");

            let mapper = {
                let s2 = s2.clone();
                first(flip, move || {
                    let r = map_until_done(&s2, 0, MB2 + 0x1000, RAM + 0x1000, Size::Page4K, attrs);
                    s2.reclaim(0);
                    r
                })
            };
            let collapser = {
                let s2 = s2.clone();
                second(flip, move || {
                    let r = s2.shared(1).collapse(MB2, RAM, Size::Block2M, attrs);
                    s2.reclaim(1);
                    r
                })
            };
            let (first_try, mapped) = mapper.join();
            assert_eq!(collapser.join(), Ok(Mapped::Replaced));
            assert_eq!(mapped, Ok(Mapped::Installed));
            if first_try == Err(Error::Retry) {
                seen.hit("map retried");
            }

            let t = translate(&s2, MB2 + 0x1000).expect("the page is mapped either way");
            assert_eq!(t.pa, RAM + 0x1000);
            match t.level {
                // The collapse came last: the whole span is the block.
                2 => {
                    let rest = translate(&s2, MB2 + 0x2345).map(|t| t.pa);
                    assert_eq!(rest, Some(RAM + 0x2345));
                    seen.hit("block last");
                }
                // The map came last: it split the block; the rest refaults lazily.
                3 => {
                    assert_eq!(s2.stats().splits, 1);
                    assert_eq!(translate(&s2, MB2 + 0x2345), None);
                    seen.hit("split last");
                }
                l => panic!("leaf at level {l}"),
            }
            assert_eq!(s2.stats().prunes, 1);
            check_pool(&pool);
            finish(s2, &pool);
        },
    );
}

/// Model 2b: map vs collapse of a whole 1 GiB span. The mapper needs a *table* (level 3) inside
/// the level-2 table being pruned, so this is the race the descendant locking exists for: a
/// walker already inside the subtree must not publish anything into it once the pruner has
/// collected it, or that table page is lost with the subtree (a leak `destroy` would catch) and
/// the mapping silently vanishes.
#[test]
fn map_vs_collapse_installs_no_table_into_a_pruned_subtree() {
    let expect = ["block last", "split last", "map retried"];
    let name = "map_vs_collapse_installs_no_table_into_a_pruned_subtree";
    model(name, None, &expect, |seen, flip| {
        const GB: u64 = 1 << 30;
        // Root, level-2 and level-3 for the premapped page; the mapper's level-3 table, and a
        // level-2 + level-3 table if it has to split the block after losing (at most 3).
        let (s2, pool, _) = setup(6);
        let attrs = Attrs::normal_rwx();
        s2.shared(0)
            .map(0x1000, RAM + 0x1000, Size::Page4K, attrs)
            .expect("premap");

        let mapper = {
            let s2 = s2.clone();
            first(flip, move || {
                let r = map_until_done(&s2, 0, MB2, RAM + MB2, Size::Page4K, attrs);
                s2.reclaim(0);
                r
            })
        };
        let collapser = {
            let s2 = s2.clone();
            second(flip, move || {
                let r = s2.shared(1).collapse(0, RAM, Size::Block1G, attrs);
                s2.reclaim(1);
                r
            })
        };
        let (first_try, mapped) = mapper.join();
        assert_eq!(collapser.join(), Ok(Mapped::Replaced));
        assert_eq!(mapped, Ok(Mapped::Installed));
        if first_try == Err(Error::Retry) {
            seen.hit("map retried");
        }
        let t = translate(&s2, MB2 + 0x10).expect("the page is mapped either way");
        assert_eq!(t.pa, RAM + MB2 + 0x10);
        match t.level {
            1 => {
                assert_eq!(translate(&s2, GB - 8).map(|t| t.pa), Some(RAM + GB - 8));
                seen.hit("block last");
            }
            3 => {
                assert_eq!(translate(&s2, 0x1000), None);
                seen.hit("split last");
            }
            l => panic!("leaf at level {l}"),
        }
        check_pool(&pool);
        finish(s2, &pool);
    });
}

/// Model 3: `relax_perms` (adds write) races a map of the same IPA to another page (a BBM).
///
/// Relax only ever compare-exchanges a valid entry, so it can never write the old page's
/// relaxed permissions over the new mapping: the final entry is exactly the new one. The BBM's
/// invalidation runs while the entry is LOCKED; relax always invalidates locally.
#[test]
fn relax_vs_map_to_another_page() {
    let expect = [
        "relax first",
        "relax first, map re-ran",
        "relax backed off",
        "relax after the map (no-op)",
    ];
    model(
        "relax_vs_map_to_another_page",
        None,
        &expect,
        |seen, flip| {
            let pool = Arc::new(CountingPool::new(3));
            // A logging recorder: it reads the entry at each invalidation. No table is freed in this
            // model, so its walk cannot touch a freed page.
            let tlb = Arc::new(RecordingTlb::new(pool.clone()));
            let (s2, pool, tlb) = setup_with(pool, tlb);
            s2.shared(0)
                .map(0x1000, RAM, Size::Page4K, Attrs::normal(Perms::RX))
                .expect("premap");
            tlb.take();

            let relaxer = {
                let s2 = s2.clone();
                first(flip, move || s2.shared(0).relax_perms(0x1000, Perms::W))
            };
            let mapper = {
                let s2 = s2.clone();
                second(flip, move || {
                    let new = RAM + 0x10_000;
                    map_until_done(&s2, 1, 0x1000, new, Size::Page4K, Attrs::normal_rwx())
                })
            };
            let relaxed = relaxer.join();
            let (first_try, mapped) = mapper.join();
            assert_eq!(mapped, Ok(Mapped::Replaced));
            match relaxed {
                // Relax changed the old entry: the map came after it, or its break lost and re-ran.
                Ok(()) if s2.stats().relaxes == 1 => match first_try {
                    Err(Error::Retry) => seen.hit("relax first, map re-ran"),
                    _ => seen.hit("relax first"),
                },
                // The new entry already has write: nothing to do.
                Ok(()) => seen.hit("relax after the map (no-op)"),
                Err(Error::Retry) => seen.hit("relax backed off"),
                Err(e) => panic!("relax: {e:?}"),
            }

            let t = translate(&s2, 0x1000).unwrap();
            assert_eq!(
                (t.pa, t.attrs),
                (RAM + 0x10_000, Attrs::normal_rwx()),
                "relax clobbered the newer mapping"
            );
            let log = tlb.take();
            let ipa_tlbis: Vec<_> = log
                .iter()
                .filter(|op| matches!(op, TlbOp::Ipa { .. }))
                .collect();
            let locked = TlbOp::Ipa {
                ipa: 0x1000,
                level: 3,
                entry: Some(Pte::LOCKED.0),
            };
            assert_eq!(
                ipa_tlbis,
                [&locked],
                "one invalidation, while the entry was LOCKED: {log:?}"
            );
            let locals = log
                .iter()
                .filter(|op| matches!(op, TlbOp::Local { .. }))
                .count();
            assert_eq!(locals, 1, "relax always invalidates locally: {log:?}");
            finish(s2, &pool);
        },
    );
}

/// Premap one page at `MB2 + 0x1000` so the span `[MB2, 2 * MB2)` has a level-3 table to prune.
fn premapped_span() -> (Arc<S2>, Arc<CountingPool>) {
    premapped_span_on(2)
}

/// [`premapped_span`] for a table walked by `cpus` CPUs.
fn premapped_span_on(cpus: usize) -> (Arc<S2>, Arc<CountingPool>) {
    // Root, level-2, level-3: a collapse allocates nothing.
    let pool = Arc::new(CountingPool::new(3));
    let tlb = Arc::new(RecordingTlb::counting(pool.clone()));
    let (s2, pool, _) = setup_cpus(pool, tlb, cpus);
    s2.shared(0)
        .map(
            MB2 + 0x1000,
            RAM + 0x1000,
            Size::Page4K,
            Attrs::normal_rwx(),
        )
        .expect("premap");
    (s2, pool)
}

/// Model 4a: an RCU reader walks into the level-3 table while the other CPU collapses the span
/// (unlinking that table) and reclaims.
///
/// The reader never touches the table after it was freed (the pool panics on that in any
/// execution). It sees the old page, the new block (same output), or a LOCKED entry (nothing).
/// The table is freed by the reclaim, or is still waiting if the reader may still see it; the
/// barrier then frees it.
#[test]
fn rcu_reader_vs_deferred_free() {
    let expect = [
        "reader saw page",
        "reader saw block",
        "reader saw LOCKED",
        "free at reclaim",
        "free waited for the reader",
    ];
    model(
        "rcu_reader_vs_deferred_free",
        None,
        &expect,
        |seen, flip| {
            let (s2, pool) = premapped_span();
            let reader = {
                let s2 = s2.clone();
                first(flip, move || s2.shared(1).translate(MB2 + 0x1000))
            };
            let writer = {
                let s2 = s2.clone();
                second(flip, move || {
                    let r = s2
                        .shared(0)
                        .collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx());
                    s2.reclaim(0);
                    r
                })
            };
            let read = reader.join();
            assert_eq!(writer.join(), Ok(Mapped::Replaced));
            match read {
                Some(t) => {
                    assert_eq!(t.pa, RAM + 0x1000, "reader saw {t:?}");
                    seen.hit(match t.level {
                        3 => "reader saw page",
                        _ => "reader saw block",
                    });
                }
                None => seen.hit("reader saw LOCKED"),
            }
            assert_eq!(pool.frees() + s2.deferred(0), 1, "freed or waiting");
            seen.hit(match pool.frees() {
                1 => "free at reclaim",
                _ => "free waited for the reader",
            });
            check_pool(&pool);
            s2.barrier(0);
            assert_eq!((pool.frees(), s2.deferred(0)), (1, 0));
            finish(s2, &pool);
        },
    );
}

/// Model 4b: the grace period ends. The writer collapses and then reclaims until its list is
/// empty, while the reader does two read-side sections. The loop ending in every execution shows
/// that a reader that left (or entered after the unlink) never holds up the free, while model 4a
/// shows the free never comes while the reader could still reach the page.
#[test]
fn reclaim_frees_once_the_reader_leaves() {
    let expect = ["reclaim had to wait"];
    model(
        "reclaim_frees_once_the_reader_leaves",
        None,
        &expect,
        |seen, flip| {
            let (s2, pool) = premapped_span();
            let reader = {
                let s2 = s2.clone();
                first(flip, move || {
                    let a = s2.shared(1).translate(MB2 + 0x1000);
                    let b = s2.shared(1).translate(MB2 + 0x1000);
                    (a, b)
                })
            };
            let writer = {
                let s2 = s2.clone();
                second(flip, move || {
                    let r = s2
                        .shared(0)
                        .collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx());
                    let mut rounds = 0;
                    while s2.deferred(0) != 0 {
                        s2.reclaim(0);
                        rounds += 1;
                        thread::yield_now();
                    }
                    (r, rounds)
                })
            };
            let (a, b) = reader.join();
            let (collapsed, rounds) = writer.join();
            assert_eq!(collapsed, Ok(Mapped::Replaced));
            for t in [a, b].into_iter().flatten() {
                assert_eq!(t.pa, RAM + 0x1000);
            }
            if rounds > 1 {
                seen.hit("reclaim had to wait");
            }
            assert_eq!(pool.frees(), 1);
            check_pool(&pool);
            finish(s2, &pool);
        },
    );
}

/// Model 5: `barrier()` vs an in-flight free. CPU 0 collapses (retiring the level-3 table onto
/// its own list), then leaves its section and reclaims; CPU 1 waits until the collapse returned
/// and calls `barrier()` while CPU 0 may still be inside its section or draining its list (the
/// two contend for the list's `busy` flag).
///
/// When `barrier()` returns, everything retired before it is freed: no CPU has anything
/// deferred and the pool counts match.
#[test]
fn barrier_vs_in_flight_frees() {
    let expect = ["the barrier freed it", "the owner freed it"];
    model("barrier_vs_in_flight_frees", None, &expect, |seen, flip| {
        let (s2, pool) = premapped_span();
        let retired = Arc::new(AtomicBool::new(false));
        let owner = {
            let (s2, retired) = (s2.clone(), retired.clone());
            first(flip, move || {
                let g = s2.shared(0);
                let r = g.collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx());
                // Release: the retire happened before the barrier thread sees the flag.
                retired.store(true, Release);
                drop(g);
                let before = s2.deferred(0);
                s2.reclaim(0);
                (r, before != 0 && s2.deferred(0) == 0)
            })
        };
        let barrier = {
            let (s2, pool, retired) = (s2.clone(), pool.clone(), retired.clone());
            second(flip, move || {
                while !retired.load(Acquire) {
                    thread::yield_now();
                }
                s2.barrier(1);
                let left = (s2.deferred(0), s2.deferred(1));
                assert_eq!(left, (0, 0), "barrier returned with work left");
                assert_eq!(pool.frees(), 1, "the retired table is freed");
            })
        };
        let (collapsed, owner_freed) = owner.join();
        assert_eq!(collapsed, Ok(Mapped::Replaced));
        barrier.join();
        seen.hit(match owner_freed {
            true => "the owner freed it",
            false => "the barrier freed it",
        });
        check_pool(&pool);
        finish(s2, &pool);
    });
}

/// Model 6 (bonus): an exclusive walker (unmap under the MMU lock) and a shared mapper never run
/// at once. Overlap is checked on loom's actual schedule with plain flags; `unmap` and `destroy`
/// walk under the exclusive lock and assert on any LOCKED entry.
///
/// Either the map came first (the unmap removed the page and freed both now-empty tables through
/// RCU) or the unmap did (nothing to remove; the page stays).
#[test]
fn exclusive_unmap_vs_shared_map() {
    let expect = ["map, then unmap", "unmap, then map"];
    model(
        "exclusive_unmap_vs_shared_map",
        None,
        &expect,
        |seen, flip| {
            let (s2, pool, _) = setup(3);
            // Plain (non-loom) flags: loom runs one thread at a time, so these record which sections
            // overlap in the explored schedule, independent of the memory model.
            let in_shared = Arc::new(StdBool::new(false));
            let in_excl = Arc::new(StdBool::new(false));
            let mapper = {
                let (s2, in_shared, in_excl) = (s2.clone(), in_shared.clone(), in_excl.clone());
                first(flip, move || loop {
                    let g = s2.shared(0);
                    in_shared.store(true, SeqCst);
                    assert!(
                        !in_excl.load(SeqCst),
                        "shared section inside an exclusive one"
                    );
                    let r = g.map(0x1000, RAM, Size::Page4K, Attrs::normal_rwx());
                    in_shared.store(false, SeqCst);
                    drop(g);
                    if r != Err(Error::Retry) {
                        break r;
                    }
                    thread::yield_now();
                })
            };
            let unmapper = {
                let (s2, in_shared, in_excl) = (s2.clone(), in_shared.clone(), in_excl.clone());
                second(flip, move || {
                    let g = s2.exclusive(1);
                    in_excl.store(true, SeqCst);
                    assert!(
                        !in_shared.load(SeqCst),
                        "exclusive section inside a shared one"
                    );
                    let r = g.unmap(0, MB2);
                    in_excl.store(false, SeqCst);
                    drop(g);
                    s2.reclaim(1);
                    r
                })
            };
            assert_eq!(mapper.join(), Ok(Mapped::Installed));
            let done = unmapper.join().unwrap();
            match translate(&s2, 0x1000) {
                None => {
                    assert_eq!((done.leaves, done.tables, done.flushed), (1, 2, true));
                    seen.hit("map, then unmap");
                }
                Some(t) => {
                    assert_eq!(t.pa, RAM);
                    assert_eq!((done.leaves, done.tables, done.flushed), (0, 0, false));
                    seen.hit("unmap, then map");
                }
            }
            check_pool(&pool);
            finish(s2, &pool);
        },
    );
}

/// Model 7: the MMU lock orders a writer's whole section before a reader that enters after it.
///
/// The exclusive section writes `a` (think: a migration repointing the memslot) and reads `r`; the
/// shared section writes `r` and reads `a`. If the sections really exclude each other, one of them
/// ran first and the other sees its write. With the reader's check of `writer` Relaxed, the reader
/// could see the flag already down without acquiring the writer's release, and both sides read 0
/// (found in review, confirmed by this model before the fix).
#[test]
fn writer_section_happens_before_later_reader() {
    model(
        "writer_section_happens_before_later_reader",
        None,
        &["writer first", "reader first"],
        |seen, flip| {
            let (s2, pool, _tlb) = setup(2);
            let a = Arc::new(loom::sync::atomic::AtomicU64::new(0));
            let r = Arc::new(loom::sync::atomic::AtomicU64::new(0));
            let writer = {
                let (s2, a, r) = (s2.clone(), a.clone(), r.clone());
                first(flip, move || {
                    let g = s2.exclusive(1);
                    a.store(1, loom::sync::atomic::Ordering::Relaxed);
                    let saw_r = r.load(loom::sync::atomic::Ordering::Relaxed);
                    drop(g);
                    saw_r
                })
            };
            let reader = {
                let (s2, a, r) = (s2.clone(), a.clone(), r.clone());
                second(flip, move || {
                    let g = s2.shared(0);
                    r.store(1, loom::sync::atomic::Ordering::Relaxed);
                    let saw_a = a.load(loom::sync::atomic::Ordering::Relaxed);
                    drop(g);
                    saw_a
                })
            };
            let writer_saw_r = writer.join();
            let reader_saw_a = reader.join();
            assert!(
                writer_saw_r == 1 || reader_saw_a == 1,
                "both sections ran as if alone: the writer read r=0 and the reader read a=0"
            );
            seen.hit(if reader_saw_a == 1 {
                "writer first"
            } else {
                "reader first"
            });
            finish(s2, &pool);
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 11: every data-path operation in shared mode.

/// `unmap` in a fresh read-side section (it never returns `Retry`), then a reclaim.
fn unmap_shared(s2: &S2, cpu: usize, start: u64, end: u64) -> RangeDone {
    let r = s2.shared(cpu).unmap(start, end).expect("shared unmap");
    s2.reclaim(cpu);
    r
}

/// Model 8: a shared unmap empties a level-3 table (its only page) while the other CPU maps
/// another page into the same table.
///
/// The unmapper zaps the page, finds the table left with only its own zapped entry, zaps the
/// table entry and every entry below it (the prune rule), issues one range invalidation, then
/// releases and retires. The mapper either lands first (the table is no longer empty and
/// stays), or meets a zapped entry and retries (then rebuilds the tables), or installs into the
/// table between the emptiness check and the zap (its leaf is taken with the table: stage 2 is a
/// cache, the page refaults). Never: a table published into the unlinked subtree (a leak), a
/// write into a freed table, a wrong count.
#[test]
fn shared_unmap_vs_map_into_the_same_table() {
    let expect = [
        "map first, table kept",
        "unmap first, table rebuilt",
        "map retried on a zapped entry",
    ];
    let name = "shared_unmap_vs_map_into_the_same_table";
    model(name, None, &expect, |seen, flip| {
        // Root, level-2, two level-3 tables (the page at `MB2` keeps the level-2 table alive, so
        // one table of 512 entries is zapped); the mapper may rebuild the level-3 table.
        let (s2, pool, _) = setup(6);
        let attrs = Attrs::normal_rwx();
        s2.shared(0)
            .map(MB2, RAM, Size::Page4K, attrs)
            .expect("premap");
        s2.shared(0)
            .map(0x1000, RAM + 0x1000, Size::Page4K, attrs)
            .expect("premap");
        let unmapper = {
            let s2 = s2.clone();
            first(flip, move || unmap_shared(&s2, 0, 0x1000, 0x2000))
        };
        let mapper = {
            let s2 = s2.clone();
            second(flip, move || {
                let r = map_until_done(&s2, 1, 0x2000, RAM + 0x2000, Size::Page4K, attrs);
                s2.reclaim(1);
                r
            })
        };
        let done = unmapper.join();
        let (first_try, mapped) = mapper.join();
        assert_eq!(mapped, Ok(Mapped::Installed));
        assert!(done.flushed);
        assert_eq!(translate(&s2, 0x1000), None, "the unmapped page is gone");
        if first_try == Err(Error::Retry) {
            seen.hit("map retried on a zapped entry");
        }
        match (translate(&s2, 0x2000), done.tables) {
            (Some(_), _) => assert_eq!(done.leaves, 1, "{done:?}"),
            (None, _) => assert_eq!(done.leaves, 2, "{done:?}"),
        }
        match (translate(&s2, 0x2000), done.tables) {
            (Some(t), 0) => {
                assert_eq!(t.pa, RAM + 0x2000);
                seen.hit("map first, table kept");
            }
            (Some(t), 1) => {
                assert_eq!(t.pa, RAM + 0x2000);
                seen.hit("unmap first, table rebuilt");
            }
            // Installed between the emptiness check and the zap: dropped with the table.
            (None, 1) => seen.hit("racing install dropped with the table"),
            other => panic!("unexpected end state {other:?}"),
        }
        check_pool(&pool);
        s2.barrier(0);
        finish(s2, &pool);
    });
}

/// Model 9: a shared unmap of one page vs a collapse (prune) of the 2 MiB span holding it.
///
/// The prune locks every descendant; it takes the unmapper's zapped entry like any other (its
/// own span invalidation covers it), and the unmapper's release of that entry then fails
/// harmlessly. Neither waits for the other forever (nobody waits for a zapped entry), the
/// level-3 table is freed exactly once, counts stay exact.
#[test]
fn shared_unmap_vs_prune() {
    let expect = [
        "block survives",
        "block after the unlink",
        "unmap removed the block",
    ];
    model("shared_unmap_vs_prune", None, &expect, |seen, flip| {
        // Root, level-2, two level-3 tables (the page at 0x1000 keeps the level-2 table alive).
        let (s2, pool, _) = setup(4);
        let attrs = Attrs::normal_rwx();
        s2.shared(0)
            .map(0x1000, RAM + 0x1000, Size::Page4K, attrs)
            .expect("premap");
        s2.shared(0)
            .map(MB2 + 0x1000, RAM + 0x1000, Size::Page4K, attrs)
            .expect("premap");
        let unmapper = {
            let s2 = s2.clone();
            first(flip, move || {
                unmap_shared(&s2, 0, MB2 + 0x1000, MB2 + 0x2000)
            })
        };
        let collapser = {
            let s2 = s2.clone();
            second(flip, move || {
                let r = loop {
                    let r = s2.shared(1).collapse(MB2, RAM, Size::Block2M, attrs);
                    if r != Err(Error::Retry) {
                        break r;
                    }
                    thread::yield_now();
                };
                s2.reclaim(1);
                r
            })
        };
        let done = unmapper.join();
        let collapsed = collapser.join();
        assert!(done.flushed, "{done:?}");
        match translate(&s2, MB2 + 0x5000) {
            Some(t) => {
                assert_eq!((t.pa, t.level), (RAM + 0x5000, 2));
                // Replaced the table, or installed over the entry the unmap had emptied.
                match collapsed {
                    Ok(Mapped::Replaced) => seen.hit("block survives"),
                    Ok(Mapped::Installed) => seen.hit("block after the unlink"),
                    other => panic!("collapse: {other:?}"),
                }
            }
            None => {
                assert_eq!(translate(&s2, MB2 + 0x1000), None);
                seen.hit("unmap removed the block");
            }
        }
        check_pool(&pool);
        s2.barrier(0);
        finish(s2, &pool);
    });
}

/// Model 10: a shared write-protect vs a break-before-make to another page followed by a relax
/// (+W) of the same IPA.
///
/// Write-protect changes only the value it read (compare-exchange), so it never writes the old
/// page's protected descriptor over the new mapping; it waits for the LOCKED entry and protects
/// what the break published, or runs after and protects the relaxed one, or before. The final
/// entry always maps the new page; it is writable exactly when the relax came after the
/// protection. Write-protect flushes in every interleaving: it covers the entry in whatever
/// state it found it (changed, already read-only, or LOCKED by the break), because another CPU
/// may still owe that entry's invalidation (`for_leaves`, range.rs).
#[test]
fn write_protect_vs_map_vs_relax() {
    let expect = [
        "protected last",
        "relaxed last",
        "protected the old page only",
    ];
    model(
        "write_protect_vs_map_vs_relax",
        None,
        &expect,
        |seen, flip| {
            let (s2, pool, _) = setup(3);
            s2.shared(0)
                .map(0x1000, RAM, Size::Page4K, Attrs::normal_rwx())
                .expect("premap");
            let protector = {
                let s2 = s2.clone();
                first(flip, move || s2.shared(0).write_protect(0x1000, 0x2000))
            };
            let mapper = {
                let s2 = s2.clone();
                second(flip, move || {
                    let new = RAM + 0x10_000;
                    let (_, m) =
                        map_until_done(&s2, 1, 0x1000, new, Size::Page4K, Attrs::normal(Perms::RX));
                    let r = s2.shared(1).relax_perms(0x1000, Perms::W);
                    (m, r)
                })
            };
            let wp = protector.join().unwrap();
            let (mapped, relaxed) = mapper.join();
            assert_eq!(mapped, Ok(Mapped::Replaced));
            assert_eq!(relaxed, Ok(()), "the relax finds a valid leaf");
            assert!(
                wp.flushed,
                "a shared write-protect covers the entry it found"
            );
            let t = translate(&s2, 0x1000).unwrap();
            assert_eq!(
                t.pa,
                RAM + 0x10_000,
                "write-protect clobbered the new mapping"
            );
            if t.attrs.perms.write {
                seen.hit("relaxed last");
                if wp.leaves == 1 {
                    seen.hit("protected the old page only");
                }
            } else {
                // Only a protection after the relax leaves it read-only.
                assert_eq!(wp.leaves, 1);
                seen.hit("protected last");
            }
            finish(s2, &pool);
        },
    );
}

/// Model 11: a hardware-dirty harvest races a guest write that the hardware walker turns into
/// a descriptor update (DBM = 1: compare-exchange setting S2AP[1]), modelled as the other CPU's
/// `hw_access`.
///
/// The write is reported exactly once: by the racing harvest or by the next one; never lost,
/// never twice; after the next harvest the leaf is writable-clean again.
#[test]
fn harvest_vs_hardware_dbm_update() {
    let expect = [
        "reported by the racing harvest",
        "reported by the next harvest",
    ];
    model(
        "harvest_vs_hardware_dbm_update",
        None,
        &expect,
        |seen, flip| {
            let (s2, pool, _) = setup(3);
            s2.shared(0)
                .map(0x1000, RAM, Size::Page4K, Attrs::normal_rwx())
                .expect("premap");
            assert_eq!(s2.shared(0).dirty_log_enable_hw(0, MB2).leaves, 1);
            let log = Arc::new(DirtyBitmap::new(0, 512));
            let harvester = {
                let (s2, log) = (s2.clone(), log.clone());
                first(flip, move || {
                    let mut pages = 0;
                    s2.shared(0)
                        .dirty_log_harvest_hw(&log, 0, MB2, |_, b| pages += b.count_ones());
                    pages
                })
            };
            let hardware = {
                let s2 = s2.clone();
                second(flip, move || {
                    s2.shared(1).hw_access(0x1008, true, true, true)
                })
            };
            let racing = harvester.join();
            let access = hardware.join();
            assert_eq!(
                access,
                HwAccess::Done {
                    pa: RAM + 8,
                    updated: true
                }
            );
            let mut next = 0;
            s2.shared(0)
                .dirty_log_harvest_hw(&log, 0, MB2, |_, b| next += b.count_ones());
            assert_eq!(racing + next, 1, "the write is reported exactly once");
            seen.hit(if racing == 1 {
                "reported by the racing harvest"
            } else {
                "reported by the next harvest"
            });
            let t = translate(&s2, 0x1000).unwrap();
            assert!(t.dbm && !t.attrs.perms.write, "writable-clean again: {t:?}");
            finish(s2, &pool);
        },
    );
}

/// Model 11b: under the EXCLUSIVE guard, an eager split of a writable-clean 2 MiB block
/// (DBM = 1, S2AP[1] = 0: hardware dirty logging on) races a guest write to one of its pages,
/// which the hardware walker turns into a descriptor update (compare-exchange setting S2AP[1])
/// without taking any lock ([`Stage2::hw_access`]): the MMU lock keeps other CPUs' software out,
/// not the hardware. A write that meets the LOCKED entry faults and is re-run.
///
/// Once the write landed, a harvest reports its page: the hardware dirtied the block before the
/// break (the split's compare-exchange `block -> LOCKED` then fails, it re-reads and splits the
/// dirty block, whose 512 pages are all dirty) or the page after the split. With a plain store
/// in exclusive mode (`set` before b441947) the break overwrote a dirty bit set between the
/// split's load and its store, the table it published was made from the clean block, and the
/// harvest reported nothing: the model fails on exactly that ("lost the hardware's dirty bit").
#[test]
fn exclusive_split_vs_hardware_dirty_update() {
    let expect = [
        "the hardware dirtied the block, then the split",
        "the split, then the hardware dirtied the page",
        "the split lost its compare-exchange to the hardware",
    ];
    model(
        "exclusive_split_vs_hardware_dirty_update",
        None,
        &expect,
        |seen, flip| {
            // Root, level-2 table, the split's table, and a second one when the split loses its
            // compare-exchange (the loom pool never reuses the page it freed).
            let (s2, pool, _) = setup(4);
            s2.shared(0)
                .map(MB2, RAM, Size::Block2M, Attrs::normal_rwx())
                .expect("premap");
            assert_eq!(s2.shared(0).dirty_log_enable_hw(MB2, 2 * MB2).leaves, 1);
            let splitter = {
                let s2 = s2.clone();
                first(flip, move || s2.exclusive(0).split_range(MB2, 2 * MB2))
            };
            let hardware = {
                let s2 = s2.clone();
                second(flip, move || loop {
                    match s2.hw_access(MB2 + 0x1008, true, true, true) {
                        HwAccess::Translation => thread::yield_now(), // LOCKED: re-run the store
                        done => return done,
                    }
                })
            };
            let split = splitter.join();
            let access = hardware.join();
            assert_eq!(split, Ok(1), "the split is redone, never given up");
            assert_eq!(
                access,
                HwAccess::Done {
                    pa: RAM + 0x1008,
                    updated: true
                }
            );
            let log = DirtyBitmap::new(MB2, 512);
            let mut pages = 0;
            s2.shared(0)
                .dirty_log_harvest_hw(&log, MB2, 2 * MB2, |_, b| pages += b.count_ones());
            assert!(
                pages > 0,
                "lost the hardware's dirty bit: the write was never reported"
            );
            if s2.stats().retry_cas > 0 {
                seen.hit("the split lost its compare-exchange to the hardware");
            }
            seen.hit(if pages == 512 {
                "the hardware dirtied the block, then the split"
            } else {
                assert_eq!(pages, 1, "only the written page is dirty");
                "the split, then the hardware dirtied the page"
            });
            let t = translate(&s2, MB2 + 0x1000).unwrap();
            assert_eq!(t.level, 3, "split");
            assert!(t.dbm && !t.attrs.perms.write, "writable-clean again: {t:?}");
            finish(s2, &pool);
        },
    );
}

/// Model 12: lockless aging (`test_clear_young` under RCU only) vs a shared unmap that unlinks
/// the level-3 and level-2 tables under it and reclaims.
///
/// The ager never touches a freed table (the pool panics on that in any execution), never
/// writes into an unlinked one (its compare-exchange fails on the zapped entry), and finds the
/// page young (before the unmap) or nothing; the tables are freed by a reclaim or the barrier.
#[test]
fn aging_vs_unmap_and_rcu_free() {
    let expect = ["aged the page", "nothing left to age"];
    model(
        "aging_vs_unmap_and_rcu_free",
        None,
        &expect,
        |seen, flip| {
            let (s2, pool, _) = setup(3);
            s2.shared(0)
                .map(MB2 + 0x1000, RAM, Size::Page4K, Attrs::normal_rwx())
                .expect("premap");
            let ager = {
                let s2 = s2.clone();
                first(flip, move || {
                    let a = s2.shared(1).test_clear_young(MB2, MB2 + 0x2000);
                    s2.reclaim(1);
                    a
                })
            };
            let unmapper = {
                let s2 = s2.clone();
                second(flip, move || unmap_shared(&s2, 0, MB2, 2 * MB2))
            };
            let aged = ager.join();
            let done = unmapper.join();
            assert_eq!((done.leaves, done.tables), (1, 2), "{done:?}");
            assert_eq!(translate(&s2, MB2 + 0x1000), None);
            seen.hit(match aged.young {
                1 => "aged the page",
                0 => "nothing left to age",
                n => panic!("{n} young leaves"),
            });
            s2.barrier(0);
            assert_eq!(pool.frees(), 2);
            finish(s2, &pool);
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The races the first models left out (issue 11, item 6).

/// Model 13: an eager split (`split_range`: a fully populated table, allocated and filled before
/// one break-before-make) of a 2 MiB block while the other CPU prunes the level-2 table holding
/// that block (a collapse of the whole 1 GiB span: the *ancestor* of the split entry).
///
/// The prune locks every descendant; it waits for the splitter's LOCKED block entry and takes
/// the table the split publishes there, so that table is freed with the subtree (not leaked);
/// a split that loses its break to the prune frees its unpublished table at once and skips the
/// entry; a split after the prune splits the 1 GiB block and then the 2 MiB block under it. In
/// every case no memory loses its mapping (every IPA of the block still maps `RAM + ipa`, and a
/// split table is fully populated), the counts are exact and every page comes back.
#[test]
fn eager_split_vs_ancestor_prune() {
    let expect = [
        "split, then the prune took the split table",
        "prune, then split 1 GiB and 2 MiB",
        "split skipped or lost to the prune",
    ];
    let name = "eager_split_vs_ancestor_prune";
    model(name, None, &expect, |seen, flip| {
        const GB: u64 = 1 << 30;
        // Root, level-2, level-3 (for the page at 0x1000); one table for the 2 MiB split, or two
        // (1 GiB, then 2 MiB) after the prune; a lost split's page is never reused under loom.
        let (s2, pool, _) = setup(6);
        let attrs = Attrs::normal_rwx();
        s2.shared(0)
            .map(0x1000, RAM + 0x1000, Size::Page4K, attrs)
            .expect("premap");
        s2.shared(0)
            .map(MB2, RAM + MB2, Size::Block2M, attrs)
            .expect("premap");
        let splitter = {
            let s2 = s2.clone();
            first(flip, move || {
                let n = s2.shared(0).split_range(MB2, 2 * MB2);
                s2.reclaim(0);
                n
            })
        };
        let pruner = {
            let s2 = s2.clone();
            second(flip, move || {
                let r = s2.shared(1).collapse(0, RAM, Size::Block1G, attrs);
                s2.reclaim(1);
                r
            })
        };
        let split = splitter.join().expect("the pool is large enough");
        assert_eq!(pruner.join(), Ok(Mapped::Replaced));
        let st = s2.stats();
        // No IPA of the old block, nor of the rest of the 1 GiB, lost its output.
        for ipa in [MB2, MB2 + 0x5008, 2 * MB2 - 8, 0x1000, GB - 8] {
            let t = translate(&s2, ipa).unwrap_or_else(|| panic!("{ipa:#x} lost its mapping"));
            assert_eq!(t.pa, RAM + ipa, "{ipa:#x}: {t:?}");
        }
        let level = translate(&s2, MB2 + 0x5008).unwrap().level;
        match (split, level) {
            // The split came first; the prune waited for (or found) its table and freed it with
            // the subtree: level 2, the old level 3, and the split table.
            (1, 1) => {
                assert_eq!(st.tables_retired, 3, "{st:?}");
                seen.hit("split, then the prune took the split table");
            }
            (2, 3) => {
                assert_eq!(st.tables_retired, 2, "{st:?}");
                seen.hit("prune, then split 1 GiB and 2 MiB");
            }
            // The block was LOCKED (or zapped under the walk): skipped, never waited for. A lost
            // break frees its unpublished table at once.
            (0, 1) => {
                assert_eq!(st.tables_retired, 2, "{st:?}");
                assert!(st.tables_raced <= 1, "{st:?}");
                seen.hit("split skipped or lost to the prune");
                if st.tables_raced == 1 {
                    seen.hit("split lost its break");
                }
            }
            other => panic!("split {} blocks, leaf at level {}", other.0, other.1),
        }
        check_pool(&pool);
        s2.barrier(0);
        assert_eq!(pool.frees(), st.tables_retired + st.tables_raced);
        finish(s2, &pool);
    });
}

/// Model 14: RCU with three CPUs, two readers at different phases and a reclaimer. CPU 2 (the
/// old reader, the main thread) enters a section and walks to the page before the other CPUs
/// start; then CPU 0 collapses the span (unlinking the level-3 table: a new epoch) and reclaims
/// once, while CPU 1 (the new reader) enters a section, possibly after the unlink with the new
/// epoch, and walks; then the old reader walks again and leaves.
///
/// The old reader could still reach the table (a stale read of the level-2 entry), so the free
/// must wait for it even when the newer reader's word is above the table's epoch: a reclaim that
/// judged by the newest reader (or by the first reader it finds, CPU 1 before CPU 2) would free
/// the table under the old reader's second walk. Within this model's preemption bound loom never
/// gives the new reader the advanced epoch while the old reader is inside, so that mutation
/// passes here: model 14b forces the schedule and catches it. This model catches a missing fence
/// after a reader publishes its word. The barrier at the end frees it once both have left.
#[test]
fn rcu_three_cpus_two_readers_and_a_reclaimer() {
    let expect = [
        "reclaim with an old and a new reader inside",
        "old reader's second walk saw the page",
        "free waited for the old reader",
    ];
    let name = "rcu_three_cpus_two_readers_and_a_reclaimer";
    model(name, Some(3), &expect, |seen, flip| {
        let (s2, pool) = premapped_span_on(3);
        // Plain flags (loom runs one thread at a time, and switches only at loom operations):
        // where each CPU is in the schedule, for the outcome labels only.
        let collapsed = Arc::new(StdBool::new(false));
        let reclaimed = Arc::new(StdBool::new(false));
        let old = s2.shared(2);
        let a = old.translate(MB2 + 0x1000);
        let writer = {
            let (s2, pool) = (s2.clone(), pool.clone());
            let (collapsed, reclaimed) = (collapsed.clone(), reclaimed.clone());
            move || {
                let r = s2
                    .shared(0)
                    .collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx());
                collapsed.store(true, SeqCst);
                s2.reclaim(0);
                let freed = pool.frees() == 1;
                reclaimed.store(true, SeqCst);
                (r, freed)
            }
        };
        let new_reader = {
            let (s2, collapsed, reclaimed) = (s2.clone(), collapsed.clone(), reclaimed.clone());
            move || {
                // Entered after the collapse returned (so after the epoch advance).
                let late = collapsed.load(SeqCst);
                let g = s2.shared(1);
                let t = g.translate(MB2 + 0x1000);
                // A loom operation first, so a reclaim scheduled before it is seen here.
                thread::yield_now();
                let inside_at_reclaim = reclaimed.load(SeqCst);
                drop(g);
                (t, late, inside_at_reclaim)
            }
        };
        // Both orders of spawning (loom's DPOR explores them differently).
        let (writer, new_reader) = if flip {
            let r = thread::spawn(new_reader);
            (thread::spawn(writer), r)
        } else {
            let w = thread::spawn(writer);
            (w, thread::spawn(new_reader))
        };
        // A loom operation first, so the other CPUs can run before the old reader's second walk.
        thread::yield_now();
        let old_inside_at_reclaim = reclaimed.load(SeqCst);
        let b = old.translate(MB2 + 0x1000);
        drop(old);
        let (collapse, freed) = writer.join().unwrap();
        let (t, late, new_inside_at_reclaim) = new_reader.join().unwrap();
        let both_inside = old_inside_at_reclaim && new_inside_at_reclaim;
        if both_inside && late {
            seen.hit("the new reader entered after the collapse");
        }
        assert_eq!(collapse, Ok(Mapped::Replaced));
        for t in [t, a, b].into_iter().flatten() {
            assert_eq!(t.pa, RAM + 0x1000, "a reader saw {t:?}");
        }
        assert_eq!(a.map(|t| t.level), Some(3), "the old reader started first");
        if b.is_some_and(|t| t.level == 3) {
            seen.hit("old reader's second walk saw the page");
        }
        if both_inside {
            seen.hit("reclaim with an old and a new reader inside");
            if !freed {
                seen.hit("free waited for the old reader");
            }
        }
        check_pool(&pool);
        s2.barrier(0);
        assert_eq!((pool.frees(), s2.deferred(0)), (1, 0));
        finish(s2, &pool);
    });
}

/// A one-way hand-off between two loom threads that blocks instead of spinning (three CPUs
/// spinning on flags make loom run past its branch limit): [`Gate::open`] happens before the
/// return of [`Gate::wait`]. One waiter per gate (a `Notify` has one).
#[derive(Default)]
struct Gate {
    up: AtomicBool,
    // May wake spuriously (loom's `Notify`), hence the flag.
    notify: Notify,
}

impl Gate {
    fn open(&self) {
        // Release: what the opener did before happens before the waiter's return.
        self.up.store(true, Release);
        self.notify.notify();
    }

    fn wait(&self) {
        while !self.up.load(Acquire) {
            self.notify.wait();
        }
    }
}

/// The table at `level` on the path to `ipa` (start level 1, as [`setup`] builds), found the way
/// a shared walk finds it: Acquire loads of each table entry from the root down.
fn table_on_path(s2: &S2, ipa: u64, level: u8) -> u64 {
    let mut pa = s2.root();
    for l in 1..level {
        let idx = ((ipa >> level_shift(l)) & 511) as usize;
        let e = Pte(s2.pool().table(pa)[idx].load(Acquire));
        assert!(e.is_table(l), "no table at level {l} for {ipa:#x}: {e:?}");
        pa = e.addr();
    }
    pa
}

/// Model 14b: the reclaim judges the grace period by the *oldest* reader, in the one schedule
/// that tells the oldest from the newest with three CPUs, forced with blocking hand-offs
/// ([`Gate`]) rather than left to the preemption bound (model 14 never reaches it within its
/// bound).
///
/// CPU 2 (the old reader, the main thread) enters a section and walks down to the level-3 table,
/// keeping its PA: a walk preempted between its level-2 and level-3 reads. Then CPU 0 collapses
/// the span (unlinking that table: the epoch advances past the table's stamp) and opens
/// `collapsed`; CPU 1 (the new reader) waits for it and enters, so its word is the advanced epoch
/// (the advance happens before the gate opened) and its walk finds the block; it opens `inside`;
/// CPU 0 waits for that, reclaims once and opens `reclaimed`; the old reader waits for it and
/// reads the level-3 entry through the PA it kept. The new reader leaves only after the reclaim.
///
/// At the reclaim both readers are inside, the new one with a word above the table's epoch and
/// the old one with a word equal to it, so only the old one's word keeps the table: a reclaim
/// that took the newest word (`max`) or the first non-zero word it finds (CPU 1's, before CPU
/// 2's) frees it, and the old reader's read panics in the pool. The barrier at the end frees it
/// once both have left. Preemption bound 2: loom still explores the interleavings inside each
/// step (the collapse against the readers' entries, the reclaim's loads), and unbounded it does
/// not finish one order in a minute.
#[test]
fn rcu_reclaim_waits_for_the_oldest_reader() {
    let expect = ["reclaim with an old and a new reader inside kept the table"];
    let name = "rcu_reclaim_waits_for_the_oldest_reader";
    model(name, Some(2), &expect, |seen, flip| {
        let (s2, pool) = premapped_span_on(3);
        let ipa = MB2 + 0x1000;
        let collapsed = Arc::new(Gate::default());
        let inside = Arc::new(Gate::default());
        let reclaimed = Arc::new([Gate::default(), Gate::default()]);
        let old = s2.shared(2);
        let l3 = table_on_path(&s2, ipa, 3);
        let idx = ((ipa >> level_shift(3)) & 511) as usize;
        let writer = {
            let (s2, pool) = (s2.clone(), pool.clone());
            let (collapsed, inside, reclaimed) =
                (collapsed.clone(), inside.clone(), reclaimed.clone());
            move || {
                let r = s2
                    .shared(0)
                    .collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx());
                // The unlink and the epoch advance happen before the new reader enters.
                collapsed.open();
                inside.wait();
                s2.reclaim(0);
                let kept = pool.frees() == 0;
                for n in reclaimed.iter() {
                    n.open();
                }
                (r, kept)
            }
        };
        let new_reader = {
            let s2 = s2.clone();
            let (collapsed, inside, reclaimed) =
                (collapsed.clone(), inside.clone(), reclaimed.clone());
            move || {
                collapsed.wait();
                let g = s2.shared(1);
                inside.open();
                // After the unlink: the walk finds the block, never the level-3 table.
                let t = g.translate(ipa);
                reclaimed[0].wait();
                drop(g);
                t
            }
        };
        // Both orders of spawning (loom's DPOR explores them differently).
        let (writer, new_reader) = if flip {
            let r = thread::spawn(new_reader);
            (thread::spawn(writer), r)
        } else {
            let w = thread::spawn(writer);
            (w, thread::spawn(new_reader))
        };
        reclaimed[1].wait();
        // The old walk goes on into the unlinked table: a use after free if the reclaim freed it.
        let e = Pte(s2.pool().table(l3)[idx].load(Acquire));
        drop(old);
        let (collapse, kept) = writer.join().unwrap();
        let t = new_reader.join().unwrap();
        assert_eq!(collapse, Ok(Mapped::Replaced));
        assert!(kept, "the reclaim freed the table under the old reader");
        // The prune locked every entry of the table before unlinking it, and the reclaim (after the
        // collapse) happens before this read: a walk that got here backs off and retries.
        assert_eq!(
            e,
            Pte::LOCKED,
            "the old reader's read of the unlinked table"
        );
        let t = t.expect("the new reader sees the block");
        assert_eq!((t.pa, t.level), (RAM + 0x1000, 2), "{t:?}");
        seen.hit("reclaim with an old and a new reader inside kept the table");
        check_pool(&pool);
        s2.barrier(0);
        assert_eq!((pool.frees(), s2.deferred(0)), (1, 0));
        finish(s2, &pool);
    });
}

/// A counter only MMU-lock sections touch (model 15).
struct Counter(loom::cell::UnsafeCell<u64>);

// SAFETY: every access is inside a section of the MMU lock, which is what model 15 checks: loom's
// `UnsafeCell` panics on any two accesses not ordered by happens-before.
unsafe impl Sync for Counter {}

/// Model 15: one writer hands the MMU lock to another while a reader waits. CPU 0 (the main
/// thread) holds the exclusive lock when CPU 1 (a second writer) and CPU 2 (a reader) start;
/// it unlocks while they wait (or are about to), and they race for the table.
///
/// Every section increments one counter in a `loom::cell::UnsafeCell`, so loom fails the model if
/// any two sections are not ordered by happens-before (a data race), not only if they overlap in
/// the schedule (a plain counter checks that); the counter ends at 3. A `write_unlock` that
/// dropped the writer lock before lowering `writer` lets the outgoing writer's `false` land
/// after the incoming writer raised the flag: the waiting reader walks in while the second
/// writer believes every CPU is quiescent.
#[test]
fn mmu_lock_handoff_while_a_reader_waits() {
    let expect = ["second writer, then reader", "reader, then second writer"];
    let name = "mmu_lock_handoff_while_a_reader_waits";
    model(name, Some(1), &expect, |seen, _flip| {
        let (s2, pool, _) = setup_cpus(
            Arc::new(CountingPool::new(1)),
            Arc::new(RecordingTlb::counting(Arc::new(CountingPool::new(0)))),
            3,
        );
        let cell = Arc::new(Counter(loom::cell::UnsafeCell::new(0)));
        // The schedule, recorded with plain (non-loom) state.
        let order = Arc::new(Mutex::new(String::new()));
        let inside = Arc::new(AtomicUsize::new(0));
        let enter = {
            let (cell, order, inside) = (cell.clone(), order.clone(), inside.clone());
            move |who: char| {
                assert_eq!(inside.fetch_add(1, SeqCst), 0, "two sections at once");
                order.lock().unwrap().push(who);
                // SAFETY: only inside a section; loom panics on two accesses not ordered by
                // happens-before.
                cell.0.with_mut(|v| unsafe { *v += 1 });
                assert_eq!(inside.fetch_sub(1, SeqCst), 1);
            }
        };
        let g = s2.exclusive(0);
        enter('W');
        let spawn = |who: char, cpu: usize| {
            let (s2, enter) = (s2.clone(), enter.clone());
            thread::spawn(move || {
                let g = if who == 'R' {
                    s2.shared(cpu)
                } else {
                    s2.exclusive(cpu)
                };
                enter(who);
                drop(g);
            })
        };
        let x = spawn('X', 1);
        let r = spawn('R', 2);
        drop(g);
        x.join().unwrap();
        r.join().unwrap();
        // SAFETY: every thread has been joined.
        assert_eq!(cell.0.with(|v| unsafe { *v }), 3);
        seen.hit(match order.lock().unwrap().as_str() {
            "WXR" => "second writer, then reader",
            "WRX" => "reader, then second writer",
            o => panic!("sections ran in order {o}"),
        });
        finish(s2, &pool);
    });
}

/// Model 16: a reclaim during another CPU's exclusive section. CPU 0 collapses the span in a
/// shared section (retiring the level-3 table), leaves, and reclaims until nothing is deferred;
/// CPU 1 takes the MMU lock and walks everything (translate, every table's count, a
/// write-protect of the 1 GiB span) meanwhile. When the walker finds the block (the collapse came
/// first) it waits inside its section for CPU 0's first reclaim, so that reclaim always runs
/// during the exclusive section (loom's DPOR alone rarely schedules it there).
///
/// The exclusive walk starts after the collapse's section ended (the writer waits for every
/// reader's word to go to 0, with acquire), so it sees the unlink and never walks into the table
/// the reclaim frees under it (the pool panics on that); the writer's own word (the epoch it
/// saw) does not hold up a free of what was retired before it entered, so the first reclaim
/// frees the table.
#[test]
fn reclaim_during_an_exclusive_section() {
    let expect = ["exclusive first", "freed during the exclusive section"];
    let name = "reclaim_during_an_exclusive_section";
    model(name, None, &expect, |seen, flip| {
        let (s2, pool) = premapped_span();
        // Relaxed handshakes: they must add no happens-before edge of their own (the one under
        // test is the MMU lock's).
        let entered = Arc::new(AtomicBool::new(false));
        let reclaimed = Arc::new(AtomicBool::new(false));
        let reclaimer = {
            let (s2, pool) = (s2.clone(), pool.clone());
            let (entered, reclaimed) = (entered.clone(), reclaimed.clone());
            first(flip, move || {
                let r = s2
                    .shared(0)
                    .collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx());
                while !entered.load(Relaxed) {
                    thread::yield_now();
                }
                s2.reclaim(0);
                let freed_first = pool.frees() == 1;
                reclaimed.store(true, Relaxed);
                while s2.deferred(0) != 0 {
                    s2.reclaim(0);
                    thread::yield_now();
                }
                (r, freed_first)
            })
        };
        let walker = {
            let (s2, entered, reclaimed) = (s2.clone(), entered.clone(), reclaimed.clone());
            second(flip, move || {
                let g = s2.exclusive(1);
                entered.store(true, Relaxed);
                let t = g.translate(MB2 + 0x1000).expect("the page or the block");
                if t.level == 2 {
                    // The collapse is done and cannot run again: let the reclaim free the
                    // table while we are still inside, then walk everything.
                    while !reclaimed.load(Relaxed) {
                        thread::yield_now();
                    }
                }
                let mut tables = 0;
                g.for_each_table(|pa, level, count, used| {
                    assert_eq!(count, used + 1, "table {pa:#x} at level {level}");
                    tables += 1;
                });
                let wp = g.write_protect(0, 1 << 30).unwrap();
                drop(g);
                (t, tables, wp)
            })
        };
        let (collapsed, freed_first) = reclaimer.join();
        let (t, tables, wp) = walker.join();
        assert_eq!(collapsed, Ok(Mapped::Replaced));
        assert_eq!(t.pa, RAM + 0x1000);
        assert_eq!(wp.leaves, 1, "{wp:?}");
        match (t.level, tables) {
            (3, 2) => seen.hit("exclusive first"),
            (2, 1) => {
                // A reader section that ended before the writer entered cannot hold up the
                // free, and the writer's word (a newer epoch) does not either.
                assert!(
                    freed_first,
                    "the reclaim inside the exclusive section freed nothing"
                );
                seen.hit("freed during the exclusive section");
            }
            other => panic!("the exclusive walk saw {other:?}"),
        }
        let t = translate(&s2, MB2 + 0x1000).unwrap();
        assert_eq!((t.level, t.pa), (2, RAM + 0x1000));
        assert_eq!((pool.frees(), s2.deferred(0)), (1, 0));
        finish(s2, &pool);
    });
}

/// Model 17: a map that runs out of memory races a prune of an ancestor. The pool has one table
/// allocation left. The mapper maps a page inside a 2 MiB block (a lazy split: allocate, break,
/// publish an empty table, install the page); the pruner collapses the whole 1 GiB span,
/// pruning the level-2 table that holds the block.
///
/// The map succeeds (split first), or loses the break to the prune (its unpublished table is
/// freed at once) and then finds the 1 GiB block and runs dry splitting it, or comes after the
/// prune, splits the 1 GiB block with the last page and runs dry one level down. Every failure
/// is [`Error::NoMemory`] (after any number of `Retry`s) and leaves nothing LOCKED (`destroy`
/// asserts on that), no page leaked, exact counts, and the IPA still mapped by the old block or
/// the 1 GiB block, or unmapped only because a split published an empty table in place of a
/// block (the table is a cache: the rest refaults).
#[test]
fn dry_map_vs_prune() {
    let expect = [
        "map, then prune",
        "map lost to the prune, then ran dry",
        "prune, then the map ran dry one level down",
        "the prune took the split table, then the map ran dry",
    ];
    model("dry_map_vs_prune", None, &expect, |seen, flip| {
        // Root, level-2, level-3 (0x1000); the one allocation the budget allows; no reuse.
        let (s2, pool, _) = setup(5);
        let attrs = Attrs::normal_rwx();
        s2.shared(0)
            .map(0x1000, RAM + 0x1000, Size::Page4K, attrs)
            .expect("premap");
        s2.shared(0)
            .map(MB2, RAM + MB2, Size::Block2M, attrs)
            .expect("premap");
        pool.set_budget(1);
        let mapper = {
            let s2 = s2.clone();
            first(flip, move || {
                let ipa = MB2 + 0x3000;
                let r = map_until_done(
                    &s2,
                    0,
                    ipa,
                    RAM + ipa,
                    Size::Page4K,
                    Attrs::normal(Perms::RX),
                );
                s2.reclaim(0);
                r
            })
        };
        let pruner = {
            let s2 = s2.clone();
            second(flip, move || {
                let r = s2.shared(1).collapse(0, RAM, Size::Block1G, attrs);
                s2.reclaim(1);
                r
            })
        };
        let (first_try, mapped) = mapper.join();
        assert_eq!(pruner.join(), Ok(Mapped::Replaced));
        let st = s2.stats();
        assert_eq!(
            pool.allocs(),
            2 + 1,
            "the premap's two tables and the budget's one"
        );
        let t = translate(&s2, MB2 + 0x3000);
        match mapped {
            Ok(Mapped::Installed) => {
                // The split came first: the prune took its table (with the page) and the 1 GiB
                // block maps the IPA again.
                assert_eq!(first_try, Ok(Mapped::Installed));
                let t = t.expect("the block");
                assert_eq!((t.pa, t.level), (RAM + MB2 + 0x3000, 1));
                assert_eq!(st.tables_retired, 3, "{st:?}");
                seen.hit("map, then prune");
            }
            Err(Error::NoMemory) if st.tables_raced == 1 => {
                // Lost the break (the prune had the entry), freed the page at once, then found
                // the 1 GiB block with an empty budget: no break was started.
                let t = t.expect("the 1 GiB block");
                assert_eq!((t.pa, t.level), (RAM + MB2 + 0x3000, 1));
                assert_eq!(st.tables_retired, 2, "{st:?}");
                seen.hit("map lost to the prune, then ran dry");
            }
            Err(Error::NoMemory) if st.tables_retired == 3 => {
                // The split won its break; the prune waited for it and took the published table
                // before the page went in (the map met a LOCKED entry there), then the re-run
                // found the 1 GiB block with an empty budget.
                let t = t.expect("the 1 GiB block");
                assert_eq!((t.pa, t.level), (RAM + MB2 + 0x3000, 1));
                seen.hit("the prune took the split table, then the map ran dry");
            }
            Err(Error::NoMemory) => {
                // After the prune (perhaps after a Retry on its LOCKED entry): the 1 GiB block
                // was split with the last page; the 2 MiB entry then needed a table.
                assert_eq!(t, None, "an empty level-2 table replaced the 1 GiB block");
                assert_eq!(st.tables_retired, 2, "{st:?}");
                assert_eq!(translate(&s2, 0x1000), None);
                seen.hit("prune, then the map ran dry one level down");
            }
            other => panic!("map: first {first_try:?}, last {other:?}"),
        }
        assert!(st.no_memory <= 1, "{st:?}");
        check_pool(&pool);
        s2.barrier(0);
        assert_eq!(pool.frees(), st.tables_retired + st.tables_raced);
        finish(s2, &pool);
    });
}
