//! The guest workloads (`workload=`), shaped like KVM's selftests (see
//! `docs/hypervisor.md`): `demand` and `random` (each vCPU its own region), `overlap` and
//! `pagetable` (one region for all), `dirtylog` (each vCPU its own region, KVM's
//! dirty_log_perf_test), `aging` (each vCPU its own region, aged while it faults and touches).
//! Every workload runs its timed phases between hypervisor barriers, verifies what memory holds
//! afterwards against `expect`, and reports.

mod aging;
mod dirtylog;
#[allow(dead_code)] // Shared with the hypervisor, which uses the rest.
pub mod expect;
mod pagetable;
mod random;

use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};

use crate::pattern::{checksum_step, CHECKSUM_INIT, WORDS_PER_PAGE};
use crate::{abi, cntvct, hvc};

/// What a vCPU knows about its run.
pub struct Ctx {
    /// vCPU id.
    pub id: u64,
    /// vCPUs in the run.
    pub vcpus: u64,
    /// Workload number (abi.rs).
    pub workload: u64,
    /// First IPA of the data slot (all regions).
    pub slot: u64,
    /// First IPA of this vCPU's region (the slot itself for shared workloads).
    pub region: u64,
    /// Pages in one region.
    pub pages: u64,
}

/// What a workload reports: checksum of its verify set, timed ticks, pages touched in them.
pub struct Outcome {
    /// Checksum over the pages this vCPU verified after its last phase.
    pub checksum: u64,
    /// Sum over phases of CNTVCT ticks from the phase's release to this vCPU's end.
    pub ticks: u64,
    /// Pages touched in the timed phases.
    pub pages: u64,
    /// Words that did not verify, over all phases.
    pub mismatches: u64,
}

/// A hypervisor call with four arguments; returns x0.
fn hvc4(function: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> u64 {
    let ret;
    // SAFETY: HVC traps to our hypervisor, which implements the calls in abi.rs and touches
    // only x0..x4 of our registers; no memory of ours is read or written.
    unsafe {
        asm!("hvc #0", inlateout("x0") function => ret, in("x1") a1, in("x2") a2, in("x3") a3,
             in("x4") a4, options(nostack));
    }
    ret
}

/// Waits until every vCPU called the same barrier; returns CNTPCT (= CNTVCT) at the release.
pub fn barrier(n: u64) -> u64 {
    hvc(abi::HVC_BARRIER, n, 0, 0)
}

/// Writes one word of guest memory.
pub fn store(ipa: u64, value: u64) {
    // SAFETY: callers pass an 8-byte aligned IPA inside the data slot the hypervisor gave us;
    // guest RAM is not a Rust object, and volatile keeps every access a real (faulting) one.
    unsafe { write_volatile(ipa as *mut u64, value) };
}

/// Reads one word of guest memory.
pub fn load(ipa: u64) -> u64 {
    // SAFETY: as in `store`.
    unsafe { read_volatile(ipa as *const u64) }
}

/// Calibration in the same boot: `CALIB_CALLS` empty HVCs on vCPU 0 alone (the others wait in
/// the barrier), then on every vCPU at once, each reported to the hypervisor.
pub fn calibrate(id: u64) {
    barrier(abi::BARRIER_CALIB_SOLO);
    if id == 0 {
        let t = cntvct();
        for _ in 0..abi::CALIB_CALLS {
            hvc(abi::HVC_NULL, 0, 0, 0);
        }
        hvc(abi::HVC_CALIB, 0, cntvct() - t, abi::CALIB_CALLS);
    }
    let release = barrier(abi::BARRIER_CALIB_ALL);
    for _ in 0..abi::CALIB_CALLS {
        hvc(abi::HVC_NULL, 0, 0, 0);
    }
    hvc(abi::HVC_CALIB, 1, cntvct() - release, abi::CALIB_CALLS);
    barrier(abi::BARRIER_CALIB_END);
}

/// Verifies this vCPU's verify set against what `phase` must have left; (checksum, mismatches).
fn verify(c: &Ctx, phase: u64) -> (u64, u64) {
    let (first, count, stride) = expect::verify_set(c.workload, c.id, c.vcpus, c.pages);
    let mut sum = CHECKSUM_INIT;
    let mut bad = 0;
    for i in 0..count {
        let page = first + i * stride;
        let base = c.slot + page * abi::PAGE_SIZE;
        for w in 0..WORDS_PER_PAGE {
            let v = load(base + w * 8);
            bad += u64::from(v != expect::expected(c.workload, c.vcpus, c.pages, page, w, phase));
            sum = checksum_step(sum, v);
        }
    }
    (sum, bad)
}

/// Reports timed phase `phase` (ticks, pages touched, words that did not verify) for the
/// hypervisor's per-vCPU table, for workloads that time their passes themselves.
fn timed_report(phase: u64, ticks: u64, pages: u64, bad: u64) {
    hvc4(abi::HVC_PHASE, phase, ticks, pages, bad);
}

/// Runs timed phase `phase`: start barrier (the hypervisor's action), `touch` (returns pages
/// touched), end barrier, verification, report. Adds to `out`.
fn timed(c: &Ctx, phase: u64, out: &mut Outcome, touch: impl FnOnce() -> u64) {
    let release = barrier(abi::BARRIER_PHASE + 2 * phase);
    let pages = touch();
    let ticks = cntvct().wrapping_sub(release);
    barrier(abi::BARRIER_PHASE_END + 2 * phase);
    let (sum, bad) = verify(c, phase);
    hvc4(abi::HVC_PHASE, phase, ticks, pages, bad);
    out.checksum = sum;
    out.ticks += ticks;
    out.pages += pages;
    out.mismatches += bad;
}

/// Runs the workload; None for an unknown workload number.
pub fn run(c: &Ctx) -> Option<Outcome> {
    let mut out = Outcome {
        checksum: 0,
        ticks: 0,
        pages: 0,
        mismatches: 0,
    };
    match c.workload {
        // Each vCPU writes word 0 of every page of its own region, in order.
        abi::WORKLOAD_DEMAND => timed(c, abi::PHASE_RUN, &mut out, || {
            let first = c.id * c.pages;
            for p in 0..c.pages {
                store(
                    c.region + p * abi::PAGE_SIZE,
                    expect::value(c.id, first + p, 0),
                );
            }
            c.pages
        }),
        // The same in a seeded random order.
        abi::WORKLOAD_RANDOM => timed(c, abi::PHASE_RUN, &mut out, || {
            let first = c.id * c.pages;
            for p in random::Order::new(c.pages, c.id) {
                store(
                    c.region + p * abi::PAGE_SIZE,
                    expect::value(c.id, first + p, 0),
                );
            }
            c.pages
        }),
        // Every vCPU writes its own slot (word `id`) of every page of the shared region.
        abi::WORKLOAD_OVERLAP => timed(c, abi::PHASE_RUN, &mut out, || {
            for p in 0..c.pages {
                store(
                    c.slot + p * abi::PAGE_SIZE + c.id * 8,
                    expect::value(c.id, p, 0),
                );
            }
            c.pages
        }),
        abi::WORKLOAD_PAGETABLE => pagetable::run(c, &mut out),
        abi::WORKLOAD_DIRTYLOG => dirtylog::run(c, &mut out),
        abi::WORKLOAD_AGING => aging::run(c, &mut out),
        _ => return None,
    }
    Some(out)
}
