//! The one walker every operation uses, shaped like the x86 TDP MMU iterator.
//!
//! It visits entries in pre-order over `[start, end)`. At each visit the caller [`Walker::load`]s
//! the entry once into its own `old` (the visit context is: level, span, old value), decides, and
//! then either moves on ([`Walker::next`] descends into a table, [`Walker::skip`] does not) or,
//! after losing a compare-exchange, simply visits the same entry again with the refreshed value.
//! Walks that ask for it also get a *post-order* visit of each table entry after its subtree,
//! which is where unmap frees tables that became empty.
//!
//! A walker borrows the [`Guard`](crate::Guard) that keeps its read-side section open, so no
//! pointer into the table can outlive the section: a walk that must leave starts again from the
//! root with a new guard.

use crate::arch::PagePool;
use crate::desc::{level_shift, level_size, Pte, ENTRIES, LAST_LEVEL, PAGE_SIZE};
use crate::geometry::Geometry;
use crate::sync::{AtomicU64, Ordering};

pub(crate) struct Walker<'a, P: PagePool> {
    pool: &'a P,
    geom: Geometry,
    root: u64,
    end: u64,
    /// The address the walk is at; the current entry is the one covering it at `level`.
    addr: u64,
    level: u8,
    /// The table being walked at each level (below the root).
    tables: [u64; LAST_LEVEL as usize + 1],
    want_post: bool,
    post: bool,
    done: bool,
}

impl<'a, P: PagePool> Walker<'a, P> {
    pub(crate) fn new(pool: &'a P, geom: Geometry, root: u64, start: u64, end: u64) -> Self {
        let end = end.min(geom.ipa_limit());
        Walker {
            pool,
            geom,
            root,
            end,
            addr: start,
            level: geom.start_level(),
            tables: [0; LAST_LEVEL as usize + 1],
            want_post: false,
            post: false,
            done: start >= end,
        }
    }

    /// Also visit each table entry again after its subtree (`is_post()` is then true).
    pub(crate) fn with_post_order(mut self) -> Self {
        self.want_post = true;
        self
    }

    pub(crate) fn done(&self) -> bool {
        self.done
    }

    pub(crate) fn is_post(&self) -> bool {
        self.post
    }

    pub(crate) fn level(&self) -> u8 {
        self.level
    }

    /// Start and size of the IPA span the current entry maps.
    pub(crate) fn span(&self) -> (u64, u64) {
        let size = level_size(self.level);
        (self.addr & !(size - 1), size)
    }

    /// Whether `[start, end)` of the walk covers the current entry's whole span.
    pub(crate) fn covers(&self, start: u64, end: u64) -> bool {
        let (base, size) = self.span();
        start <= base && base + size <= end
    }

    /// The table page holding the current entry, or `None` for the root (which has no refcount:
    /// it is never unlinked).
    pub(crate) fn containing_table(&self) -> Option<u64> {
        (self.level != self.geom.start_level()).then(|| self.tables[self.level as usize])
    }

    fn entry(&self) -> &'a AtomicU64 {
        let shift = level_shift(self.level);
        if self.level == self.geom.start_level() {
            // The root may be several concatenated tables: index across all of them.
            let idx = ((self.addr >> shift) as usize) & (self.geom.root_entries() - 1);
            let page = self.root + (idx / ENTRIES) as u64 * PAGE_SIZE;
            &self.pool.table(page)[idx % ENTRIES]
        } else {
            let idx = ((self.addr >> shift) as usize) & (ENTRIES - 1);
            &self.pool.table(self.tables[self.level as usize])[idx]
        }
    }

    /// Read the current entry. Acquire: if it is a table, the contents its publisher wrote before
    /// its release (a zeroed or pre-filled page) are visible when we descend.
    pub(crate) fn load(&self) -> Pte {
        Pte(self.entry().load(Ordering::Acquire))
    }

    /// Compare-exchange the current entry from `old` to `new`. On failure returns the value found,
    /// so the caller can revisit the entry with it.
    ///
    /// AcqRel on success: release publishes whatever `new` points at (a table's contents) and
    /// orders our earlier work before it; acquire orders what we do next after the value we
    /// replaced. Acquire on failure: we may descend into the winner's table.
    #[inline]
    pub(crate) fn cmpxchg(&self, old: Pte, new: Pte) -> Result<(), Pte> {
        self.entry()
            .compare_exchange(old.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Pte)
    }

    /// Store to the current entry. Release: a walker that reads `new` sees everything before it.
    /// Only for an entry this CPU owns (it locked it, or it walks exclusively).
    pub(crate) fn store(&self, new: Pte) {
        self.entry().store(new.0, Ordering::Release);
    }

    /// Descend through tables to the entry that maps the walk's address (the first entry on the
    /// path that is not a table: a leaf, an invalid or a LOCKED entry) and return it, each entry
    /// read once with [`Walker::load`]. The walk-to-leaf of a single-address operation (a relax,
    /// a dirty-log write fault, the modelled hardware walker).
    pub(crate) fn walk_to_leaf(&mut self) -> Pte {
        loop {
            let old = self.load();
            if !old.is_table(self.level) {
                return old;
            }
            self.next(old);
        }
    }

    /// Move on in pre-order: into `old`'s table if it is one, else to the next entry.
    pub(crate) fn next(&mut self, old: Pte) {
        if !self.post && old.is_table(self.level) {
            self.level += 1;
            self.tables[self.level as usize] = old.addr();
        } else {
            self.skip();
        }
    }

    /// Move to the next entry at this level (or up, when this table or the range is finished),
    /// without descending.
    pub(crate) fn skip(&mut self) {
        self.post = false;
        let size = level_size(self.level);
        let next = (self.addr & !(size - 1)).checked_add(size);
        let start = self.geom.start_level();
        match next {
            Some(n) if n < self.end => {
                let crossed = self.level != start && n & (level_size(self.level - 1) - 1) == 0;
                if !crossed {
                    self.addr = n;
                    return;
                }
            }
            _ if self.level == start => {
                self.done = true;
                return;
            }
            _ => {}
        }
        // This table (or the range) is finished: back to the entry that pointed at it.
        self.level -= 1;
        let parent = level_size(self.level);
        self.addr &= !(parent - 1);
        if self.want_post {
            self.post = true;
        } else {
            self.skip();
        }
    }

    /// Descend into `table`, a table just published at the current entry.
    pub(crate) fn descend(&mut self, table: u64) {
        debug_assert!(self.level < LAST_LEVEL);
        self.post = false;
        self.level += 1;
        self.tables[self.level as usize] = table;
    }
}
