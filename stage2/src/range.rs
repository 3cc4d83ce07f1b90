//! Operations over a range of IPAs that batch their TLB maintenance: many entries change, one
//! invalidation covers them all. Both modes: under the exclusive lock with plain stores, in
//! shared mode with a compare-exchange on every entry (see `docs/protocol.md`, "Shared range
//! operations").

use crate::desc::{Perms, LAST_LEVEL};
use crate::rcu::PageList;
use crate::stats::CpuStats;
use crate::sync::{spin_wait, Ordering};
use crate::{Error, Guard, PagePool, Pte, RangeDone, Tlb};

/// The IPA span that one batched invalidation must cover.
#[derive(Default)]
pub(crate) struct Dirty {
    lo: u64,
    hi: u64,
}

impl Dirty {
    pub(crate) fn add(&mut self, (base, size): (u64, u64)) {
        if self.hi == self.lo {
            (self.lo, self.hi) = (base, base + size);
        } else {
            self.lo = self.lo.min(base);
            self.hi = self.hi.max(base + size);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
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
    /// In shared mode it runs concurrently with faults, relax, prune/collapse, split, aging and
    /// other range operations: each leaf is compare-exchanged to [`Pte::zapped`] (invalid, not
    /// fillable, never waited for), a table the range covers or that is left with only zapped
    /// and empty entries has its entry zapped and *every* entry below it zapped too (the prune
    /// rule: a walker already inside cannot install into it), then one `invalidate_range`
    /// covers everything, and only then are the zapped entries released to EMPTY and the tables
    /// retired to RCU. A fault that races into a table being unlinked may see its new leaf
    /// dropped with it (it refaults). Never fails with `Retry`: lost compare-exchanges are redone.
    ///
    /// # Errors
    /// None at present (`Result` for symmetry with the other operations).
    pub fn unmap(&self, start: u64, end: u64) -> Result<RangeDone, Error> {
        if !self.exclusive {
            return Ok(self.unmap_shared(start, end));
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

    /// Remove write permission (S2AP[1], and DBM so the hardware cannot give it back) from
    /// every leaf overlapping `[start, end)` (a block is write-protected whole). A
    /// permission-only change of a valid entry needs no break-before-make; one
    /// `invalidate_leaves` at the end covers every changed leaf. In shared mode each change is a
    /// compare-exchange (a lost one is redone with the new value; a LOCKED or zapped entry is
    /// skipped: it is being replaced or unmapped, and what is published there is a later
    /// mapping). A relax that runs after a leaf was protected wins (it is a later write fault);
    /// callers that need new mappings read-only (dirty logging) set their own flag first, so
    /// faults that race the walk map read-only, as KVM does with KVM_MEM_LOG_DIRTY_PAGES.
    ///
    /// # Errors
    /// None at present.
    pub fn write_protect(&self, start: u64, end: u64) -> Result<RangeDone, Error> {
        let done = self.update_leaves(start, end, |old| {
            (old.perms().write || old.dbm()).then(|| {
                old.with_perms(Perms {
                    write: false,
                    ..old.perms()
                })
                .with_dbm(false)
            })
        });
        CpuStats::add(&self.stats().write_protected, done.leaves);
        Ok(done)
    }

    /// Apply `f` to every valid leaf overlapping `[start, end)` (`None`: leave it) with one
    /// compare-exchange each (a store under the exclusive lock), then one `invalidate_leaves`
    /// covering every changed leaf and what another CPU may still have to invalidate
    /// (`for_leaves`).
    pub(crate) fn update_leaves(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(Pte) -> Option<Pte>,
    ) -> RangeDone {
        let mut done = RangeDone::default();
        let mut dirty = Dirty::default();
        self.for_leaves(start, end, |_, _, _| done.leaves += 1, &mut f, &mut dirty);
        done.flushed = self.flush_leaves(&dirty);
        done
    }

    /// Walk `[start, end)` and compare-exchange every valid leaf `old` for which `f` returns a new
    /// value; `changed(old, span, new)` after each success. Skips LOCKED and zapped entries
    /// (never waits). No invalidation: `covered` gains the span of every leaf changed and,
    /// clipped to the range, of every leaf `f` left as it was and every entry skipped, for the
    /// caller's one invalidation.
    ///
    /// Why the unchanged and skipped spans too: another CPU may have changed that entry first
    /// (protected the leaf, or locked/zapped it for a break-before-make, a prune or an unmap)
    /// and not yet invalidated it. A TLB may still hold the old writable translation; if this
    /// walk returned without its own invalidation of that span, its caller would be told the
    /// range is protected while a write through the stale entry can still land (and, under
    /// dirty logging, never be reported). The walker model found both cases
    /// (`tests/walkers.rs`; the return promise is in `docs/protocol.md`).
    pub(crate) fn for_leaves(
        &self,
        start: u64,
        end: u64,
        mut changed: impl FnMut(Pte, (u64, u64), Pte),
        f: &mut impl FnMut(Pte) -> Option<Pte>,
        covered: &mut Dirty,
    ) {
        let clipped = |(base, size): (u64, u64)| {
            let lo = base.max(start);
            (lo, (base + size).min(end) - lo)
        };
        let mut w = self.walker(start, end);
        while !w.done() {
            let old = w.load();
            let level = w.level();
            if old.is_busy() {
                assert!(
                    !self.exclusive,
                    "LOCKED stage-2 entry seen under the exclusive MMU lock"
                );
                // Mid-BBM, mid-prune or zapped: what gets published there is a later mapping.
                // Never wait: a LOCKED entry inside a table that was pruned under this walk is
                // never released. Its owner's invalidation may still be pending: cover it.
                covered.add(clipped(w.span()));
                w.skip();
                continue;
            }
            if old.is_leaf(level) {
                if let Some(new) = f(old) {
                    if self.set(&w, old, new).is_err() {
                        CpuStats::bump(&self.stats().retry_cas);
                        continue; // the hardware or another CPU changed it: redo with the new value
                    }
                    covered.add(w.span());
                    changed(old, w.span(), new);
                } else if !self.exclusive {
                    // Under the exclusive lock every earlier change was invalidated before its
                    // owner released the lock: nothing can be owed here.
                    covered.add(clipped(w.span()));
                }
            }
            w.next(old);
        }
    }

    /// One broadcast invalidation for everything `dirty` covers, or none if nothing changed.
    pub(crate) fn flush(&self, dirty: &Dirty) -> bool {
        if dirty.is_empty() {
            return false;
        }
        self.s2.tlb.invalidate_range(dirty.lo, dirty.hi - dirty.lo);
        CpuStats::bump(&self.stats().tlbi_range);
        true
    }

    /// One broadcast invalidation of the leaves in `dirty` (no table was unlinked), or none.
    pub(crate) fn flush_leaves(&self, dirty: &Dirty) -> bool {
        if dirty.is_empty() {
            return false;
        }
        self.s2.tlb.invalidate_leaves(dirty.lo, dirty.hi - dirty.lo);
        CpuStats::bump(&self.stats().tlbi_range);
        true
    }

    /// Shared-mode unmap: zap, one invalidation, release (see [`Guard::unmap`] and
    /// `docs/protocol.md`).
    fn unmap_shared(&self, start: u64, end: u64) -> RangeDone {
        let me = Pte::zapped(self.cpu);
        let mut done = RangeDone::default();
        let mut dirty = Dirty::default();
        let mut freed = PageList::default();
        // Entries this walk zapped in the table it is in at each level (reset on entering a
        // table): a table whose refcount is 1 + that many has nothing else in it.
        let mut zapped_in = [0u64; LAST_LEVEL as usize + 2];
        // Pass 1: zap. Everything we zap stays invalid and unfillable until pass 2.
        let mut w = self.walker(start, end).with_post_order();
        while !w.done() {
            let old = w.load();
            let level = w.level();
            if w.is_post() {
                // Back from a table's subtree: if only our zapped entries are left in it, unlink
                // it in the same batch.
                if old.is_table(level)
                    && self
                        .s2
                        .pool
                        .meta(old.addr())
                        .refcount
                        .load(Ordering::Relaxed)
                        == 1 + zapped_in[level as usize + 1]
                    && self.zap_table(&w, old, me, &mut freed, &mut done)
                {
                    zapped_in[level as usize] += 1;
                    dirty.add(w.span());
                }
                w.skip();
                continue;
            }
            if old.is_busy() {
                // LOCKED: a BBM or a prune in progress (what it publishes is a later mapping);
                // zapped: another range operation's, released after its own invalidation. Never
                // wait: a LOCKED entry may be the descendant of a pruned table, which nobody will
                // ever release (the walker must not spin in a retired page). Our invalidation
                // covers the span, so on return nothing cached for the old value survives.
                dirty.add(w.span());
                w.skip();
                continue;
            }
            if old.is_table(level) {
                if w.covers(start, end) {
                    if !self.zap_table(&w, old, me, &mut freed, &mut done) {
                        continue; // lost the entry: revisit
                    }
                    zapped_in[level as usize] += 1;
                    dirty.add(w.span());
                    w.skip();
                } else {
                    zapped_in[level as usize + 1] = 0;
                    w.next(old);
                }
                continue;
            }
            if old.is_leaf(level) {
                if w.cmpxchg(old, me).is_err() {
                    CpuStats::bump(&self.stats().retry_cas);
                    continue;
                }
                zapped_in[level as usize] += 1;
                done.leaves += 1;
                dirty.add(w.span());
            }
            w.skip();
        }
        // One invalidation for the whole range, completed before anything is released.
        done.flushed = self.flush(&dirty);
        // Pass 2: release our zapped entries that are still reachable (a prune may have taken
        // some: its own invalidation covered them, and it frees their tables).
        let mut w = self.walker(start, end);
        while !w.done() {
            let old = w.load();
            if old == me {
                if w.cmpxchg(me, Pte::EMPTY).is_ok() {
                    self.count_dec(&w);
                }
                w.skip();
                continue;
            }
            // Tables: descend. LOCKED: someone else's; whatever of ours is below it is theirs now.
            w.next(old);
        }
        done.tables = freed.len;
        CpuStats::add(&self.stats().unmapped, done.leaves);
        self.s2
            .rcu
            .retire(self.cpu, freed, &self.s2.pool, self.stats());
        done
    }

    /// Zap the table entry `old` at the walker and every entry below it (taking entries other
    /// range operations zapped, waiting only for LOCKED ones: the entry is ours, so no prune from
    /// above can hold anything below it, and a BBM or a prune rooted below ends without waiting
    /// for a zapped entry), adding its pages to `freed` and
    /// the leaves it held to `done`. False if the entry changed first (revisit it).
    fn zap_table(
        &self,
        w: &crate::walk::Walker<'_, P>,
        old: Pte,
        me: Pte,
        freed: &mut PageList,
        done: &mut RangeDone,
    ) -> bool {
        // From this compare-exchange on, no new walker enters the subtree and it is ours.
        if w.cmpxchg(old, me).is_err() {
            CpuStats::bump(&self.stats().retry_cas);
            return false;
        }
        done.leaves += self.zap_subtree(old.addr(), w.level() + 1, me, freed);
        freed.push(&self.s2.pool, old.addr());
        CpuStats::bump(&self.stats().prunes);
        true
    }

    /// Zap every entry of the table at `table` (entries at `level`) and below, depth first.
    /// Returns the leaves found (entries we had zapped before are not counted again).
    fn zap_subtree(&self, table: u64, level: u8, me: Pte, freed: &mut PageList) -> u64 {
        let mut leaves = 0;
        for entry in self.s2.pool.table(table) {
            let old = loop {
                let old = Pte(entry.load(Ordering::Acquire));
                if old == me {
                    break old;
                }
                if old.is_locked() {
                    // A BBM by a walker that was already inside: it does not wait for us.
                    spin_wait();
                    continue;
                }
                // Acquire on success: if `old` is a table we read its entries next.
                if entry
                    .compare_exchange(old.0, me.0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break old;
                }
            };
            if old.is_table(level) {
                leaves += self.zap_subtree(old.addr(), level + 1, me, freed);
                freed.push(&self.s2.pool, old.addr());
            } else if old.is_leaf(level) {
                leaves += 1;
            }
        }
        leaves
    }
}
