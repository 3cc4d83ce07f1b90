//! Instruction generators: each op class's random instructions, encoded at run time (Arm ARM
//! C4 "A64 instruction set encoding", F4/F3 for A32/T32). What a generator draws depends only on
//! the stream itself, never on what earlier ops did at run time, so a seed always replays the
//! same operations.
//!
//! Register conventions of a snippet: x0 = the target address (r0 in AArch32), x1..x5 = data,
//! x6/x7 = the EL0 markers (see `el0_tail`). Snippets never touch SP, x8..x30 or v8..v15.

use super::deny::{self, Sysreg};
use super::rng::Rng;
use super::target::Target;

/// Bytes of one generated snippet (the code buffer slot).
pub const CODE_MAX: usize = 64;

/// A snippet being built.
pub struct Code {
    /// Little-endian instruction bytes.
    pub bytes: [u8; CODE_MAX],
    /// Bytes used.
    pub len: usize,
}

impl Code {
    /// An empty snippet.
    pub const fn new() -> Self {
        Self {
            bytes: [0; CODE_MAX],
            len: 0,
        }
    }

    /// Appends a 32-bit A64/A32 instruction.
    pub fn word(&mut self, w: u32) {
        self.bytes[self.len..self.len + 4].copy_from_slice(&w.to_le_bytes());
        self.len += 4;
    }

    /// Appends a 16-bit T32 instruction (or one halfword of a 32-bit one).
    pub fn half(&mut self, h: u16) {
        self.bytes[self.len..self.len + 2].copy_from_slice(&h.to_le_bytes());
        self.len += 2;
    }

    /// Appends a 32-bit T32 instruction (first halfword first, C2.4 / F3.1).
    pub fn thumb32(&mut self, hw1: u16, hw2: u16) {
        self.half(hw1);
        self.half(hw2);
    }
}

/// A64 RET.
pub const RET: u32 = 0xD65F_03C0;
/// A64 `add x6, x6, #1`: the EL0 marker counting that execution reached the op's successor.
pub const A64_ADD_X6: u32 = 0x9100_04C6;
/// A64 `movz x7, #0x5A5A`: the EL0 marker written right before the SVC.
pub const A64_MARK_X7: u32 = 0xD28B_4B47;
/// A64 `svc #0`.
pub const A64_SVC: u32 = 0xD400_0001;
/// The value `A64_MARK_X7` leaves in x7.
pub const A64_MARK: u64 = 0x5A5A;
/// A32 `add r6, r6, #1`, `mov r7, #0x5A`, `svc #0`.
pub const A32_TAIL: [u32; 3] = [0xE286_6001, 0xE3A0_705A, 0xEF00_0000];
/// T32 `adds r6, #1` (inside an IT block: `add` without flags), `movs r7, #0x5A`, `svc #0`.
pub const T32_ADD_R6: u16 = 0x3601;
/// See `T32_ADD_R6`.
pub const T32_MARK_R7: u16 = 0x275A;
/// See `T32_ADD_R6`.
pub const T32_SVC: u16 = 0xDF00;
/// The value the AArch32 tails leave in r7.
pub const A32_MARK: u64 = 0x5A;

/// MRS (`read`) or MSR of register `r` with Xt = `rt` (C5.2.x "System register move").
pub fn sysreg_move(r: Sysreg, read: bool, rt: u32) -> u32 {
    let (op0, op1, crn, crm, op2) = r;
    0xD510_0000
        | u32::from(read) << 21
        | (op0 & 1) << 19
        | op1 << 16
        | crn << 12
        | crm << 8
        | op2 << 5
        | rt
}

/// Groups of encodings where system registers live (op0, op1, CRn, CRm range), so the stream
/// reaches the ones a hypervisor traps far more often than a uniform draw would.
const SYSREG_GROUPS: [(u32, u32, u32, u32, u32); 24] = [
    (3, 0, 0, 0, 7),   // ID registers (HCR_EL2.TID3), unallocated ID space (RAZ)
    (3, 1, 0, 0, 0),   // CCSIDR, CLIDR, AIDR, SMIDR (TID1/TID2)
    (3, 2, 0, 0, 0),   // CSSELR
    (3, 3, 0, 0, 0),   // CTR_EL0, DCZID_EL0
    (3, 0, 1, 0, 2),   // SCTLR, ACTLR, CPACR, ZCR, SMCR, SMPRI, TRFCR
    (3, 0, 2, 0, 3),   // TTBR/TCR, pointer-authentication keys
    (3, 0, 4, 0, 6),   // SPSR/ELR/SP_EL0/PSTATE fields, ICC_PMR
    (3, 0, 5, 0, 6),   // AFSR, ESR, ERR* (RAS), TFSR (MTE)
    (3, 0, 9, 9, 14),  // PMU, SPE (MDCR_EL2.TPMS), PMS*
    (3, 3, 9, 12, 15), // PMU EL0
    (3, 0, 10, 0, 6),  // MAIR, AMAIR, LOR*, MPAM
    (3, 0, 12, 0, 12), // VBAR, RMR, ICC_* (GIC CPU interface)
    (3, 0, 13, 0, 0),  // CONTEXTIDR, TPIDR, SCXTNUM
    (3, 3, 13, 0, 0),  // TPIDR_EL0, TPIDRRO_EL0, TPIDR2_EL0
    (3, 3, 13, 2, 7),  // activity monitors (CPTR_EL2.TAM)
    (3, 3, 14, 0, 3),  // generic timer EL0
    (3, 0, 14, 1, 1),  // CNTKCTL_EL1
    (3, 3, 4, 2, 5),   // NZCV, DAIF, SVCR, FPCR/FPSR, DIT, SSBS, TCO
    (3, 3, 2, 4, 4),   // RNDR, RNDRRS
    (2, 0, 0, 0, 15),  // debug: MDSCR, breakpoints, watchpoints, OS lock
    (2, 0, 1, 0, 4),   // OSLAR, OSLSR, OSDLR, DBGPRCR
    (2, 1, 0, 0, 15),  // trace (CPTR_EL2.TTA)
    (2, 3, 0, 1, 5),   // DCC: MDCCSR, DBGDTR*
    (3, 4, 1, 1, 1),   // EL2 registers (UNDEF at EL1), e.g. HCR_EL2
];

/// A random system-register encoding with op0 = 2 or 3.
pub fn sysreg(rng: &mut Rng) -> Sysreg {
    let r = rng.next();
    let field = |shift: u32, bits: u32| ((r >> shift) as u32) & ((1 << bits) - 1);
    if rng.chance(1, 2) {
        (
            2 + field(0, 1),
            field(1, 3),
            field(4, 4),
            field(8, 4),
            field(12, 3),
        )
    } else {
        let (op0, op1, crn, lo, hi) = rng.pick(&SYSREG_GROUPS);
        (
            op0,
            op1,
            crn,
            lo + field(16, 4) % (hi - lo + 1),
            field(20, 3),
        )
    }
}

/// EL1 MRS of a random register into x0, then MSR of x0 back unless the register is denied. If
/// the MRS UNDEFs or traps, the vector skips it and x0 still holds the random value the caller
/// passed: a random value then goes only to an encoding that just refused a read.
pub fn sysreg_el1(rng: &mut Rng, code: &mut Code) -> Sysreg {
    let r = sysreg(rng);
    code.word(sysreg_move(r, true, 0));
    if deny::may_write(r) {
        code.word(sysreg_move(r, false, 0));
    }
    r
}

/// Well-known function ids a fuzzer should hit often: PSCI, SMCCC arch calls, TRNG, the
/// project's harmless calls, and the vendor-hypervisor range ids others use.
const KNOWN_CALLS: [u32; 22] = [
    0x8400_0000, // PSCI_VERSION
    0x8400_000A, // PSCI_FEATURES
    0x8400_0003, // CPU_ON (32)
    0xC400_0003, // CPU_ON (64)
    0x8400_0004, // AFFINITY_INFO (32)
    0xC400_0004, // AFFINITY_INFO (64)
    0x8400_0005, // MIGRATE (32)
    0x8400_0006, // MIGRATE_INFO_TYPE
    0x8400_0007, // MIGRATE_INFO_UP_CPU
    0x8400_0010, // NODE_HW_STATE
    0x8400_0013, // MEM_PROTECT
    0x8400_0014, // MEM_PROTECT_CHECK_RANGE
    0x8000_0000, // SMCCC_VERSION
    0x8000_0001, // SMCCC_ARCH_FEATURES
    0x8000_0002, // SMCCC_ARCH_SOC_ID
    0x8000_8000, // SMCCC_ARCH_WORKAROUND_1
    0x8000_7FFF, // SMCCC_ARCH_WORKAROUND_2
    0x8400_0050, // TRNG_VERSION
    0xC400_0053, // TRNG_RND64
    crate::abi::HVC_NULL as u32,
    crate::abi::HVC_QUERY as u32,
    0x8600_FF01, // vendor hypervisor service call UID (KVM)
];

/// A random HVC (`hvc`) or SMC: the instruction (random immediate, zero three times in four)
/// and x0..x7. SMC32/HVC32 calls get junk in the upper halves half of the time. Ids on the deny
/// list become `HVC_UNKNOWN`.
pub fn call(rng: &mut Rng, hvc: bool, code: &mut Code, regs: &mut [u64; 8]) {
    let imm = if rng.chance(3, 4) {
        0
    } else {
        rng.below(0xFFFF) as u32 + 1
    };
    code.word(if hvc { 0xD400_0002 } else { 0xD400_0003 } | imm << 5);
    let r = rng.next();
    let id: u32 = match rng.below(3) {
        0 => rng.pick(&KNOWN_CALLS),
        // Structured: fast bit, SMC32/64, owner (bits 29:24), function number (bits 15:0),
        // and the must-be-zero bits 23:16 zero or not.
        1 => {
            (r as u32 & 0xC000_0000)
                | (((r >> 32) % 64) as u32) << 24
                | if r & 1 << 40 != 0 {
                    (r >> 41) as u32 & 0x00FF_0000
                } else {
                    0
                }
                | (r >> 8) as u32 & 0xFFFF
        }
        _ => r as u32,
    };
    let junk = rng.next();
    let smc32 = id & 1 << 30 == 0;
    for (i, reg) in regs.iter_mut().enumerate().skip(1) {
        *reg = rng.next();
        if smc32 && junk & 1 << i == 0 {
            *reg &= 0xFFFF_FFFF;
        }
    }
    let high = if junk & 1 == 0 {
        0
    } else {
        junk & !0xFFFF_FFFF
    };
    let x0 = high | u64::from(id);
    regs[0] = if deny::may_call(x0) {
        x0
    } else {
        crate::abi::HVC_UNKNOWN
    };
}

/// Appends one random A64 data access to `[x0]` (x1..x5 data); a store becomes a load when
/// `t.uart_dr` (it could print). Returns whether it can write.
pub fn a64_mem(rng: &mut Rng, t: Target, code: &mut Code) -> bool {
    let r = rng.next();
    let kind = rng.below(14);
    let size = (r & 3) as u32;
    let store = r & 4 != 0 && !t.uart_dr;
    let s = u32::from(store);
    let l = 1 - s;
    let acq = ((r >> 3) & 1) as u32;
    let imm9 = ((r >> 8) & 0x1FF) as u32;
    match kind {
        // LDR/STR/LDRS* (unsigned offset 0): size, opc 00 store / 01 load / 1x signed load.
        0 => {
            let opc = if store {
                0
            } else if r & 16 != 0 && size < 3 {
                2
            } else {
                1
            };
            code.word(size << 30 | 0x3900_0000 | opc << 22 | 1);
        }
        // LDUR/STUR with a random imm9, or the post-/pre-indexed forms (writeback: ISV = 0).
        1 | 2 => {
            let idx = if kind == 1 {
                0
            } else {
                1 | (((r >> 5) & 1) as u32) << 1
            };
            code.word(size << 30 | 0x3800_0000 | l << 22 | imm9 << 12 | idx << 10 | 1);
        }
        // LDP/STP of W or X registers, LDPSW.
        3 => {
            let opc = if store {
                2 * ((r >> 4) & 1) as u32
            } else {
                ((r >> 4) % 3) as u32
            };
            code.word(opc << 30 | 0x2900_0000 | l << 22 | 2 << 10 | 1);
        }
        // LD(A)XR then ST(L)XR of the same size: an exclusive pair.
        4 => {
            code.word(size << 30 | 0x085F_7C00 | acq << 15 | 1);
            if !t.uart_dr {
                code.word(size << 30 | 0x0800_7C00 | 3 << 16 | acq << 15 | 2);
            }
        }
        // LDXP then STXP (32- or 64-bit pairs).
        5 => {
            let sz = size & 1;
            code.word(0x887F_0000 | sz << 30 | acq << 15 | 2 << 10 | 1);
            if !t.uart_dr {
                code.word(0x8820_0000 | sz << 30 | 3 << 16 | acq << 15 | 2 << 10 | 1);
            }
        }
        // LDAR / STLR (single register, ISV = 1).
        6 => code.word(size << 30 | if store { 0x089F_FC00 } else { 0x08DF_FC00 } | 1),
        // LSE: LD<op>, SWP (and the unallocated o3/opc combinations: UNDEF), acquire/release.
        7 if !t.uart_dr => {
            let o3_opc = ((r >> 4) & 0xF) as u32;
            code.word(size << 30 | 0x3820_0000 | acq << 23 | s << 22 | 1 << 16 | o3_opc << 12 | 2);
        }
        // CAS / CASP.
        8 if !t.uart_dr => code.word(size << 30 | 0x08A0_7C00 | s << 22 | 1 << 16 | acq << 15 | 2),
        9 if !t.uart_dr => {
            code.word(0x0820_7C00 | (size & 1) << 30 | s << 22 | 2 << 16 | acq << 15 | 4);
        }
        // DC ZVA: zeroes a whole DCZID block (never emulated: ISV = 0).
        10 if !t.uart_dr => code.word(0xD50B_7420),
        // SIMD&FP LDR/STR of B/H/S/D/Q (never an emulated syndrome).
        11 => {
            let q = (r >> 4) & 1 == 1 && size == 0;
            let opc = if q { 2 + l } else { l };
            code.word(size << 30 | 0x3D00_0000 | opc << 22);
        }
        // LD1/ST1 {v0.8b or .16b}.
        12 => code.word(0x0C00_7000 | (((r >> 4) & 1) as u32) << 30 | l << 22),
        // PRFM with a random prefetch operation (never faults).
        _ => code.word(0xF980_0000 | ((r >> 4) & 0x1F) as u32),
    }
    store
}

/// `ptrue p0.<T>` then one SVE access or computation on `[x0]`; returns the SVE instructions
/// emitted.
pub fn sve(rng: &mut Rng, t: Target, code: &mut Code) -> u64 {
    let r = rng.next();
    code.word(if r & 1 == 0 { 0x25D8_E3E0 } else { 0x2518_E3E0 }); // ptrue p0.d / p0.b
    let store = r & 2 != 0 && !t.uart_dr;
    let op = match (r >> 2) % 9 {
        0 if store => 0xE5E0_E000, // st1d {z0.d}, p0, [x0]
        0 => 0xA5E0_A000,          // ld1d {z0.d}, p0/z, [x0]
        1 if store => 0xE400_E000, // st1b {z0.b}, p0, [x0]
        1 => 0xA400_A000,          // ld1b {z0.b}, p0/z, [x0]
        2 => 0xA5FF_6000,          // ldff1d {z0.d}, p0/z, [x0, xzr, lsl #3] (first-fault)
        3 => 0xA5F0_A000,          // ldnf1d {z0.d}, p0/z, [x0] (non-fault)
        4 if store => 0xE580_4000, // str z0, [x0]
        4 => 0x8580_4000,          // ldr z0, [x0]
        5 => 0x8580_0001,          // ldr p1, [x0]
        6 => 0x04BF_5021,          // rdvl x1, #1
        7 => 0x04E0_4000,          // index z0.d, #0, #0
        _ => 0x05E0_3820,          // mov z0.d, x1
    };
    code.word(op);
    2
}

/// One SME sequence; returns the SME instructions in it that must UNDEF. `fgt`: the CPU has
/// FEAT_FGT, so SMPRI_EL1 and TPIDR2_EL0 are trapped by the hypervisor and must UNDEF too. `smstart sm` before
/// a memory access is the one that killed the hypervisor (issue 9): if streaming mode were
/// really entered, the access's exit would run the hypervisor in streaming mode.
pub fn sme(rng: &mut Rng, code: &mut Code, fgt: bool) -> u64 {
    const SMSTART_SM: u32 = 0xD503_437F;
    const SMSTOP_SM: u32 = 0xD503_427F;
    const SMSTART_ZA: u32 = 0xD503_457F;
    const SMSTOP_ZA: u32 = 0xD503_447F;
    let r = rng.next();
    match r % 6 {
        0 => {
            // A plain LDR (ISV = 1): the only exception it may add is an external abort.
            code.word(SMSTART_SM);
            code.word(0xF940_0001); // ldr x1, [x0]
            code.word(SMSTOP_SM);
            2
        }
        1 => {
            code.word(SMSTART_ZA);
            code.word(0xC008_00FF); // zero {za}
            code.word(SMSTOP_ZA);
            3
        }
        2 => {
            code.word(0x04BF_5821); // rdsvl x1, #1
            1
        }
        3 => {
            code.word(0xE09F_0000); // ld1w {za0h.s[w12, 0]}, p0/z, [x0]
            1
        }
        _ => {
            // SVCR, SMCR_EL1 (trapped by CPTR_EL2.TSM) and SMIDR_EL1 (trapped by HCR_EL2.TID1):
            // must UNDEF. SMPRI_EL1 and TPIDR2_EL0: read, and written back. Nothing but
            // fine-grained traps reach those two at EL1: with FEAT_FGT the hypervisor sets them
            // (HFGRTR/HFGWTR_EL2 nSMPRI_EL1 = nTPIDR2_EL0 = 0) and they must UNDEF; without it
            // (QEMU 7.2) they are exercised but not counted (docs/robustness.md).
            const REGS: [(Sysreg, bool); 5] = [
                ((3, 3, 4, 2, 2), true),
                ((3, 0, 1, 2, 6), true),
                ((3, 0, 1, 2, 4), false),
                ((3, 3, 13, 0, 5), false),
                ((3, 1, 0, 0, 6), true),
            ];
            let (reg, checked) = REGS[((r >> 8) % 5) as usize];
            code.word(sysreg_move(reg, true, 1));
            let n = if reg.1 != 1 {
                code.word(sysreg_move(reg, false, 1));
                2
            } else {
                1
            };
            if checked || fgt {
                n
            } else {
                0
            }
        }
    }
}

/// The ops an A64 EL0 excursion runs (before `el0_tail`): a data access, a system-register
/// read and write-back (a refused read ends the excursion, so nothing random is written), an
/// HVC/SMC (UNDEF at EL0), DC ZVA, SVE, or UDF/BRK.
pub fn a64_el0(rng: &mut Rng, t: Target, code: &mut Code) {
    let r = rng.next();
    match r % 6 {
        0 | 1 => {
            a64_mem(rng, t, code);
        }
        2 => {
            let reg = if r & 1 << 8 != 0 {
                let (_, _, crn, crm, op2) = sysreg(rng);
                (3, 3, crn, crm, op2)
            } else {
                sysreg(rng)
            };
            code.word(sysreg_move(reg, true, 1));
            if deny::may_write(reg) {
                code.word(sysreg_move(reg, false, 1));
            }
        }
        3 => code.word(if r & 1 << 9 != 0 {
            0xD400_0002
        } else {
            0xD400_0003
        }),
        4 => {
            sve(rng, t, code);
        }
        _ => code.word(if r & 1 << 10 != 0 {
            0x0000_0000
        } else {
            0xD420_0000
        }), // UDF / BRK
    }
}

/// The A64 EL0 tail: count, mark, return by SVC.
pub fn el0_tail(code: &mut Code) {
    code.word(A64_ADD_X6);
    code.word(A64_MARK_X7);
    code.word(A64_SVC);
}

/// One random A32 op on `[r0]` (r1..r3 data) with a random condition one time in four.
pub fn a32(rng: &mut Rng, t: Target, code: &mut Code) {
    let r = rng.next();
    let cond = (if r & 3 == 0 {
        ((r >> 2) % 14) as u32
    } else {
        0xE
    }) << 28;
    let store = r & 1 << 6 != 0 && !t.uart_dr;
    let s = u32::from(store);
    let cp = |r: u64, read: bool, coproc: u32| {
        let opc1 = ((r >> 8) & 7) as u32;
        let crn = ((r >> 11) & 15) as u32;
        let crm = ((r >> 15) & 15) as u32;
        let opc2 = ((r >> 19) & 7) as u32;
        0x0E00_0010
            | opc1 << 21
            | u32::from(read) << 20
            | crn << 16
            | 1 << 12
            | coproc << 8
            | opc2 << 5
            | crm
    };
    match (r >> 7) % 9 {
        0 => code.word(cond | if store { 0x0580_1000 } else { 0x0590_1000 }), // STR/LDR r1
        1 => code.word(cond | if store { 0x05C0_1000 } else { 0x05D0_1000 }), // STRB/LDRB
        2 => code.word(cond | if store { 0x01C0_10B0 } else { 0x01D0_10B0 }), // STRH/LDRH
        3 => code.word(cond | if store { 0x01C0_20F0 } else { 0x01C0_20D0 }), // STRD/LDRD r2,r3
        4 => code.word(cond | 0x0880_0006 | (1 - s) << 20),                   // STM/LDM {r1,r2}
        5 => {
            code.word(cond | 0x0190_1F9F); // LDREX r1, [r0]
            if !t.uart_dr {
                code.word(cond | 0x0180_2F91); // STREX r2, r1, [r0]
            }
        }
        // MRC of a random p15/p14 register, then MCR of the value back (a refused MRC ends the
        // excursion first).
        6 | 7 => {
            let coproc = if (r >> 7) % 9 == 6 { 15 } else { 14 };
            code.word(cond | cp(r, true, coproc));
            code.word(cond | cp(r, false, coproc));
        }
        // MRRC p15 (64-bit registers: timers, TTBRs), UDF, BKPT, HVC, SMC (UNDEF at EL0).
        _ => code.word(match (r >> 23) % 5 {
            0 => cond | 0x0C50_0F00 | 2 << 16 | 1 << 12 | ((r >> 26) & 0xFF) as u32,
            1 => 0xE7F0_00F0,
            2 => 0xE120_0070,
            3 => 0xE140_0070,
            _ => 0xE160_0070,
        }),
    }
}

/// A T32 excursion: one random op, inside a two-instruction IT block half of the time, then the
/// tail. Returns the value r6 must hold at the SVC for `nzcv` (the IT block's second slot adds 1
/// only if its condition passes).
pub fn t32(rng: &mut Rng, t: Target, code: &mut Code, nzcv: u32) -> u64 {
    let r = rng.next();
    let store = r & 1 != 0 && !t.uart_dr;
    let it = r & 2 != 0;
    let cond = ((r >> 2) % 15) as u32; // EQ..AL
    let second_is_then = cond == 14 || r & 1 << 6 != 0;
    if it {
        let second = if second_is_then {
            cond & 1
        } else {
            (cond & 1) ^ 1
        };
        let mask = second << 3 | 0b0100;
        code.half(0xBF00 | (cond as u16) << 4 | mask as u16);
    }
    // UDF and BKPT are unconditional: not inside an IT block.
    let kinds = if it { 7 } else { 9 };
    let one = |code: &mut Code, r: u64| match (r >> 7) % kinds {
        0 => code.half(if store { 0x6001 } else { 0x6801 }), // STR/LDR r1, [r0]
        1 => code.half(if store { 0x7001 } else { 0x7801 }), // STRB/LDRB
        2 => code.half(if store { 0x8001 } else { 0x8801 }), // STRH/LDRH
        3 => code.thumb32(if store { 0xF8C0 } else { 0xF8D0 }, 0x1000), // STR.W/LDR.W
        4 => code.thumb32(if store { 0xE9C0 } else { 0xE9D0 }, 0x2300), // STRD/LDRD r2, r3
        5 => code.thumb32(0xE850, 0x1F00),                   // LDREX r1, [r0]
        6 => {
            // MRC p15 of a random register.
            let opc1 = ((r >> 11) & 7) as u16;
            let crn = ((r >> 14) & 15) as u16;
            let crm = ((r >> 18) & 15) as u16;
            let opc2 = ((r >> 22) & 7) as u16;
            code.thumb32(0xEE10 | opc1 << 5 | crn, 0x1F10 | opc2 << 5 | crm);
        }
        7 => code.half(0xDE00), // UDF #0 (T1)
        _ => code.half(0xBE00), // BKPT #0
    };
    one(code, r);
    code.half(T32_ADD_R6);
    code.half(T32_MARK_R7);
    code.half(T32_SVC);
    let passes = |c: u32| cond_passes(c, nzcv);
    if !it {
        1
    } else {
        let c2 = if second_is_then { cond } else { cond ^ 1 };
        u64::from(passes(c2))
    }
}

/// Whether condition `cond` (0..=14) passes with flags `nzcv` (bits 3..0 = N, Z, C, V), as the
/// Arm ARM's ConditionHolds().
pub fn cond_passes(cond: u32, nzcv: u32) -> bool {
    let (n, z, c, v) = (nzcv & 8 != 0, nzcv & 4 != 0, nzcv & 2 != 0, nzcv & 1 != 0);
    let base = match cond >> 1 {
        0 => z,
        1 => c,
        2 => n,
        3 => v,
        4 => c && !z,
        5 => n == v,
        6 => n == v && !z,
        _ => true,
    };
    if cond & 1 == 1 && cond != 15 && cond >> 1 != 7 {
        !base
    } else {
        base
    }
}
