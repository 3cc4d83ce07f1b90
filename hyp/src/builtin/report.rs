//! The built-in guest's end-of-run checks and report (its side of `Harness::check` and
//! `Harness::report`; the core's part, teardown, leak check and the RESULT line, is
//! vmm/finish.rs): the guests' checksums against the backing pages, selftest=corrupt, the
//! workloads' timing and phase checks, the fuzzer's and workload=psci's sections.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use stage2::Stats;

use crate::options::Selftest;
use crate::pattern;
use crate::percpu::{self, PerCpu};
use crate::pool::PAGE;
use crate::vm::Vm;

pub use crate::finish::{percentile, ticks_to_ns};

/// Recomputes vCPU `id`'s checksum from its backing pages; also returns whether every word
/// matched the expected pattern and how many pages were never backed.
fn check_vcpu(vm: &Vm, id: usize) -> (u64, bool, u64) {
    // The workloads of guest/src/workloads/ say what memory must hold (expect.rs).
    if let Some(r) = crate::phases::check_vcpu(vm, id) {
        return r;
    }
    check_demand_pattern(vm, id)
}

/// Recomputes the `demand` pattern of vCPU `id` (also the last pass of `verify`) from the backing
/// pages: (checksum, every word right, pages never backed). Call only once every vCPU (and the
/// chaos pruner) has stopped.
pub fn check_demand_pattern(vm: &Vm, id: usize) -> (u64, bool, u64) {
    let (base, size) = crate::layout::region(vm, id);
    let mut sum = pattern::CHECKSUM_INIT;
    let mut pattern_ok = true;
    let mut missing = 0;
    for page in 0..size / PAGE {
        let index = ((base - crate::layout::data(vm).ipa) / PAGE + page) as usize;
        let seed = pattern::page_seed(id as u64, page);
        let backing = crate::layout::data(vm).backing(index);
        if backing.is_none() {
            missing += 1;
        }
        for w in 0..pattern::WORDS_PER_PAGE {
            let value = match backing {
                // SAFETY: a backing page of this VM (identity-mapped RAM); every vCPU has stopped,
                // so nothing writes it. Volatile: the guest wrote it behind the compiler's back.
                Some(pa) => unsafe { core::ptr::read_volatile((pa + w * 8) as *const u64) },
                None => 0,
            };
            pattern_ok &= value == pattern::word(seed, w);
            sum = pattern::checksum_step(sum, value);
        }
    }
    (sum, pattern_ok, missing)
}

/// Flips one bit of one word in the middle of vCPU 0's region (selftest=corrupt).
fn corrupt(vm: &Vm) -> Option<u64> {
    let (base, size) = crate::layout::region(vm, 0);
    let ipa = base + (size / PAGE / 2) * PAGE;
    let pa =
        crate::layout::data(vm).backing(((ipa - crate::layout::data(vm).ipa) / PAGE) as usize)?;
    // SAFETY: as in `check_vcpu`; every vCPU has stopped.
    unsafe {
        let p = (pa + 8) as *mut u64;
        p.write_volatile(p.read_volatile() ^ 1);
    }
    Some(ipa)
}

fn load(c: &core::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Before teardown (guest memory still backed): checks every vCPU's result against its backing
/// pages (`all_stopped`: nothing writes guest memory any more; otherwise nothing is checked and
/// checksum=unknown); returns `workload= mem= pages= checksum=`.
pub fn check(vm: &Vm, all_stopped: bool, failures: &mut Vec<String>) -> String {
    let cpus: &[PerCpu] = &percpu::all()[..vm.opts.vcpus];
    if all_stopped && vm.opts.selftest == Some(Selftest::Corrupt) {
        match corrupt(vm) {
            Some(ipa) => log::info!("selftest=corrupt: flipped one bit at IPA {:#x}", ipa + 8),
            None => log::info!("selftest=corrupt: vCPU 0's region was never touched"),
        }
    }
    let mut checksum_ok = all_stopped;
    let mut pages_reported = 0;
    if all_stopped && crate::chaos::checks_itself(vm) {
        // verify / badguest: lost writes counted by the guests, final pattern recomputed here.
        (checksum_ok, pages_reported) = crate::chaos::check_guests(vm, failures);
    } else if all_stopped {
        for c in cpus {
            let id = c.index;
            let reported = c.result.reported.load(Ordering::Acquire) != 0;
            let guest_sum = load(&c.result.checksum);
            pages_reported += load(&c.result.pages);
            let (hyp_sum, pattern_ok, missing) = check_vcpu(vm, id);
            if !reported {
                checksum_ok = false;
                failures.push(format!("vcpu {id} never reported a checksum"));
            } else if guest_sum != hyp_sum || !pattern_ok || missing != 0 {
                checksum_ok = false;
                failures.push(format!(
                    "vcpu {id} checksum mismatch: guest {guest_sum:#018x}, backing pages \
                     {hyp_sum:#018x}, pattern {}, {missing} pages never backed",
                    if pattern_ok { "ok" } else { "wrong" }
                ));
            }
        }
    }
    format!(
        " workload={} mem={}K pages={pages_reported} checksum={}",
        vm.opts.workload.name(),
        vm.opts.mem >> 10,
        // Checked only once every vCPU stopped; a run cut short never checked.
        match (all_stopped, checksum_ok) {
            (false, _) => "unknown",
            (true, true) => "ok",
            (true, false) => "bad",
        },
    )
}

/// After teardown: the fuzzer's and workload=psci's sections, the workloads' timing and phase
/// checks; returns their RESULT fields and `cycles=` (the slowest vCPU's guest time; left out
/// when no vCPU measured any).
pub fn report(vm: &Vm, _s: &Stats, failures: &mut Vec<String>) -> String {
    let cpus: &[PerCpu] = &percpu::all()[..vm.opts.vcpus];
    let cycles = cpus
        .iter()
        .map(|c| load(&c.result.cycles))
        .max()
        .unwrap_or(0);
    let freq = CNTFRQ_EL0.get();
    crate::println!(
        "guest time (slowest vCPU, its own CNTVCT over its timed phases): {} ms",
        ticks_to_ns(cycles, freq) / 1_000_000
    );
    // A run whose vCPUs never ended a timed phase (a timeout, a stopped vCPU) measured nothing:
    // `cycles=` is left out rather than printed as 0.
    let mut fields = if cycles > 0 {
        format!(" cycles={cycles}")
    } else {
        String::new()
    };
    // workload=fuzz: the fuzzer's tables, pass checks and RESULT fields (fuzz.rs).
    fields.push_str(&crate::fuzz::report(vm, failures));
    // workload=psci: its checks (psci_check.rs).
    fields.push_str(&crate::psci_check::report(vm, failures));
    crate::println!("");
    // Workload timing, calibration and phase checks (phases.rs).
    fields.push_str(&crate::phases::report(vm, !failures.is_empty()));
    crate::phases::check(vm, failures);
    fields
}
