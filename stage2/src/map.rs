//! The fault path: install a leaf for one IPA, allocating tables on the way, splitting a block
//! that is in the way, or pruning a table that a block replaces.

use crate::desc::{Pte, Size};
use crate::stats::CpuStats;
use crate::{Attrs, Error, Guard, Mapped, PagePool, Tlb};

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// Map `ipa` to `pa` with a leaf of `size`.
    ///
    /// - Missing tables are installed by compare-exchange `empty -> table`; the loser frees its
    ///   page at once (it was never visible) and walks into the winner's table.
    /// - An empty target entry becomes the leaf: no TLB invalidation (nothing could be cached).
    /// - The identical leaf already there: [`Mapped::Spurious`].
    /// - A leaf with the same output and only other permissions: [`Error::Retry`]; permission
    ///   changes go through [`Guard::relax_perms`], never through a break.
    /// - A different leaf: break-before-make. A larger block in the way: split it (break the
    ///   block, publish a table, continue into it; the rest of the block refaults lazily). A table
    ///   where the leaf should go: prune it (see [`Guard::collapse`]).
    ///
    /// Ends with [`Tlb::publish`] so other walkers see the new entries before the guest re-runs.
    ///
    /// # Errors
    /// [`Error::Retry`] when another CPU won a race or owns an entry on the path;
    /// [`Error::NoMemory`] when a table page is needed and the pool is dry (nothing is left
    /// half-done); [`Error::BadAddress`] for an unaligned or out-of-range address.
    pub fn map(&self, ipa: u64, pa: u64, size: Size, attrs: Attrs) -> Result<Mapped, Error> {
        let target = size.level();
        if !ipa.is_multiple_of(size.bytes())
            || !pa.is_multiple_of(size.bytes())
            || ipa >= self.s2.geom.ipa_limit()
            || target < self.s2.geom.start_level()
        {
            return Err(Error::BadAddress);
        }
        let new = Pte::leaf(pa, target, attrs, self.s2.memattr);
        let mut stored = false;
        let result = self.map_walk(ipa, target, new, &mut stored);
        // Also when the walk failed after installing a table or splitting a block: those stores
        // should reach other walkers before the guest re-runs (else at worst a spurious fault).
        if stored {
            self.s2.tlb.publish();
        }
        result
    }

    /// The walk of [`Guard::map`]; sets `stored` once it has changed any entry.
    fn map_walk(&self, ipa: u64, target: u8, new: Pte, stored: &mut bool) -> Result<Mapped, Error> {
        let mut w = self.walker(ipa, ipa + 1);
        loop {
            let old = w.load();
            let level = w.level();
            if old.is_busy() {
                // LOCKED (mid-BBM or prune) or zapped (a range operation's invalidation is still
                // pending: filling it now would break before the invalidation completed).
                return Err(self.locked_seen());
            }
            if level < target {
                if old.is_table(level) {
                    w.next(old);
                } else if old.is_empty() {
                    let table = self.alloc_table()?;
                    match self.set(&w, old, Pte::table(table)) {
                        Ok(()) => {
                            *stored = true;
                            // invalid -> table needs no TLBI.
                            CpuStats::bump(&self.stats().tlbi_elided);
                            self.count_inc(&w);
                            w.descend(table);
                        }
                        // Lost: nobody saw our page; free it now and revisit the entry, which
                        // now holds the winner's table (or something to retry on).
                        Err(_) => self.free_unpublished(table),
                    }
                } else {
                    // A valid block covers the IPA but the request is finer: split it.
                    let table = self.split(&w, old)?;
                    *stored = true;
                    w.descend(table);
                }
                continue;
            }
            // At the target level.
            if old.is_empty() {
                return match self.set(&w, old, new) {
                    Ok(()) => {
                        *stored = true;
                        self.count_inc(&w);
                        CpuStats::bump(&self.stats().maps);
                        CpuStats::bump(&self.stats().tlbi_elided);
                        Ok(Mapped::Installed)
                    }
                    Err(_) => Err(self.lost_race()),
                };
            }
            if old == new {
                CpuStats::bump(&self.stats().spurious);
                return Ok(Mapped::Spurious);
            }
            if old.is_leaf(level) && old.with_young(true) == new {
                // The same leaf made old by aging: an Access flag fault (VTCR_EL2.HA = 0). Setting
                // AF is an in-place change of a valid entry, no break (see `mark_young`).
                return match self.set(&w, old, new) {
                    Ok(()) => {
                        *stored = true;
                        CpuStats::bump(&self.stats().spurious);
                        Ok(Mapped::Spurious)
                    }
                    Err(_) => Err(self.lost_race()),
                };
            }
            if old.is_table(level) {
                self.prune(&w, old, new)?;
                *stored = true;
                return Ok(Mapped::Replaced);
            }
            if old.same_but_perms(new) {
                // Same page, other permissions: not a reason to break; relax_perms handles it.
                return Err(Error::Retry);
            }
            self.try_break(&w, old)?;
            self.make(&w, new);
            *stored = true;
            CpuStats::bump(&self.stats().bbm);
            return Ok(Mapped::Replaced);
        }
    }

    /// Break the block at the current entry and publish an empty table in its place. The table's
    /// page is allocated before the break, so running out of memory never leaves a LOCKED entry.
    fn split(&self, w: &crate::walk::Walker<'_, P>, block: Pte) -> Result<u64, Error> {
        let table = self.alloc_table()?;
        if let Err(e) = self.try_break(w, block) {
            self.free_unpublished(table);
            return Err(e);
        }
        // Block -> LOCKED -> table: the count of the containing table is unchanged (non-empty
        // throughout).
        self.make(w, Pte::table(table));
        CpuStats::bump(&self.stats().splits);
        CpuStats::bump(&self.stats().bbm);
        Ok(table)
    }

    /// Replace whatever maps the `size`-aligned span at `ipa` with one block of `size` at `pa`:
    /// a table there is pruned (every descendant locked, one invalidation for the span, the
    /// subtree freed through RCU); an empty entry simply gets the block.
    ///
    /// # Errors
    /// As [`Guard::map`]; `BadAddress` also for a 4 KiB "block".
    pub fn collapse(&self, ipa: u64, pa: u64, size: Size, attrs: Attrs) -> Result<Mapped, Error> {
        if size == Size::Page4K {
            return Err(Error::BadAddress);
        }
        self.map(ipa, pa, size, attrs)
    }
}
