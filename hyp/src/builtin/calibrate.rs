//! Calibration in the same boot: what zeroing one fresh 4 KiB page costs at EL2 (the other
//! half of a demand fault's floor; the trap round trip is measured by the guests with empty
//! HVCs, see phases.rs).

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::pool::{self, Region};

/// Pages zeroed for the estimate.
const SAMPLES: usize = 64;

static ZERO_NS: AtomicU64 = AtomicU64::new(0);

/// Times `pool::zero_guest_page` (the fault path's zeroing, with its cache clean without FWB) on `SAMPLES` pages never handed out
/// before, one at a time, and keeps the median in ns. CPU0, before any vCPU runs.
pub fn measure_zero(backing: &Region) {
    let freq = CNTFRQ_EL0.get();
    let mut pages = Vec::with_capacity(SAMPLES);
    let mut ticks = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let Some(pa) = backing.alloc(1) else { break };
        let t = CNTPCT_EL0.get();
        pool::zero_guest_page(pa);
        ticks.push(CNTPCT_EL0.get() - t);
        pages.push(pa);
    }
    for pa in pages {
        backing.free(pa, 1);
    }
    if ticks.is_empty() || freq == 0 {
        return;
    }
    ticks.sort_unstable();
    let median = ticks[ticks.len() / 2];
    ZERO_NS.store(median * 1_000_000_000 / freq, Ordering::Relaxed);
}

/// The median cost of zeroing a page, in ns (0 before `measure_zero`).
pub fn zero_ns() -> u64 {
    ZERO_NS.load(Ordering::Relaxed)
}
