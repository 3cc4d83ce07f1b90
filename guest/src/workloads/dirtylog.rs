//! `dirtylog` (KVM's dirty_log_perf_test): each vCPU its own region. Populate (a timed phase:
//! write every page), then the hypervisor turns dirty logging on (write-protects the data
//! memslot), then `iters=` dirty passes: every vCPU writes every page of its region with a value
//! that depends on the pass (timed by the guest, reported with `HVC_DIRTY_PASS`), and at the
//! barrier after the pass the hypervisor gets and clears the log and checks that every page the
//! guests said they wrote is in it. Logging off, then the region is verified against the last
//! pass (the checksum the hypervisor recomputes from the backing pages).
//!
//! The 'evil' variant (`evil=on`): during each pass vCPU 0 also asks for a get-and-clear every
//! `EVIL_HARVEST_EVERY` pages (`HVC_DIRTY_HARVEST`), so harvests race the other vCPUs' writes
//! (and its own); the check after the pass's final, quiescent harvest covers the union.

use super::{barrier, expect, hvc4, store, timed, verify, Ctx, Outcome};
use crate::{abi, cntvct, hvc};

/// Writes word 0 of every page of the own region with pass `pass`'s value; returns the pages.
/// `evil`: ask for a racing harvest every `EVIL_HARVEST_EVERY` pages.
fn write_pass(c: &Ctx, pass: u64, evil: bool) -> u64 {
    let first = c.id * c.pages;
    for p in 0..c.pages {
        store(
            c.region + p * abi::PAGE_SIZE,
            expect::value(c.id, first + p, pass),
        );
        if evil && p % abi::EVIL_HARVEST_EVERY == abi::EVIL_HARVEST_EVERY - 1 {
            hvc(abi::HVC_DIRTY_HARVEST, pass, 0, 0);
        }
    }
    c.pages
}

/// Runs populate, the dirty passes and the final verification.
pub fn run(c: &Ctx, out: &mut Outcome) {
    let iters = hvc(abi::HVC_QUERY, abi::QUERY_DIRTY_ITERS, 0, 0).min(abi::MAX_DIRTY_ITERS);
    let evil = c.id == 0 && hvc(abi::HVC_QUERY, abi::QUERY_DIRTY_EVIL, 0, 0) == 1;
    timed(c, abi::PHASE_RUN, out, || write_pass(c, 0, false));
    barrier(abi::BARRIER_DIRTY_ENABLE);
    for pass in 1..=iters {
        let release = barrier(abi::BARRIER_DIRTY_PASS);
        let pages = write_pass(c, pass, evil);
        let ticks = cntvct().wrapping_sub(release);
        // Before the harvest barrier: the hypervisor checks the log against these pages.
        hvc4(abi::HVC_DIRTY_PASS, pass, ticks, pages, 0);
        barrier(abi::BARRIER_DIRTY_HARVEST);
        out.ticks += ticks;
        out.pages += pages;
    }
    barrier(abi::BARRIER_DIRTY_DISABLE);
    let (sum, bad) = verify(c, iters);
    out.checksum = sum;
    out.mismatches += bad;
}
