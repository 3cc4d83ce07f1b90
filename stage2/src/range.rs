//! Operations over a range of IPAs that batch their TLB maintenance: many entries change, one
//! invalidation covers them all. Exclusive mode only, for now (see `docs/protocol.md`).

use crate::desc::Perms;
use crate::rcu::PageList;
use crate::stats::CpuStats;
use crate::{Error, Guard, PagePool, Pte, RangeDone, Tlb};

/// The IPA span that one batched invalidation must cover.
#[derive(Default)]
struct Dirty {
    lo: u64,
    hi: u64,
}

impl Dirty {
    fn add(&mut self, (base, size): (u64, u64)) {
        if self.hi == self.lo {
            (self.lo, self.hi) = (base, base + size);
        } else {
            self.lo = self.lo.min(base);
            self.hi = self.hi.max(base + size);
        }
    }

    fn is_empty(&self) -> bool {
        self.hi == self.lo
    }
}

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// Remove every mapping in `[start, end)`. A leaf that overlaps the range is removed whole
    /// (the table is a cache of guest memory: the guest refaults what it still uses). Tables left
    /// with no entries are unlinked and freed through RCU.
    ///
    /// Ordering: all entries are cleared, then one invalidation covering every cleared leaf and
    /// unlinked table completes, and only then are the tables retired (a walk cache may hold them
    /// until the invalidation).
    ///
    /// # Errors
    /// [`Error::NeedsExclusive`] in shared mode.
    pub fn unmap(&self, start: u64, end: u64) -> Result<RangeDone, Error> {
        if !self.exclusive {
            return Err(Error::NeedsExclusive);
        }
        let mut done = RangeDone::default();
        let mut dirty = Dirty::default();
        let mut freed = PageList::default();
        let mut w = self.walker(start, end).with_post_order();
        while !w.done() {
            let old = w.load();
            let level = w.level();
            if w.is_post() {
                // Back from a table's subtree: unlink it if nothing is left in it.
                if old.is_table(level) && self.table_is_empty(old.addr()) {
                    w.store(Pte::EMPTY);
                    self.count_dec(&w);
                    freed.push(&self.s2.pool, old.addr());
                    dirty.add(w.span());
                }
                w.skip();
                continue;
            }
            assert!(
                !old.is_locked(),
                "LOCKED stage-2 entry seen under the exclusive MMU lock"
            );
            if old.is_table(level) && w.covers(start, end) {
                // The whole subtree goes.
                done.leaves += crate::bbm::collect_subtree(self, old.addr(), level + 1, &mut freed);
                freed.push(&self.s2.pool, old.addr());
                w.store(Pte::EMPTY);
                self.count_dec(&w);
                dirty.add(w.span());
                w.skip(); // the subtree is gone: do not walk into it
                continue;
            }
            if old.is_leaf(level) {
                w.store(Pte::EMPTY);
                self.count_dec(&w);
                dirty.add(w.span());
                done.leaves += 1;
            }
            w.next(old);
        }
        done.tables = freed.len;
        CpuStats::add(&self.stats().unmapped, done.leaves);
        done.flushed = self.flush(&dirty);
        self.s2
            .rcu
            .retire(self.cpu, freed, &self.s2.pool, self.stats());
        Ok(done)
    }

    /// Remove write permission from every leaf overlapping `[start, end)` (a block is
    /// write-protected whole). A permission-only change of a valid entry needs no
    /// break-before-make; one invalidation at the end covers every changed leaf.
    ///
    /// # Errors
    /// [`Error::NeedsExclusive`] in shared mode.
    pub fn write_protect(&self, start: u64, end: u64) -> Result<RangeDone, Error> {
        if !self.exclusive {
            return Err(Error::NeedsExclusive);
        }
        let mut done = RangeDone::default();
        let mut dirty = Dirty::default();
        let mut w = self.walker(start, end);
        while !w.done() {
            let old = w.load();
            assert!(
                !old.is_locked(),
                "LOCKED stage-2 entry seen under the exclusive MMU lock"
            );
            if old.is_leaf(w.level()) && old.perms().write {
                let perms = old.perms();
                w.store(old.with_perms(Perms {
                    write: false,
                    ..perms
                }));
                dirty.add(w.span());
                done.leaves += 1;
            }
            w.next(old);
        }
        CpuStats::add(&self.stats().write_protected, done.leaves);
        done.flushed = self.flush(&dirty);
        Ok(done)
    }

    /// One broadcast invalidation for everything `dirty` covers, or none if nothing changed.
    fn flush(&self, dirty: &Dirty) -> bool {
        if dirty.is_empty() {
            return false;
        }
        self.s2.tlb.invalidate_range(dirty.lo, dirty.hi - dirty.lo);
        CpuStats::bump(&self.stats().tlbi_range);
        true
    }
}
