//! The hypervisor side of `workload=dirtylog` (guest/src/workloads/dirtylog.rs), shaped like
//! KVM's dirty_log_perf_test: at its barriers (phases.rs) it turns dirty logging on
//! (write-protects every leaf of the data memslot), gets and clears the log after each dirty pass
//! (`Guard::dirty_log_clear`, timed) and checks the harvest against the pages the guests said
//! they wrote, then turns logging off. Parallel mode does every step in shared mode, locked mode
//! under the exclusive guard (the baseline, as KVM arm64 does today). docs/protocol.md 12 has
//! the rules; the write-fault side is phases.rs `map_policy`.
//!
//! `dirty=hw` (FEAT_HAFDBS, VTCR_EL2.HD set by vm.rs): logging on makes every writable leaf
//! writable-clean (DBM = 1, S2AP[1] = 0, `Guard::dirty_log_enable_hw`), so the passes take no
//! write fault at all: the hardware sets S2AP[1] on a page's first write. The get-and-clear
//! (`Guard::dirty_log_harvest_hw`) scans the leaves and cleans each dirty one by
//! compare-exchange (the hardware updates descriptors concurrently), with one range
//! invalidation; logging off drops DBM. The same `lost_dirty` check runs against what the
//! harvest reported, and a write fault on the data memslot during logging fails the run (the
//! hardware, not the fault path, must have recorded the writes).
//!
//! The 'evil' variant (`evil=on`): vCPU 0 asks for a get-and-clear (`HVC_DIRTY_HARVEST`) every
//! `abi::EVIL_HARVEST_EVERY` pages of its passes, racing the others' write faults; what those
//! harvests take is kept, and the check after the pass's final, quiescent harvest runs against
//! the union: a page whose mark a racing harvest took and whose write then went through without
//! a mark would be lost.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::{Mutex, Once};
use stage2::Stats;

use crate::abi;
use crate::options::{DirtyMode, Mode, Selftest, Workload};
use crate::percpu::PerCpu;
use crate::println;
use crate::report::ticks_to_ns;
use crate::vm::Vm;

const MAX: usize = abi::MAX_DIRTY_ITERS as usize;

/// Per pass (index = pass - 1): what the report prints.
struct Pass {
    /// Ticks of the slowest vCPU from the pass's release to its end (guest CNTVCT).
    ticks: AtomicU64,
    /// Ticks of the get-and-clear (CNTPCT around `dirty_log_clear`, guard included).
    clear_ticks: AtomicU64,
    /// Pages the get-and-clear reported dirty.
    dirtied: AtomicU64,
    /// Pages the guests reported writing.
    written: AtomicU64,
    /// Broadcast TLB invalidations the get-and-clear issued (by IPA, range or VMID).
    tlbi: AtomicU64,
    /// Leaves it write-protected again.
    leaves: AtomicU64,
    /// Written pages it did not report (must be 0).
    lost: AtomicU64,
    /// `evil=on`: harvests that raced the pass, and the pages they reported.
    racing: AtomicU64,
    racing_pages: AtomicU64,
}

impl Pass {
    const fn new() -> Self {
        Pass {
            ticks: AtomicU64::new(0),
            clear_ticks: AtomicU64::new(0),
            dirtied: AtomicU64::new(0),
            written: AtomicU64::new(0),
            tlbi: AtomicU64::new(0),
            leaves: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            racing: AtomicU64::new(0),
            racing_pages: AtomicU64::new(0),
        }
    }
}

static PASSES: [Pass; MAX] = [const { Pass::new() }; MAX];
/// Harvests done (the next pass's index).
static HARVESTS: AtomicU64 = AtomicU64::new(0);
/// Logging on: ticks of the write-protect of the memslot (guard included), leaves protected.
static ENABLE_TICKS: AtomicU64 = AtomicU64::new(0);
static ENABLE_LEAVES: AtomicU64 = AtomicU64::new(0);
/// Per vCPU: (pass, pages written) of its last `HVC_DIRTY_PASS`, consumed by the harvest.
static REPORTED: Once<Box<[(AtomicU64, AtomicU64)]>> = Once::new();
/// Protocol errors: a vCPU reported a pass other than the one being harvested, or none.
static PROTOCOL_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Write (or stage-1 walk) permission faults on the data memslot while logging: with `dirty=sw`
/// one per page and pass, with `dirty=hw` none (the run fails otherwise).
static WRITE_FAULTS: AtomicU64 = AtomicU64::new(0);
/// `evil=on`: the marks the current pass's racing harvests took (one bit per memslot page),
/// merged into the pass's final harvest.
static RACED: Once<Mutex<Vec<u64>>> = Once::new();
/// `selftest=noprotect dirty=hw`: a harvest has left the pages writable without DBM; later
/// harvests only take the bitmap's marks (`get_clear`).
static HW_DISARMED: AtomicBool = AtomicBool::new(false);

fn reported(vcpus: usize) -> &'static [(AtomicU64, AtomicU64)] {
    REPORTED.call_once(|| (0..vcpus).map(|_| Default::default()).collect())
}

/// `HVC_DIRTY_PASS`: vCPU `cpu` ended pass `pass` (1-based) after `ticks`, having written the
/// first `pages` pages of its region. Returns 0, or SMCCC NOT_SUPPORTED outside `dirtylog` or
/// for a pass out of range.
pub fn pass_done(vm: &Vm, cpu: &PerCpu, pass: u64, ticks: u64, pages: u64) -> u64 {
    if vm.opts.workload != Workload::Dirtylog || pass == 0 || pass > vm.opts.iters {
        return crate::psci::not_supported();
    }
    PASSES[pass as usize - 1]
        .ticks
        .fetch_max(ticks, Ordering::Relaxed);
    let (p, n) = &reported(vm.opts.vcpus)[cpu.index];
    n.store(
        pages.min(vm.opts.mem / crate::pool::PAGE),
        Ordering::Relaxed,
    );
    p.store(pass, Ordering::Relaxed);
    0
}

/// The hypervisor's part of `dirtylog`'s barrier `n`, run by the last vCPU to arrive while the
/// others wait in the barrier.
pub fn action(vm: &Vm, cpu: &PerCpu, n: u64) {
    let s2 = vm.s2.get();
    match n {
        abi::BARRIER_DIRTY_ENABLE => {
            // The flag first, then the protect: a fault racing the protect maps read-only
            // (KVM sets KVM_MEM_LOG_DIRTY_PAGES before write-protecting the slot).
            let _ = super::phases::dirty_log(vm);
            super::phases::set_logging(true);
            let t0 = CNTPCT_EL0.get();
            let g = match vm.opts.mode {
                Mode::Parallel => s2.shared(cpu.index),
                Mode::Locked => s2.exclusive(cpu.index),
            };
            let (start, end) = (
                crate::layout::data(vm).ipa,
                crate::layout::data(vm).ipa + crate::layout::data(vm).size,
            );
            match vm.opts.dirty {
                DirtyMode::Sw => match g.write_protect(start, end) {
                    Ok(done) => ENABLE_LEAVES.store(done.leaves, Ordering::Relaxed),
                    Err(e) => {
                        log::error!("dirtylog: write-protect of the data memslot failed: {e:?}");
                        PROTOCOL_ERRORS.fetch_add(1, Ordering::Relaxed);
                    }
                },
                // Writable leaves become writable-clean (DBM); one range invalidation.
                DirtyMode::Hw => {
                    let done = g.dirty_log_enable_hw(start, end);
                    ENABLE_LEAVES.store(done.leaves, Ordering::Relaxed);
                }
            }
            drop(g);
            ENABLE_TICKS.store(CNTPCT_EL0.get().wrapping_sub(t0), Ordering::Relaxed);
        }
        abi::BARRIER_DIRTY_HARVEST => harvest(vm, cpu),
        abi::BARRIER_DIRTY_DISABLE => {
            super::phases::set_logging(false);
            if vm.opts.dirty == DirtyMode::Hw {
                // DBM leaves become plainly writable again (one range invalidation).
                let g = match vm.opts.mode {
                    Mode::Parallel => s2.shared(cpu.index),
                    Mode::Locked => s2.exclusive(cpu.index),
                };
                g.dirty_log_disable_hw(
                    crate::layout::data(vm).ipa,
                    crate::layout::data(vm).ipa + crate::layout::data(vm).size,
                );
            }
        }
        _ => {}
    }
}

/// Sum of the broadcast invalidation counters.
fn tlbi(s: &Stats) -> u64 {
    s.tlbi_ipa + s.tlbi_range + s.tlbi_vmid
}

/// A write (or stage-1 walk) permission fault on the data memslot while logging (phases.rs
/// `map_policy`, before it relaxes the page): counted, and with `dirty=hw` an error.
pub fn write_fault() {
    WRITE_FAULTS.fetch_add(1, Ordering::Relaxed);
}

/// One get-and-clear of the whole memslot into `taken` (one bit per page): shared mode in
/// parallel mode, the exclusive guard in locked mode. `dirty=sw` takes the marks and
/// write-protects those pages again (`dirty_log_clear`); `dirty=hw` cleans the dirty leaves
/// (`dirty_log_harvest_hw`). `selftest=noprotect` breaks the re-protect: with `dirty=sw` it
/// takes the marks and leaves the pages writable (no protect, no invalidation), so the next
/// pass's writes do not fault and nothing marks them; with `dirty=hw` it harvests, then leaves
/// the pages writable without DBM, so the next pass's writes leave no trace in the descriptors,
/// and from then on only takes the bitmap's marks (`dirty_log_harvest_hw` would count every
/// writable leaf as dirty and find those writes after all).
fn get_clear(vm: &Vm, cpu: &PerCpu, taken: &mut [u64]) -> stage2::Harvest {
    let log = super::phases::dirty_log(vm);
    let noprotect = vm.opts.selftest == Some(Selftest::NoProtect);
    let disarmed = vm.opts.dirty == DirtyMode::Hw && HW_DISARMED.load(Ordering::Acquire);
    if noprotect && (vm.opts.dirty == DirtyMode::Sw || disarmed) {
        let mut done = stage2::Harvest::default();
        for (word, t) in taken.iter_mut().enumerate() {
            *t |= log.take(word, log.mask(word, log.base(), log.end()));
            done.pages += u64::from(t.count_ones());
        }
        return done;
    }
    let s2 = vm.s2.get();
    let g = match vm.opts.mode {
        Mode::Parallel => s2.shared(cpu.index),
        Mode::Locked => s2.exclusive(cpu.index),
    };
    let report = |word: usize, bits: u64| taken[word] |= bits;
    match vm.opts.dirty {
        DirtyMode::Sw => g.dirty_log_clear(log, log.base(), log.end(), report),
        DirtyMode::Hw => {
            let done = g.dirty_log_harvest_hw(log, log.base(), log.end(), report);
            if noprotect {
                g.dirty_log_disable_hw(log.base(), log.end());
                HW_DISARMED.store(true, Ordering::Release);
            }
            done
        }
    }
}

/// `HVC_DIRTY_HARVEST` (`evil=on`, vCPU 0 inside pass `pass`): a get-and-clear racing the
/// other vCPUs' writes; its marks are kept for the pass's check. Returns the pages it took, or
/// SMCCC NOT_SUPPORTED without `evil=on` or for a pass out of range.
pub fn racing_harvest(vm: &Vm, cpu: &PerCpu, pass: u64) -> u64 {
    if vm.opts.workload != Workload::Dirtylog || !vm.opts.evil || pass == 0 || pass > vm.opts.iters
    {
        return crate::psci::not_supported();
    }
    let log = super::phases::dirty_log(vm);
    let mut raced = RACED.call_once(|| Mutex::new(vec![0; log.words()])).lock();
    let done = get_clear(vm, cpu, &mut raced);
    drop(raced);
    vm.s2.get().reclaim(cpu.index);
    let p = &PASSES[pass as usize - 1];
    p.racing.fetch_add(1, Ordering::Relaxed);
    p.racing_pages.fetch_add(done.pages, Ordering::Relaxed);
    done.pages
}

/// Gets and clears the log after a dirty pass (every vCPU waits in the barrier), then checks
/// that every page each vCPU reported writing in the pass is among the harvested ones (with
/// `evil=on`, those of the pass's racing harvests included).
fn harvest(vm: &Vm, cpu: &PerCpu) {
    let i = HARVESTS.fetch_add(1, Ordering::Relaxed) as usize;
    if i >= vm.opts.iters as usize {
        log::error!("dirtylog: harvest {} after the last pass", i + 1);
        PROTOCOL_ERRORS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let log = super::phases::dirty_log(vm);
    let s2 = vm.s2.get();
    let mut taken = vec![0u64; log.words()];
    let before = tlbi(&s2.stats());
    let t0 = CNTPCT_EL0.get();
    let done = get_clear(vm, cpu, &mut taken);
    let ticks = CNTPCT_EL0.get().wrapping_sub(t0);
    let issued = tlbi(&s2.stats()).wrapping_sub(before);
    // What this pass's racing harvests took counts as harvested in this pass.
    if let Some(raced) = RACED.get() {
        for (t, r) in taken.iter_mut().zip(raced.lock().iter_mut()) {
            *t |= core::mem::take(r);
        }
    }
    let dirtied: u64 = taken.iter().map(|w| u64::from(w.count_ones())).sum();
    // The check, outside the timed window: vCPU v wrote the first `n` pages of its region,
    // which starts at page v * (mem / 4 KiB) of the memslot.
    let region = vm.opts.mem / crate::pool::PAGE;
    let mut written = 0;
    let mut lost = 0;
    for (v, (pass, n)) in reported(vm.opts.vcpus).iter().enumerate() {
        let (pass, n) = (
            pass.swap(0, Ordering::Relaxed),
            n.swap(0, Ordering::Relaxed),
        );
        if pass != i as u64 + 1 {
            log::error!(
                "dirtylog: vcpu {v} reported pass {pass} at harvest {}",
                i + 1
            );
            PROTOCOL_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        written += n;
        for page in v as u64 * region..v as u64 * region + n {
            if taken[(page / 64) as usize] & (1 << (page % 64)) == 0 {
                lost += 1;
            }
        }
    }
    let p = &PASSES[i];
    p.clear_ticks.store(ticks, Ordering::Relaxed);
    p.dirtied.store(dirtied, Ordering::Relaxed);
    p.written.store(written, Ordering::Relaxed);
    p.tlbi.store(issued, Ordering::Relaxed);
    p.leaves.store(done.leaves, Ordering::Relaxed);
    p.lost.store(lost, Ordering::Relaxed);
    if lost != 0 {
        log::error!(
            "dirtylog: pass {}: {lost} written pages not reported dirty",
            i + 1
        );
    }
}

fn lost_total() -> u64 {
    PASSES.iter().map(|p| p.lost.load(Ordering::Relaxed)).sum()
}

/// Fails the run for a lost dirty page, a missing harvest or a protocol error.
pub fn check(vm: &Vm, failures: &mut Vec<String>) {
    if vm.opts.workload != Workload::Dirtylog {
        return;
    }
    let lost = lost_total();
    if lost != 0 {
        failures.push(format!(
            "dirty log: {lost} pages written in dirty passes were not reported dirty"
        ));
    }
    let harvests = HARVESTS.load(Ordering::Relaxed);
    if harvests != vm.opts.iters {
        failures.push(format!(
            "dirty log: {harvests} harvests for iters={}",
            vm.opts.iters
        ));
    }
    let faults = WRITE_FAULTS.load(Ordering::Relaxed);
    if vm.opts.dirty == DirtyMode::Hw && faults != 0 {
        failures.push(format!(
            "dirty log: dirty=hw took {faults} write faults while logging (the hardware must \
             record the writes: is VTCR_EL2.HD in effect?)"
        ));
    }
    let errors = PROTOCOL_ERRORS.load(Ordering::Relaxed);
    if errors != 0 {
        failures.push(format!(
            "dirty log: {errors} protocol errors (wrong pass reported, write-protect failed)"
        ));
    }
}

/// Prints the per-pass table; returns the RESULT fields (`populate_ns` is phase 0's wall time
/// in ticks).
pub fn report(vm: &Vm, populate: u64) -> String {
    let freq = CNTFRQ_EL0.get();
    let ns = |t: u64| ticks_to_ns(t, freq);
    let iters = vm.opts.iters as usize;
    println!(
        "dirty log ({} mode, dirty={}): populate {} us; logging on: {} leaves {} in {} us; \
         {} write faults while logging",
        vm.opts.mode.name(),
        vm.opts.dirty.name(),
        ns(populate) / 1000,
        ENABLE_LEAVES.load(Ordering::Relaxed),
        match vm.opts.dirty {
            DirtyMode::Sw => "write-protected",
            DirtyMode::Hw => "made writable-clean (DBM)",
        },
        ns(ENABLE_TICKS.load(Ordering::Relaxed)) / 1000,
        WRITE_FAULTS.load(Ordering::Relaxed)
    );
    println!(
        "  {:>4} {:>13} {:>12} {:>8} {:>8} {:>7} {:>5} {:>5} {:>7} {:>7}",
        "pass",
        "dirty_pass_us",
        "get_clear_us",
        "written",
        "dirtied",
        "leaves",
        "tlbi",
        "lost",
        "racing",
        "raced"
    );
    let mut f = format!(
        " iters={iters} dirty={} write_faults={} populate_ns={} enable_ns={} enable_leaves={}",
        vm.opts.dirty.name(),
        WRITE_FAULTS.load(Ordering::Relaxed),
        ns(populate),
        ns(ENABLE_TICKS.load(Ordering::Relaxed)),
        ENABLE_LEAVES.load(Ordering::Relaxed)
    );
    for (i, p) in PASSES.iter().enumerate().take(iters) {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        println!(
            "  {:>4} {:>13} {:>12} {:>8} {:>8} {:>7} {:>5} {:>5} {:>7} {:>7}",
            i + 1,
            ns(l(&p.ticks)) / 1000,
            ns(l(&p.clear_ticks)) / 1000,
            l(&p.written),
            l(&p.dirtied),
            l(&p.leaves),
            l(&p.tlbi),
            l(&p.lost),
            l(&p.racing),
            l(&p.racing_pages)
        );
        let n = i + 1;
        f.push_str(&format!(
            " dirty_pass_ns_{n}={} get_clear_ns_{n}={} written_{n}={} dirtied_{n}={} tlbi_{n}={}",
            ns(l(&p.ticks)),
            ns(l(&p.clear_ticks)),
            l(&p.written),
            l(&p.dirtied),
            l(&p.tlbi)
        ));
        if vm.opts.evil {
            f.push_str(&format!(
                " racing_{n}={} racing_dirtied_{n}={}",
                l(&p.racing),
                l(&p.racing_pages)
            ));
        }
    }
    f.push_str(&format!(" lost_dirty={}", lost_total()));
    f
}
