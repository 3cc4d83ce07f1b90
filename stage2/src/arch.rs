//! The boundary between the portable core and the machine: TLB maintenance and barriers, table
//! page allocation, and per-page metadata. The hypervisor implements these with real
//! instructions; host tests implement them with recorders ([`crate::testing`]).

use crate::sync::AtomicU64;

/// One 4 KiB translation table: 512 descriptors, each read and written atomically.
pub type Table = [AtomicU64; crate::desc::ENTRIES];

/// TLB maintenance for one VMID, as the protocol needs it. Every call must return only after the
/// invalidation has *completed* (its trailing `DSB`), because the core frees memory and publishes
/// new entries right after it.
///
/// With feature `testing` every method is `#[track_caller]`, so a host implementation can tell
/// the call sites apart (`core::panic::Location::caller()`): `stage2/tests/walkers.rs` removes
/// one site at a time and checks that its model of the hardware notices.
pub trait Tlb: Sync {
    /// Broadcast invalidation of the stage-2 (and combined stage-1+2) entries for the leaf that
    /// mapped `ipa` at `level`. Must order earlier PTE stores first (`DSB ISHST`).
    #[cfg_attr(feature = "testing", track_caller)]
    fn invalidate_ipa(&self, ipa: u64, level: u8);
    /// Broadcast invalidation of everything cached for `[ipa, ipa + size)`, including walk-cache
    /// entries for tables in that span: no level hint may be used (a level hint names a leaf).
    ///
    /// This is the one invalidation a shared range operation issues for its whole range. The
    /// hypervisor chooses at run time: `TLBI RIPAS2E1IS` (FEAT_TLBIRANGE, all levels) where the
    /// CPU has it, else `TLBI IPAS2E1IS` per page for small spans or `TLBI VMALLS12E1IS` for the
    /// VMID.
    #[cfg_attr(feature = "testing", track_caller)]
    fn invalidate_range(&self, ipa: u64, size: u64);
    /// Broadcast invalidation of the *leaf* entries cached for `[ipa, ipa + size)`: only leaves
    /// changed (permissions, access flag, dirty state), no table was unlinked, so walk-cache
    /// entries may stay (`TLBI RIPAS2LE1IS` with FEAT_TLBIRANGE). Defaults to
    /// [`Tlb::invalidate_range`], which is always sufficient.
    #[cfg_attr(feature = "testing", track_caller)]
    fn invalidate_leaves(&self, ipa: u64, size: u64) {
        self.invalidate_range(ipa, size);
    }
    /// Broadcast invalidation of everything cached for this VMID.
    #[cfg_attr(feature = "testing", track_caller)]
    fn invalidate_vmid(&self);
    /// This CPU only: drop a cached translation for `ipa` that caused a permission fault.
    #[cfg_attr(feature = "testing", track_caller)]
    fn invalidate_ipa_local(&self, ipa: u64, level: u8);
    /// Make the PTE stores of a finished walk visible to other CPUs' walkers (`DSB ISHST`). No
    /// TLBI is needed after invalid -> valid: nothing could have been cached for an invalid entry.
    #[cfg_attr(feature = "testing", track_caller)]
    fn publish(&self);
}

/// Where table pages come from. `cpu` lets an implementation keep per-CPU caches so the fault
/// path never touches a shared allocator.
pub trait PagePool: Sync {
    /// A zeroed 4 KiB page for a table, or `None` when the pool is dry. Must not panic.
    fn alloc_table(&self, cpu: usize) -> Option<u64>;
    /// Return a table page. It may be dirty; the pool zeroes it before handing it out again.
    fn free_table(&self, cpu: usize, pa: u64);
    /// `pages` physically contiguous zeroed pages aligned to `pages * 4096`, for a root made of
    /// concatenated tables.
    fn alloc_root(&self, pages: usize) -> Option<u64>;
    /// Return a root from [`PagePool::alloc_root`].
    fn free_root(&self, pa: u64, pages: usize);
    /// The table page at `pa`, which this pool handed out and which has not been freed.
    fn table(&self, pa: u64) -> &Table;
    /// The metadata of the page at `pa`.
    fn meta(&self, pa: u64) -> &PageMeta;
}

/// Per-table-page bookkeeping kept outside the page (a table page has no spare bytes).
///
/// Freeing must never need memory, so the deferred-free list is threaded through these.
///
/// Aligned to a cache line: every leaf installed bumps its table's refcount, and pools keep these
/// in dense arrays, so two CPUs filling neighbouring tables would otherwise bounce one line
/// between them on every fault (measured on the host: the shared mode stopped scaling at 2
/// threads). 64 bytes per 4 KiB table page is 1.6 %.
#[derive(Debug)]
#[repr(align(64))]
pub struct PageMeta {
    /// 1 + the number of non-empty entries in the table (a LOCKED entry counts as non-empty).
    pub(crate) refcount: AtomicU64,
    /// Next page in a list of pages waiting to be freed (a PA, 0 ends the list).
    pub(crate) next: AtomicU64,
    /// The RCU epoch at which this page was retired.
    pub(crate) epoch: AtomicU64,
}

impl PageMeta {
    /// Metadata for a page that is not a table yet.
    #[must_use]
    pub fn new() -> PageMeta {
        PageMeta {
            refcount: AtomicU64::new(0),
            next: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// The refcount (1 + non-empty entries) as last written; for tests and debug tooling.
    #[must_use]
    pub fn refcount(&self) -> u64 {
        self.refcount.load(crate::sync::Ordering::Relaxed)
    }
}

impl Default for PageMeta {
    fn default() -> Self {
        PageMeta::new()
    }
}

/// Implements [`Tlb`] and [`PagePool`] for a pointer type (`&X`, `Arc<X>`) by delegating every
/// call to the pointee, so a `Stage2` can own a reference or a shared handle.
macro_rules! delegate_arch {
    ($ptr:ty, [$($bound:tt)*]) => {
        impl<X: $crate::arch::Tlb + $($bound)*> $crate::arch::Tlb for $ptr {
            fn invalidate_ipa(&self, ipa: u64, level: u8) {
                (**self).invalidate_ipa(ipa, level);
            }
            fn invalidate_range(&self, ipa: u64, size: u64) {
                (**self).invalidate_range(ipa, size);
            }
            fn invalidate_leaves(&self, ipa: u64, size: u64) {
                (**self).invalidate_leaves(ipa, size);
            }
            fn invalidate_vmid(&self) {
                (**self).invalidate_vmid();
            }
            fn invalidate_ipa_local(&self, ipa: u64, level: u8) {
                (**self).invalidate_ipa_local(ipa, level);
            }
            fn publish(&self) {
                (**self).publish();
            }
        }

        impl<X: $crate::arch::PagePool + $($bound)*> $crate::arch::PagePool for $ptr {
            fn alloc_table(&self, cpu: usize) -> Option<u64> {
                (**self).alloc_table(cpu)
            }
            fn free_table(&self, cpu: usize, pa: u64) {
                (**self).free_table(cpu, pa);
            }
            fn alloc_root(&self, pages: usize) -> Option<u64> {
                (**self).alloc_root(pages)
            }
            fn free_root(&self, pa: u64, pages: usize) {
                (**self).free_root(pa, pages);
            }
            fn table(&self, pa: u64) -> &$crate::arch::Table {
                (**self).table(pa)
            }
            fn meta(&self, pa: u64) -> &$crate::arch::PageMeta {
                (**self).meta(pa)
            }
        }
    };
}
#[cfg(feature = "testing")] // testing.rs delegates for `Arc<X>`
pub(crate) use delegate_arch;

delegate_arch!(&X, [?Sized]);
