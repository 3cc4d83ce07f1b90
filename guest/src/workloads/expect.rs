//! What every workload leaves in guest memory, and which pages each vCPU verifies. Compiled into
//! both the guest (which writes and verifies) and the hypervisor (which recomputes the checksums
//! from the backing pages), so the two cannot drift.
//!
//! Values never depend on timing or on which vCPU happened to fault a page in first: a word is
//! written by exactly one vCPU (its own 8-byte slot), and everything else must read back 0.

use crate::abi;
use crate::pattern::{page_seed, WORDS_PER_PAGE};

/// Whether all vCPUs share one region (`overlap`, `pagetable`) instead of one region each.
pub fn shared(workload: u64) -> bool {
    matches!(workload, abi::WORKLOAD_OVERLAP | abi::WORKLOAD_PAGETABLE)
}

/// Timed phases of a workload.
pub fn phases(workload: u64) -> u64 {
    if workload == abi::WORKLOAD_PAGETABLE {
        3
    } else {
        1
    }
}

/// The pages vCPU `id` verifies, as (first page index in the data slot, count, stride).
/// `pages` is the pages of one region (the `mem=` option / 4 KiB).
pub fn verify_set(workload: u64, id: u64, vcpus: u64, pages: u64) -> (u64, u64, u64) {
    if shared(workload) {
        // A partition of the shared region: pages id, id + vcpus, ...
        (id, pages.saturating_sub(id).div_ceil(vcpus), vcpus)
    } else {
        (id * pages, pages, 1)
    }
}

/// The value `writer` stores in its slot of page `page` (index in the data slot) in `phase`.
/// Never 0, so a lost write is always seen.
pub fn value(writer: u64, page: u64, phase: u64) -> u64 {
    page_seed(writer | phase << 20, page) | 1
}

/// Whether vCPU `id` writes in `workload` (in `pagetable` only even vCPUs do).
pub fn writes(workload: u64, id: u64) -> bool {
    workload != abi::WORKLOAD_PAGETABLE || id.is_multiple_of(2)
}

/// Word `w` of data-slot page `page` after `phase` completed. `pages` as in `verify_set`.
pub fn expected(workload: u64, vcpus: u64, pages: u64, page: u64, w: u64, phase: u64) -> u64 {
    debug_assert!(w < WORDS_PER_PAGE);
    if shared(workload) {
        // Word w is vCPU w's slot.
        if w < vcpus && writes(workload, w) {
            value(w, page, phase)
        } else {
            0
        }
    } else if w == 0 {
        // demand / random: the region's owner writes word 0 of each of its pages; dirtylog
        // rewrites it in every pass (`phase` = the pass, populate 0).
        let pass = if workload == abi::WORKLOAD_DIRTYLOG {
            phase
        } else {
            0
        };
        value(page / pages, page, pass)
    } else {
        0
    }
}

/// `aging`: whether pass `pass` (1..=`iters`) writes page `p` (0-based in a region of `pages`)
/// for the first time: the pass's slice of the region, `[pages * (pass - 1) / iters, pages *
/// pass / iters)`.
pub fn aging_new(p: u64, pass: u64, pages: u64, iters: u64) -> bool {
    (pages * (pass - 1) / iters..pages * pass / iters).contains(&p)
}

/// `aging`: whether pass `pass` touches page `p`: its own slice (written), and every other page
/// of the slices before it (read), alternating with the pass, so that each aging pass finds
/// some mapped pages young and the others old.
pub fn aging_touched(p: u64, pass: u64, pages: u64, iters: u64) -> bool {
    aging_new(p, pass, pages, iters)
        || (p < pages * (pass - 1) / iters && (p + pass).is_multiple_of(2))
}
