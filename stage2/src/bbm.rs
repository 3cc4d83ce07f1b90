//! The break-before-make protocol, in named steps.
//!
//! Arm ARM, "Using break-before-make when updating translation table entries": to replace a valid
//! entry with a different valid one (other output address, other size, table <-> block), the old
//! entry must first be made invalid, its TLB entries invalidated and the invalidation completed,
//! and only then may the new entry be written. Between the two writes we park the entry at
//! [`Pte::LOCKED`]: invalid for the hardware walker, "taken" for every software walker.
//!
//! - [`Guard::try_break`]: compare-exchange `old -> LOCKED`, then the invalidation that `old`
//!   needs — a table: its whole span, no level hint; a valid leaf: its IPA at its level; an
//!   invalid entry: nothing (nothing can be cached for it).
//! - [`Guard::make`]: check the entry is still LOCKED, release-store the new value.
//! - [`Guard::prune`]: table -> leaf (or -> empty): lock the entry, then lock *every* descendant
//!   so no walker already inside the subtree can install anything, one invalidation for the span,
//!   publish, and hand the subtree to RCU.

use crate::desc::{Pte, LAST_LEVEL};
use crate::rcu::PageList;
use crate::stats::CpuStats;
use crate::sync::{spin_wait, AtomicU64, Ordering};
use crate::walk::Walker;
use crate::{Error, Guard, PagePool, Tlb};

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// A LOCKED entry is another CPU's mid-update in shared mode (retry), and a bug in exclusive
    /// mode, where nobody else may be inside the table.
    pub(crate) fn locked_seen(&self) -> Error {
        assert!(
            !self.exclusive,
            "LOCKED stage-2 entry seen under the exclusive MMU lock"
        );
        CpuStats::bump(&self.stats().retry_locked);
        Error::Retry
    }

    /// Account for a lost compare-exchange.
    pub(crate) fn lost_race(&self) -> Error {
        CpuStats::bump(&self.stats().retry_cas);
        Error::Retry
    }

    /// Set the current entry from `old` to `new`: a compare-exchange, except over an invalid
    /// entry under the exclusive lock (a plain store). The exclusive lock keeps other CPUs'
    /// software out, not the hardware: with VTCR_EL2.HA/HD the table walker itself sets the
    /// Access flag and S2AP[1] (dirty state) of a valid leaf (Arm ARM "Hardware
    /// management of the Access flag and dirty state", by an atomic read-modify-write), so a
    /// plain store over a valid leaf could drop a page's dirty state under `dirty=hw` or its
    /// youth under aging. A lost compare-exchange returns the new value for the caller to
    /// redo, as in shared mode.
    pub(crate) fn set(&self, w: &Walker<'_, P>, old: Pte, new: Pte) -> Result<(), Pte> {
        if self.exclusive && !old.is_valid() {
            w.store(new);
            Ok(())
        } else {
            w.cmpxchg(old, new)
        }
    }

    /// Step 1 of BBM: own the entry. Fails with `Retry` if another CPU got there first.
    pub(crate) fn lock_entry(&self, w: &Walker<'_, P>, old: Pte) -> Result<(), Error> {
        if old.is_busy() {
            return Err(self.locked_seen());
        }
        self.set(w, old, Pte::LOCKED).map_err(|_| self.lost_race())
    }

    /// Step 2 of BBM: invalidate what the hardware may have cached for `old`, and wait for it.
    pub(crate) fn invalidate_evicted(&self, w: &Walker<'_, P>, old: Pte) {
        let (base, size) = w.span();
        if old.is_table(w.level()) {
            // A table: walk caches may hold it or anything below it. Invalidate the whole span,
            // without a level hint (a hint names a leaf level; a table's level is wrong).
            self.s2.tlb.invalidate_range(base, size);
            CpuStats::bump(&self.stats().tlbi_range);
        } else if old.is_valid() {
            self.s2.tlb.invalidate_ipa(base, w.level());
            CpuStats::bump(&self.stats().tlbi_ipa);
        } else {
            // Invalid: the TLB cannot hold a translation for it. This elision is what makes
            // demand faults cheap.
            CpuStats::bump(&self.stats().tlbi_elided);
        }
    }

    /// Steps 1 and 2: the entry is LOCKED and nothing cached for `old` survives.
    pub(crate) fn try_break(&self, w: &Walker<'_, P>, old: Pte) -> Result<(), Error> {
        // EMPTY -> LOCKED would need a count_inc (make never adds one); an empty entry is filled
        // by a compare-exchange from EMPTY, not broken.
        debug_assert!(!old.is_empty(), "try_break of an EMPTY entry");
        self.lock_entry(w, old)?;
        self.invalidate_evicted(w, old);
        Ok(())
    }

    /// Step 3 of BBM: publish `new` over our LOCKED entry (release: whatever `new` points at is
    /// visible first). Fixes the containing table's count if the entry becomes empty.
    pub(crate) fn make(&self, w: &Walker<'_, P>, new: Pte) {
        assert!(
            w.load().is_locked(),
            "make: the entry we broke is no longer LOCKED"
        );
        w.store(new);
        if new.is_empty() {
            self.count_dec(w);
        }
    }

    /// Replace the table at the current entry (`old`) with `new` (a block, or empty), freeing the
    /// subtree through RCU once the invalidation has completed.
    pub(crate) fn prune(&self, w: &Walker<'_, P>, old: Pte, new: Pte) -> Result<(), Error> {
        debug_assert!(old.is_table(w.level()));
        // Lock the entry first: from now on no new walker can enter the subtree.
        self.lock_entry(w, old)?;
        // Walkers already inside may still install; lock every descendant so they cannot (their
        // compare-exchanges fail and they retry from the root, where they find LOCKED).
        let mut subtree = PageList::default();
        collect_subtree(self, old.addr(), w.level() + 1, &mut subtree);
        subtree.push(&self.s2.pool, old.addr());
        // One invalidation for the whole span covers the table and everything below it.
        self.invalidate_evicted(w, old);
        self.make(w, new);
        CpuStats::bump(&self.stats().prunes);
        // Only now, after the invalidation completed, may RCU start the grace period's clock.
        self.s2
            .rcu
            .retire(self.cpu, subtree, &self.s2.pool, self.stats());
        Ok(())
    }

    /// A zeroed table page with a refcount of 1 (no entries yet).
    pub(crate) fn alloc_table(&self) -> Result<u64, Error> {
        let Some(pa) = self.s2.pool.alloc_table(self.cpu) else {
            CpuStats::bump(&self.stats().no_memory);
            return Err(Error::NoMemory);
        };
        // Relaxed: the page is private until published by a release.
        self.s2.pool.meta(pa).refcount.store(1, Ordering::Relaxed);
        CpuStats::bump(&self.stats().tables_alloc);
        Ok(pa)
    }

    /// Give back a table page that was never published (we lost the race to install it).
    pub(crate) fn free_unpublished(&self, pa: u64) {
        self.s2.pool.free_table(self.cpu, pa);
        CpuStats::bump(&self.stats().tables_raced);
        CpuStats::bump(&self.stats().tables_freed);
    }

    /// The current entry went from empty to non-empty.
    pub(crate) fn count_inc(&self, w: &Walker<'_, P>) {
        if let Some(t) = w.containing_table() {
            // Relaxed: the count is only judged under the exclusive lock, which orders it.
            self.s2
                .pool
                .meta(t)
                .refcount
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current entry went from non-empty to empty.
    pub(crate) fn count_dec(&self, w: &Walker<'_, P>) {
        if let Some(t) = w.containing_table() {
            self.s2
                .pool
                .meta(t)
                .refcount
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the table at `pa` has no entries (refcount back to 1).
    pub(crate) fn table_is_empty(&self, pa: u64) -> bool {
        self.s2.pool.meta(pa).refcount.load(Ordering::Relaxed) == 1
    }
}

/// Lock every entry below the table at `table` (whose entries are at `level`), depth first, and
/// add every table page found below it to `out`. In exclusive mode nobody else is inside, so the
/// entries are only read. Returns the number of leaves the subtree mapped.
pub(crate) fn collect_subtree<P: PagePool, T: Tlb>(
    g: &Guard<'_, P, T>,
    table: u64,
    level: u8,
    out: &mut PageList,
) -> u64 {
    let pool = &g.s2.pool;
    let mut leaves = 0;
    for entry in pool.table(table) {
        let old = if g.exclusive {
            let old = Pte(entry.load(Ordering::Relaxed));
            assert!(
                !old.is_busy(),
                "LOCKED stage-2 entry seen under the exclusive MMU lock"
            );
            old
        } else {
            lock_descendant(entry)
        };
        if level < LAST_LEVEL && old.is_table(level) {
            leaves += collect_subtree(g, old.addr(), level + 1, out);
            out.push(pool, old.addr());
        } else if old.is_leaf(level) {
            leaves += 1;
        }
    }
    leaves
}

/// Take one descendant entry for a prune and return what it held.
///
/// A zapped entry (a shared range operation's, waiting for its invalidation) is taken like any
/// other: the prune's own span invalidation, issued after this, covers it, and the zapping CPU's
/// release (a compare-exchange from its zapped value) then fails harmlessly. Nobody waits for a
/// zapped entry, which is what keeps range operations free of deadlock (docs/protocol.md).
///
/// An entry another CPU holds LOCKED is mid-BBM and will be released without waiting on us: its
/// owner locked it before reaching anything we hold (everyone locks ancestors first), so it is
/// only doing its invalidation. We wait, then take whatever it published; a table published there
/// becomes part of the subtree we free.
fn lock_descendant(entry: &AtomicU64) -> Pte {
    loop {
        let old = Pte(entry.load(Ordering::Acquire));
        if old.is_locked() {
            spin_wait();
            continue;
        }
        // Acquire on success: if `old` is a table we read its entries next.
        if entry
            .compare_exchange(old.0, Pte::LOCKED.0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return old;
        }
    }
}
