//! The end of a run: wait for every vCPU, check the guests' results against the backing pages,
//! tear the stage-2 table down, check for leaked table pages, print the report and exit.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::idle::Waiter;
use crate::options::Selftest;
use crate::pattern;
use crate::percpu::{self, status, PerCpu, Trap, HIST_BUCKETS};
use crate::pool::PAGE;
use crate::vm::Vm;
use crate::{exit, println, tables, vcpu};

/// Waits until every vCPU stopped or `deadline` (CNTPCT) passed, napping in WFI between checks
/// when `waiter` is given. Returns the ones still running.
pub fn wait_for_vcpus(vm: &Vm, deadline: u64, waiter: Option<&Waiter>) -> Vec<usize> {
    let cpus = &percpu::all()[..vm.opts.vcpus];
    loop {
        let running: Vec<usize> = cpus
            .iter()
            .filter(|c| {
                c.result.status.load(Ordering::Acquire) == status::RUNNING
                    || c.result.left.load(Ordering::Acquire) == 0
            })
            .map(|c| c.index)
            .collect();
        if running.is_empty() || CNTPCT_EL0.get() > deadline {
            return running;
        }
        match waiter {
            Some(w) => w.nap(),
            None => core::hint::spin_loop(),
        }
    }
}

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
    let (base, size) = vm.region(id);
    let mut sum = pattern::CHECKSUM_INIT;
    let mut pattern_ok = true;
    let mut missing = 0;
    for page in 0..size / PAGE {
        let index = ((base - vm.data.ipa) / PAGE + page) as usize;
        let seed = pattern::page_seed(id as u64, page);
        let backing = vm.data.backing(index);
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
    let (base, size) = vm.region(0);
    let ipa = base + (size / PAGE / 2) * PAGE;
    let pa = vm.data.backing(((ipa - vm.data.ipa) / PAGE) as usize)?;
    // SAFETY: as in `check_vcpu`; every vCPU has stopped.
    unsafe {
        let p = (pa + 8) as *mut u64;
        p.write_volatile(p.read_volatile() ^ 1);
    }
    Some(ipa)
}

pub(crate) fn ticks_to_ns(ticks: u64, freq: u64) -> u64 {
    if freq == 0 {
        0
    } else {
        (u128::from(ticks) * 1_000_000_000 / u128::from(freq)) as u64
    }
}

/// The tick count at which `per_mille`/1000 of all recorded faults were at or below (exact up
/// to 4096 ticks, then the floor of a 1/16-octave bucket).
pub(crate) fn percentile(hist: &[u64], per_mille: u64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let target = (total * per_mille).div_ceil(1000).max(1);
    let mut seen = 0;
    for (bucket, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= target {
            return percpu::hist_bucket_floor(bucket);
        }
    }
    percpu::hist_bucket_floor(HIST_BUCKETS - 1)
}

fn load(c: &core::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Checks, reports and exits. Runs on one CPU after `wait_for_vcpus`.
pub fn finish(vm: &Vm, still_running: &[usize], start_ticks: u64) -> ! {
    let freq = CNTFRQ_EL0.get();
    let cpus: &[PerCpu] = &percpu::all()[..vm.opts.vcpus];
    let mut failures: Vec<String> = Vec::new();
    for &id in still_running {
        failures.push(format!(
            "vcpu {id} did not finish within timeout={}s",
            vm.opts.timeout_s
        ));
    }
    for c in cpus {
        if c.result.status.load(Ordering::Acquire) == status::FAILED {
            let why = c.result.why.load(Ordering::Relaxed) as usize;
            failures.push(format!(
                "vcpu {} stopped: {}",
                c.index,
                vcpu::REASONS[why.min(vcpu::REASONS.len() - 1)]
            ));
        }
    }

    // Checksums: only meaningful once every vCPU stopped (nothing writes guest memory).
    let all_stopped = still_running.is_empty();
    if all_stopped && vm.opts.selftest == Some(Selftest::Corrupt) {
        match corrupt(vm) {
            Some(ipa) => log::info!("selftest=corrupt: flipped one bit at IPA {:#x}", ipa + 8),
            None => log::info!("selftest=corrupt: vCPU 0's region was never touched"),
        }
    }
    let mut checksum_ok = all_stopped;
    let mut pages_reported = 0;
    // A guest from files: its own checks (a .flat's EXIT status, Linux's init) decide; the
    // hypervisor checks its stage 2 (teardown, leaks) and reports the faults.
    let files = guest_from_files(vm, all_stopped, &mut failures);
    if files.is_some() {
    } else if all_stopped && crate::chaos::checks_itself(vm) {
        // verify / badguest: lost writes counted by the guests, final pattern recomputed here.
        (checksum_ok, pages_reported) = crate::chaos::check_guests(vm, &mut failures);
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

    // Teardown and leak check (skipped if a vCPU may still be walking the table).
    let mut leaked: Option<i64> = None;
    let mut s2_stats = None;
    if all_stopped {
        // SAFETY: every vCPU has stopped (status != RUNNING is written on the way out of its
        // last trap), and the other CPUs are powered off or parked: no reference to the table
        // is alive anywhere.
        if let Some(s2) = unsafe { vm.s2.take() } {
            match s2.destroy(crate::percpu::index()) {
                Ok(stats) => s2_stats = Some(stats),
                Err(e) => failures.push(format!("stage2 destroy failed: {e:?}")),
            }
            let after = tables::pages_in_use(vm.tables);
            let l = after as i64 - vm.table_pages_before as i64;
            if l != 0 {
                failures.push(format!("{l} stage-2 table pages leaked"));
            }
            leaked = Some(l);
        }
        let released = vm.image.release(vm.backing) + vm.data.release(vm.backing);
        log::info!("teardown: released {released} guest backing pages");
    }
    if !all_stopped {
        // A vCPU may still be faulting: leave the table alone, but show what it counted so far.
        s2_stats = Some(vm.s2.get().stats());
    }
    let s = s2_stats.unwrap_or_default();

    // Per-CPU table.
    let mut hist = alloc::vec![0u64; HIST_BUCKETS];
    println!("");
    println!(
        "per-CPU counters (hyp-side fault time: CNTPCT from after the trap's context save to \
         before its restore)"
    );
    println!(
        "{:>4} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>5} {:>8} {:>9} {:>9} {:>12} {:>8}",
        "cpu",
        "faults",
        "installed",
        "spurious",
        "retries",
        "backed",
        "races",
        "mmio",
        "hvc",
        "refills",
        "mean_ns",
        "max_ns",
        "guest_ticks",
        "status"
    );
    let mut faults = 0;
    let mut retries = 0;
    let mut spurious = 0;
    let mut refills = 0;
    let mut races = 0;
    let mut injected = 0;
    let mut cycles = 0;
    for c in cpus {
        let k = &c.counters;
        let f = load(&k.faults);
        faults += f;
        retries += load(&k.retries);
        spurious += load(&k.spurious);
        races += load(&k.backing_races_lost);
        injected += load(&k.injected);
        let r = load(&k.table_refills) + load(&k.data_refills);
        refills += r;
        cycles = cycles.max(load(&c.result.cycles));
        for (i, h) in c.hist.iter().enumerate() {
            hist[i] += u64::from(h.load(Ordering::Relaxed));
        }
        let mean = load(&k.fault_ticks).checked_div(f).unwrap_or(0);
        let st = match c.result.status.load(Ordering::Acquire) {
            status::DONE => "done",
            status::FAILED => "FAILED",
            _ => "running",
        };
        println!(
            "{:>4} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>5} {:>8} {:>9} {:>9} {:>12} {:>8}",
            c.index,
            f,
            load(&k.installed),
            load(&k.spurious),
            load(&k.retries),
            load(&k.pages_backed),
            load(&k.backing_races_lost),
            load(&k.mmio),
            load(&k.hvc),
            r,
            ticks_to_ns(mean, freq),
            ticks_to_ns(load(&k.fault_ticks_max), freq),
            load(&c.result.cycles),
            st
        );
    }
    println!("");
    println!("stage2 counters (all CPUs):");
    let mut line = String::new();
    for (i, (name, value)) in s.fields().enumerate() {
        line.push_str(&format!("  {name}={value}"));
        if i % 6 == 5 {
            println!("{line}");
            line.clear();
        }
    }
    if !line.is_empty() {
        println!("{line}");
    }
    // A demand run only ever installs into empty entries: say so, and which runs do more, so a
    // reader does not take bbm=0 prunes=0 grace_periods=0 for a protocol that never runs.
    if s.bbm == 0 && s.prunes == 0 && s.grace_periods == 0 {
        println!(
            "protocol: this run needed no break-before-make, prune or RCU grace period (every \
             fault filled an empty entry); workload=pagetable (write-protect, split, collapse) or \
             chaos=on (a pruner racing the vCPUs) exercises them"
        );
    }
    let median_ns = ticks_to_ns(percentile(&hist, 500), freq);
    let p99_ns = ticks_to_ns(percentile(&hist, 990), freq);
    let wall_ms = ticks_to_ns(CNTPCT_EL0.get().wrapping_sub(start_ticks), freq) / 1_000_000;
    println!(
        "fault time: median {median_ns} ns, p99 {p99_ns} ns; guest time (slowest vCPU) {} ms; \
         run {wall_ms} ms; injected aborts {injected}; FEAT_TTL {}; FEAT_S2FWB {}; {} build; \
         guest RAM preallocated by QEMU: {}",
        ticks_to_ns(cycles, freq) / 1_000_000,
        if crate::arch::has_ttl() { "yes" } else { "no" },
        if crate::arch::has_fwb() { "yes" } else { "no" },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        match vm.opts.host_prealloc {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        }
    );
    // A mean far above the median is time the host took, not the handler: QEMU populating guest
    // RAM on first touch (no -mem-prealloc; with transparent huge pages, a 2 MiB clear), or a
    // vCPU thread losing its host CPU. Say so, so the mean is not read as the fault path's cost.
    let (all_ticks, all_faults) = cpus.iter().fold((0u64, 0u64), |(t, n), c| {
        (
            t + c.counters.fault_ticks.load(Ordering::Relaxed),
            n + c.counters.faults.load(Ordering::Relaxed),
        )
    });
    let mean_ns = ticks_to_ns(all_ticks.checked_div(all_faults).unwrap_or(0), freq);
    if median_ns > 0 && mean_ns > 10 * median_ns {
        let o = &vm.opts;
        let threads = o.vcpus as u64 + u64::from(o.chaos);
        let cause = match (o.host_prealloc, o.host_cpus) {
            (Some(true), Some(h)) if threads > h => {
                format!("vCPU threads preempted ({threads} busy QEMU CPU threads on {h} host CPUs)")
            }
            (Some(true), _) => String::from(
                "vCPU threads preempted by other host load (guest RAM was preallocated)",
            ),
            _ => String::from(
                "QEMU populating guest RAM on first touch; for timing boot with \
                 QEMU_EXTRA=-mem-prealloc as bench/qemu/run.sh does",
            ),
        };
        println!(
            "note: mean fault time {mean_ns} ns is {}x the median: host time, not the \
             handler: {cause}",
            mean_ns / median_ns
        );
    }
    // Exits by class, summed over the vCPUs: `traps_<class>=N` (docs/hypervisor.md).
    let mut trap_fields = String::new();
    let mut trap_line = String::from("exits by class (all vCPUs):");
    for t in Trap::ALL {
        let n: u64 = cpus
            .iter()
            .map(|c| load(&c.counters.traps[t as usize]))
            .sum();
        trap_fields.push_str(&format!(" traps_{}={n}", t.name()));
        if n != 0 {
            trap_line.push_str(&format!(" {}={n}", t.name()));
        }
    }
    println!("{trap_line}");
    let (mut extra, workload_fields) = if let Some(fields) = &files {
        // chaos=on: the pruner's operations (chaos.rs).
        let chaos = crate::chaos::report(vm, &s, &mut failures);
        // migrate=on: passes, stop time, the comparison (migrate.rs).
        let migrate = crate::migrate::report(vm, &mut failures);
        println!("");
        (format!("{fields}{chaos}{migrate}"), String::new())
    } else {
        // chaos=on / verify / badguest: their own section and RESULT fields (docs/robustness.md).
        let mut extra = crate::chaos::report(vm, &s, &mut failures);
        // workload=fuzz: the fuzzer's tables, pass checks and RESULT fields (fuzz.rs).
        extra.push_str(&crate::fuzz::report(vm, &mut failures));
        // workload=psci: its checks (psci_check.rs).
        extra.push_str(&crate::psci_check::report(vm, &mut failures));
        println!("");
        // Workload timing, calibration and phase checks (phases.rs).
        let workload_fields = crate::phases::report(vm, &s);
        crate::phases::check(vm, &mut failures);
        (extra, workload_fields)
    };
    // PSCI: per-vCPU starts by CPU_ON and CPU_OFFs, SYSTEM_OFF / SYSTEM_RESET (lifecycle.rs).
    extra.push_str(&crate::lifecycle::report());
    extra.push_str(&crate::tlb::report());
    let end = crate::lifecycle::end();
    // Stage-2 faults taken by each vCPU.
    let per_vcpu: Vec<String> = cpus
        .iter()
        .map(|c| format!("{}", load(&c.counters.faults)))
        .collect();
    extra.push_str(&format!(" faults_vcpu={}", per_vcpu.join(",")));
    let pass = failures.is_empty();
    for f in &failures {
        println!("FAIL: {f}");
    }
    let leaked_s = leaked.map_or_else(|| String::from("unknown"), |l| format!("{l}"));
    let o = &vm.opts;
    println!(
        "RESULT status={} mode={} vcpus={} workload={} mem={}K pages={} faults={faults} \
         retries={retries} spurious={spurious} bbm={} tlbi={} tlbi_elided={} tables_alloc={} \
         tables_freed={} leaked={leaked_s} checksum={} cycles={cycles} fault_ns_median={median_ns} \
         fault_ns_p99={p99_ns} refills={refills} backing_races={races} injected={injected}{trap_fields}{workload_fields}{extra}",
        if pass { "pass" } else { "fail" },
        o.mode.name(),
        o.vcpus,
        if files.is_some() { "none" } else { o.workload.name() },
        o.mem >> 10,
        pages_reported,
        s.bbm,
        s.tlbi(),
        s.tlbi_elided,
        s.tables_alloc,
        s.tables_freed,
        // Checked only once every vCPU stopped; a run cut short never checked.
        match (all_stopped, checksum_ok) {
            (false, _) => "unknown",
            (true, true) => "ok",
            (true, false) => "bad",
        },
    );
    // A .flat that printed a failing EXIT status exits with that status (kvm-unit-tests'
    // run_tests.sh reads it the same way: `status >> 1` is the test's own code).
    let flat_status = vcpu::FLAT_EXIT_STATUS.load(Ordering::Acquire);
    exit::exit(match (pass, end, flat_status) {
        // A guest that asked for SYSTEM_RESET: a distinct status when the checks pass.
        (true, crate::lifecycle::End::SystemReset, _) => crate::lifecycle::EXIT_SYSTEM_RESET,
        (true, _, _) => 0,
        (false, _, n) if n > 1 => n as u32,
        _ => 1,
    })
}

/// The checks and RESULT fields of a guest from files; None for the built-in guest.
/// Linux passes when it powered off through PSCI (every vCPU ended cleanly); a `.flat` also
/// needs its "EXIT: STATUS=1" line on the emulated console.
fn guest_from_files(vm: &Vm, all_stopped: bool, failures: &mut Vec<String>) -> Option<String> {
    let crate::vm::Guest::Files { format, .. } = &vm.guest else {
        return None;
    };
    let mut fields = format!(" guest={} ram={}M", format.name(), vm.opts.ram >> 20);
    if *format == crate::boot_protocol::Format::Flat {
        let st = vcpu::FLAT_EXIT_STATUS.load(Ordering::Acquire);
        fields.push_str(&format!(" exit_status={st}"));
        if all_stopped && st != 1 {
            failures.push(if st == 0 {
                String::from("the .flat guest ended without an \"EXIT: STATUS=\" line")
            } else {
                format!("the .flat guest reported EXIT: STATUS={st}")
            });
        }
    }
    // Linux ends cleanly only through PSCI SYSTEM_OFF (its poweroff); a guest whose last vCPU
    // turned itself off, or that asked for SYSTEM_RESET, did not (SYSTEM_RESET keeps its own
    // exit status, 4, when everything else passed).
    if matches!(format, crate::boot_protocol::Format::Linux { .. }) && all_stopped {
        match crate::lifecycle::end() {
            crate::lifecycle::End::SystemOff | crate::lifecycle::End::SystemReset => {}
            crate::lifecycle::End::Stopped => failures.push(String::from(
                "the Linux guest did not power off through PSCI SYSTEM_OFF (its vCPUs stopped)",
            )),
        }
    }
    let cpus = &percpu::all()[..vm.opts.vcpus];
    let faulted = cpus.iter().filter(|c| load(&c.counters.faults) > 0).count();
    if faulted != cpus.len() {
        log::warn!(
            "{} of {} vCPUs took no stage-2 fault",
            cpus.len() - faulted,
            cpus.len()
        );
    }
    Some(fields)
}
