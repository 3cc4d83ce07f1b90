//! Dirty logging with KVM's semantics, every step in shared mode (no MMU lock):
//!
//! - **enable** ([`Guard::write_protect`] over the memslot): every leaf loses write permission,
//!   one range invalidation. Blocks stay blocks and are split on their first write
//!   ([`Guard::dirty_write_fault`] splits into a fully populated read-only table, then relaxes
//!   the one page), which is KVM's default; call [`Stage2::eager_split`] first for KVM's
//!   eager-split behaviour.
//! - **write fault** ([`Guard::dirty_write_fault`]): relax one 4 KiB page, then set its bit in the
//!   memslot's [`DirtyBitmap`] (lock-free, one `fetch_or`). A stage-2 fault on a stage-1 table
//!   walk counts as a write (KVM `kvm_is_write_fault`: the walker may be updating stage-1 AF/DB).
//! - **get-and-clear** ([`Guard::dirty_log_clear`]): take the bits (one atomic `fetch_and` per
//!   64 pages) and write-protect exactly those pages again, then one invalidation (KVM's
//!   KVM_CLEAR_DIRTY_LOG in manual-protect mode, which fuses GET and CLEAR).
//! - **disable**: nothing has to change in the table (pages are relaxed as they are written);
//!   [`Guard::collapse_contiguous`] optionally rebuilds blocks.
//!
//! Why no write is ever lost: the fault path relaxes *before* it sets the bit, and the harvest
//! takes the bit *before* it write-protects. A write that reaches memory went through a writable
//! translation made by some relax; that relax's bit is set after it, so either this harvest took
//! it (and its write-protect and invalidation come after, so the harvest's caller copies the page
//! after the write) or a later harvest will.
//!
//! Hardware dirty state (FEAT_HAFDBS, VTCR_EL2.HD): [`Guard::dirty_log_enable_hw`] makes writable
//! leaves writable-clean (DBM = 1, S2AP[1] = 0); the hardware sets S2AP[1] on the first write
//! with its own compare-exchange, so there are no write faults; [`Guard::dirty_log_harvest_hw`]
//! scans the leaves, cleans each writable one to writable-clean by compare-exchange (a lost one
//! is re-read: the hardware or a CPU changed it), sets the bitmap bits of its pages, and issues
//! one range invalidation (a TLB may hold the writable entry, through which writes would go on
//! without marking the descriptor). *Every* writable leaf counts as dirty, not only DBM ones: a
//! software write fault (`dirty_write_fault`, `relax_perms`) or a writable map during logging
//! makes a leaf writable without DBM, and the hardware records nothing for writes through it; a
//! harvest that left it so would lose every later write to its pages.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::desc::{Pte, LAST_LEVEL, PAGE_SIZE};
use crate::range::Dirty;
use crate::stats::CpuStats;
use crate::sync::{AtomicU64, Ordering};
use crate::{Error, Guard, PagePool, Perms, RangeDone, Size, Tlb};

/// One bit per 4 KiB page of a memslot, set lock-free by faulting CPUs (or by a hardware-dirty
/// harvest) and taken 64 pages at a time by get-and-clear.
pub struct DirtyBitmap {
    base: u64,
    pages: u64,
    words: Box<[AtomicU64]>,
}

impl core::fmt::Debug for DirtyBitmap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DirtyBitmap({:#x}, {} pages)", self.base, self.pages)
    }
}

impl DirtyBitmap {
    /// A clean bitmap for the `pages` pages from `base` (4 KiB aligned).
    ///
    /// # Panics
    /// If `base` is not 4 KiB aligned.
    #[must_use]
    pub fn new(base: u64, pages: u64) -> DirtyBitmap {
        assert!(
            base.is_multiple_of(PAGE_SIZE),
            "memslot base not page aligned"
        );
        let words: Vec<AtomicU64> = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        DirtyBitmap {
            base,
            pages,
            words: words.into_boxed_slice(),
        }
    }

    /// First IPA of the memslot.
    #[must_use]
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Pages covered.
    #[must_use]
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// One past the last IPA.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.base + self.pages * PAGE_SIZE
    }

    /// The page index of `ipa`, if inside the memslot.
    #[must_use]
    pub fn page_of(&self, ipa: u64) -> Option<u64> {
        (ipa >= self.base && ipa < self.end()).then(|| (ipa - self.base) / PAGE_SIZE)
    }

    /// Mark the page holding `ipa` dirty; true if it was clean. Outside the memslot: false.
    /// Release: pairs with the acquire in [`DirtyBitmap::take`], so a harvest that sees the bit
    /// also sees the relax that came before it.
    pub fn mark(&self, ipa: u64) -> bool {
        let Some(page) = self.page_of(ipa) else {
            return false;
        };
        let bit = 1u64 << (page % 64);
        self.words[(page / 64) as usize].fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// Mark every page of `[ipa, ipa + size)` that is inside the memslot dirty (a hardware-dirty
    /// block). Returns the pages newly marked.
    pub fn mark_range(&self, ipa: u64, size: u64) -> u64 {
        let lo = ipa.max(self.base);
        let hi = (ipa + size).min(self.end());
        let mut new = 0;
        let mut at = lo;
        while at < hi {
            new += u64::from(self.mark(at));
            at += PAGE_SIZE;
        }
        new
    }

    /// Whether the page holding `ipa` is marked.
    #[must_use]
    pub fn is_dirty(&self, ipa: u64) -> bool {
        self.page_of(ipa).is_some_and(|page| {
            self.words[(page / 64) as usize].load(Ordering::Relaxed) & (1 << (page % 64)) != 0
        })
    }

    /// Pages marked now (a snapshot).
    #[must_use]
    pub fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Atomically take (read and clear) the marks of the pages of word `word` selected by
    /// `mask`; returns them. Acquire: the relaxes that preceded the marks are visible.
    pub fn take(&self, word: usize, mask: u64) -> u64 {
        self.words[word].fetch_and(!mask, Ordering::AcqRel) & mask
    }

    /// Words in the bitmap.
    #[must_use]
    pub fn words(&self) -> usize {
        self.words.len()
    }

    /// The mask of word `word`'s pages inside `[start, end)` (IPAs, clipped to the memslot).
    #[must_use]
    pub fn mask(&self, word: usize, start: u64, end: u64) -> u64 {
        let first = word as u64 * 64;
        let mut mask = 0;
        for b in 0..64 {
            let page = first + b;
            let ipa = self.base + page * PAGE_SIZE;
            if page < self.pages && ipa >= start && ipa < end {
                mask |= 1 << b;
            }
        }
        mask
    }
}

/// What a dirty-write fault did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyFault {
    /// The page was write-protected and is now writable and marked dirty.
    Relaxed,
    /// Another CPU had made it writable already (it marked the page); marked again, harmless.
    Spurious,
    /// Nothing maps the IPA: handle it as a translation fault (map the page; with logging on,
    /// map it writable and [`DirtyBitmap::mark`] it, or map it read-only).
    NotMapped,
}

/// What a get-and-clear or a hardware harvest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Harvest {
    /// Dirty pages reported.
    pub pages: u64,
    /// Leaves whose write permission was taken back (software) or that were cleaned (hardware).
    pub leaves: u64,
    /// Whether the one invalidation was issued.
    pub flushed: bool,
}

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// The write-fault path of dirty logging, for a write (or stage-1 walk) permission fault on
    /// `ipa` with the page's bit in `log`: a write-protected block on the way is split into a
    /// fully populated read-only table (one break-before-make), then the one 4 KiB page is
    /// relaxed (compare-exchange of S2AP[1] only) and *then* marked. The local invalidation for
    /// `ipa` is always issued, as in [`Guard::relax_perms`].
    ///
    /// # Errors
    /// [`Error::Retry`] when another CPU owns an entry on the path or won a race (re-run the
    /// access); [`Error::NoMemory`] when a split needs a page and the pool is dry.
    pub fn dirty_write_fault(&self, ipa: u64, log: &DirtyBitmap) -> Result<DirtyFault, Error> {
        if ipa >= self.s2.geom.ipa_limit() {
            return Err(Error::BadAddress);
        }
        let mut w = self.walker(ipa, ipa + 1);
        let mut split = false;
        let result = loop {
            let old = w.walk_to_leaf();
            let level = w.level();
            if old.is_busy() {
                break Err(self.locked_seen());
            }
            if !old.is_valid() {
                break Ok(DirtyFault::NotMapped);
            }
            if level < LAST_LEVEL && !old.perms().write {
                match self.split_populated(&w, old) {
                    Ok(table) => {
                        split = true;
                        w.descend(table);
                        continue;
                    }
                    Err(e) => break Err(e),
                }
            }
            if old.perms().write {
                // Writable already (another vCPU relaxed it, or a writable block).
                break Ok(DirtyFault::Spurious);
            }
            let new = old.with_perms(old.perms().union(Perms::W)).with_young(true);
            match self.set(&w, old, new) {
                Ok(()) => {
                    CpuStats::bump(&self.stats().relaxes);
                    break Ok(DirtyFault::Relaxed);
                }
                Err(_) => break Err(self.lost_race()),
            }
        };
        if split {
            self.s2.tlb.publish();
        }
        if matches!(result, Ok(DirtyFault::Relaxed | DirtyFault::Spurious)) {
            // After the relax: see the module comment for why this order loses no write.
            if log.mark(ipa) {
                CpuStats::bump(&self.stats().dirtied);
            }
        }
        let (base, _) = w.span();
        self.s2.tlb.invalidate_ipa_local(base, w.level());
        CpuStats::bump(&self.stats().tlbi_local);
        result
    }

    /// Get-and-clear (KVM_CLEAR_DIRTY_LOG in manual-protect mode): take the marks of the pages
    /// of `log` inside `[start, end)`, report each taken word to `report(word, bits)`, and
    /// write-protect exactly those pages again (a writable block met on the way is protected
    /// whole), then one `invalidate_leaves` covering them. The report comes after the
    /// invalidation completed, so a caller that copies the reported pages then copies every
    /// write that did not fault again.
    pub fn dirty_log_clear(
        &self,
        log: &DirtyBitmap,
        start: u64,
        end: u64,
        mut report: impl FnMut(usize, u64),
    ) -> Harvest {
        let mut done = Harvest::default();
        let mut dirty = Dirty::default();
        let mut taken: Vec<(usize, u64)> = Vec::new();
        let mut protect = |old: Pte| {
            (old.perms().write || old.dbm()).then(|| old.with_write(false).with_dbm(false))
        };
        for word in 0..log.words() {
            let mask = log.mask(word, start, end);
            if mask == 0 {
                continue;
            }
            // Take the bits first, protect second (module comment).
            let bits = log.take(word, mask);
            if bits == 0 {
                continue;
            }
            done.pages += u64::from(bits.count_ones());
            let mut b = bits;
            while b != 0 {
                let i = u64::from(b.trailing_zeros());
                b &= b - 1;
                let ipa = log.base() + (word as u64 * 64 + i) * PAGE_SIZE;
                self.for_leaves(
                    ipa,
                    ipa + PAGE_SIZE,
                    |_, _, _| done.leaves += 1,
                    &mut protect,
                    &mut dirty,
                );
            }
            taken.push((word, bits));
        }
        done.flushed = self.flush_leaves(&dirty);
        CpuStats::add(&self.stats().write_protected, done.leaves);
        CpuStats::add(&self.stats().harvested, done.pages);
        for (word, bits) in taken {
            report(word, bits);
        }
        done
    }

    /// Hardware dirty logging on (needs VTCR_EL2.HD = 1): every writable leaf in `[start,
    /// end)` becomes writable-clean (DBM = 1, S2AP[1] = 0) by compare-exchange, then one
    /// `invalidate_leaves` (a TLB may hold the writable entry, through which writes would not
    /// mark the descriptor). Read-only leaves stay read-only (no DBM).
    pub fn dirty_log_enable_hw(&self, start: u64, end: u64) -> RangeDone {
        self.update_leaves(start, end, |old| {
            old.perms()
                .write
                .then(|| old.with_write(false).with_dbm(true))
        })
    }

    /// Hardware harvest: make every writable leaf (S2AP[1] = 1) overlapping `[start, end)`
    /// writable-clean (S2AP[1] = 0, DBM = 1) by compare-exchange — the hardware sets S2AP[1]
    /// concurrently with its own compare-exchange, so a lost one is re-read and retried — mark
    /// all its pages in `log` (a block: every page of it inside the memslot), then one
    /// `invalidate_leaves`, then take the marks of `[start, end)` as [`Guard::dirty_log_clear`]
    /// reports them (marks set by software faults included; a block's pages outside the range
    /// stay marked for a later harvest).
    ///
    /// A writable leaf *without* DBM is treated as dirty too and gains DBM: under hardware
    /// logging only software makes such a leaf (a write fault through `dirty_write_fault` or
    /// `relax_perms`, a writable map), so it may have been written, and writes through it would
    /// leave no trace in the descriptor. After the harvest every leaf of the range is read-only
    /// or writable-clean, so the next write to any of its pages either faults or is recorded by
    /// the hardware. Read-only leaves without DBM are left alone (a write faults).
    /// `Harvest::leaves` counts the leaves cleaned.
    pub fn dirty_log_harvest_hw(
        &self,
        log: &DirtyBitmap,
        start: u64,
        end: u64,
        mut report: impl FnMut(usize, u64),
    ) -> Harvest {
        let mut done = Harvest::default();
        let mut dirty = Dirty::default();
        self.for_leaves(
            start,
            end,
            |_, (base, size), _| {
                done.leaves += 1;
                log.mark_range(base, size);
            },
            // Writable = dirty, DBM or not (docstring): clean it to writable-clean.
            &mut |old: Pte| {
                old.perms()
                    .write
                    .then(|| old.with_write(false).with_dbm(true))
            },
            &mut dirty,
        );
        done.flushed = self.flush_leaves(&dirty);
        for word in 0..log.words() {
            let mask = log.mask(word, start, end);
            let bits = if mask == 0 { 0 } else { log.take(word, mask) };
            if bits != 0 {
                done.pages += u64::from(bits.count_ones());
                report(word, bits);
            }
        }
        CpuStats::add(&self.stats().harvested, done.pages);
        done
    }

    /// Hardware dirty logging off: every DBM leaf in `[start, end)` becomes plainly writable
    /// (DBM = 0, S2AP[1] = 1), then one `invalidate_leaves` so no CPU keeps using a clean entry.
    pub fn dirty_log_disable_hw(&self, start: u64, end: u64) -> RangeDone {
        self.update_leaves(start, end, |old| {
            old.dbm().then(|| old.with_dbm(false).with_write(true))
        })
    }

    /// Dirty logging off, optional step: if the `size`-aligned span at `ipa` is a table of
    /// leaves that map one contiguous, aligned output with identical attributes (what splitting
    /// a block and relaxing its pages leaves behind), collapse it back into one block with those
    /// attributes (made writable if any page was). Returns whether it collapsed.
    ///
    /// # Errors
    /// As [`Guard::collapse`]; [`Error::BadAddress`] for a 4 KiB span or an unaligned `ipa`.
    pub fn collapse_contiguous(&self, ipa: u64, size: Size) -> Result<bool, Error> {
        if size == Size::Page4K || !ipa.is_multiple_of(size.bytes()) {
            return Err(Error::BadAddress);
        }
        let child = size.level() + 1;
        let child_size = crate::desc::level_size(child);
        let mut first: Option<Pte> = None;
        let mut write = false;
        let mut at = ipa;
        while at < ipa + size.bytes() {
            let Some(t) = self.translate(at) else {
                return Ok(false);
            };
            if t.level != child {
                return Ok(false);
            }
            let Some(f) = first else {
                first = Some(Pte::leaf(t.pa, child, t.attrs, self.s2.memattr));
                write = t.attrs.perms.write;
                at += child_size;
                continue;
            };
            let want_pa = f.addr() + (at - ipa);
            let mut attrs = t.attrs;
            write |= attrs.perms.write;
            attrs.perms.write = f.perms().write;
            if t.pa != want_pa || attrs != f.attrs(self.s2.memattr) {
                return Ok(false);
            }
            at += child_size;
        }
        let Some(f) = first else {
            return Ok(false);
        };
        if !f.addr().is_multiple_of(size.bytes()) {
            return Ok(false);
        }
        let mut attrs = f.attrs(self.s2.memattr);
        attrs.perms.write |= write;
        self.collapse(ipa, f.addr(), size, attrs).map(|_| true)
    }
}
