//! `aging` (issue 11): each vCPU its own region, faulted in over `iters=` passes while the
//! hypervisor ages it. Pass `k` writes the k-th slice of the region (first touches: stage-2
//! faults) and reads every other page of the slices before it (`expect::aging_touched`; with
//! VTCR_EL2.HA the hardware sets each page's access flag), timed by the guest and reported with
//! `HVC_AGING_PASS` (pages touched, pages faulted in). Meanwhile an ager CPU runs aging passes
//! (clear the access flags of the data memslot); at the barrier after the pass the hypervisor
//! ages once more and checks that every page the pass touched was found young. Then the region
//! is verified as `demand` leaves it (the reads check the words too).

use super::{barrier, expect, hvc4, load, store, timed_report, verify, Ctx, Outcome};
use crate::{abi, cntvct, hvc};

/// Runs the passes and the final verification.
pub fn run(c: &Ctx, out: &mut Outcome) {
    let iters = hvc(abi::HVC_QUERY, abi::QUERY_DIRTY_ITERS, 0, 0).clamp(1, abi::MAX_DIRTY_ITERS);
    let first = c.id * c.pages;
    let mut bad = 0;
    for pass in 1..=iters {
        let release = barrier(abi::BARRIER_AGING_PASS);
        let (mut touched, mut new) = (0, 0);
        for p in 0..c.pages {
            let ipa = c.region + p * abi::PAGE_SIZE;
            let want = expect::value(c.id, first + p, 0);
            if expect::aging_new(p, pass, c.pages, iters) {
                store(ipa, want);
                new += 1;
            } else if expect::aging_touched(p, pass, c.pages, iters) {
                bad += u64::from(load(ipa) != want);
            } else {
                continue;
            }
            touched += 1;
        }
        let ticks = cntvct().wrapping_sub(release);
        // Before the check barrier: the hypervisor checks the young pages against these.
        hvc4(abi::HVC_AGING_PASS, pass, ticks, touched, new);
        barrier(abi::BARRIER_AGING_CHECK);
        out.ticks += ticks;
        out.pages += touched;
    }
    let (sum, vbad) = verify(c, 0);
    out.checksum = sum;
    out.mismatches += bad + vbad;
    timed_report(abi::PHASE_RUN, out.ticks, out.pages, bad + vbad);
}
