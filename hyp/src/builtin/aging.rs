//! The hypervisor side of `workload=aging` (guest/src/workloads/aging.rs): aging with no lock,
//! measured against the guest's own record of what it touched.
//!
//! Stage 2 runs with the hardware Access flag (VTCR_EL2.HA, vm.rs): a fault maps a page young
//! (AF = 1) and the hardware sets AF again on the next access after an aging pass made it old.
//! While the vCPUs run a pass (fault in a new slice of their region, read half of the old one),
//! the ager CPU (the CPU after the vCPUs, which runs no guest, like chaos=on's pruner) runs aging
//! passes over the data memslot back to back: `Guard::clear_young_each` (test_clear_young, then
//! one range invalidation so the next access through any TLB sets AF again), in shared mode with
//! no lock in parallel mode, under the exclusive guard in locked mode (the baseline, as KVM
//! arm64 ages under the MMU lock today). Every page those passes find young is kept. At the
//! barrier after the pass the hypervisor stops the ager, runs one more (quiescent) aging pass,
//! and checks: every page the guest touched in the pass must be among those found young
//! (`lost_young`, which fails the run). Young pages the guest did not touch are counted
//! (`extra_young`) but allowed: an implementation may set AF on a speculative access.
//!
//! Why a touched page is never missed: the previous pass's quiescent aging made every page old
//! and invalidated, so a touch in this pass goes through a translation walk that sets AF (or
//! faults the page in, mapped young); an aging pass that clears that AF records the page, and
//! its invalidation makes a later touch set AF again, which the next aging pass sees.
//! `selftest=noflush` drops the invalidation: a touch through a TLB entry cached with AF = 1
//! then sets nothing, and `lost_young` must be non-zero.
//!
//! `aging=off` runs no concurrent passes (only the quiescent one at each barrier): the baseline
//! for the fault-time percentiles, for the goal "aging never blocks a faulting vCPU".

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::{Mutex, Once};

use super::spare_cpu::SpareCpu;
use crate::abi;
use crate::options::{Mode, Selftest, Workload};
use crate::percpu::PerCpu;
use crate::pool::PAGE;
use crate::println;
use crate::report::ticks_to_ns;
use crate::vm::Vm;

const MAX: usize = abi::MAX_DIRTY_ITERS as usize;

/// Per pass (index = pass - 1): what the report prints.
struct Pass {
    /// Ticks of the slowest vCPU from the pass's release to its end (guest CNTVCT).
    ticks: AtomicU64,
    /// The ager's concurrent aging passes during the pass: how many, their total and longest
    /// time in ticks (guard included), and the young pages they found.
    ager_passes: AtomicU64,
    ager_ticks: AtomicU64,
    ager_max_ticks: AtomicU64,
    ager_young: AtomicU64,
    /// The quiescent aging pass at the barrier: ticks and young pages found.
    final_ticks: AtomicU64,
    final_young: AtomicU64,
    /// Pages the guests touched, and of them faulted in (first written).
    touched: AtomicU64,
    faulted: AtomicU64,
    /// Distinct pages found young in the pass (union of all its aging passes).
    young: AtomicU64,
    /// Touched pages not found young (must be 0), young pages not touched (allowed).
    lost: AtomicU64,
    extra: AtomicU64,
}

impl Pass {
    const fn new() -> Self {
        Pass {
            ticks: AtomicU64::new(0),
            ager_passes: AtomicU64::new(0),
            ager_ticks: AtomicU64::new(0),
            ager_max_ticks: AtomicU64::new(0),
            ager_young: AtomicU64::new(0),
            final_ticks: AtomicU64::new(0),
            final_young: AtomicU64::new(0),
            touched: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            young: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            extra: AtomicU64::new(0),
        }
    }
}

static PASSES: [Pass; MAX] = [const { Pass::new() }; MAX];
/// The pass the vCPUs are running (1-based; 0 before the first).
static CURRENT: AtomicU64 = AtomicU64::new(0);
/// Checks done.
static CHECKS: AtomicU64 = AtomicU64::new(0);
/// The ager ages while this is set (between a pass's release and its check barrier).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The ager's stop request and its answer (main.rs waits for it before teardown).
static AGER: SpareCpu = SpareCpu::new();
/// Pages found young in the current pass, one bit per data-memslot page. The ager holds the lock
/// for the whole of each aging pass, so the check barrier's action, which takes it, waits for
/// the ager's pass in progress.
static YOUNG: Once<Mutex<Vec<u64>>> = Once::new();
/// Per vCPU: (pass, pages touched, pages faulted in) of its last `HVC_AGING_PASS`.
static REPORTED: Once<Box<[(AtomicU64, AtomicU64, AtomicU64)]>> = Once::new();
/// Protocol errors: a vCPU reported another pass, or touched pages it should not have.
static PROTOCOL_ERRORS: AtomicU64 = AtomicU64::new(0);

fn reported(vcpus: usize) -> &'static [(AtomicU64, AtomicU64, AtomicU64)] {
    REPORTED.call_once(|| (0..vcpus).map(|_| Default::default()).collect())
}

fn young_pages(vm: &Vm) -> &'static Mutex<Vec<u64>> {
    YOUNG.call_once(|| {
        Mutex::new(vec![
            0;
            (crate::layout::data(vm).size / PAGE).div_ceil(64)
                as usize
        ])
    })
}

/// The CPU that runs the ager: the one after the vCPUs, with `workload=aging aging=on`.
pub fn ager_cpu(vm: &Vm) -> Option<usize> {
    SpareCpu::cpu(vm, vm.opts.workload == Workload::Aging && vm.opts.aging)
}

/// One aging pass over the data memslot into `young` (one bit per page): shared mode in
/// parallel mode, the exclusive guard in locked mode; the range invalidation unless
/// `selftest=noflush`. Returns (young pages, ticks with the guard).
fn age(vm: &Vm, cpu: &PerCpu, young: &mut [u64]) -> (u64, u64) {
    let s2 = vm.s2.get();
    let (start, end) = (
        crate::layout::data(vm).ipa,
        crate::layout::data(vm).ipa + crate::layout::data(vm).size,
    );
    let flush = vm.opts.selftest != Some(Selftest::NoFlush);
    let t0 = CNTPCT_EL0.get();
    let g = match vm.opts.mode {
        Mode::Parallel => s2.shared(cpu.index),
        Mode::Locked => s2.exclusive(cpu.index),
    };
    let aged = g.clear_young_each(start, end, flush, |(base, size)| {
        let lo = base.max(start);
        let hi = (base + size).min(end);
        let mut ipa = lo;
        while ipa < hi {
            let page = (ipa - start) / PAGE;
            young[(page / 64) as usize] |= 1 << (page % 64);
            ipa += PAGE;
        }
    });
    drop(g);
    let ticks = CNTPCT_EL0.get().wrapping_sub(t0);
    s2.reclaim(cpu.index);
    (aged.young_pages, ticks)
}

/// The ager CPU's loop: while a pass runs, age back to back (napping `PAUSE_US` between aging
/// passes); otherwise nap. Ends on `stop`.
pub fn ager(vm: &Vm, cpu: &PerCpu) {
    log::info!(
        "aging: ager on cpu{} over the data memslot ({} pages), mode {}",
        cpu.index,
        crate::layout::data(vm).size / PAGE,
        vm.opts.mode.name()
    );
    let pause = CNTFRQ_EL0.get() * PAUSE_US / 1_000_000;
    while !AGER.stop_requested() {
        if ACTIVE.load(Ordering::Acquire) {
            let mut young = young_pages(vm).lock();
            // Re-check under the lock: the check barrier clears ACTIVE before it takes it.
            let pass = CURRENT.load(Ordering::Acquire);
            if ACTIVE.load(Ordering::Acquire) && (1..=MAX as u64).contains(&pass) {
                let (pages, ticks) = age(vm, cpu, &mut young);
                let p = &PASSES[pass as usize - 1];
                p.ager_passes.fetch_add(1, Ordering::Relaxed);
                p.ager_ticks.fetch_add(ticks, Ordering::Relaxed);
                p.ager_max_ticks.fetch_max(ticks, Ordering::Relaxed);
                p.ager_young.fetch_add(pages, Ordering::Relaxed);
            }
        }
        AGER.pause(pause, || match super::phases::napper(cpu.index) {
            Some(w) => w.nap(),
            None => core::hint::spin_loop(),
        });
    }
    AGER.mark_stopped();
}

/// Pause between two of the ager's aging passes, in microseconds: it leaves the vCPUs' host
/// threads the host cores under TCG, as chaos=on's pruner does.
const PAUSE_US: u64 = 100;

/// Asks the ager to stop and waits (up to a second) until it has left every stage-2 section.
/// Returns false if it did not stop (then teardown must not run). True without an ager.
pub fn stop(vm: &Vm) -> bool {
    ager_cpu(vm).is_none() || AGER.request_stop_and_wait(1)
}

/// `HVC_AGING_PASS`: vCPU `cpu` ended pass `pass` (1-based) after `ticks`, having touched
/// `touched` pages, `faulted` of them for the first time. Returns 0, or SMCCC NOT_SUPPORTED
/// outside `aging` or for a pass out of range.
pub fn pass_done(vm: &Vm, cpu: &PerCpu, pass: u64, ticks: u64, touched: u64, faulted: u64) -> u64 {
    if vm.opts.workload != Workload::Aging || pass == 0 || pass > vm.opts.iters {
        return crate::psci::not_supported();
    }
    PASSES[pass as usize - 1]
        .ticks
        .fetch_max(ticks, Ordering::Relaxed);
    let (p, t, f) = &reported(vm.opts.vcpus)[cpu.index];
    t.store(touched, Ordering::Relaxed);
    f.store(faulted, Ordering::Relaxed);
    p.store(pass, Ordering::Relaxed);
    0
}

/// The hypervisor's part of `aging`'s barrier `n`, run by the last vCPU to arrive while the
/// others wait in the barrier.
pub fn action(vm: &Vm, cpu: &PerCpu, n: u64) {
    match n {
        abi::BARRIER_AGING_PASS => {
            young_pages(vm);
            CURRENT.fetch_add(1, Ordering::AcqRel);
            ACTIVE.store(vm.opts.aging, Ordering::Release);
        }
        abi::BARRIER_AGING_CHECK => check_pass(vm, cpu),
        _ => {}
    }
}

/// Stops the ager's passes (waits for the one in progress), ages once more, and checks the
/// young pages against what each vCPU touched in the pass.
fn check_pass(vm: &Vm, cpu: &PerCpu) {
    ACTIVE.store(false, Ordering::Release);
    let mut young = young_pages(vm).lock();
    let i = CHECKS.fetch_add(1, Ordering::Relaxed) as usize;
    if i >= vm.opts.iters as usize || CURRENT.load(Ordering::Acquire) != i as u64 + 1 {
        log::error!("aging: check {} out of step with the passes", i + 1);
        PROTOCOL_ERRORS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let (pages, ticks) = age(vm, cpu, &mut young);
    let p = &PASSES[i];
    p.final_ticks.store(ticks, Ordering::Relaxed);
    p.final_young.store(pages, Ordering::Relaxed);
    // vCPU v's region starts at page v * (mem / 4 KiB) of the memslot; the guest touched the
    // pages `expect::aging_touched` names, and reported how many.
    let region = vm.opts.mem / PAGE;
    let (pass, iters) = (i as u64 + 1, vm.opts.iters);
    let (mut touched, mut faulted, mut lost, mut extra) = (0, 0, 0, 0);
    for (v, (rpass, t, f)) in reported(vm.opts.vcpus).iter().enumerate() {
        let (rpass, t, f) = (
            rpass.swap(0, Ordering::Relaxed),
            t.swap(0, Ordering::Relaxed),
            f.swap(0, Ordering::Relaxed),
        );
        let mut want = 0;
        for p in 0..region {
            let page = v as u64 * region + p;
            let is_young = young[(page / 64) as usize] & (1 << (page % 64)) != 0;
            if crate::expect::aging_touched(p, pass, region, iters) {
                want += 1;
                lost += u64::from(!is_young);
            } else {
                extra += u64::from(is_young);
            }
        }
        if rpass != pass || t != want {
            log::error!("aging: vcpu {v} reported pass {rpass} with {t} pages touched at check {pass} (expected {want})");
            PROTOCOL_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        touched += t;
        faulted += f;
    }
    let distinct: u64 = young.iter().map(|w| u64::from(w.count_ones())).sum();
    young.iter_mut().for_each(|w| *w = 0);
    p.touched.store(touched, Ordering::Relaxed);
    p.faulted.store(faulted, Ordering::Relaxed);
    p.young.store(distinct, Ordering::Relaxed);
    p.lost.store(lost, Ordering::Relaxed);
    p.extra.store(extra, Ordering::Relaxed);
    if lost != 0 {
        log::error!("aging: pass {pass}: {lost} touched pages not found young");
    }
}

fn lost_total() -> u64 {
    PASSES.iter().map(|p| p.lost.load(Ordering::Relaxed)).sum()
}

/// Fails the run for a touched page not found young, a missing check or a protocol error.
pub fn check(vm: &Vm, failures: &mut Vec<String>) {
    if vm.opts.workload != Workload::Aging {
        return;
    }
    let lost = lost_total();
    if lost != 0 {
        failures.push(format!(
            "aging: {lost} pages touched in aging passes were not found young"
        ));
    }
    let checks = CHECKS.load(Ordering::Relaxed);
    if checks != vm.opts.iters {
        failures.push(format!(
            "aging: {checks} checks for iters={}",
            vm.opts.iters
        ));
    }
    let errors = PROTOCOL_ERRORS.load(Ordering::Relaxed);
    if errors != 0 {
        failures.push(format!(
            "aging: {errors} protocol errors (wrong pass or page count reported)"
        ));
    }
}

/// Prints the per-pass table; returns the RESULT fields.
pub fn report(vm: &Vm) -> String {
    let freq = CNTFRQ_EL0.get();
    let ns = |t: u64| ticks_to_ns(t, freq);
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let iters = vm.opts.iters as usize;
    println!(
        "aging ({} mode, aging={}): VTCR_EL2.HA, clear_young + one range invalidation per aging \
         pass{}",
        vm.opts.mode.name(),
        if vm.opts.aging { "on" } else { "off" },
        if vm.opts.selftest == Some(Selftest::NoFlush) {
            " (selftest=noflush: no invalidation)"
        } else {
            ""
        }
    );
    println!(
        "  {:>4} {:>8} {:>8} {:>8} {:>7} {:>11} {:>11} {:>8} {:>9} {:>8} {:>6} {:>6}",
        "pass",
        "pass_us",
        "touched",
        "faulted",
        "agings",
        "age_mean_us",
        "age_max_us",
        "final_us",
        "young",
        "final_y",
        "lost",
        "extra"
    );
    let mut f = format!(
        " iters={iters} aging={}",
        if vm.opts.aging { "on" } else { "off" }
    );
    let (mut passes, mut ticks, mut max) = (0, 0, 0);
    for (i, p) in PASSES.iter().enumerate().take(iters) {
        let n = l(&p.ager_passes);
        passes += n;
        ticks += l(&p.ager_ticks);
        max = max.max(l(&p.ager_max_ticks));
        println!(
            "  {:>4} {:>8} {:>8} {:>8} {:>7} {:>11} {:>11} {:>8} {:>9} {:>8} {:>6} {:>6}",
            i + 1,
            ns(l(&p.ticks)) / 1000,
            l(&p.touched),
            l(&p.faulted),
            n,
            ns(l(&p.ager_ticks).checked_div(n).unwrap_or(0)) / 1000,
            ns(l(&p.ager_max_ticks)) / 1000,
            ns(l(&p.final_ticks)) / 1000,
            l(&p.young),
            l(&p.final_young),
            l(&p.lost),
            l(&p.extra)
        );
        let k = i + 1;
        f.push_str(&format!(
            " pass_ns_{k}={} touched_{k}={} faulted_{k}={} agings_{k}={n} young_{k}={} \
             final_age_ns_{k}={} final_young_{k}={} extra_young_{k}={}",
            ns(l(&p.ticks)),
            l(&p.touched),
            l(&p.faulted),
            l(&p.young),
            ns(l(&p.final_ticks)),
            l(&p.final_young),
            l(&p.extra)
        ));
    }
    // The fault-time tail over every vCPU (the report's p99 is beside it): an aging pass under
    // the exclusive guard stops every faulting vCPU for its whole length, which shows first in
    // the slowest faults.
    let mut hist = vec![0u64; crate::percpu::HIST_BUCKETS];
    for c in &crate::percpu::all()[..vm.opts.vcpus] {
        for (h, b) in hist.iter_mut().zip(c.hist.iter()) {
            *h += u64::from(b.load(Ordering::Relaxed));
        }
    }
    let p999 = ns(crate::report::percentile(&hist, 999));
    let slowest = ns(hist
        .iter()
        .rposition(|&n| n != 0)
        .map_or(0, crate::percpu::hist_bucket_floor));
    println!(
        "  fault time p99.9 {p999} ns, slowest {slowest} ns (bucket floor); ager: {passes} aging \
         passes, mean {} us, longest {} us",
        ns(ticks.checked_div(passes).unwrap_or(0)) / 1000,
        ns(max) / 1000
    );
    f.push_str(&format!(
        " agings={passes} age_ns_mean={} age_ns_max={} lost_young={} fault_ns_p999={p999} \
         fault_ns_slowest={slowest}",
        ns(ticks.checked_div(passes).unwrap_or(0)),
        ns(max),
        lost_total()
    ));
    f
}
