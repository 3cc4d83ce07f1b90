//! Workload `psci`: the PSCI lifecycle as a guest sees it (hyp/src/builtin/psci_check.rs has the
//! expected answers; abi.rs the checks).
//!
//! - vCPU 0 checks the answers that need no other vCPU: versions, FEATURES, MIGRATE_INFO_TYPE,
//!   AFFINITY_INFO of itself and of nothing.
//! - vCPU 1 (the target) publishes its MPIDR, then calls CPU_OFF. vCPU 0 polls AFFINITY_INFO
//!   until it is OFF, makes two CPU_ONs that must fail (Aff3 set; entry point + 2) and one that
//!   turns it on at `psci_restart` with context ID `PSCI_CONTEXT_1`.
//! - vCPU 1 starts there and reports x0, SCTLR_EL1's M/C/I and PSTATE, sets the round-2 flag
//!   and calls CPU_OFF again. Every vCPU but vCPU 1 waits for that, meets the others at a
//!   barrier and calls CPU_ON at vCPU 1 at once (context `PSCI_CONTEXT_2`), reporting its
//!   answer: exactly one must succeed.
//! - vCPU 1 starts again, reports x0; then every vCPU runs `verify` (one pass), whose result the
//!   hypervisor checks as for workload=verify.

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::abi;

global_asm!(
    r#"
    // Where vCPU 1 starts after CPU_ON: x0 = context ID, everything else UNKNOWN. Capture the
    // state the start must have before anything changes it, take the target's own stack (a
    // constant: the context ID is what is being checked, so it is not trusted for a pointer),
    // and go on in Rust.
    .text
    .balign 4
    .global psci_restart
psci_restart:
    mrs     x1, sctlr_el1
    mrs     x2, daif
    mrs     x3, currentel
    mrs     x4, spsel
    ldr     x9, ={stack_top}
    mov     sp, x9
    bl      psci_restarted
1:  b       1b
"#,
    stack_top = const abi::DATA_BASE - abi::PSCI_TARGET * abi::STACK_SIZE,
);

unsafe extern "C" {
    fn psci_restart();
}

const PSCI_VERSION: u64 = 0x8400_0000;
const PSCI_CPU_OFF: u64 = 0x8400_0002;
const PSCI_CPU_ON_64: u64 = 0xC400_0003;
const PSCI_AFFINITY_INFO_64: u64 = 0xC400_0004;
const PSCI_MIGRATE_INFO_TYPE: u64 = 0x8400_0006;
const PSCI_FEATURES: u64 = 0x8400_000A;
const PSCI_SYSTEM_RESET2_64: u64 = 0xC400_0012;
const SMCCC_VERSION: u64 = 0x8000_0000;
/// AFFINITY_INFO's OFF.
const OFF: u64 = 1;
/// An MPIDR's affinity fields (Aff3, Aff2, Aff1, Aff0).
const AFFINITY: u64 = 0xFF_00FF_FFFF;
/// SCTLR_EL1.M, C, I.
const SCTLR_MCI: u64 = 1 << 0 | 1 << 2 | 1 << 12;

/// An SMC with three arguments; returns x0. With HCR_EL2.TSC it traps to the hypervisor.
fn smc3(function: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret;
    // SAFETY: the hypervisor serves the trapped SMC and touches only x0..x3; no memory of ours
    // is read or written.
    unsafe {
        asm!("smc #0", inlateout("x0") function => ret, in("x1") a1, in("x2") a2, in("x3") a3,
             options(nostack));
    }
    ret
}

fn check(n: u64, obs1: u64, obs2: u64) {
    let _ = writeln!(
        crate::Uart,
        "psci check {n}: observed {obs1:#x} / {obs2:#x}"
    );
    crate::hvc(abi::HVC_PSCI_CHECK, n, obs1, obs2);
}

/// The workload's shared words (PSCI_PAGE): round-2 flag, race barrier, the target's MPIDR and
/// data region.
fn word(i: u64) -> &'static AtomicU64 {
    // SAFETY: PSCI_PAGE is an image-slot page used by nothing else (abi.rs); every vCPU maps
    // it Normal cacheable (HCR_EL2.DC with the MMU off), so atomics work on it.
    unsafe { &*((abi::PSCI_PAGE + i * 8) as *const AtomicU64) }
}
const ROUND2: u64 = 0;
const BARRIER: u64 = 1;
const TARGET_MPIDR: u64 = 2;
const TARGET_BASE: u64 = 3;
const TARGET_SIZE: u64 = 4;
/// Marks `TARGET_MPIDR` as written (an affinity value can be 0).
const PUBLISHED: u64 = 1 << 63;

fn own_affinity() -> u64 {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    mpidr & AFFINITY
}

fn affinity_info(target: u64) -> u64 {
    smc3(PSCI_AFFINITY_INFO_64, target, 0, 0)
}

/// Spins a little between polls so that a poll loop does not flood the hypervisor with traps.
fn pause() {
    for _ in 0..2000 {
        core::hint::spin_loop();
    }
}

/// The target's MPIDR affinity once it published it and AFFINITY_INFO says it is OFF.
fn wait_target_off() -> u64 {
    let target = loop {
        let t = word(TARGET_MPIDR).load(Ordering::Acquire);
        if t & PUBLISHED != 0 {
            break t & AFFINITY;
        }
        pause();
    };
    while affinity_info(target) != OFF {
        pause();
    }
    target
}

/// Runs the workload on vCPU `id` of `vcpus`; never returns (ends in `verify`).
pub fn workload(id: u64, base: u64, size: u64, vcpus: u64) -> ! {
    if id == 0 {
        self_checks();
    }
    if vcpus >= 2 {
        if id == abi::PSCI_TARGET {
            word(TARGET_BASE).store(base, Ordering::Relaxed);
            word(TARGET_SIZE).store(size, Ordering::Relaxed);
            word(TARGET_MPIDR).store(own_affinity() | PUBLISHED, Ordering::Release);
            let r = smc3(PSCI_CPU_OFF, 0, 0, 0);
            check(abi::PSCI_CHECK_OFF_RETURNED, r, 0);
            crate::finish(abi::STATUS_UNEXPECTED_EXCEPTION);
        }
        if id == 0 {
            first_start();
        }
        race(id, vcpus);
    }
    crate::verify::workload(id, base, size)
}

fn self_checks() {
    let me = own_affinity();
    check(
        abi::PSCI_CHECK_VERSION,
        smc3(PSCI_VERSION, 0, 0, 0),
        smc3(SMCCC_VERSION, 0, 0, 0),
    );
    check(
        abi::PSCI_CHECK_FEATURES,
        smc3(PSCI_FEATURES, PSCI_CPU_ON_64, 0, 0),
        smc3(PSCI_FEATURES, SMCCC_VERSION, 0, 0),
    );
    check(
        abi::PSCI_CHECK_NOT_OFFERED,
        smc3(PSCI_FEATURES, PSCI_SYSTEM_RESET2_64, 0, 0),
        smc3(PSCI_MIGRATE_INFO_TYPE, 0, 0, 0),
    );
    check(
        abi::PSCI_CHECK_AFFINITY_SELF,
        smc3(PSCI_AFFINITY_INFO_64, me, 0, 0),
        smc3(PSCI_AFFINITY_INFO_64, me, 1, 0),
    );
    check(
        abi::PSCI_CHECK_AFFINITY_BAD,
        smc3(PSCI_AFFINITY_INFO_64, me, 4, 0),
        smc3(PSCI_AFFINITY_INFO_64, 0xFF_FFFF, 0, 0),
    );
}

/// vCPU 0: the bad CPU_ONs at the OFF target, then the one that starts it.
fn first_start() {
    let target = wait_target_off();
    let entry = psci_restart as *const () as u64;
    check(
        abi::PSCI_CHECK_CPU_ON_BAD,
        smc3(PSCI_CPU_ON_64, 1 << 32 | target, entry, abi::PSCI_CONTEXT_1),
        smc3(PSCI_CPU_ON_64, target, entry + 2, abi::PSCI_CONTEXT_1),
    );
    let still_off = affinity_info(target);
    check(
        abi::PSCI_CHECK_OFF_THEN_ON,
        still_off,
        smc3(PSCI_CPU_ON_64, target, entry, abi::PSCI_CONTEXT_1),
    );
}

/// Every vCPU but the target: once it is off again, all call CPU_ON at it at once.
fn race(id: u64, vcpus: u64) {
    while word(ROUND2).load(Ordering::Acquire) == 0 {
        pause();
    }
    let target = wait_target_off();
    let callers = vcpus - 1;
    word(BARRIER).fetch_add(1, Ordering::AcqRel);
    while word(BARRIER).load(Ordering::Acquire) < callers {
        core::hint::spin_loop();
    }
    let entry = psci_restart as *const () as u64;
    let answer = smc3(PSCI_CPU_ON_64, target, entry, abi::PSCI_CONTEXT_2);
    check(abi::PSCI_CHECK_RACE, answer, id);
}

/// The target after each CPU_ON (from `psci_restart`): x0 = context ID and the state captured
/// at the entry point.
#[unsafe(no_mangle)]
extern "C" fn psci_restarted(context: u64, sctlr: u64, daif: u64, el: u64, spsel: u64) -> ! {
    if word(ROUND2).load(Ordering::Acquire) == 0 {
        check(abi::PSCI_CHECK_START_1, context, sctlr & SCTLR_MCI);
        check(abi::PSCI_CHECK_START_PSTATE, daif, el | spsel);
        word(ROUND2).store(1, Ordering::Release);
        let r = smc3(PSCI_CPU_OFF, 0, 0, 0);
        check(abi::PSCI_CHECK_OFF_RETURNED, r, 0);
        crate::finish(abi::STATUS_UNEXPECTED_EXCEPTION);
    }
    check(abi::PSCI_CHECK_START_2, context, sctlr & SCTLR_MCI);
    // Back to the run with the data region the target had at boot (saved before CPU_OFF).
    crate::verify::workload(
        abi::PSCI_TARGET,
        word(TARGET_BASE).load(Ordering::Acquire),
        word(TARGET_SIZE).load(Ordering::Acquire),
    )
}
