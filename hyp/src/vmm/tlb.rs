//! `stage2::Tlb` for the real machine: each method is one sequence from arch.rs (where the
//! instructions and the requirements they meet are written down).

use crate::arch;

/// TLB maintenance for the one VMID this hypervisor runs (the VMID in VTTBR_EL2).
pub struct HypTlb;

/// Ranges up to this many pages are invalidated page by page; larger ones by VMID.
const RANGE_BY_PAGE_LIMIT: u64 = 16;

impl stage2::Tlb for HypTlb {
    fn invalidate_ipa(&self, ipa: u64, level: u8) {
        arch::s2_invalidate_ipa_broadcast(ipa, level);
    }

    fn invalidate_range(&self, ipa: u64, size: u64) {
        // A span may contain unlinked tables: a level hint would name a leaf, so none is given
        // (level 0 means "no hint" in arch.rs).
        let pages = size.div_ceil(4096);
        if pages <= RANGE_BY_PAGE_LIMIT {
            arch::s2_invalidate_ipa_range_broadcast(ipa, pages);
        } else {
            arch::s2_invalidate_vmid_broadcast();
        }
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
