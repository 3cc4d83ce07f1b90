//! `stage2::Tlb` for the real machine: each method is one sequence from arch.rs (where the
//! instructions and the requirements they meet are written down).

use crate::arch;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

/// TLB maintenance for the one VMID this hypervisor runs (the VMID in VTTBR_EL2).
pub struct HypTlb;

/// Without FEAT_TLBIRANGE, ranges up to this many pages are invalidated page by page; larger
/// ones by VMID.
const RANGE_BY_PAGE_LIMIT: u64 = 16;

/// How a range invalidation is issued on this CPU, chosen at run time from ID_AA64ISAR0_EL1.TLB
/// (`arch::has_tlbi_range`) and the span's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    /// `TLBI RIPAS2E1IS` / `RIPAS2LE1IS` (FEAT_TLBIRANGE): at most four TLBIs for any span.
    Ripas2,
    /// `TLBI IPAS2E1IS` per 4 KiB page (no FEAT_TLBIRANGE, small span).
    PerPage,
    /// `TLBI VMALLS12E1IS` (no FEAT_TLBIRANGE and a large span, or a span beyond the range ops).
    Vmid,
}

impl RangeOp {
    /// The operation used for a span of `pages` 4 KiB pages.
    pub fn for_pages(pages: u64) -> RangeOp {
        if arch::has_tlbi_range() && pages <= arch::TLBI_RANGE_MAX_PAGES {
            RangeOp::Ripas2
        } else if pages <= RANGE_BY_PAGE_LIMIT {
            RangeOp::PerPage
        } else {
            RangeOp::Vmid
        }
    }

    /// The name in RESULT (`tlbi_range_op=`).
    pub fn name(self) -> &'static str {
        match self {
            RangeOp::Ripas2 => "ripas2",
            RangeOp::PerPage => "per-page",
            RangeOp::Vmid => "vmid",
        }
    }
}

/// How many range invalidations went each way (indexed by `RangeOp as usize`). Range operations
/// are rare (a prune, a write-protect pass, a harvest), so one shared counter costs nothing.
static RANGE_OPS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// RESULT fields: `tlbi_range_op=` the operation this CPU uses for a span of many pages
/// (`ripas2` with FEAT_TLBIRANGE, else `vmid`), then the count of range invalidations issued
/// each way (`tlbi_ripas2= tlbi_per_page= tlbi_range_vmid=`).
pub fn report() -> String {
    format!(
        " tlbi_range_op={} tlbi_ripas2={} tlbi_per_page={} tlbi_range_vmid={}",
        RangeOp::for_pages(RANGE_BY_PAGE_LIMIT + 1).name(),
        RANGE_OPS[RangeOp::Ripas2 as usize].load(Ordering::Relaxed),
        RANGE_OPS[RangeOp::PerPage as usize].load(Ordering::Relaxed),
        RANGE_OPS[RangeOp::Vmid as usize].load(Ordering::Relaxed),
    )
}

impl HypTlb {
    fn range(ipa: u64, size: u64, leaf_only: bool) {
        let pages = size.div_ceil(4096);
        let op = RangeOp::for_pages(pages);
        RANGE_OPS[op as usize].fetch_add(1, Ordering::Relaxed);
        match op {
            RangeOp::Ripas2 => arch::s2_invalidate_range_tlbirange(ipa, pages, leaf_only),
            // A span may contain unlinked tables: a level hint would name a leaf, so none is
            // given (level 0 means "no hint" in arch.rs).
            RangeOp::PerPage => arch::s2_invalidate_ipa_range_broadcast(ipa, pages),
            RangeOp::Vmid => arch::s2_invalidate_vmid_broadcast(),
        }
    }
}

impl stage2::Tlb for HypTlb {
    fn invalidate_ipa(&self, ipa: u64, level: u8) {
        arch::s2_invalidate_ipa_broadcast(ipa, level);
    }

    fn invalidate_range(&self, ipa: u64, size: u64) {
        HypTlb::range(ipa, size, false);
    }

    fn invalidate_leaves(&self, ipa: u64, size: u64) {
        // Only leaves changed (write-protect, dirty harvest, aging): RIPAS2LE1IS may keep the
        // walk caches. Without FEAT_TLBIRANGE the per-page and VMID forms drop everything anyway.
        HypTlb::range(ipa, size, true);
    }

    fn invalidate_vmid(&self) {
        arch::s2_invalidate_vmid_broadcast();
    }

    fn invalidate_ipa_local(&self, ipa: u64, level: u8) {
        arch::s2_invalidate_ipa_local(ipa, level);
    }

    fn publish(&self) {
        arch::dsb_ishst();
    }
}
