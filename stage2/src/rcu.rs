//! Quiescent-state-based RCU with extended quiescent states, and the MMU lock built on the same
//! per-CPU words.
//!
//! **Read side.** Each CPU has one word, `state`: 0 while it is outside the hypervisor's table
//! walks (which includes the whole time it runs its guest: an *extended quiescent state*, so a
//! vCPU spinning in its guest never delays anyone), otherwise the global epoch it saw on entry.
//! Entering is a store plus a full fence before the first PTE read; leaving is a release store
//! of 0. Nothing on the read side writes a shared cache line.
//!
//! **Grace periods.** Retiring an unlinked subtree advances the epoch and stamps each page with
//! the epoch *before* the advance, `r`. A page may be freed once every CPU's word is 0 or
//! greater than `r`:
//! - a reader whose word is greater than `r` loaded the epoch after the advance, and the advance
//!   was sequenced after the unlink, so (acquire on its epoch load) its walk cannot reach the
//!   unlinked subtree;
//! - a reader whose word the reclaimer saw as 0 either left (release: its reads are done) or had
//!   not yet published its word; in the second case the two SeqCst fences (the reader's after its
//!   store, the reclaimer's before its loads) guarantee the reader's walk sees the unlink.
//!
//! **Deferral lists.** Each CPU owns a FIFO of retired pages threaded through the pages' own
//! [`PageMeta`](crate::PageMeta), so freeing needs no memory. The owner reclaims at trap exit;
//! `barrier` drains every list at teardown. A `busy` flag per list keeps the owner and `barrier`
//! from working on the same list at once (the owner never waits on it: it skips instead).
//!
//! **MMU lock.** An exclusive walker (the locked baseline, unmap, write-protect) takes a
//! test-and-test-and-set lock, raises `writer`, and waits until every CPU's word is 0. Readers
//! check `writer` after publishing their word (Dekker again: the same SeqCst fences) and back off
//! while it is up, so a waiting writer gets in (readers cannot starve it) and readers still share
//! no written line. The reader's check is an acquire: seeing `writer` down after a writer's
//! release is what orders that writer's whole section before the reader's.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::arch::PagePool;
use crate::stats::CpuStats;
use crate::sync::{fence, spin_wait, AtomicBool, AtomicU64, Ordering};

/// A singly-linked batch of pages, linked through their metadata.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PageList {
    pub(crate) head: u64,
    pub(crate) tail: u64,
    pub(crate) len: u64,
}

impl PageList {
    pub(crate) fn push<P: PagePool>(&mut self, pool: &P, pa: u64) {
        debug_assert_ne!(pa, 0, "PA 0 terminates lists");
        // Relaxed: the list is private to this CPU until `retire` publishes it under `busy`.
        pool.meta(pa).next.store(0, Ordering::Relaxed);
        if self.tail == 0 {
            self.head = pa;
        } else {
            pool.meta(self.tail).next.store(pa, Ordering::Relaxed);
        }
        self.tail = pa;
        self.len += 1;
    }
}

#[repr(align(64))]
struct CpuRcu {
    /// 0: quiescent. Otherwise the epoch this CPU saw when it entered its read-side section.
    state: AtomicU64,
    /// Someone (the owner, or `barrier`) is working on this CPU's deferral list.
    busy: AtomicBool,
    head: AtomicU64,
    tail: AtomicU64,
    pending: AtomicU64,
}

pub(crate) struct Rcu {
    epoch: AtomicU64,
    writer: AtomicBool,
    /// Held by the exclusive walker (writers exclude each other with it).
    writer_lock: AtomicBool,
    cpus: Box<[CpuRcu]>,
}

impl Rcu {
    pub(crate) fn new(ncpus: usize) -> Rcu {
        let cpus: Vec<CpuRcu> = (0..ncpus)
            .map(|_| CpuRcu {
                state: AtomicU64::new(0),
                busy: AtomicBool::new(false),
                head: AtomicU64::new(0),
                tail: AtomicU64::new(0),
                pending: AtomicU64::new(0),
            })
            .collect();
        Rcu {
            epoch: AtomicU64::new(1),
            writer: AtomicBool::new(false),
            writer_lock: AtomicBool::new(false),
            cpus: cpus.into_boxed_slice(),
        }
    }

    /// Enter a shared read-side section on `cpu`. Waits only while an exclusive walker holds the
    /// MMU lock. Inlined: it is on every fault, and a call costs more than its few instructions.
    #[inline]
    pub(crate) fn read_lock(&self, cpu: usize) {
        let me = &self.cpus[cpu];
        debug_assert_eq!(
            me.state.load(Ordering::Relaxed),
            0,
            "nested read-side section"
        );
        loop {
            // Acquire: pairs with the AcqRel epoch advance in `retire`, so a reader that sees the
            // new epoch also sees the unlink that came before it.
            let e = self.epoch.load(Ordering::Acquire);
            me.state.store(e, Ordering::Relaxed);
            // Full fence between publishing our word and reading anything shared (PTEs, the
            // writer flag): the reclaimer and the writer fence between their store and their
            // reads of our word, so one of us must see the other.
            fence(Ordering::SeqCst);
            // Acquire, not Relaxed: the fences only promise we see `writer` up *or a later
            // value*, and the later value may be the `false` of `write_unlock`. Acquiring that
            // release makes the writer's whole section (an unlink, a memslot repoint) happen
            // before ours; a Relaxed load would let our section's reads see the state before it
            // (loom model `writer_section_happens_before_later_reader`).
            if !self.writer.load(Ordering::Acquire) {
                return;
            }
            // An exclusive walker wants in: step aside until it is done.
            me.state.store(0, Ordering::Release);
            while self.writer.load(Ordering::Relaxed) {
                spin_wait();
            }
        }
    }

    /// Leave the read-side section. Release: every PTE read of the section happens before a
    /// reclaimer that sees the 0 frees what we read.
    #[inline]
    pub(crate) fn read_unlock(&self, cpu: usize) {
        self.cpus[cpu].state.store(0, Ordering::Release);
    }

    /// Take the MMU lock for an exclusive walk on `cpu`: no shared walker runs until
    /// [`Rcu::write_unlock`]. Also enters a read-side section so retire/epoch logic is uniform.
    pub(crate) fn write_lock(&self, cpu: usize) {
        // Test-and-test-and-set, not a FIFO (ticket/queued) lock. Under QEMU the CPUs are host
        // threads, often more of them than host cores; a FIFO lock hands the lock to the next
        // waiter even when its thread is descheduled, and every other CPU then waits for the host
        // scheduler (a convoy that cost 20-40x in the locked baseline). TTAS lets whichever CPU is
        // running take it: the baseline's best case, so parallel-vs-locked comparisons are
        // conservative. Writers are rare outside the baseline, so their unfairness is harmless;
        // readers cannot starve a writer (see `writer`).
        debug_assert_eq!(
            self.cpus[cpu].state.load(Ordering::Relaxed),
            0,
            "exclusive inside a section"
        );
        while self
            .writer_lock
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.writer_lock.load(Ordering::Relaxed) {
                spin_wait();
            }
        }
        self.writer.store(true, Ordering::Relaxed);
        // Dekker with `read_lock`: after this fence, either we see a reader's word, or that reader
        // sees `writer` and steps aside.
        fence(Ordering::SeqCst);
        for c in self.cpus.iter() {
            // Acquire: the reader's PTE accesses happen before ours.
            while c.state.load(Ordering::Acquire) != 0 {
                spin_wait();
            }
        }
        self.cpus[cpu]
            .state
            .store(self.epoch.load(Ordering::Acquire), Ordering::Relaxed);
    }

    pub(crate) fn write_unlock(&self, cpu: usize) {
        self.cpus[cpu].state.store(0, Ordering::Release);
        // Release: our PTE stores happen before any reader that sees the flag down.
        self.writer.store(false, Ordering::Release);
        self.writer_lock.store(false, Ordering::Release);
    }

    fn lock_list(&self, cpu: usize) {
        let busy = &self.cpus[cpu].busy;
        // Take the flag with a compare-exchange, never a swap: a failed attempt must not store.
        // Every `swap(true)` that finds the flag taken writes a `true` of its own that is not
        // ordered after the holder's releasing `false`, and a waiter may then read its own
        // `true` for ever (loom finds exactly that livelock). Wait with plain loads
        // (test-and-test-and-set), which also keeps the line from bouncing between CPUs.
        // Relaxed on failure and in the wait: the Acquire that takes the flag orders the list.
        while busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while busy.load(Ordering::Relaxed) {
                spin_wait();
            }
        }
    }

    fn unlock_list(&self, cpu: usize) {
        self.cpus[cpu].busy.store(false, Ordering::Release);
    }

    /// Hand an unlinked batch to RCU. The caller must already have completed the TLB invalidation
    /// covering every page in it: a hardware walker may hold these tables in its walk cache until
    /// then, and a grace period says nothing about hardware walkers.
    pub(crate) fn retire<P: PagePool>(
        &self,
        cpu: usize,
        batch: PageList,
        pool: &P,
        stats: &CpuStats,
    ) {
        if batch.len == 0 {
            return;
        }
        // AcqRel: release orders the unlink (sequenced before this) for readers that acquire the
        // new epoch; `r` is the epoch before the advance.
        let r = self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut pa = batch.head;
        while pa != 0 {
            let meta = pool.meta(pa);
            meta.epoch.store(r, Ordering::Relaxed);
            pa = meta.next.load(Ordering::Relaxed);
        }
        self.lock_list(cpu);
        let me = &self.cpus[cpu];
        let tail = me.tail.load(Ordering::Relaxed);
        if tail == 0 {
            me.head.store(batch.head, Ordering::Relaxed);
        } else {
            pool.meta(tail).next.store(batch.head, Ordering::Relaxed);
        }
        me.tail.store(batch.tail, Ordering::Relaxed);
        let pending = me.pending.load(Ordering::Relaxed) + batch.len;
        me.pending.store(pending, Ordering::Relaxed);
        self.unlock_list(cpu);
        CpuStats::add(&stats.tables_retired, batch.len);
        CpuStats::raise_max(&stats.max_deferred, pending);
    }

    /// The smallest epoch any CPU is reading under, or `u64::MAX` when all are quiescent.
    fn oldest_reader(&self) -> u64 {
        // Pairs with the fence in `read_lock` (see the module comment).
        fence(Ordering::SeqCst);
        self.cpus
            .iter()
            .map(|c| c.state.load(Ordering::Acquire))
            .filter(|&s| s != 0)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Free the pages of `cpu`'s list whose grace period has ended, into `caller`'s pool cache
    /// (`caller` is the CPU running this; it is `cpu` except in `barrier`), counting them in
    /// `stats`, which must be `caller`'s. The list must be locked.
    fn drain<P: PagePool>(&self, cpu: usize, caller: usize, pool: &P, stats: &CpuStats) -> bool {
        let me = &self.cpus[cpu];
        let mut head = me.head.load(Ordering::Relaxed);
        if head == 0 {
            return true;
        }
        let oldest = self.oldest_reader();
        let mut freed = 0;
        let mut last_epoch = None;
        while head != 0 {
            let meta = pool.meta(head);
            let r = meta.epoch.load(Ordering::Relaxed);
            if r >= oldest {
                break; // a reader that may still see this page is inside
            }
            let next = meta.next.load(Ordering::Relaxed);
            if last_epoch != Some(r) {
                CpuStats::bump(&stats.grace_periods);
                last_epoch = Some(r);
            }
            pool.free_table(caller, head);
            freed += 1;
            head = next;
        }
        me.head.store(head, Ordering::Relaxed);
        if head == 0 {
            me.tail.store(0, Ordering::Relaxed);
        }
        me.pending.store(
            me.pending.load(Ordering::Relaxed) - freed,
            Ordering::Relaxed,
        );
        CpuStats::add(&stats.tables_reclaimed, freed);
        CpuStats::add(&stats.tables_freed, freed);
        head == 0
    }

    /// Free what `cpu` retired and whose grace period has ended. Call outside a read-side section
    /// (at trap exit). Never waits: if `barrier` is working on this list, it does the freeing.
    ///
    /// Inlined down to the empty-list check, the common case on every fault: the draining itself
    /// is out of line, so the caller does not set up its frame for nothing.
    #[inline]
    pub(crate) fn reclaim<P: PagePool>(&self, cpu: usize, pool: &P, stats: &CpuStats) {
        if self.cpus[cpu].head.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.reclaim_list(cpu, pool, stats);
    }

    /// `reclaim` of a non-empty list.
    #[inline(never)]
    fn reclaim_list<P: PagePool>(&self, cpu: usize, pool: &P, stats: &CpuStats) {
        let me = &self.cpus[cpu];
        // Compare-exchange, not swap: finding the flag taken must not store (see `lock_list`).
        if me
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.drain(cpu, cpu, pool, stats);
        self.unlock_list(cpu);
    }

    /// Wait until every page retired before this call is freed; `caller` is the CPU running it
    /// (pages go to its pool cache). Call outside any read-side section (a reader that waits for
    /// its own grace period waits forever). What it frees is counted in `stats`, the caller's.
    pub(crate) fn barrier<P: PagePool>(&self, caller: usize, pool: &P, stats: &CpuStats) {
        for cpu in 0..self.cpus.len() {
            loop {
                // Never hold a list across the wait: its owner may need it to retire, and it will
                // not leave its section until it has.
                self.lock_list(cpu);
                // Counted as the caller's work: each CPU's stats have one writer, itself
                // (stats.rs), and the list's owner may be bumping its own meanwhile.
                let empty = self.drain(cpu, caller, pool, stats);
                self.unlock_list(cpu);
                if empty {
                    break;
                }
                spin_wait();
            }
        }
    }

    /// Pages waiting on `cpu`'s list.
    pub(crate) fn pending(&self, cpu: usize) -> u64 {
        self.cpus[cpu].pending.load(Ordering::Relaxed)
    }

    /// Whether `cpu` is inside a read-side section (for assertions).
    pub(crate) fn in_section(&self, cpu: usize) -> bool {
        self.cpus[cpu].state.load(Ordering::Relaxed) != 0
    }
}
