//! Per-CPU counters, summed on demand. Each CPU writes only its own cache line (and is the only
//! writer of it), so counting never makes CPUs contend and needs no atomic read-modify-write. They use plain core atomics even under loom: they are observations, not
//! part of any protocol, and modelling them would only multiply loom's interleavings.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of the counters (one CPU's, or all CPUs' summed).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        /// Live counters of one CPU.
        #[derive(Debug, Default)]
        #[repr(align(64))]
        pub(crate) struct CpuStats {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl CpuStats {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl Stats {
            /// Field-wise sum (maximums for the `max_*` fields).
            #[must_use]
            pub fn merge(self, o: Stats) -> Stats {
                Stats { $( $name: merge_field(stringify!($name), self.$name, o.$name), )* }
            }

            /// `(name, value)` for every counter, in declaration order, for reports.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$( (stringify!($name), self.$name), )*].into_iter()
            }
        }
    };
}

fn merge_field(name: &str, a: u64, b: u64) -> u64 {
    if name.starts_with("max_") {
        a.max(b)
    } else {
        a + b
    }
}

counters! {
    /// Leaves installed over an empty entry.
    maps,
    /// Map requests that found the identical leaf already there (another CPU won).
    spurious,
    /// Compare-exchanges lost to another CPU (the caller retries).
    retry_cas,
    /// LOCKED entries met in shared mode (another CPU was mid-update; the caller retries).
    retry_locked,
    /// Break-before-make sequences completed (valid leaf replaced by a different one).
    bbm,
    /// Blocks broken into tables on a fault.
    splits,
    /// Tables replaced by a leaf (or by nothing, in unmap) with every descendant locked first.
    prunes,
    /// Permission relaxations applied.
    relaxes,
    /// Leaves cleared by unmap.
    unmapped,
    /// Leaves whose write permission was removed by write_protect.
    write_protected,
    /// Broadcast TLB invalidations of one IPA at a leaf level.
    tlbi_ipa,
    /// Broadcast TLB invalidations of a span (tables, or a batch of many changes).
    tlbi_range,
    /// Broadcast TLB invalidations of the whole VMID.
    tlbi_vmid,
    /// Local TLB invalidations (permission relax).
    tlbi_local,
    /// Entries replaced while invalid: no TLB invalidation needed, none issued.
    tlbi_elided,
    /// Table pages taken from the pool.
    tables_alloc,
    /// Table pages returned to the pool (immediately or after a grace period).
    tables_freed,
    /// Table pages freed at once because another CPU published its table first.
    tables_raced,
    /// Table pages unlinked and handed to RCU.
    tables_retired,
    /// Retired table pages freed after their grace period ended.
    tables_reclaimed,
    /// Retired batches whose grace period was seen to end.
    grace_periods,
    /// Most table pages this CPU had waiting for a grace period at once.
    max_deferred,
    /// Operations that failed because the page pool was dry.
    no_memory,
    /// Pages newly marked dirty by the dirty-log write-fault path.
    dirtied,
    /// Dirty pages reported by get-and-clear or a hardware harvest.
    harvested,
    /// Leaves whose access flag aging cleared.
    aged,
}

impl Stats {
    /// Compare-exchanges lost plus LOCKED entries met: every `Retry` the core returned.
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.retry_cas + self.retry_locked
    }

    /// Every broadcast or local TLB invalidation issued.
    #[must_use]
    pub fn tlbi(&self) -> u64 {
        self.tlbi_ipa + self.tlbi_range + self.tlbi_vmid + self.tlbi_local
    }

    /// Table pages retired and not yet freed.
    #[must_use]
    pub fn tables_deferred(&self) -> u64 {
        self.tables_retired.saturating_sub(self.tables_reclaimed)
    }
}

impl CpuStats {
    // Every field has one writer: its own CPU (the `Guard`'s `cpu`, and `Rcu::barrier` counts
    // what it frees into its caller's stats, never into the list owner's). So an increment is a
    // plain load and store, not a read-modify-write: under TCG an atomic RMW is a load/store-
    // exclusive pair whose store is a host compare-exchange, and `map` bumps two counters per
    // fault. Relaxed: only the final values matter, and readers sum them after a synchronising
    // event (the end of the run, or a snapshot that may be slightly stale by design).

    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed) + n, Relaxed);
    }

    #[inline]
    pub(crate) fn raise_max(counter: &AtomicU64, v: u64) {
        if v > counter.load(Relaxed) {
            counter.store(v, Relaxed);
        }
    }
}
