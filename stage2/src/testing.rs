//! Host implementations of the arch traits for tests and the host benchmark: a page pool that
//! counts every page and catches use-after-free, and a TLB that records every call together with
//! the state of the entry it invalidates at that moment; and the tests' PRNG (testing/rng.rs).

use std::boxed::Box;
use std::sync::atomic::{AtomicU64 as StdU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::vec::Vec;

use crate::arch::{PageMeta, PagePool, Table, Tlb};
use crate::desc::{level_shift, Pte, ENTRIES, PAGE_SIZE};
use crate::geometry::Geometry;
use crate::sync::AtomicU64;

mod rng;
pub use rng::Rng;

/// Fake physical address of the pool's first page. Not zero, so a zero PA is always a bug.
pub const POOL_BASE: u64 = 0x80_0000_0000;
/// What a freed table page is filled with: a table descriptor pointing outside every pool, so a
/// walker that reads a freed page and follows it panics in [`CountingPool::table`].
pub const POISON: u64 = Pte::table(0xDEAD_0000_0000).0;

const FREE: u8 = 0;
const TABLE: u8 = 1;
const ROOT: u8 = 2;

/// A fixed arena of 4 KiB "physical" pages that counts allocations and frees.
///
/// Under loom, freed pages are never reused (so zeroing needs no modelled stores, and any access
/// to a freed page panics); on the host they are reused, zeroed on allocation and poisoned on
/// free.
pub struct CountingPool {
    tables: Box<[Table]>,
    metas: Box<[PageMeta]>,
    state: Box<[AtomicU8]>,
    free: Mutex<Vec<usize>>,
    next_fresh: AtomicUsize,
    in_use: AtomicUsize,
    allocs: StdU64,
    frees: StdU64,
    /// Allocations left before the pool reports itself dry (`u64::MAX`: unlimited).
    budget: StdU64,
}

impl CountingPool {
    /// A pool of `pages` pages.
    #[must_use]
    pub fn new(pages: usize) -> CountingPool {
        CountingPool {
            tables: (0..pages)
                .map(|_| core::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            metas: (0..pages).map(|_| PageMeta::new()).collect(),
            state: (0..pages).map(|_| AtomicU8::new(FREE)).collect(),
            free: Mutex::new(Vec::new()),
            next_fresh: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            allocs: StdU64::new(0),
            frees: StdU64::new(0),
            budget: StdU64::new(u64::MAX),
        }
    }

    /// Pages currently handed out (tables and roots).
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }

    /// Table pages handed out so far.
    pub fn allocs(&self) -> u64 {
        self.allocs.load(Ordering::SeqCst)
    }

    /// Table pages returned so far.
    pub fn frees(&self) -> u64 {
        self.frees.load(Ordering::SeqCst)
    }

    /// Let only `n` more table allocations succeed (to test a dry pool).
    pub fn set_budget(&self, n: u64) {
        self.budget.store(n, Ordering::SeqCst);
    }

    fn index(&self, pa: u64) -> usize {
        assert!(
            pa >= POOL_BASE && pa.is_multiple_of(PAGE_SIZE),
            "PA {pa:#x} is not a pool page"
        );
        let i = ((pa - POOL_BASE) / PAGE_SIZE) as usize;
        assert!(
            i < self.tables.len(),
            "PA {pa:#x} is outside the pool (poisoned or bogus)"
        );
        i
    }

    fn take(&self, state: u8) -> Option<usize> {
        let reused = if cfg!(loom) {
            None
        } else {
            self.free.lock().unwrap().pop()
        };
        let i = match reused {
            Some(i) => i,
            None => {
                let i = self.next_fresh.fetch_add(1, Ordering::SeqCst);
                if i >= self.tables.len() {
                    self.next_fresh.fetch_sub(1, Ordering::SeqCst);
                    return None;
                }
                i
            }
        };
        if reused.is_some() {
            for e in &self.tables[i] {
                e.store(0, crate::sync::Ordering::Relaxed);
            }
        }
        let prev = self.state[i].swap(state, Ordering::SeqCst);
        assert_eq!(prev, FREE, "page handed out twice");
        self.in_use.fetch_add(1, Ordering::SeqCst);
        Some(i)
    }

    fn give(&self, i: usize, expect: u8) {
        let prev = self.state[i].swap(FREE, Ordering::SeqCst);
        assert_eq!(
            prev, expect,
            "freeing page {i} in the wrong state (double free?)"
        );
        if !cfg!(loom) {
            for e in &self.tables[i] {
                e.store(POISON, crate::sync::Ordering::Relaxed);
            }
            self.free.lock().unwrap().push(i);
        }
        self.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PagePool for CountingPool {
    fn alloc_table(&self, _cpu: usize) -> Option<u64> {
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            return None;
        }
        if left != u64::MAX {
            self.budget.fetch_sub(1, Ordering::SeqCst);
        }
        let i = self.take(TABLE)?;
        self.allocs.fetch_add(1, Ordering::SeqCst);
        Some(POOL_BASE + i as u64 * PAGE_SIZE)
    }

    fn free_table(&self, _cpu: usize, pa: u64) {
        self.give(self.index(pa), TABLE);
        self.frees.fetch_add(1, Ordering::SeqCst);
    }

    fn alloc_root(&self, pages: usize) -> Option<u64> {
        // Roots are taken first from fresh pages, so contiguity and alignment come from taking
        // them at an aligned index.
        let start = self
            .next_fresh
            .load(Ordering::SeqCst)
            .next_multiple_of(pages);
        if start + pages > self.tables.len() {
            return None;
        }
        self.next_fresh.store(start + pages, Ordering::SeqCst);
        for i in start..start + pages {
            assert_eq!(self.state[i].swap(ROOT, Ordering::SeqCst), FREE);
        }
        self.in_use.fetch_add(pages, Ordering::SeqCst);
        Some(POOL_BASE + start as u64 * PAGE_SIZE)
    }

    fn free_root(&self, pa: u64, pages: usize) {
        let start = self.index(pa);
        for i in start..start + pages {
            self.give(i, ROOT);
        }
    }

    fn table(&self, pa: u64) -> &Table {
        let i = self.index(pa);
        assert_ne!(
            self.state[i].load(Ordering::SeqCst),
            FREE,
            "use after free of table page {pa:#x}"
        );
        &self.tables[i]
    }

    fn meta(&self, pa: u64) -> &PageMeta {
        &self.metas[self.index(pa)]
    }
}

/// One recorded TLB call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbOp {
    /// `invalidate_ipa(ipa, level)`, with the entry's raw value at that moment (`None` if the
    /// path to it no longer exists).
    Ipa {
        ipa: u64,
        level: u8,
        entry: Option<u64>,
    },
    /// `invalidate_range(ipa, size)`, with the value of the entry that maps exactly that span.
    Range {
        ipa: u64,
        size: u64,
        entry: Option<u64>,
    },
    /// `invalidate_leaves(ipa, size)`: leaves only (write-protect, dirty harvest, aging).
    Leaves { ipa: u64, size: u64 },
    /// `invalidate_vmid()`.
    Vmid,
    /// `invalidate_ipa_local(ipa, level)`.
    Local { ipa: u64, level: u8 },
    /// `publish()`.
    Publish,
}

/// A TLB that records every call (when logging is on) and counts them (always).
pub struct RecordingTlb {
    pool: Arc<CountingPool>,
    table: OnceLock<(u64, Geometry)>,
    log: Mutex<Vec<TlbOp>>,
    keep_log: bool,
    broadcasts: StdU64,
}

impl RecordingTlb {
    /// A recorder that reads entries from `pool` and keeps a full log.
    #[must_use]
    pub fn new(pool: Arc<CountingPool>) -> RecordingTlb {
        RecordingTlb {
            pool,
            table: OnceLock::new(),
            log: Mutex::new(Vec::new()),
            keep_log: true,
            broadcasts: StdU64::new(0),
        }
    }

    /// A recorder that only counts (for stress runs and benchmarks).
    #[must_use]
    pub fn counting(pool: Arc<CountingPool>) -> RecordingTlb {
        RecordingTlb {
            keep_log: false,
            ..RecordingTlb::new(pool)
        }
    }

    /// Tell the recorder which table to read entries from (call after `Stage2::new`).
    pub fn attach(&self, root: u64, geom: Geometry) {
        let _ = self.table.set((root, geom));
    }

    /// Take the log recorded so far.
    pub fn take(&self) -> Vec<TlbOp> {
        core::mem::take(&mut *self.log.lock().unwrap())
    }

    /// Broadcast invalidations so far.
    pub fn broadcasts(&self) -> u64 {
        self.broadcasts.load(Ordering::SeqCst)
    }

    /// The raw entry at `level` on the path to `ipa`, if the path exists down to that level.
    #[must_use]
    pub fn entry_at(&self, ipa: u64, level: u8) -> Option<u64> {
        let &(root, geom) = self.table.get()?;
        let mut l = geom.start_level();
        let idx = ((ipa >> level_shift(l)) as usize) & (geom.root_entries() - 1);
        let mut e = self.pool.table(root + (idx / ENTRIES) as u64 * PAGE_SIZE)[idx % ENTRIES]
            .load(crate::sync::Ordering::Acquire);
        while l < level {
            if !Pte(e).is_table(l) {
                return None;
            }
            l += 1;
            let idx = ((ipa >> level_shift(l)) as usize) & (ENTRIES - 1);
            e = self.pool.table(Pte(e).addr())[idx].load(crate::sync::Ordering::Acquire);
        }
        Some(e)
    }

    fn record(&self, op: TlbOp) {
        if self.keep_log {
            self.log.lock().unwrap().push(op);
        }
    }
}

impl Tlb for RecordingTlb {
    fn invalidate_ipa(&self, ipa: u64, level: u8) {
        self.broadcasts.fetch_add(1, Ordering::SeqCst);
        let entry = if self.keep_log {
            self.entry_at(ipa, level)
        } else {
            None
        };
        self.record(TlbOp::Ipa { ipa, level, entry });
    }

    fn invalidate_range(&self, ipa: u64, size: u64) {
        self.broadcasts.fetch_add(1, Ordering::SeqCst);
        // When the span is exactly one entry's (a pruned table), record that entry's state.
        let level = (0..=3u8).find(|&l| crate::desc::level_size(l) == size);
        let entry = if self.keep_log {
            level.and_then(|l| self.entry_at(ipa, l))
        } else {
            None
        };
        self.record(TlbOp::Range { ipa, size, entry });
    }

    fn invalidate_leaves(&self, ipa: u64, size: u64) {
        self.broadcasts.fetch_add(1, Ordering::SeqCst);
        self.record(TlbOp::Leaves { ipa, size });
    }

    fn invalidate_vmid(&self) {
        self.broadcasts.fetch_add(1, Ordering::SeqCst);
        self.record(TlbOp::Vmid);
    }

    fn invalidate_ipa_local(&self, ipa: u64, level: u8) {
        self.record(TlbOp::Local { ipa, level });
    }

    fn publish(&self) {
        self.record(TlbOp::Publish);
    }
}

// A `Stage2` shared between threads (and loom models) owns `Arc`s of the pool and TLB.
crate::arch::delegate_arch!(Arc<X>, [Send + ?Sized]);

std::thread_local! {
    static SPIN_HOOK: core::cell::Cell<Option<fn()>> = const { core::cell::Cell::new(None) };
}

/// Run `hook` on this thread in every busy-wait loop of the crate (waiting for a LOCKED entry,
/// an RCU list, a grace period), or nothing with `None` (the default). A test that runs its
/// simulated CPUs one at a time (`stage2/tests/walkers.rs`) switches to another CPU there:
/// without it the spinning CPU would wait for an owner that never runs.
pub fn set_spin_hook(hook: Option<fn()>) {
    SPIN_HOOK.with(|h| h.set(hook));
}

/// Called by `sync::spin_wait` (feature `testing`, not under loom).
#[cfg(not(loom))]
pub(crate) fn spin_hook() {
    if let Some(hook) = SPIN_HOOK.with(core::cell::Cell::get) {
        hook();
    }
}
