//! What the fuzzer must never do, with the reason: system registers it never writes (it runs on
//! them) and function ids it never calls (they end or disturb the run, not the hypervisor).
//!
//! Everything else is fair game. A register write elsewhere only ever writes back the value just
//! read, or a random value to an encoding whose read just UNDEFed or trapped (gen.rs), so the
//! fuzzer never changes state it did not first see.

use crate::abi;

/// A system-register encoding: (op0, op1, CRn, CRm, op2).
pub type Sysreg = (u32, u32, u32, u32, u32);

/// Registers the fuzzer never writes, and why.
pub const SYSREG_NO_WRITE: [(Sysreg, &str); 28] = [
    (
        (3, 0, 1, 0, 0),
        "SCTLR_EL1: MMU, caches, alignment, endianness the fuzzer runs with",
    ),
    ((3, 0, 1, 0, 1), "ACTLR_EL1: IMPLEMENTATION DEFINED control"),
    (
        (3, 0, 1, 0, 2),
        "CPACR_EL1: the FP/SVE/SME enables the fuzzer set",
    ),
    ((3, 0, 1, 0, 3), "SCTLR2_EL1: more EL1 controls"),
    (
        (3, 0, 2, 0, 0),
        "TTBR0_EL1: translation (off, but kept as found)",
    ),
    ((3, 0, 2, 0, 1), "TTBR1_EL1: translation"),
    ((3, 0, 2, 0, 2), "TCR_EL1: translation control"),
    ((3, 0, 2, 0, 3), "TCR2_EL1: translation control"),
    ((3, 0, 4, 0, 0), "SPSR_EL1: the fuzzer's vectors use it"),
    ((3, 0, 4, 0, 1), "ELR_EL1: the fuzzer's vectors use it"),
    ((3, 0, 4, 1, 0), "SP_EL0: the EL0 stack of the excursions"),
    (
        (3, 0, 4, 2, 0),
        "SPSel: PSTATE.SP (the vectors assume SP_EL1)",
    ),
    ((3, 0, 4, 2, 3), "PAN: PSTATE field"),
    ((3, 0, 4, 2, 4), "UAO: PSTATE field"),
    ((3, 0, 4, 3, 0), "ALLINT: PSTATE field"),
    ((3, 3, 4, 2, 0), "NZCV: PSTATE field"),
    (
        (3, 3, 4, 2, 1),
        "DAIF: the fuzzer runs with interrupts masked",
    ),
    (
        (3, 3, 4, 2, 2),
        "SVCR: PSTATE.SM/ZA (SME ops test it on their own)",
    ),
    ((3, 3, 4, 2, 5), "DIT: PSTATE field"),
    ((3, 3, 4, 2, 6), "SSBS: PSTATE field"),
    ((3, 3, 4, 2, 7), "TCO: PSTATE field"),
    ((3, 0, 5, 2, 0), "ESR_EL1: the fuzzer's vectors read it"),
    ((3, 0, 6, 0, 0), "FAR_EL1: the fuzzer's vectors read it"),
    ((3, 0, 10, 2, 0), "MAIR_EL1: memory attributes"),
    ((3, 0, 10, 3, 0), "AMAIR_EL1: memory attributes"),
    ((3, 0, 12, 0, 0), "VBAR_EL1: the fuzzer's vectors"),
    ((3, 0, 13, 0, 1), "CONTEXTIDR_EL1: kept as found"),
    (
        (3, 0, 13, 0, 4),
        "TPIDR_EL1: points at the fuzzer's state (its vectors read it)",
    ),
];

/// Whether the fuzzer may write `r`.
pub fn may_write(r: Sysreg) -> bool {
    !SYSREG_NO_WRITE.iter().any(|&(d, _)| d == r)
}

/// Function ids (compared as W0: SMCCC, and the hypervisor after issue 9, ignore x0[63:32]) the
/// fuzzer never calls, and why.
pub const CALL_DENY: [(u32, &str); 24] = [
    (
        abi::HVC_REPORT as u32,
        "overwrites this vCPU's reported result",
    ),
    (abi::HVC_FINISH as u32, "ends the vCPU"),
    (
        abi::HVC_BARRIER as u32,
        "waits for every vCPU at a barrier they never reach",
    ),
    (abi::HVC_CALIB as u32, "overwrites the calibration report"),
    (abi::HVC_PHASE as u32, "overwrites a phase report"),
    (
        abi::HVC_COLLAPSE as u32,
        "collapses guest memory (another vCPU's too) into blocks",
    ),
    (abi::HVC_VERIFY as u32, "overwrites the verify result"),
    (abi::HVC_BADGUEST as u32, "reports a bad-guest case"),
    (
        abi::HVC_STAGE1 as u32,
        "switches HCR_EL2.DC: the fuzzer's memory would turn Device",
    ),
    (abi::HVC_FUZZ as u32, "the fuzzer's own bookkeeping"),
    (
        abi::HVC_WP_CHUNK as u32,
        "write-protects guest memory and turns dirty logging on for every vCPU",
    ),
    (abi::HVC_WP_COUNT as u32, "turns dirty logging off"),
    (0x8400_0001, "PSCI CPU_SUSPEND (32)"),
    (0xC400_0001, "PSCI CPU_SUSPEND (64)"),
    (0x8400_0002, "PSCI CPU_OFF: ends the vCPU"),
    (0x8400_0008, "PSCI SYSTEM_OFF: ends the run"),
    (0x8400_0009, "PSCI SYSTEM_RESET: ends the run"),
    (0x8400_0012, "PSCI SYSTEM_RESET2 (32)"),
    (0xC400_0012, "PSCI SYSTEM_RESET2 (64)"),
    (0x8400_000B, "PSCI CPU_FREEZE"),
    (0x8400_000C, "PSCI CPU_DEFAULT_SUSPEND (32)"),
    (0xC400_000C, "PSCI CPU_DEFAULT_SUSPEND (64)"),
    (0x8400_000E, "PSCI SYSTEM_SUSPEND (32)"),
    (0xC400_000E, "PSCI SYSTEM_SUSPEND (64)"),
];

/// Whether the fuzzer may call function id `x0` (whatever its upper half holds).
pub fn may_call(x0: u64) -> bool {
    let w0 = x0 as u32;
    !CALL_DENY.iter().any(|&(d, _)| d == w0)
}
