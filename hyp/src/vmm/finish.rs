//! The end of a run, for every guest kind: wait for the vCPUs, collect why any stopped, tear the
//! stage-2 table down and check that no table page leaked, print the report (per-CPU counters,
//! stage-2 counters, fault times, exits by class) and the `RESULT` line, and exit with the
//! run's status. A guest kind adds its own checks and fields through its harness
//! (`Harness::check` before teardown, `Harness::report` after it; the built-in guest's are in
//! builtin/report.rs); a guest from files is checked here (a `.flat`'s EXIT status, Linux's
//! SYSTEM_OFF). Test tools that attach to any guest kind (the chaos pruner) add theirs through
//! `finish`'s `tools`.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use stage2::Stats;

use crate::boot_protocol::Format;
use crate::idle::Waiter;
use crate::lifecycle::{self, End};
use crate::percpu::{self, status, PerCpu, Trap, HIST_BUCKETS};
use crate::vm::{Guest, Vm};
use crate::{exit, println, tables, vcpu};

/// kvm-unit-tests' status for a test that skipped (its `report_summary`: "77 for skipped", the
/// autotools convention; scripts/runtime.bash prints SKIP for it). A `.flat` that printed
/// `EXIT: STATUS=77` is reported `status=skip` and the run exits with 77.
pub const FLAT_SKIP: u64 = 77;

/// A report section that attaches to any guest kind (main.rs passes the chaos pruner's): after
/// teardown, with the stage-2 counters; prints its lines, pushes its failures, returns its
/// RESULT fields.
pub type Tool<'a> = &'a dyn Fn(&Vm, &Stats, &mut Vec<String>) -> String;

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

/// `ticks` of a counter running at `freq` Hz, in ns (0 if `freq` is 0).
pub fn ticks_to_ns(ticks: u64, freq: u64) -> u64 {
    if freq == 0 {
        0
    } else {
        (u128::from(ticks) * 1_000_000_000 / u128::from(freq)) as u64
    }
}

/// The tick count at which `per_mille`/1000 of all recorded faults were at or below (exact up
/// to 4096 ticks, then the floor of a 1/16-octave bucket).
pub fn percentile(hist: &[u64], per_mille: u64) -> u64 {
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

/// Why a run failed, for the RESULT line's `reason=` (the first that applies, in this order).
fn reason(
    still_running: &[usize],
    stopped: bool,
    leaked: Option<i64>,
    guest: bool,
) -> &'static str {
    if !still_running.is_empty() {
        "timeout"
    } else if stopped {
        "vcpu-stopped"
    } else if leaked.is_some_and(|l| l != 0) {
        "leak"
    } else if guest {
        "guest-status"
    } else {
        "check"
    }
}

/// Checks, reports and exits. Runs on one CPU after `wait_for_vcpus`; `still_running` are the
/// vCPUs that did not stop, `start_ticks` CNTPCT when the VM was created.
pub fn finish(vm: &Vm, still_running: &[usize], start_ticks: u64, tools: &[Tool<'_>]) -> ! {
    let freq = CNTFRQ_EL0.get();
    let cpus: &[PerCpu] = &percpu::all()[..vm.opts.vcpus];
    let mut failures: Vec<String> = Vec::new();
    for &id in still_running {
        failures.push(format!(
            "vcpu {id} did not finish within timeout={}s",
            vm.opts.timeout_s
        ));
    }
    let mut stopped = false;
    for c in cpus {
        if c.result.status.load(Ordering::Acquire) == status::FAILED {
            let why = c.result.why.load(Ordering::Relaxed) as usize;
            stopped = true;
            failures.push(format!(
                "vcpu {} stopped: {}",
                c.index,
                vcpu::REASONS[why.min(vcpu::REASONS.len() - 1)]
            ));
        }
    }
    let all_stopped = still_running.is_empty();

    // The guest kind's checks, while its memory is still backed: a guest from files here, the
    // harness's own (the built-in guest's checksums) through the harness.
    let checked_before = failures.len();
    let (mut kind_fields, skipped) = match &vm.guest {
        Guest::Files { format, .. } => files_checks(vm, *format, all_stopped, &mut failures),
        Guest::Builtin => (String::new(), false),
    };
    kind_fields.push_str(&vm.harness.check(vm, all_stopped, &mut failures));
    let guest_failed = failures.len() > checked_before;

    // Teardown and leak check (skipped if a vCPU may still be walking the table).
    let mut leaked: Option<i64> = None;
    let mut s2_stats = None;
    if all_stopped {
        // SAFETY: every vCPU has stopped (status != RUNNING is written on the way out of its
        // last trap, and `left` after it), and the other CPUs are powered off or parked: no
        // reference to the table is alive anywhere.
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
        let released: usize = vm.slots.iter().map(|s| s.release(vm.backing)).sum();
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
        "{:>4} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>5} {:>8} {:>9} {:>9} {:>8}",
        "cpu",
        "faults",
        "installed",
        "spurious",
        "relaxed",
        "retries",
        "backed",
        "races",
        "mmio",
        "hvc",
        "refills",
        "mean_ns",
        "max_ns",
        "status"
    );
    let mut faults = 0;
    let mut retries = 0;
    let mut spurious = 0;
    let mut relaxed = 0;
    let mut refills = 0;
    let mut races = 0;
    let mut injected = 0;
    for c in cpus {
        let k = &c.counters;
        let f = load(&k.faults);
        faults += f;
        retries += load(&k.retries);
        spurious += load(&k.spurious);
        relaxed += load(&k.relaxed);
        races += load(&k.backing_races_lost);
        injected += load(&k.injected);
        let r = load(&k.table_refills) + load(&k.data_refills);
        refills += r;
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
            "{:>4} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>5} {:>8} {:>9} {:>9} {:>8}",
            c.index,
            f,
            load(&k.installed),
            load(&k.spurious),
            load(&k.relaxed),
            load(&k.retries),
            load(&k.pages_backed),
            load(&k.backing_races_lost),
            load(&k.mmio),
            load(&k.hvc),
            r,
            ticks_to_ns(mean, freq),
            ticks_to_ns(load(&k.fault_ticks_max), freq),
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
        "fault time: median {median_ns} ns, p99 {p99_ns} ns; run {wall_ms} ms; injected aborts \
         {injected}; FEAT_TTL {}; FEAT_S2FWB {}; {} build; guest RAM preallocated by QEMU: {}",
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

    // The stage2 crate's counters behind the fault path, for every guest kind.
    let mut extra = format!(
        " backing={} splits={} prunes={} relaxes={} write_protected={} tables_retired={} \
         tables_reclaimed={} tlbi_ipa={} tlbi_range={} tlbi_vmid={} tlbi_local={} \
         fault_ns_mean={mean_ns}",
        vm.opts.backing.name(),
        s.splits,
        s.prunes,
        s.relaxes,
        s.write_protected,
        s.tables_retired,
        s.tables_reclaimed,
        s.tlbi_ipa,
        s.tlbi_range,
        s.tlbi_vmid,
        s.tlbi_local,
    );
    // Attached tools (chaos=on: the pruner's operations), then the guest kind's own sections.
    for tool in tools {
        extra.push_str(&tool(vm, &s, &mut failures));
    }
    extra.push_str(&vm.harness.report(vm, &s, &mut failures));
    println!("");
    // PSCI: per-vCPU starts by CPU_ON and CPU_OFFs, SYSTEM_OFF / SYSTEM_RESET (lifecycle.rs).
    extra.push_str(&lifecycle::report());
    extra.push_str(&crate::tlb::report());
    let end = lifecycle::end();
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
    // A .flat that skipped (and nothing else failed) is neither a pass nor a failure.
    let skip = pass && skipped;
    let status = match (pass, skip) {
        (_, true) => String::from("skip"),
        (true, false) => String::from("pass"),
        (false, _) => format!(
            "fail reason={}",
            reason(still_running, stopped, leaked, guest_failed)
        ),
    };
    let leaked_s = leaked.map_or_else(|| String::from("unknown"), |l| format!("{l}"));
    let o = &vm.opts;
    println!(
        "RESULT status={status} mode={} vcpus={}{kind_fields} faults={faults} retries={retries} \
         spurious={spurious} relaxed={relaxed} bbm={} tlbi={} tlbi_elided={} tables_alloc={} tables_freed={} \
         leaked={leaked_s} fault_ns_median={median_ns} fault_ns_p99={p99_ns} refills={refills} \
         backing_races={races} injected={injected}{trap_fields}{extra}",
        o.mode.name(),
        o.vcpus,
        s.bbm,
        s.tlbi(),
        s.tlbi_elided,
        s.tables_alloc,
        s.tables_freed,
    );
    // A .flat that printed a failing EXIT status exits with that status (kvm-unit-tests'
    // run_tests.sh reads it the same way: `status >> 1` is the test's own code); a skip with 77.
    let flat_status = match vm.guest {
        Guest::Files {
            format: Format::Flat,
            ..
        } => vcpu::FLAT_EXIT_STATUS.load(Ordering::Acquire),
        _ => 0,
    };
    exit::exit(match (pass, end, flat_status) {
        (true, _, FLAT_SKIP) if skip => FLAT_SKIP as u32,
        // A guest that asked for SYSTEM_RESET: a distinct status when the checks pass.
        (true, End::SystemReset, _) => lifecycle::EXIT_SYSTEM_RESET,
        (true, _, _) => 0,
        // ... but never as 77 or 124 when the run failed: outside scripts read 77 as a skip
        // (kvm-unit-tests' runtime.bash) and 124 as a timeout (run-qemu.sh --timeout).
        (false, _, n) if n > 1 && n != FLAT_SKIP && n != 124 => n as u32,
        _ => 1,
    })
}

/// The checks and RESULT fields of a guest from files, and whether it skipped (a `.flat` that
/// printed `EXIT: STATUS=77`). Linux passes when it powered off through PSCI (every vCPU ended
/// cleanly); a `.flat` needs its "EXIT: STATUS=1" line on the emulated console.
fn files_checks(
    vm: &Vm,
    format: Format,
    all_stopped: bool,
    failures: &mut Vec<String>,
) -> (String, bool) {
    let mut fields = format!(" guest={} ram={}M", format.name(), vm.opts.ram >> 20);
    let mut skipped = false;
    if format == Format::Flat {
        let st = vcpu::FLAT_EXIT_STATUS.load(Ordering::Acquire);
        fields.push_str(&format!(" exit_status={st}"));
        if all_stopped && st == FLAT_SKIP {
            skipped = true;
        } else if all_stopped && st != 1 {
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
    if matches!(format, Format::Linux { .. }) && all_stopped {
        match lifecycle::end() {
            End::SystemOff | End::SystemReset => {}
            End::Stopped => failures.push(String::from(
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
    (fields, skipped)
}
