//! The vCPU lifecycle on this machine: which vCPUs are ON, how a physical CPU waits while its
//! vCPU is OFF, how a vCPU turned on by PSCI CPU_ON starts, and when the VM's run is over.
//! The power-state machine itself is the portable `psci_lifecycle` crate (tested on the host);
//! this file adds what needs the CPU: waiting without burning a host core, entering the guest
//! with the entry state DEN0022 prescribes (el1_reset.rs), and SYSTEM_OFF / SYSTEM_RESET.
//!
//! Interface (used by the guest kinds' code, e.g. vcpu.rs for the built-in guest):
//! - `init(mpidrs, start, gic)`: once, on CPU0, before any secondary runs. `start` is a property
//!   of the guest kind: `Start::EveryVcpu` (the built-in guest: its ABI starts every vCPU at
//!   once) or `Start::BootVcpuOnly` (Linux, kvm-unit-tests: vCPU 0 runs, the others wait for
//!   CPU_ON).
//! - `run_vcpu(vm, id, boot)`: on vCPU `id`'s own CPU; runs the vCPU through every ON period:
//!   enters at `boot()` if it is ON at VM start, otherwise (and after each CPU_OFF) waits for a
//!   CPU_ON and enters at its entry point. Returns when the vCPU left the guest for good or the
//!   run ended while it was OFF.
//! - `cpu_on`, `cpu_off`, `affinity_info`: the PSCI calls (psci.rs dispatches to them).
//! - `system_event`, `ended`, `end`: SYSTEM_OFF / SYSTEM_RESET and the end of the run.
//! - `report`: per-vCPU starts and CPU_OFFs, for the report.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0, SCTLR_EL1};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use psci_lifecycle::power::{PowerState, Start as OnRequest, Vcpus};
use spin::Once;

use crate::exceptions;
use crate::frame::Frame;
use crate::idle::Waiter;
use crate::percpu::{self, log_sampled};
use crate::vm::{self, Vm};
use crate::{arch, el1_reset, pool};

/// Which vCPUs are ON when the VM starts: a property of the guest kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Start {
    /// Every vCPU starts ON at its boot state (the built-in guest).
    EveryVcpu,
    /// Only vCPU 0 starts ON; the others are OFF until the guest's CPU_ON (DEN0022's model of
    /// a boot: Linux, kvm-unit-tests).
    #[allow(dead_code)] // The generic VM's guest kinds (issue 10) start this way.
    BootVcpuOnly,
}

/// How the run ended, as the guest asked (none: the vCPUs stopped on their own or timed out).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum End {
    /// No PSCI SYSTEM_OFF / SYSTEM_RESET.
    Stopped,
    /// PSCI SYSTEM_OFF: the run ends; exit 0 if its checks pass.
    SystemOff,
    /// PSCI SYSTEM_RESET: a real VMM would reset the VM and boot it again; this hypervisor runs
    /// one VM once, so it ends the run and exits with `EXIT_SYSTEM_RESET` if its checks pass.
    SystemReset,
}

impl End {
    /// The `end=` value of the RESULT line.
    pub fn name(self) -> &'static str {
        match self {
            End::Stopped => "stopped",
            End::SystemOff => "system_off",
            End::SystemReset => "system_reset",
        }
    }
}

/// Exit status of a run whose guest asked for SYSTEM_RESET and whose checks passed (a failed
/// check still exits 1): distinct from a pass (0) so a script can tell the guest rebooted.
pub const EXIT_SYSTEM_RESET: u32 = 4;

/// How long an OFF vCPU's CPU sleeps between looks at its state (WFI, woken by its EL2 timer):
/// the worst-case delay from CPU_ON to the target running, 1 ms.
const OFF_POLL_HZ: u64 = 1000;
/// How long a CPU_ON that finds its target ON_PENDING waits for it to start before answering
/// ON_PENDING instead of ALREADY_ON.
const PENDING_WAIT_MS: u64 = 100;

/// How long a trapped guest WFI waits at EL2 at most before it completes (`guest_wfx`): the
/// worst-case delay from the end of the run (SYSTEM_OFF on another vCPU) to this vCPU leaving
/// the guest, 10 ms. The guest's own interrupts end the wait at once.
const GUEST_WFI_HZ: u64 = 100;

static VCPUS: Once<Vcpus> = Once::new();
static GIC: Once<Option<(u64, u64)>> = Once::new();
/// Each vCPU's redistributor (RD_base), for `guest_wfx`'s wake-up timer; None without a GICv3.
static REDISTRIBUTORS: Once<alloc::vec::Vec<Option<u64>>> = Once::new();
static END: AtomicU8 = AtomicU8::new(0);
/// CPU_ON / AFFINITY_INFO answers that were errors, for sampled logging (fuzzers make many).
static ERRORS: AtomicU64 = AtomicU64::new(0);

/// Sets up the vCPUs: vCPU `i` has MPIDR `mpidrs[i]` (what it reads in MPIDR_EL1) and is ON at
/// start as `start` says. `gic` is the GICv3 (distributor, redistributors) from the DTB, which
/// lets an OFF vCPU's CPU sleep in WFI (idle.rs); its distributor gets affinity routing and
/// Group 1 on here, before the guest runs (a guest from files then owns it and may change it;
/// the waits check, `idle::Waiter::nap`). CPU0, once, before any vCPU runs.
pub fn init(mpidrs: &[u64], start: Start, gic: Option<(u64, u64)>) {
    if let Some((gicd, _)) = gic {
        crate::idle::enable_distributor(gicd);
    }
    GIC.call_once(|| gic);
    REDISTRIBUTORS.call_once(|| {
        mpidrs
            .iter()
            .map(|&m| gic.and_then(|(_, gicr)| crate::idle::redistributor(gicr, m)))
            .collect()
    });
    VCPUS.call_once(|| {
        Vcpus::new(mpidrs, |i| match start {
            Start::EveryVcpu => true,
            Start::BootVcpuOnly => i == 0,
        })
    });
    log::info!(
        "lifecycle: {} vCPUs, {}",
        mpidrs.len(),
        match start {
            Start::EveryVcpu => "all ON at start",
            Start::BootVcpuOnly => "vCPU 0 ON at start, the others OFF until CPU_ON",
        }
    );
}

fn vcpus() -> &'static Vcpus {
    VCPUS.get().expect("lifecycle::init not called")
}

/// Why `run_vcpu` returned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stopped {
    /// The vCPU left the guest for good while ON (the exit handler returned `Action::Leave`
    /// for anything but CPU_OFF).
    Left,
    /// The run ended (SYSTEM_OFF / SYSTEM_RESET, or no vCPU can run any more) while the vCPU
    /// was OFF.
    OffAtEnd,
}

/// Runs vCPU `id` on this CPU through all its ON periods (see the module docs). `boot` gives
/// its registers if it is ON at VM start. The CPU's EL2 state for the VM must be configured
/// (vm::configure_this_cpu).
pub fn run_vcpu(vm: &Vm, id: usize, boot: impl FnOnce() -> Frame) -> Stopped {
    let v = vcpus();
    let mut next = (v.state(id) == PowerState::On).then(boot);
    loop {
        let frame = match next.take() {
            Some(f) => f,
            None => match wait_for_cpu_on(id) {
                Some(request) => start_frame(vm, id, &request),
                None => return Stopped::OffAtEnd,
            },
        };
        exceptions::run_guest(&frame);
        // Pages left in this CPU's caches are out of reach of the other vCPUs while this one
        // is off (it takes no trap to honour a drain request) or gone.
        pool::drain(percpu::this_cpu(), vm.tables, vm.backing);
        if v.state(id) == PowerState::On {
            v.leave(id);
            return Stopped::Left;
        }
        // CPU_OFF: wait for the next CPU_ON.
    }
}

/// Sleeps until vCPU `id` has a CPU_ON to take (returns it; the vCPU is ON from here) or the
/// run ended (None). WFI woken every 1/OFF_POLL_HZ s by this CPU's EL2 timer through the GIC
/// (idle.rs), set up afresh each time because a guest with the GIC passed through may have
/// reconfigured this CPU's redistributor while the vCPU was ON. The distributor is the guest's
/// and is left alone (`Waiter::beside_guest`); if the guest cuts the wake-up path while this
/// vCPU waits (Group 1 or PPI 26 disabled, the redistributor asleep), each nap polls the counter
/// instead, so the wait still notices CPU_ON and the end of the run. Without a GICv3 it spins.
fn wait_for_cpu_on(id: usize) -> Option<OnRequest> {
    let v = vcpus();
    let waiter = GIC.get().copied().flatten().and_then(|(gicd, gicr)| {
        Waiter::beside_guest(
            gicd,
            gicr,
            percpu::this_cpu().mpidr,
            CNTFRQ_EL0.get() / OFF_POLL_HZ,
        )
    });
    if waiter.is_none() {
        log::warn!("vcpu {id}: OFF, no GICv3 timer wake-up: its CPU spins while it waits");
    }
    loop {
        // After SYSTEM_OFF no CPU runs guest code again (DEN0022 5.10), even one whose CPU_ON
        // arrived just before: check the end first.
        if ended() {
            return None;
        }
        if let Some(request) = v.start(id) {
            // Wake CPU_ON callers waiting in `cpu_on` for this vCPU to leave ON_PENDING.
            arch::sev();
            return Some(request);
        }
        match &waiter {
            Some(w) => w.nap(),
            None => core::hint::spin_loop(),
        }
    }
}

/// A WFI or WFE of vCPU `id` trapped to EL2 (HCR_EL2.TWI, and TWE for a `.flat`: set for
/// guests from files, vm.rs): whether the vCPU leaves the guest now because the run is over.
/// Otherwise the instruction has done its wait and the caller steps past it.
///
/// Why trap them: an OS ending the run parks its other CPUs in a WFI loop with interrupts masked
/// (Linux's `cpu_park_loop`; kvm-unit-tests' secondaries wait in WFE) and those CPUs never
/// trap otherwise, so SYSTEM_OFF could not get them out of the guest, and no teardown is safe
/// while a CPU may still walk the stage-2 table. A trapped WFI waits at EL2 for the guest's
/// next interrupt, or at most 1/GUEST_WFI_HZ s (idle::guest_wfi), then looks at the run again.
/// A trapped WFE completes at once (a WFE may complete at any time, Arm ARM D1.6.1, "Wait for
/// Event"; the guest re-checks its condition and waits again): at EL2 it would not wake for the
/// guest's interrupts, which are masked there.
pub fn guest_wfx(id: usize, wfe: bool) -> bool {
    if ended() {
        return true;
    }
    if !wfe {
        let gicd = GIC.get().copied().flatten().map(|(gicd, _)| gicd);
        let rd = REDISTRIBUTORS
            .get()
            .and_then(|r| r.get(id).copied().flatten());
        if let (Some(gicd), Some(rd)) = (gicd, rd) {
            crate::idle::guest_wfi(gicd, rd, CNTFRQ_EL0.get() / GUEST_WFI_HZ);
        }
    }
    ended()
}

/// The registers and EL1 state of vCPU `id` started by CPU_ON (DEN0022 6.4.3, "CPU_ON" entry
/// state, and el1_reset.rs for what "reset" covers): the VM's EL2 configuration for this CPU
/// as at its first start, EL1 reset, x0 = context ID, x1..x30 and SP_EL1 zero (UNKNOWN in the
/// specification; zero leaks nothing), PC = the entry point, PSTATE EL1h with D, A, I, F masked.
fn start_frame(vm: &Vm, id: usize, r: &OnRequest) -> Frame {
    vm::configure_this_cpu(vm);
    el1_reset::reset(r.big_endian);
    let (ons, _) = vcpus().counts(id);
    log::info!(
        "vcpu {id}: started by CPU_ON at {:#x}, context {:#x}{} (start {ons})",
        r.entry,
        r.context,
        if r.big_endian { ", big-endian" } else { "" }
    );
    let mut f = Frame::zeroed();
    f.x[0] = r.context;
    f.elr = r.entry;
    f.spsr = el1_reset::entry_pstate();
    f
}

/// PSCI CPU_ON from vCPU `caller`: the answer for x0 (0 or a PSCI error, sign-extended).
/// `entry_ok` says whether the guest can execute at an IPA (inside its RAM). The target starts
/// with the caller's EL1 endianness (SCTLR_EL1.EE, live on this CPU).
pub fn cpu_on(
    caller: usize,
    target: u64,
    entry: u64,
    context: u64,
    entry_ok: impl FnOnce(u64) -> bool,
) -> u64 {
    let request = OnRequest {
        entry,
        context,
        big_endian: SCTLR_EL1.read(SCTLR_EL1::EE) != 0,
    };
    let freq = CNTFRQ_EL0.get();
    let deadline = CNTPCT_EL0.get() + PENDING_WAIT_MS * freq / 1000;
    // A pending target sets ON and then SEVs (`wait_for_cpu_on`): WFE wakes on that (under
    // QEMU it also yields the host thread to the target's). A target that never starts sends no
    // SEV, so the WFE is also woken by this CPU's event stream (CNTHCTL_EL2.EVNTEN, about every
    // millisecond: vm.rs configure_this_cpu) and the wait ends at the CNTPCT deadline.
    let wait = || {
        arch::wfe();
        CNTPCT_EL0.get() < deadline
    };
    match vcpus().cpu_on(target, request, entry_ok, wait) {
        Ok(id) => {
            log::info!(
                "vcpu {caller}: CPU_ON(target {target:#x} = vcpu {id}, entry {entry:#x}, \
                 context {context:#x}): SUCCESS, vcpu {id} is ON_PENDING"
            );
            0
        }
        Err(e) => {
            let n = ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
            if log_sampled(n) {
                log::warn!(
                    "vcpu {caller}: CPU_ON(target {target:#x}, entry {entry:#x}, context \
                     {context:#x}): {} ({n} lifecycle errors so far)",
                    error_name(e)
                );
            }
            psci_lifecycle::to_x0(e)
        }
    }
}

/// PSCI CPU_OFF by vCPU `id` (the caller then leaves the guest; `run_vcpu` waits for the next
/// CPU_ON). Never DENIED: no Trusted OS (psci_lifecycle::power::Vcpus::cpu_off).
pub fn cpu_off(id: usize) {
    let v = vcpus();
    if !v.cpu_off(id) {
        log::error!("vcpu {id}: CPU_OFF while not ON (hypervisor bug): ignored");
        return;
    }
    let (_, offs) = v.counts(id);
    if v.can_run() {
        log::info!("vcpu {id}: CPU_OFF (off {offs} times)");
    } else {
        log::warn!(
            "vcpu {id}: CPU_OFF of the last running vCPU (DEN0022 5.1.3: the OS must use \
             SYSTEM_OFF): powered off; no vCPU can run any more, the run ends"
        );
    }
}

/// PSCI AFFINITY_INFO: the answer for x0 (ON 0, OFF 1, ON_PENDING 2, or INVALID_PARAMETERS).
pub fn affinity_info(caller: usize, target: u64, level: u64) -> u64 {
    let level = u32::try_from(level).unwrap_or(u32::MAX);
    match vcpus().affinity_info(target, level) {
        Ok(state) => state as u64,
        Err(e) => {
            let n = ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
            if log_sampled(n) {
                log::warn!(
                    "vcpu {caller}: AFFINITY_INFO(target {target:#x}, level {level}): {} \
                     ({n} lifecycle errors so far)",
                    error_name(e)
                );
            }
            psci_lifecycle::to_x0(e)
        }
    }
}

/// PSCI SYSTEM_OFF / SYSTEM_RESET from vCPU `id`: the run ends (OFF vCPUs stop waiting, the
/// reporter stops waiting for vCPUs still in the guest). The first such call decides `end`.
pub fn system_event(id: usize, end: End) {
    let first = END
        .compare_exchange(0, end as u8, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    log::info!(
        "vcpu {id}: PSCI {}: the run ends{}",
        match end {
            End::SystemOff => "SYSTEM_OFF",
            _ => "SYSTEM_RESET (a VMM would restart the VM; this hypervisor ends the run)",
        },
        if first { "" } else { " (already ending)" }
    );
}

/// What the guest asked for at the end (`End::Stopped` if nothing).
pub fn end() -> End {
    match END.load(Ordering::Acquire) {
        x if x == End::SystemOff as u8 => End::SystemOff,
        x if x == End::SystemReset as u8 => End::SystemReset,
        _ => End::Stopped,
    }
}

/// Whether the run is over: SYSTEM_OFF / SYSTEM_RESET was called, or no vCPU is ON or
/// ON_PENDING any more (every one is OFF or left), so nothing can turn one on again.
pub fn ended() -> bool {
    end() != End::Stopped || !vcpus().can_run()
}

/// The report's lifecycle lines and RESULT fields: per vCPU, its state and how many times it
/// was started by CPU_ON and turned itself off; `cpu_on=`, `cpu_off=` (sums) and `end=`.
pub fn report() -> String {
    let v = vcpus();
    let (mut ons, mut offs) = (0, 0);
    let mut line = String::from("vCPU lifecycle (started by CPU_ON / CPU_OFF, state now):");
    for id in 0..v.len() {
        let (on, off) = v.counts(id);
        ons += on;
        offs += off;
        line.push_str(&format!(
            " vcpu{id} {on}/{off} {}",
            match v.state(id) {
                PowerState::On => "ON",
                PowerState::Off => "OFF",
                PowerState::OnPending => "ON_PENDING",
            }
        ));
    }
    crate::println!("{line}");
    format!(" cpu_on={ons} cpu_off={offs} end={}", end().name())
}

/// vCPU `id`'s (starts by CPU_ON, CPU_OFFs).
pub fn counts(id: usize) -> (u64, u64) {
    vcpus().counts(id)
}

fn error_name(e: i32) -> &'static str {
    use smccc::psci::error::*;
    match e {
        INVALID_PARAMETERS => "INVALID_PARAMETERS (no vCPU has that MPIDR, or a bad level)",
        INVALID_ADDRESS => "INVALID_ADDRESS (entry point not 4-byte aligned or outside guest RAM)",
        ALREADY_ON => "ALREADY_ON",
        ON_PENDING => "ON_PENDING (the target did not start within the wait)",
        _ => "error",
    }
}
