//! Aging with no lock: the access flag of stage-2 leaves, read and cleared under RCU only.
//!
//! A shared guard is all these need: every table page a walk can reach stays allocated until the
//! walk's section ends (unlinked tables are freed through RCU, after their invalidation), and
//! every change is a compare-exchange of a *valid* leaf, so an entry another CPU broke, zapped or
//! pruned meanwhile is never written (the compare-exchange fails and the entry is skipped). They
//! never wait for anything: a LOCKED or zapped entry is skipped, it is being replaced.
//!
//! With VTCR_EL2.HA = 1 the hardware sets AF itself on the next access (a compare-exchange of
//! its own on the descriptor); without it the access takes an Access flag fault and the fault
//! path sets it ([`Guard::mark_young`], or `map` of the same leaf).

use crate::desc::Pte;
use crate::range::Dirty;
use crate::stats::CpuStats;
use crate::{Error, Guard, PagePool, Tlb};

/// What an aging pass found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aged {
    /// Valid leaves with AF set.
    pub young: u64,
    /// 4 KiB pages those leaves map (inside the range).
    pub young_pages: u64,
    /// Valid leaves visited.
    pub leaves: u64,
}

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// Count the young (AF = 1) leaves overlapping `[start, end)` without changing anything
    /// (KVM's `test_age`). No invalidation.
    pub fn test_age(&self, start: u64, end: u64) -> Aged {
        self.age(start, end, false)
    }

    /// Count the young leaves overlapping `[start, end)` and make them old (AF = 0) by
    /// compare-exchange (KVM's `test_clear_young`). No TLB invalidation, as in KVM (its stage-2
    /// age walker: the invalidation is the core MMU notifier's `clear_flush_young` business): a
    /// TLB may keep an AF = 1 entry, so a page used only through it may look old next time;
    /// aging is a hint. Use [`Guard::clear_flush_young`] when that is not good enough.
    pub fn test_clear_young(&self, start: u64, end: u64) -> Aged {
        self.age(start, end, true)
    }

    /// [`Guard::test_clear_young`], then one `invalidate_leaves` covering the leaves made old,
    /// so the next access through any CPU sets AF again.
    pub fn clear_flush_young(&self, start: u64, end: u64) -> Aged {
        let mut dirty = Dirty::default();
        let aged = self.age_with(start, end, true, &mut |span| dirty.add(span));
        self.flush_leaves(&dirty);
        aged
    }

    /// [`Guard::test_clear_young`] that also hands each leaf it made old to `young` as `(base,
    /// size)` (IPA span of the whole leaf), for callers that keep per-page state (a working-set
    /// estimator, the hypervisor's aging check). With `flush`, one `invalidate_leaves` covering
    /// those leaves follows, as in [`Guard::clear_flush_young`].
    pub fn clear_young_each(
        &self,
        start: u64,
        end: u64,
        flush: bool,
        mut young: impl FnMut((u64, u64)),
    ) -> Aged {
        let mut dirty = Dirty::default();
        let aged = self.age_with(start, end, true, &mut |span| {
            dirty.add(span);
            young(span);
        });
        if flush {
            self.flush_leaves(&dirty);
        }
        aged
    }

    /// The Access flag fault (VTCR_EL2.HA = 0): set AF on the valid leaf that maps `ipa`. An
    /// in-place change of a valid entry: no break, and no invalidation (an entry with AF = 0
    /// faults, so it is not cached as usable).
    ///
    /// # Errors
    /// [`Error::Retry`] if nothing valid maps `ipa` or the entry changed first.
    pub fn mark_young(&self, ipa: u64) -> Result<(), Error> {
        if ipa >= self.s2.geom.ipa_limit() {
            return Err(Error::BadAddress);
        }
        let mut w = self.walker(ipa, ipa + 1);
        loop {
            let old = w.load();
            if old.is_table(w.level()) {
                w.next(old);
                continue;
            }
            if old.is_busy() {
                return Err(self.locked_seen());
            }
            if !old.is_valid() {
                return Err(Error::Retry);
            }
            if old.young() {
                return Ok(());
            }
            return self
                .set(&w, old, old.with_young(true))
                .map_err(|_| self.lost_race());
        }
    }

    fn age(&self, start: u64, end: u64, clear: bool) -> Aged {
        self.age_with(start, end, clear, &mut |_| {})
    }

    fn age_with(
        &self,
        start: u64,
        end: u64,
        clear: bool,
        cleared: &mut impl FnMut((u64, u64)),
    ) -> Aged {
        let mut aged = Aged::default();
        let mut w = self.walker(start, end);
        while !w.done() {
            let old = w.load();
            let level = w.level();
            if old.is_leaf(level) {
                if !old.young() {
                    aged.leaves += 1;
                    w.skip();
                    continue;
                }
                if clear {
                    let new: Pte = old.with_young(false);
                    if self.set(&w, old, new).is_err() {
                        // The hardware (setting DBM's S2AP[1]) or another CPU changed it: redo.
                        CpuStats::bump(&self.stats().retry_cas);
                        continue;
                    }
                    cleared(w.span());
                    CpuStats::bump(&self.stats().aged);
                }
                aged.leaves += 1;
                aged.young += 1;
                let (base, size) = w.span();
                let lo = base.max(start);
                let hi = (base + size).min(end);
                aged.young_pages += (hi - lo).div_ceil(crate::desc::PAGE_SIZE);
                w.skip();
                continue;
            }
            // Tables: descend. Empty, LOCKED, zapped: nothing to age, never wait.
            w.next(old);
        }
        aged
    }
}
