//! Eager page splitting (KVM's KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE), in shared mode: a block
//! becomes a *fully populated* table in one break-before-make, so no access ever faults for the
//! parts of the block it did not touch.

use crate::desc::{Pte, ENTRIES, LAST_LEVEL};
use crate::stats::CpuStats;
use crate::sync::Ordering;
use crate::walk::Walker;
use crate::{Error, Guard, PagePool, Stage2, Tlb};

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// Replace the block `block` at the walker's entry with a table whose 512 entries map the
    /// same output with the same attributes one level down (a 1 GiB block becomes 2 MiB blocks,
    /// a 2 MiB block 4 KiB pages). The table page is allocated and filled *before* the break, so
    /// the entry is LOCKED only for one invalidation and a dry pool leaves nothing behind.
    /// Returns the new table.
    ///
    /// Arm ARM "Using break-before-make": a block replaced by a table is a change of size, so
    /// the block is broken (LOCKED, `invalidate_ipa` at the block's level, completed) before the
    /// table is published (release: its filled entries are visible first).
    pub(crate) fn split_populated(&self, w: &Walker<'_, P>, block: Pte) -> Result<u64, Error> {
        let level = w.level();
        debug_assert!(block.is_leaf(level) && level < LAST_LEVEL);
        let table = self.alloc_table()?;
        let t = self.s2.pool.table(table);
        for (i, e) in t.iter().enumerate() {
            // Relaxed: the page is private until the release in `make`.
            e.store(block.split_child(level, i as u64).0, Ordering::Relaxed);
        }
        self.s2
            .pool
            .meta(table)
            .refcount
            .store(1 + ENTRIES as u64, Ordering::Relaxed);
        if let Err(e) = self.try_break(w, block) {
            self.free_unpublished(table);
            return Err(e);
        }
        self.make(w, Pte::table(table));
        CpuStats::bump(&self.stats().splits);
        CpuStats::bump(&self.stats().bbm);
        Ok(table)
    }

    /// Split every block overlapping `[start, end)` down to 4 KiB pages, each block in its own
    /// break-before-make with a pre-filled table (see `split_populated`). Returns the number of
    /// blocks split. A LOCKED or zapped entry is skipped (never waited for); a block another
    /// CPU changes first is revisited.
    ///
    /// # Errors
    /// [`Error::NoMemory`] when the pool runs dry (the blocks split so far stay split).
    pub fn split_range(&self, start: u64, end: u64) -> Result<u64, Error> {
        let mut split = 0;
        let mut w = self.walker(start, end);
        while !w.done() {
            let old = w.load();
            let level = w.level();
            if old.is_busy() {
                // Being replaced or unmapped: skip, never wait (it may lie in a table pruned
                // under this walk, where nobody will release it).
                assert!(!self.exclusive, "LOCKED entry under the exclusive lock");
                w.skip();
                continue;
            }
            if old.is_leaf(level) && level < LAST_LEVEL {
                match self.split_populated(&w, old) {
                    Ok(table) => {
                        split += 1;
                        w.descend(table);
                    }
                    Err(Error::Retry) => {} // changed under us: revisit
                    Err(e) => {
                        self.s2.tlb.publish();
                        return Err(e);
                    }
                }
                continue;
            }
            w.next(old);
        }
        if split > 0 {
            self.s2.tlb.publish();
        }
        Ok(split)
    }
}

impl<P: PagePool, T: Tlb> Stage2<P, T> {
    /// Eagerly split `[start, end)` on `cpu` in chunks of `chunk` bytes, each in its own shared
    /// section followed by a reclaim: a vCPU never waits for more than one block's
    /// break-before-make, and a long split never holds a grace period open (KVM's
    /// KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE, without the MMU lock KVM takes for it). Returns the
    /// blocks split.
    ///
    /// # Errors
    /// [`Error::NoMemory`] when the pool runs dry; [`Error::BadAddress`] for a zero chunk.
    pub fn eager_split(&self, cpu: usize, start: u64, end: u64, chunk: u64) -> Result<u64, Error> {
        if chunk == 0 {
            return Err(Error::BadAddress);
        }
        let mut split = 0;
        let mut at = start;
        while at < end {
            let next = at.saturating_add(chunk).min(end);
            split += self.shared(cpu).split_range(at, next)?;
            self.reclaim(cpu);
            at = next;
        }
        Ok(split)
    }
}
