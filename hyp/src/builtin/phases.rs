//! The hypervisor side of the workloads (guest/src/workloads/): barriers with the hypervisor's
//! action for each phase, the fault-mapping policy (2 MiB blocks, "dirty logging"), collapse on
//! request, and the timing the guests report, turned into the report's figures.
//!
//! A barrier is an HVC every vCPU makes; the last to arrive runs the action for that barrier
//! (e.g. write-protect the region, shared in parallel mode) while the others wait at EL2, then
//! releases them all and hands each CNTPCT at the release, where the guests start their clocks.
//! Waiting vCPUs spin briefly, then nap in WFI on their EL2 timer (as the reporter does), so they
//! do not steal host cores from the vCPUs still working under TCG.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use arch_decode::smccc::Call;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::Once;
use stage2::{Attrs, Error, Mapped, Size};

use crate::abi;
use crate::decode::Abort;
use crate::frame::Action;
use crate::frame::Frame;
use crate::harness::Guard;
use crate::idle::Waiter;
use crate::memslot::{Memslot, CHUNK};
use crate::options::{Mode, Workload};
use crate::percpu::{self, status, PerCpu, HIST_BUCKETS};
use crate::report::{percentile, ticks_to_ns};
use crate::vcpu::WHY_BARRIER;
use crate::vm::Vm;
use crate::{calibrate, println};

/// What one vCPU reported about its timed phases and calibration.
#[derive(Default)]
struct Times {
    /// Ticks of `CALIB_CALLS` empty HVCs on vCPU 0 alone (vCPU 0 only).
    calib_solo: AtomicU64,
    /// Ticks of `CALIB_CALLS` empty HVCs while every vCPU made them.
    calib_all: AtomicU64,
    /// Empty HVCs per loop.
    calib_calls: AtomicU64,
    /// Per phase: ticks from the release to this vCPU's end.
    ticks: [AtomicU64; abi::PHASES],
    /// Per phase: pages touched.
    pages: [AtomicU64; abi::PHASES],
    /// Per phase: words that did not verify afterwards.
    bad: [AtomicU64; abi::PHASES],
    /// Bit p: phase p reported.
    reported: AtomicU64,
    /// Fault-path steps: ticks spent zeroing fresh 4 KiB backing pages, and how many.
    zero_ticks: AtomicU64,
    zeroed: AtomicU64,
    /// Fault-path steps: ticks in the `stage2` call (map, relax), and how many calls.
    map_ticks: AtomicU64,
    maps: AtomicU64,
}

static TIMES: Once<Box<[Times]>> = Once::new();
/// vCPUs that arrived at the current barrier.
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
/// Bumped at each release.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// CNTPCT at the last release.
static RELEASE: AtomicU64 = AtomicU64::new(0);
/// CNTPCT after which a barrier gives up waiting (the run's timeout).
static DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);
/// "Dirty logging" (pagetable update phase): faults map 4 KiB pages, read faults read-only.
static LOGGING: AtomicBool = AtomicBool::new(false);
/// Leaves write-protected by the update phase's action, and its TLB invalidations.
static WP_LEAVES: AtomicU64 = AtomicU64::new(0);
/// The data memslot's dirty bitmap while `pagetable`'s update phase logs (made at its start
/// barrier): write faults go through `Guard::dirty_write_fault`, which relaxes the page and
/// then sets its bit (docs/protocol.md 12).
static DIRTY_LOG: Once<stage2::DirtyBitmap> = Once::new();
/// The get-and-clear at the end of the update phase: pages reported dirty, pages the guests
/// wrote that were not reported (must be 0), its time in ticks, and its leaves re-protected.
static HARVESTED: AtomicU64 = AtomicU64::new(0);
static LOST_DIRTY: AtomicU64 = AtomicU64::new(0);
static CLEAR_TICKS: AtomicU64 = AtomicU64::new(0);
static CLEAR_LEAVES: AtomicU64 = AtomicU64::new(0);
/// Chunks collapsed on request, and the retries that took.
static COLLAPSES: AtomicU64 = AtomicU64::new(0);
static COLLAPSE_RETRIES: AtomicU64 = AtomicU64::new(0);
/// The GICv3 (distributor, redistributors) for napping in barriers.
static GIC: Once<Option<(u64, u64)>> = Once::new();
/// Per CPU: its barrier napper, made on first use (None without a GICv3).
static NAPPERS: Once<Box<[Once<Option<Waiter>>]>> = Once::new();
/// Spin this long in a barrier before napping, and nap this long at a time.
const SPIN_NS: u64 = 50_000;
const NAP_NS: u64 = 50_000;

/// Sets up the per-vCPU records. CPU0, before any vCPU runs; `deadline` in CNTPCT ticks.
pub fn init(cpus: usize, deadline: u64, gic_v3: Option<(u64, u64)>) {
    TIMES.call_once(|| (0..cpus).map(|_| Times::default()).collect());
    NAPPERS.call_once(|| (0..cpus).map(|_| Once::new()).collect());
    GIC.call_once(|| gic_v3);
    DEADLINE.store(deadline, Ordering::Relaxed);
}

fn times(cpu: usize) -> &'static Times {
    &TIMES.get().expect("phases::init")[cpu]
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The workload calls (barrier, null, calibration, phase, collapse); None for other calls.
/// `call` is the decoded SMCCC call (function ID from W0); the answer goes to `frame`'s x0.
pub fn call(vm: &Vm, cpu: &PerCpu, frame: &mut Frame, call: &Call) -> Option<Action> {
    let t = times(cpu.index);
    let (a1, a2, a3, a4) = (call.arg(1), call.arg(2), call.arg(3), call.arg(4));
    let ret = match call.function_u64() {
        abi::HVC_NULL => 0,
        abi::HVC_BARRIER => match barrier(vm, cpu, a1) {
            Some(release) => release,
            None => {
                log::error!(
                    "vcpu {}: barrier {a1} did not complete (timeout, or a vCPU was stopped)",
                    cpu.index
                );
                cpu.result.why.store(WHY_BARRIER, Ordering::Relaxed);
                cpu.result.status.store(status::FAILED, Ordering::Release);
                return Some(Action::Leave);
            }
        },
        abi::HVC_CALIB => {
            let slot = if a1 == 0 { &t.calib_solo } else { &t.calib_all };
            slot.store(a2, Ordering::Relaxed);
            t.calib_calls.store(a3, Ordering::Relaxed);
            0
        }
        abi::HVC_PHASE => {
            let p = (a1 as usize).min(abi::PHASES - 1);
            t.ticks[p].store(a2, Ordering::Relaxed);
            t.pages[p].store(a3, Ordering::Relaxed);
            t.bad[p].store(a4, Ordering::Relaxed);
            t.reported.fetch_or(1 << p, Ordering::Relaxed);
            0
        }
        abi::HVC_COLLAPSE => collapse(vm, cpu, a1),
        abi::HVC_DIRTY_PASS => super::dirtylog::pass_done(vm, cpu, a1, a2, a3),
        abi::HVC_DIRTY_HARVEST => super::dirtylog::racing_harvest(vm, cpu, a1),
        abi::HVC_AGING_PASS => super::aging::pass_done(vm, cpu, a1, a2, a3, a4),
        _ => return None,
    };
    frame.x[0] = ret;
    Some(Action::Resume)
}

/// Waits for every vCPU at barrier `n`; the last arriver runs its action. Returns CNTPCT at the
/// release, or None if the run's deadline passed first (a vCPU never came).
fn barrier(vm: &Vm, cpu: &PerCpu, n: u64) -> Option<u64> {
    let generation = GENERATION.load(Ordering::Acquire);
    if ARRIVED.fetch_add(1, Ordering::AcqRel) + 1 == vm.opts.vcpus {
        action(vm, cpu, n);
        ARRIVED.store(0, Ordering::Relaxed);
        RELEASE.store(CNTPCT_EL0.get(), Ordering::Relaxed);
        // Release: the action's effects and the reset happen before anyone leaves.
        GENERATION.store(generation + 1, Ordering::Release);
    } else {
        let freq = CNTFRQ_EL0.get();
        let start = CNTPCT_EL0.get();
        let spin = SPIN_NS * freq / 1_000_000_000;
        while GENERATION.load(Ordering::Acquire) == generation {
            // A vCPU whose table pool ran dry may be waiting for the pages this CPU caches.
            crate::pool::honour_drain_requests(cpu, vm.tables, vm.backing);
            let now = CNTPCT_EL0.get();
            if now > DEADLINE.load(Ordering::Relaxed) {
                return None;
            }
            // A vCPU the hypervisor stopped (pool dry, out of memory, ...) never arrives: fail
            // now rather than at the timeout, so the run ends with the real reason first.
            if let Some(peer) = percpu::all()[..vm.opts.vcpus]
                .iter()
                .find(|c| c.result.status.load(Ordering::Acquire) == status::FAILED)
            {
                log::error!(
                    "vcpu {}: barrier {n} cannot complete: vcpu {} was stopped",
                    cpu.index,
                    peer.index
                );
                return None;
            }
            match napper(cpu.index) {
                Some(w) if now - start > spin => w.nap(),
                _ => core::hint::spin_loop(),
            }
        }
    }
    Some(RELEASE.load(Ordering::Relaxed))
}

/// This CPU's napper (made on first use); also the aging workload's ager's (aging.rs).
pub(crate) fn napper(cpu: usize) -> Option<&'static Waiter> {
    let cell = &NAPPERS.get()?[cpu];
    cell.call_once(|| {
        let (gicd, gicr) = (*GIC.get()?)?;
        let ticks = NAP_NS * CNTFRQ_EL0.get() / 1_000_000_000;
        Waiter::new(gicd, gicr, percpu::this_cpu().mpidr, ticks.max(1))
    })
    .as_ref()
}

/// The hypervisor's part of barrier `n`, run by the last vCPU to arrive while the others wait
/// (outside any read-side section).
fn action(vm: &Vm, cpu: &PerCpu, n: u64) {
    let s2 = vm.s2.get();
    if vm.opts.workload == Workload::Dirtylog {
        super::dirtylog::action(vm, cpu, n);
        s2.reclaim(cpu.index);
        return;
    }
    if vm.opts.workload == Workload::Aging {
        super::aging::action(vm, cpu, n);
        return;
    }
    if vm.opts.workload != Workload::Pagetable {
        return;
    }
    if n == abi::BARRIER_PHASE + 2 * abi::PHASE_UPDATE {
        // "Dirty logging" on: write-protect the whole region in one pass with one TLB
        // invalidation for the range; from now on faults map 4 KiB pages and a write into a
        // write-protected block splits it. Parallel mode does it in shared mode (compare-exchange
        // per leaf, docs/protocol.md 10), racing nothing here but never stopping a faulting CPU;
        // locked mode takes the exclusive guard (the baseline). The flag is set first, so a
        // concurrent fault maps read-only (KVM: KVM_MEM_LOG_DIRTY_PAGES before the protect).
        dirty_log(vm);
        LOGGING.store(true, Ordering::Release);
        let g = match vm.opts.mode {
            Mode::Parallel => s2.shared(cpu.index),
            Mode::Locked => s2.exclusive(cpu.index),
        };
        if let Ok(done) = g.write_protect(
            crate::layout::data(vm).ipa,
            crate::layout::data(vm).ipa + crate::layout::data(vm).size,
        ) {
            add(&WP_LEAVES, done.leaves);
        }
    } else if n == abi::BARRIER_PHASE + 2 * abi::PHASE_ADJUST {
        // Logging off: faults map blocks again (backing=2m) and the guests ask for collapses.
        LOGGING.store(false, Ordering::Release);
        harvest(vm, cpu);
    }
    s2.reclaim(cpu.index);
}

/// Get-and-clear of the update phase's dirty log (`Guard::dirty_log_clear`, shared in parallel
/// mode, exclusive in locked mode), while every vCPU waits in the barrier. In the update phase
/// the writing (even) vCPUs wrote their slot of every page of the region, so every page must
/// be reported dirty: the pages that were not are `lost_dirty`, which fails the run.
fn harvest(vm: &Vm, cpu: &PerCpu) {
    let Some(log) = DIRTY_LOG.get() else { return };
    let s2 = vm.s2.get();
    let t0 = CNTPCT_EL0.get();
    let mut reported = 0u64;
    let done = {
        let g = match vm.opts.mode {
            Mode::Parallel => s2.shared(cpu.index),
            Mode::Locked => s2.exclusive(cpu.index),
        };
        g.dirty_log_clear(log, log.base(), log.end(), |_, bits| {
            reported += u64::from(bits.count_ones());
        })
    };
    CLEAR_TICKS.store(CNTPCT_EL0.get().wrapping_sub(t0), Ordering::Relaxed);
    let written = if vm.opts.vcpus > 0 { log.pages() } else { 0 };
    HARVESTED.store(reported, Ordering::Relaxed);
    CLEAR_LEAVES.store(done.leaves, Ordering::Relaxed);
    LOST_DIRTY.store(written.saturating_sub(reported), Ordering::Relaxed);
}

/// The data memslot's dirty bitmap, made on first use (`pagetable`'s update phase, `dirtylog`).
pub fn dirty_log(vm: &Vm) -> &'static stage2::DirtyBitmap {
    DIRTY_LOG.call_once(|| {
        stage2::DirtyBitmap::new(
            crate::layout::data(vm).ipa,
            crate::layout::data(vm).size / crate::pool::PAGE,
        )
    })
}

/// Turns "dirty logging" on or off outside `pagetable`'s barriers: bad-guest case 19
/// write-protects one chunk of the data memslot and needs the fault path's logging policy
/// (badguest.rs).
pub fn set_logging(on: bool) {
    LOGGING.store(on, Ordering::Release);
}

/// Collapses the 2 MiB chunk at `ipa` into one block (in shared mode, or under the exclusive
/// guard in locked mode), retrying while other CPUs own entries in it. Returns 0 if collapsed,
/// 1 if the chunk was never backed, 2 if the table refused.
fn collapse(vm: &Vm, cpu: &PerCpu, ipa: u64) -> u64 {
    let ipa = ipa & !(CHUNK - 1);
    if !crate::layout::data(vm).contains(ipa) {
        return 2;
    }
    let Some(pa) = crate::layout::data(vm).chunk(ipa) else {
        return 1;
    };
    let s2 = vm.s2.get();
    loop {
        let g = match vm.opts.mode {
            Mode::Locked => s2.exclusive(cpu.index),
            Mode::Parallel => s2.shared(cpu.index),
        };
        let r = g.collapse(ipa, pa, Size::Block2M, Attrs::normal_rwx());
        drop(g);
        s2.reclaim(cpu.index);
        match r {
            Ok(_) => {
                add(&COLLAPSES, 1);
                return 0;
            }
            Err(Error::Retry) => add(&COLLAPSE_RETRIES, 1),
            Err(e) => {
                log::error!("vcpu {}: collapse of {ipa:#x} failed: {e:?}", cpu.index);
                return 2;
            }
        }
    }
}

/// Whether the fault path times its steps (`steps=on`). Off by default: each step timer is two
/// CNTPCT reads, and QEMU serves a CNTPCT read under its global lock (the counter is an I/O
/// register to TCG), so inside the MMU lock they turned lock-holder preemption into a convoy
/// (locked mode, 8 vCPUs on 2 host cores: about 120k -> 3k pages/s, measured side by side).
static STEP_TIMERS: AtomicBool = AtomicBool::new(false);

/// Turns the fault-path step timers on (`steps=on`), before any vCPU runs.
pub fn enable_step_timers() {
    STEP_TIMERS.store(true, Ordering::Relaxed);
}

/// Runs `zero` (the fault path zeroing a fresh backing page on CPU `cpu`) and, with `steps=on`,
/// adds its time to the CPU's step timers.
pub fn timed_zero(cpu: usize, zero: impl FnOnce()) {
    if !STEP_TIMERS.load(Ordering::Relaxed) {
        zero();
        return;
    }
    let t0 = CNTPCT_EL0.get();
    zero();
    // Before `init` (the guest image is loaded first) there is nothing to count into.
    if let Some(t) = TIMES.get().and_then(|all| all.get(cpu)) {
        add(&t.zero_ticks, CNTPCT_EL0.get().wrapping_sub(t0));
        add(&t.zeroed, 1);
    }
}

/// Maps a stage-2 fault in `slot` to `pa` (the backing of the faulting page) by the run's
/// policy: 2 MiB blocks for a 2 MiB-backed data slot unless logging; under logging read-only
/// 4 KiB pages, and a write into a write-protected block maps its page writable (splitting the
/// block); any other permission fault is relaxed.
pub fn map_fault(
    vm: &Vm,
    g: &Guard<'_>,
    slot: &Memslot,
    a: &Abort,
    pa: u64,
) -> Result<Mapped, Error> {
    if !STEP_TIMERS.load(Ordering::Relaxed) {
        return map_policy(vm, g, slot, a, pa);
    }
    let t0 = CNTPCT_EL0.get();
    let r = map_policy(vm, g, slot, a, pa);
    let t = times(g.cpu());
    add(&t.map_ticks, CNTPCT_EL0.get().wrapping_sub(t0));
    add(&t.maps, 1);
    r
}

/// The built-in guest's map policy: the plain one (harness.rs), with dirty logging on the data
/// slot while a phase asks for it (`set_logging`).
fn map_policy(vm: &Vm, g: &Guard<'_>, slot: &Memslot, a: &Abort, pa: u64) -> Result<Mapped, Error> {
    let logging = core::ptr::eq(slot, crate::layout::data(vm)) && LOGGING.load(Ordering::Acquire);
    // A write (or a stage-1 walk: it may set AF/dirty state in a descriptor, KVM's
    // kvm_is_write_fault) into a write-protected page under logging: relax that one page (a
    // read-only block on the way is split into a full read-only table first), then mark it.
    if logging && (a.write || a.s1ptw) && a.fault == crate::decode::FaultType::Permission {
        if let Some(log) = DIRTY_LOG.get() {
            super::dirtylog::write_fault();
            let ipa = a.ipa & !(crate::pool::PAGE - 1);
            return match g.dirty_write_fault(ipa, log)? {
                stage2::DirtyFault::Relaxed | stage2::DirtyFault::Spurious => Ok(Mapped::Spurious),
                // Unmapped since the fault was taken: re-run the access (a translation fault).
                stage2::DirtyFault::NotMapped => Err(Error::Retry),
            };
        }
    }
    crate::harness::map_plain(vm, g, slot, a, pa, logging)
}

/// Fails the run for words that did not verify in a phase.
pub fn check(vm: &Vm, failures: &mut Vec<String>) {
    let Some(all) = TIMES.get() else { return };
    let lost = LOST_DIRTY.load(Ordering::Relaxed);
    if lost != 0 {
        failures.push(format!(
            "dirty log: {lost} pages written in the update phase were not reported dirty"
        ));
    }
    super::dirtylog::check(vm, failures);
    super::aging::check(vm, failures);
    for (id, t) in all.iter().enumerate().take(vm.opts.vcpus) {
        for p in 0..abi::PHASES {
            let bad = t.bad[p].load(Ordering::Relaxed);
            if bad != 0 {
                failures.push(format!(
                    "vcpu {id} phase {}: {bad} words did not verify",
                    phase_name(vm, p)
                ));
            }
        }
    }
}

fn phase_name(vm: &Vm, p: usize) -> &'static str {
    match (vm.opts.workload, p) {
        (Workload::Pagetable, 0) => "create",
        (Workload::Pagetable, 1) => "update",
        (Workload::Pagetable, 2) => "adjust",
        (Workload::Dirtylog, 0) => "populate",
        _ => "run",
    }
}

fn ns(ticks: u64, freq: u64) -> u64 {
    ticks_to_ns(ticks, freq)
}

/// Per second, from a count and ticks.
fn rate(n: u64, ticks: u64, freq: u64) -> f64 {
    if ticks == 0 {
        0.0
    } else {
        n as f64 * freq as f64 / ticks as f64
    }
}

/// Prints the timing tables and returns the RESULT fields this module adds.
pub fn report(vm: &Vm, failed: bool) -> String {
    let freq = CNTFRQ_EL0.get();
    let Some(all) = TIMES.get() else {
        return String::new();
    };
    let n = vm.opts.vcpus;
    let cpus = &percpu::all()[..n];
    let times = &all[..n];
    let phases = crate::expect::phases(vm.opts.workload.guest_number()) as usize;

    // Wall time: per phase, the slowest vCPU from the release to its end; summed over phases.
    let mut wall = 0;
    let mut pages = 0;
    let mut phase_wall = [0u64; abi::PHASES];
    for (p, w) in phase_wall.iter_mut().enumerate().take(phases) {
        *w = times
            .iter()
            .map(|t| t.ticks[p].load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        wall += *w;
        pages += times
            .iter()
            .map(|t| t.pages[p].load(Ordering::Relaxed))
            .sum::<u64>();
    }

    // Calibration.
    let calls = times[0].calib_calls.load(Ordering::Relaxed).max(1);
    let null_1 = ns(times[0].calib_solo.load(Ordering::Relaxed), freq) as f64 / calls as f64;
    let all_ticks: Vec<u64> = times
        .iter()
        .map(|t| t.calib_all.load(Ordering::Relaxed))
        .collect();
    let null_all =
        all_ticks.iter().map(|&t| ns(t, freq)).sum::<u64>() as f64 / (calls as f64 * n as f64);
    let null_rate_all = rate(
        calls * n as u64,
        all_ticks.iter().copied().max().unwrap_or(0),
        freq,
    );
    let zero = calibrate::zero_ns();

    // Only the timed workloads' guests report phases; the rest get no per-vCPU timing table.
    let timed = wall > 0;
    println!("");
    if timed {
        println!(
            "per-vCPU timing ({} phase(s), guest CNTVCT from each phase's release; hyp-side \
             fault time from the histogram)",
            phases
        );
        println!(
            "{:>4} {:>9} {:>10} {:>11} {:>9} {:>11} {:>10} {:>11}",
            "cpu",
            "pages",
            "guest_us",
            "pages/s",
            "ns/page",
            "fault_med",
            "fault_p99",
            "null_all_ns"
        );
    }
    let mut per_vcpu_rate = 0.0;
    let mut per_page_ns = 0.0;
    let mut worst_median = 0;
    for (c, t) in cpus.iter().zip(times) {
        let ticks: u64 = (0..phases)
            .map(|p| t.ticks[p].load(Ordering::Relaxed))
            .sum();
        let pg: u64 = (0..phases)
            .map(|p| t.pages[p].load(Ordering::Relaxed))
            .sum();
        let hist: Vec<u64> = c
            .hist
            .iter()
            .map(|h| u64::from(h.load(Ordering::Relaxed)))
            .collect();
        debug_assert_eq!(hist.len(), HIST_BUCKETS);
        let med = ns(percentile(&hist, 500), freq);
        let p99 = ns(percentile(&hist, 990), freq);
        worst_median = worst_median.max(med);
        let r = rate(pg, ticks, freq);
        let per_page = if pg == 0 {
            0.0
        } else {
            ns(ticks, freq) as f64 / pg as f64
        };
        per_vcpu_rate += r / n as f64;
        per_page_ns += per_page / n as f64;
        if !timed {
            continue;
        }
        println!(
            "{:>4} {:>9} {:>10} {:>11.0} {:>9.0} {:>11} {:>10} {:>11.0}",
            c.index,
            pg,
            ns(ticks, freq) / 1000,
            r,
            per_page,
            med,
            p99,
            ns(t.calib_all.load(Ordering::Relaxed), freq) as f64 / calls as f64
        );
    }
    if vm.opts.workload == Workload::Pagetable {
        println!("phases (slowest vCPU from the release):");
        for (p, &w) in phase_wall.iter().enumerate().take(phases) {
            let pg: u64 = times
                .iter()
                .map(|t| t.pages[p].load(Ordering::Relaxed))
                .sum();
            println!(
                "  {:<7} {:>10} us  {:>9} pages  {:>11.0} pages/s",
                phase_name(vm, p),
                ns(w, freq) / 1000,
                pg,
                rate(pg, w, freq)
            );
        }
        println!(
            "  write-protected leaves {}, collapses {} ({} retries)",
            WP_LEAVES.load(Ordering::Relaxed),
            COLLAPSES.load(Ordering::Relaxed),
            COLLAPSE_RETRIES.load(Ordering::Relaxed)
        );
    }
    // Where a fault's time goes: the two timed steps (steps=on), the rest of the handler, and
    // what is outside it (exception entry/exit, context save/restore, the access re-executing).
    let sum = |f: fn(&Times) -> &AtomicU64| -> u64 {
        times.iter().map(|t| f(t).load(Ordering::Relaxed)).sum()
    };
    let per = |ticks: u64, n: u64| ns(ticks, freq).checked_div(n).unwrap_or(0);
    let handler_faults: u64 = cpus
        .iter()
        .map(|c| c.counters.faults.load(Ordering::Relaxed))
        .sum();
    let handler_ticks: u64 = cpus
        .iter()
        .map(|c| c.counters.fault_ticks.load(Ordering::Relaxed))
        .sum();
    let handler_mean = per(handler_ticks, handler_faults);
    let steps = STEP_TIMERS.load(Ordering::Relaxed);
    let mut f = String::new();
    if steps {
        let zero_step = per(sum(|t| &t.zero_ticks), sum(|t| &t.zeroed));
        let map_step = per(sum(|t| &t.map_ticks), sum(|t| &t.maps));
        println!(
            "fault path, mean per fault: handler {handler_mean} ns (after the context save to \
             before the restore) = zeroing a 4 KiB page {zero_step} ns x {} pages / \
             {handler_faults} faults + stage2 call {map_step} ns + the rest",
            sum(|t| &t.zeroed),
        );
        f.push_str(&format!(" step_zero_ns={zero_step} step_map_ns={map_step}"));
    } else {
        println!(
            "fault path, mean per fault: handler {handler_mean} ns (after the context save to \
             before the restore); steps=on breaks it down into zeroing and the stage2 call"
        );
    }
    // Throughput and calibration exist only for the timed workloads (their guests report
    // phases); verify, badguest and fuzz run for a time or a count, not a rate.
    if timed {
        let pages_per_s = rate(pages, wall, freq);
        let denom = null_1 + zero as f64;
        let cost_ratio = if denom > 0.0 {
            per_page_ns / denom
        } else {
            0.0
        };
        let ceiling = if null_rate_all > 0.0 {
            pages_per_s / null_rate_all
        } else {
            0.0
        };
        println!(
            "calibration: null HVC {null_1:.0} ns alone, {null_all:.0} ns each with {n} vCPUs at \
             once ({null_rate_all:.0} traps/s in total); zeroing a page {zero} ns"
        );
        println!(
            "throughput: {pages_per_s:.0} pages/s overall, {per_vcpu_rate:.0} per vCPU; \
             {per_page_ns:.0} ns per page per vCPU (guest-side) = {cost_ratio:.2} x (null trap + \
             page zero); {ceiling:.2} of the all-vCPU null-trap ceiling"
        );
        f.push_str(&format!(
            " wall_ns={} pages_per_s={pages_per_s:.0} pages_per_s_vcpu={per_vcpu_rate:.0} \
             ns_per_page={per_page_ns:.0} fault_ns_median_worst={worst_median} \
             null_ns_1={null_1:.0} null_ns_all={null_all:.0} null_rate_all={null_rate_all:.0} \
             zero_ns={zero} cost_ratio={cost_ratio:.3} ceiling_frac={ceiling:.3}",
            ns(wall, freq)
        ));
    } else if failed {
        // A timeout or a stopped vCPU: its phases never ended, whatever the workload.
        println!("throughput and calibration: n/a (the run failed)");
    } else {
        println!(
            "throughput and calibration: n/a (workload={} is not a timed workload)",
            vm.opts.workload.name()
        );
    }
    // The stage2 counters (backing=, splits=, ...) are the core's fields (vmm/finish.rs).
    f.push_str(&format!(" collapses={}", COLLAPSES.load(Ordering::Relaxed)));
    // The guests' checksums folded in vCPU order: the same workload and size must give the same
    // value in every mode (what memory holds never depends on timing).
    let data_sum = cpus.iter().fold(crate::pattern::CHECKSUM_INIT, |acc, c| {
        crate::pattern::checksum_step(acc, c.result.checksum.load(Ordering::Relaxed))
    });
    f.push_str(&format!(" data_sum={data_sum:#018x}"));
    if vm.opts.workload == Workload::Dirtylog {
        f.push_str(&super::dirtylog::report(vm, phase_wall[0]));
    }
    if vm.opts.workload == Workload::Aging {
        f.push_str(&super::aging::report(vm));
    }
    if vm.opts.workload == Workload::Pagetable {
        f.push_str(&format!(
            " create_ns={} update_ns={} adjust_ns={} dirty_harvested={} lost_dirty={} \
             dirty_clear_ns={} dirty_clear_leaves={}",
            ns(phase_wall[0], freq),
            ns(phase_wall[1], freq),
            ns(phase_wall[2], freq),
            HARVESTED.load(Ordering::Relaxed),
            LOST_DIRTY.load(Ordering::Relaxed),
            ns(CLEAR_TICKS.load(Ordering::Relaxed), freq),
            CLEAR_LEAVES.load(Ordering::Relaxed),
        ));
    }
    f
}

/// Recomputes vCPU `id`'s checksum from the backing pages of its verify set (expect.rs), for
/// the workloads of guest/src/workloads/: (checksum, every word as expected, pages never
/// backed). None for other workloads.
pub fn check_vcpu(vm: &Vm, id: usize) -> Option<(u64, bool, u64)> {
    use crate::pattern::{checksum_step, CHECKSUM_INIT, WORDS_PER_PAGE};
    let w = vm.opts.workload;
    if !matches!(
        w,
        Workload::Demand
            | Workload::Overlap
            | Workload::Random
            | Workload::Pagetable
            | Workload::Dirtylog
            | Workload::Aging
    ) {
        return None;
    }
    let n = w.guest_number();
    let vcpus = vm.opts.vcpus as u64;
    let pages = vm.opts.mem / crate::pool::PAGE;
    // dirtylog: the last dirty pass wrote what memory holds (expect.rs).
    let last = if w == Workload::Dirtylog {
        vm.opts.iters
    } else {
        crate::expect::phases(n) - 1
    };
    let (first, count, stride) = crate::expect::verify_set(n, id as u64, vcpus, pages);
    let mut sum = CHECKSUM_INIT;
    let mut ok = true;
    let mut missing = 0;
    for i in 0..count {
        let page = first + i * stride;
        let backing = crate::layout::data(vm).backing(page as usize);
        if backing.is_none() {
            missing += 1;
        }
        for word in 0..WORDS_PER_PAGE {
            let value = match backing {
                // SAFETY: a backing page of this VM (identity-mapped RAM); every vCPU has
                // stopped, so nothing writes it. Volatile: the guest wrote it behind the
                // compiler's back.
                Some(pa) => unsafe { core::ptr::read_volatile((pa + word * 8) as *const u64) },
                None => 0,
            };
            ok &= value == crate::expect::expected(n, vcpus, pages, page, word, last);
            sum = checksum_step(sum, value);
        }
    }
    Some((sum, ok, missing))
}
