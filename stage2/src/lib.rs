//! A stage-2 page table that many CPUs fault into at once.
//!
//! Portable `no_std`, no asm: TLB maintenance, barriers and page allocation come in through the
//! traits in [`arch`], so the same code runs in the EL2 hypervisor, in host threads, and under
//! loom. See `docs/protocol.md` for the PTE state machine and why each step is where it is.
//!
//! Two modes, one implementation:
//! - [`Stage2::shared`]: a lock-free RCU read-side section. Every change is a compare-exchange;
//!   a lost race returns [`Error::Retry`] and the vCPU simply re-runs the faulting instruction.
//! - [`Stage2::exclusive`]: the MMU lock is held; plain stores over invalid entries, and meeting
//!   a LOCKED entry is a bug (it panics). A valid leaf is still changed by compare-exchange (the
//!   hardware walker sets AF and S2AP[1] under any lock), so a single-entry operation can still
//!   return [`Error::Retry`] when the hardware changed its leaf first (re-run it); range
//!   operations redo such an entry themselves. The locked baseline of the hypervisor is this
//!   mode, not a second implementation.

#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod age;
pub mod arch;
mod bbm;
pub mod desc;
mod dirty;
mod freeze;
mod geometry;
#[cfg(feature = "testing")]
mod hwwalk;
mod map;
mod range;
mod rcu;
mod relax;
mod split;
mod stats;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod walk;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::marker::PhantomData;

pub use age::Aged;
pub use arch::{PageMeta, PagePool, Table, Tlb};
pub use desc::{Attrs, MemAttrEncoding, MemType, Perms, Pte, Size};
pub use dirty::{DirtyBitmap, DirtyFault, Harvest};
pub use freeze::WriteFreeze;
pub use geometry::Geometry;
#[cfg(feature = "testing")]
pub use hwwalk::HwAccess;
pub use stats::Stats;

use rcu::Rcu;
use stats::CpuStats;
use walk::Walker;

/// How an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Another CPU changed or owns the entry: nothing was done; re-run the access.
    Retry,
    /// The page pool is dry; nothing was published.
    NoMemory,
    /// The operation needs the exclusive mode ([`Stage2::exclusive`]). No operation returns it
    /// any more (every data-path operation runs in shared mode); kept for callers that match it.
    NeedsExclusive,
    /// An address is outside the IPA space or not aligned to the mapping size.
    BadAddress,
    /// The configuration cannot be expressed (IPA size, start level, CPU count).
    BadConfig(&'static str),
}

/// What a successful [`Guard::map`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// The entry was empty and now maps the request (no TLB invalidation needed).
    Installed,
    /// The identical mapping was already there: another CPU won (a spurious fault).
    Spurious,
    /// A different valid leaf or a table was replaced by break-before-make.
    Replaced,
}

/// The leaf that maps an IPA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The output address of the IPA (not of the leaf's start).
    pub pa: u64,
    /// The level of the leaf (3 for a page).
    pub level: u8,
    /// Its attributes.
    pub attrs: Attrs,
    /// The access flag (see [`Guard::test_clear_young`]).
    pub young: bool,
    /// The DBM bit: writable-clean when set and `attrs.perms.write` is clear (hardware dirty
    /// logging, see [`Guard::dirty_log_enable_hw`]).
    pub dbm: bool,
}

/// What a range operation ([`Guard::unmap`], [`Guard::write_protect`]) changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeDone {
    /// Leaves changed.
    pub leaves: u64,
    /// Table pages unlinked (freed through RCU).
    pub tables: u64,
    /// Whether one TLB invalidation covering the changes was issued (none when nothing valid
    /// changed).
    pub flushed: bool,
}

/// Build-time parameters.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Bits of IPA (VTCR_EL2.T0SZ = 64 - this).
    pub ipa_bits: u32,
    /// Force the start level; `None` picks it as KVM does.
    pub start_level: Option<u8>,
    /// CPUs (or host threads) that will walk the table; CPU ids are `0..cpus`.
    pub cpus: usize,
    /// How leaves encode their memory type: must match the HCR_EL2.FWB value the table is used
    /// with (`ForcedWriteBack` for FWB = 1). Default `Combined` (FWB = 0).
    pub memattr: MemAttrEncoding,
}

impl Config {
    /// `ipa_bits` of IPA, walked by `cpus` CPUs, start level chosen automatically.
    #[must_use]
    pub const fn new(ipa_bits: u32, cpus: usize) -> Config {
        Config {
            ipa_bits,
            start_level: None,
            cpus,
            memattr: MemAttrEncoding::Combined,
        }
    }
}

/// A stage-2 translation table for one VMID.
pub struct Stage2<P: PagePool, T: Tlb> {
    geom: Geometry,
    root: u64,
    memattr: MemAttrEncoding,
    pool: P,
    tlb: T,
    rcu: Rcu,
    stats: Box<[CpuStats]>,
}

impl<P: PagePool, T: Tlb> Stage2<P, T> {
    /// An empty table with its root allocated from `pool`.
    ///
    /// # Errors
    /// [`Error::BadConfig`] for an impossible geometry or no CPUs; [`Error::NoMemory`] if the root
    /// cannot be allocated.
    pub fn new(cfg: Config, pool: P, tlb: T) -> Result<Self, Error> {
        let geom = Geometry::new(cfg.ipa_bits, cfg.start_level)?;
        if cfg.cpus == 0 {
            return Err(Error::BadConfig("at least one CPU"));
        }
        let root = pool.alloc_root(geom.root_pages()).ok_or(Error::NoMemory)?;
        let stats: Vec<CpuStats> = (0..cfg.cpus).map(|_| CpuStats::default()).collect();
        Ok(Stage2 {
            geom,
            root,
            memattr: cfg.memattr,
            pool,
            tlb,
            rcu: Rcu::new(cfg.cpus),
            stats: stats.into_boxed_slice(),
        })
    }

    /// PA of the root, for VTTBR_EL2.BADDR.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The memory-type encoding of the leaves (`Config::memattr`).
    pub fn memattr(&self) -> MemAttrEncoding {
        self.memattr
    }

    /// The geometry, for VTCR_EL2.
    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    /// The page pool.
    pub fn pool(&self) -> &P {
        &self.pool
    }

    /// The TLB maintenance implementation.
    pub fn tlb(&self) -> &T {
        &self.tlb
    }

    /// Enter a lock-free read-side section on `cpu` (the parallel fault path). It waits only
    /// while an exclusive walker holds the MMU lock.
    ///
    /// # Panics
    /// If `cpu` is out of range.
    pub fn shared(&self, cpu: usize) -> Guard<'_, P, T> {
        self.rcu.read_lock(cpu);
        Guard {
            s2: self,
            cpu,
            exclusive: false,
            _not_send: PhantomData,
        }
    }

    /// Take the MMU lock on `cpu`: no other walker runs until the guard is dropped.
    ///
    /// # Panics
    /// If `cpu` is out of range.
    pub fn exclusive(&self, cpu: usize) -> Guard<'_, P, T> {
        self.rcu.write_lock(cpu);
        Guard {
            s2: self,
            cpu,
            exclusive: true,
            _not_send: PhantomData,
        }
    }

    /// Free the table pages `cpu` retired whose grace period has ended. Call at trap exit, with no
    /// guard alive on `cpu`.
    pub fn reclaim(&self, cpu: usize) {
        debug_assert!(
            !self.rcu.in_section(cpu),
            "reclaim inside a read-side section"
        );
        self.rcu.reclaim(cpu, &self.pool, &self.stats[cpu]);
    }

    /// Wait until every table page retired so far is freed (the `rcu_barrier` of teardown), on
    /// `cpu`, the calling CPU: every CPU's list is drained, into `cpu`'s pool cache. Call with no
    /// guard alive on `cpu`.
    pub fn barrier(&self, cpu: usize) {
        self.rcu.barrier(cpu, &self.pool, &self.stats[cpu]);
    }

    /// Table pages `cpu` has waiting for a grace period.
    pub fn deferred(&self, cpu: usize) -> u64 {
        self.rcu.pending(cpu)
    }

    /// All CPUs' counters summed.
    pub fn stats(&self) -> Stats {
        self.stats
            .iter()
            .map(CpuStats::snapshot)
            .fold(Stats::default(), Stats::merge)
    }

    /// One CPU's counters.
    pub fn cpu_stats(&self, cpu: usize) -> Stats {
        self.stats[cpu].snapshot()
    }

    /// Tear down on `cpu`, the calling CPU: invalidate the VMID, wait for every deferred free,
    /// free every table and the root (table pages go to `cpu`'s pool cache). Afterwards the pool
    /// holds every page this table ever took.
    ///
    /// # Errors
    /// Never at present; the `Result` leaves room for a check that finds a corrupted table.
    pub fn destroy(self, cpu: usize) -> Result<Stats, Error> {
        self.barrier(cpu);
        {
            let g = self.exclusive(cpu);
            // Walk caches may still hold our tables: invalidate before any page goes back.
            g.flush_vmid();
            let mut freed = rcu::PageList::default();
            let mut w = g.walker(0, self.geom.ipa_limit());
            while !w.done() {
                let old = w.load();
                if old.is_table(w.level()) {
                    bbm::collect_subtree(&g, old.addr(), w.level() + 1, &mut freed);
                    freed.push(&self.pool, old.addr());
                }
                w.skip();
            }
            let mut pa = freed.head;
            while pa != 0 {
                let next = self.pool.meta(pa).next.load(sync::Ordering::Relaxed);
                self.pool.free_table(cpu, pa);
                pa = next;
            }
            CpuStats::add(&self.stats[cpu].tables_freed, freed.len);
        }
        self.pool.free_root(self.root, self.geom.root_pages());
        Ok(self.stats())
    }
}

/// An open walk context on one CPU: a read-side section (shared) or the MMU lock (exclusive).
/// Every table operation is a method of the guard, so none can run outside a section. Dropping
/// it leaves the section.
pub struct Guard<'s, P: PagePool, T: Tlb> {
    s2: &'s Stage2<P, T>,
    cpu: usize,
    exclusive: bool,
    /// A section belongs to the CPU that entered it.
    _not_send: PhantomData<*const ()>,
}

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// The CPU this guard runs on.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// Whether this is the exclusive mode.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// The leaf mapping `ipa`, if any.
    pub fn translate(&self, ipa: u64) -> Option<Translation> {
        let mut w = self.walker(ipa, ipa.checked_add(1)?);
        while !w.done() {
            let old = w.load();
            if old.is_table(w.level()) {
                w.next(old);
                continue;
            }
            if !old.is_leaf(w.level()) {
                return None;
            }
            let size = desc::level_size(w.level());
            return Some(Translation {
                pa: old.addr() + (ipa & (size - 1)),
                level: w.level(),
                attrs: old.attrs(self.s2.memattr),
                young: old.young(),
                dbm: old.dbm(),
            });
        }
        None
    }

    /// Visit every table page reachable from the root with its refcount and the number of its
    /// non-empty entries (tests check `refcount == 1 + non_empty`).
    pub fn for_each_table(&self, mut f: impl FnMut(u64, u8, u64, u64)) {
        let mut w = self.walker(0, self.s2.geom.ipa_limit());
        while !w.done() {
            let old = w.load();
            if old.is_table(w.level()) {
                let pa = old.addr();
                let t = self.s2.pool.table(pa);
                let used = t
                    .iter()
                    .filter(|e| e.load(sync::Ordering::Relaxed) != 0)
                    .count();
                f(
                    pa,
                    w.level() + 1,
                    self.s2.pool.meta(pa).refcount(),
                    used as u64,
                );
            }
            w.next(old);
        }
    }

    fn walker(&self, start: u64, end: u64) -> Walker<'_, P> {
        Walker::new(&self.s2.pool, self.s2.geom, self.s2.root, start, end)
    }

    fn stats(&self) -> &CpuStats {
        &self.s2.stats[self.cpu]
    }

    fn flush_vmid(&self) {
        self.s2.tlb.invalidate_vmid();
        CpuStats::bump(&self.stats().tlbi_vmid);
    }
}

impl<P: PagePool, T: Tlb> Drop for Guard<'_, P, T> {
    fn drop(&mut self) {
        if self.exclusive {
            self.s2.rcu.write_unlock(self.cpu);
        } else {
            self.s2.rcu.read_unlock(self.cpu);
        }
    }
}
