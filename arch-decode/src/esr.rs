//! ESR_ELx: the exception class, instruction length and the instruction-specific syndromes the
//! hypervisor decodes (Arm ARM D23.2 "ESR_EL2", the "ISS encoding for ..." sections).

/// Exception classes (ESR_ELx.EC, bits [31:26]) a guest can cause to be taken to EL2.
pub mod ec {
    /// Unknown reason (e.g. an instruction that is UNDEFINED at the trap's source).
    pub const UNKNOWN: u8 = 0x00;
    /// Trapped WFI/WFE (HCR_EL2.TWI/TWE).
    pub const WFX: u8 = 0x01;
    /// Trapped AArch32 MCR/MRC, coproc 0b1111.
    pub const CP15_32: u8 = 0x03;
    /// Trapped AArch32 MCRR/MRRC, coproc 0b1111.
    pub const CP15_64: u8 = 0x04;
    /// Trapped AArch32 MCR/MRC, coproc 0b1110.
    pub const CP14_MR: u8 = 0x05;
    /// Trapped AArch32 LDC/STC, coproc 0b1110.
    pub const CP14_LS: u8 = 0x06;
    /// Access to SVE, Advanced SIMD or floating point trapped by CPTR_EL2.TFP / CPACR.
    pub const FP_ASIMD: u8 = 0x07;
    /// Trapped AArch32 VMRS (ID group, HCR_EL2.TID0/TID3).
    pub const CP10_ID: u8 = 0x08;
    /// Pointer authentication trapped by HCR_EL2.API.
    pub const PAC: u8 = 0x09;
    /// Trapped AArch32 MRRC/MCRR, coproc 0b1110.
    pub const CP14_64: u8 = 0x0C;
    /// Branch target exception.
    pub const BTI: u8 = 0x0D;
    /// Illegal execution state.
    pub const ILLEGAL: u8 = 0x0E;
    /// HVC from AArch32 (AArch32 EL1 only: not reachable with HCR_EL2.RW = 1).
    pub const HVC32: u8 = 0x12;
    /// SMC from AArch32 trapped by HCR_EL2.TSC (AArch32 EL1 only: not reachable either).
    pub const SMC32: u8 = 0x13;
    /// HVC from AArch64.
    pub const HVC64: u8 = 0x16;
    /// SMC from AArch64 trapped by HCR_EL2.TSC.
    pub const SMC64: u8 = 0x17;
    /// Trapped MSR, MRS or System instruction in AArch64.
    pub const SYS64: u8 = 0x18;
    /// SVE access trapped by CPTR_EL2.TZ.
    pub const SVE: u8 = 0x19;
    /// Trapped ERET/ERETAA/ERETAB (HCR_EL2.NV).
    pub const ERET: u8 = 0x1A;
    /// SME access trapped by CPTR_EL2.TSM (and SMCR/SVCR/... accesses).
    pub const SME: u8 = 0x1D;
    /// Instruction abort from a lower EL.
    pub const IABT_LOW: u8 = 0x20;
    /// Instruction abort without a change of EL.
    pub const IABT_CUR: u8 = 0x21;
    /// PC alignment fault.
    pub const PC_ALIGN: u8 = 0x22;
    /// Data abort from a lower EL.
    pub const DABT_LOW: u8 = 0x24;
    /// Data abort without a change of EL.
    pub const DABT_CUR: u8 = 0x25;
    /// SP alignment fault.
    pub const SP_ALIGN: u8 = 0x26;
    /// SError exception.
    pub const SERROR: u8 = 0x2F;
}

/// ESR.IL (bit 25): the trapped instruction was 32 bits (1) or 16 bits (0).
pub const IL: u64 = 1 << 25;

/// The exception class (ESR[31:26]).
pub fn class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3F) as u8
}

/// The instruction-specific syndrome (ESR[24:0]).
pub fn iss(esr: u64) -> u32 {
    (esr & 0x1FF_FFFF) as u32
}

/// The length in bytes of the instruction that trapped (ESR.IL: 4 if set, else 2). Meaningful
/// for traps that report the instruction (the Arm ARM says IL is 1 for aborts with ISV = 0,
/// instruction aborts and EC 0x00, so those always say 4).
pub fn instruction_len(esr: u64) -> u64 {
    if esr & IL != 0 {
        4
    } else {
        2
    }
}

/// The 16-bit immediate of an HVC or SMC (ISS[15:0], EC 0x16/0x17/0x12/0x13).
pub fn imm16(esr: u64) -> u16 {
    (esr & 0xFFFF) as u16
}

/// A trapped MSR/MRS/System instruction (EC 0x18; Arm ARM "ISS encoding for an exception from
/// MSR, MRS, or System instruction execution in AArch64 state").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SysReg {
    /// Op0 (ISS[21:20]).
    pub op0: u8,
    /// Op1 (ISS[16:14]).
    pub op1: u8,
    /// CRn (ISS[13:10]).
    pub crn: u8,
    /// CRm (ISS[4:1]).
    pub crm: u8,
    /// Op2 (ISS[19:17]).
    pub op2: u8,
    /// The transfer register Rt (ISS[9:5]); 31 = XZR.
    pub rt: u8,
    /// Direction (ISS[0]): true for a read (MRS, or a System instruction with a result).
    pub read: bool,
}

impl SysReg {
    /// The encoding as (op0, op1, CRn, CRm, op2), for matching.
    pub fn encoding(&self) -> (u8, u8, u8, u8, u8) {
        (self.op0, self.op1, self.crn, self.crm, self.op2)
    }
}

/// Decodes the ISS of EC 0x18.
pub fn sysreg(esr: u64) -> SysReg {
    let iss = iss(esr);
    SysReg {
        op0: ((iss >> 20) & 0b11) as u8,
        op2: ((iss >> 17) & 0b111) as u8,
        op1: ((iss >> 14) & 0b111) as u8,
        crn: ((iss >> 10) & 0xF) as u8,
        rt: ((iss >> 5) & 0x1F) as u8,
        crm: ((iss >> 1) & 0xF) as u8,
        read: iss & 1 != 0,
    }
}

/// How a single-register load/store accessed memory (data abort ISS[23:14], valid when
/// ISV = 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Access {
    /// Access size in bytes (SAS: 1, 2, 4 or 8).
    pub size: u8,
    /// A byte, halfword or word load sign-extends (SSE).
    pub sign_extend: bool,
    /// The transfer register (SRT); 31 = XZR/WZR.
    pub reg: u8,
    /// The register is 64-bit, Xt (SF); else Wt.
    pub sixty_four: bool,
    /// Acquire/release semantics (AR).
    pub acquire_release: bool,
}

/// The syndrome of a data or instruction abort (Arm ARM "ISS encoding for an exception from a
/// Data Abort" / "... Instruction Abort").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AbortIss {
    /// The fault status code (DFSC/IFSC, ISS[5:0]).
    pub fsc: u8,
    /// Write not read (WnR, data aborts only; 1 for cache maintenance and AT too).
    pub write: bool,
    /// The fault was on the stage-2 translation of a stage-1 table walk (S1PTW).
    pub s1ptw: bool,
    /// Cache maintenance or address translation instruction (CM, data aborts only).
    pub cache_maintenance: bool,
    /// FAR is not valid (FnV, ISS[10]; meaningful for synchronous external aborts).
    pub far_not_valid: bool,
    /// The instruction's access, if the syndrome describes it (ISV = 1, data aborts only).
    pub access: Option<Access>,
}

/// Decodes an abort's ISS; `data` selects the data-abort layout.
pub fn abort(esr: u64, data: bool) -> AbortIss {
    let iss = iss(esr);
    let isv = data && iss & (1 << 24) != 0;
    AbortIss {
        fsc: (iss & 0x3F) as u8,
        write: data && iss & (1 << 6) != 0,
        s1ptw: iss & (1 << 7) != 0,
        cache_maintenance: data && iss & (1 << 8) != 0,
        far_not_valid: iss & (1 << 10) != 0,
        access: isv.then(|| Access {
            size: 1 << ((iss >> 22) & 0b11),
            sign_extend: iss & (1 << 21) != 0,
            reg: ((iss >> 16) & 0x1F) as u8,
            sixty_four: iss & (1 << 15) != 0,
            acquire_release: iss & (1 << 14) != 0,
        }),
    }
}

/// The register value a load of `size` bytes returning `data` leaves in its transfer register,
/// as the syndrome describes it: zero-extended, or sign-extended (SSE) to 32 bits for a Wt
/// (SF = 0, upper 32 bits zero) or to 64 bits for an Xt (Arm ARM: LDRSB/LDRSH/LDRSW semantics).
pub fn load_result(access: &Access, data: u64) -> u64 {
    let bits = u32::from(access.size) * 8;
    let value = if bits >= 64 {
        data
    } else {
        data & ((1u64 << bits) - 1)
    };
    let value = if access.sign_extend && bits < 64 {
        let shift = 64 - bits;
        ((value << shift) as i64 >> shift) as u64
    } else {
        value
    };
    if access.sixty_four {
        value
    } else {
        value & 0xFFFF_FFFF
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_il_iss() {
        // A data abort from a lower EL: EC 0x24, IL = 1, ISV = 1.
        let esr = 0x9300_0046;
        assert_eq!(class(esr), ec::DABT_LOW);
        assert_eq!(instruction_len(esr), 4);
        assert_eq!(iss(esr), 0x100_0046);
        // A 16-bit T32 store: IL = 0.
        assert_eq!(instruction_len(0x9100_0046), 2);
        assert_eq!(class(0x7600_0001), ec::SME);
    }

    #[test]
    fn hvc_immediate() {
        assert_eq!(imm16(0x5A00_0000), 0);
        assert_eq!(imm16(0x5A00_1234), 0x1234);
        assert_eq!(class(0x5A00_1234), ec::HVC64);
    }

    #[test]
    fn sysreg_fields() {
        // MSR ICC_SGI1R_EL1, x3: op0 3, op1 0 (no bits), CRn 12, CRm 11, op2 5, Rt 3, write.
        let iss: u64 = (3 << 20) | (5 << 17) | (12 << 10) | (3 << 5) | (11 << 1);
        let s = sysreg(u64::from(ec::SYS64) << 26 | IL | iss);
        assert_eq!(s.encoding(), (3, 0, 12, 11, 5));
        assert_eq!(s.rt, 3);
        assert!(!s.read);
        // MRS x30, ID_AA64MMFR0_EL1: op0 3, op1 0, CRn 0, CRm 7, op2 0, read.
        let iss: u64 = (3 << 20) | (7 << 1) | (30 << 5) | 1;
        let s = sysreg(u64::from(ec::SYS64) << 26 | IL | iss);
        assert_eq!(s.encoding(), (3, 0, 0, 7, 0));
        assert_eq!(s.rt, 30);
        assert!(s.read);
        // op1 = 7 and op2 = 7 at the top of their fields.
        let s = sysreg((7 << 17) | (7 << 14));
        assert_eq!((s.op1, s.op2), (7, 7));
    }

    #[test]
    fn abort_fields() {
        // ldrsh w5, [x0] faulting at stage 2 level 3: ISV, SAS = halfword, SSE, SRT = 5.
        let iss: u64 = (1 << 24) | (0b01 << 22) | (1 << 21) | (5 << 16) | 0x07;
        let a = abort((0x24 << 26) | IL | iss, true);
        assert_eq!(a.fsc, 0x07);
        assert!(!a.write && !a.s1ptw);
        let acc = a.access.unwrap();
        assert_eq!(
            (acc.size, acc.reg, acc.sign_extend, acc.sixty_four),
            (2, 5, true, false)
        );
        // A stage-1 walk fault: S1PTW, WnR = 0, no syndrome.
        let a = abort((0x24 << 26) | IL | (1 << 7) | 0x0F, true);
        assert!(a.s1ptw && !a.write && a.access.is_none());
        // Instruction aborts never report WnR or a syndrome, whatever the bits say.
        let a = abort((0x20 << 26) | IL | (1 << 24) | (1 << 6) | 0x06, false);
        assert!(!a.write && a.access.is_none());
        // FnV.
        assert!(abort((0x24 << 26) | (1 << 10) | 0x10, true).far_not_valid);
    }

    fn acc(size: u8, sse: bool, sf: bool) -> Access {
        Access {
            size,
            sign_extend: sse,
            reg: 0,
            sixty_four: sf,
            acquire_release: false,
        }
    }

    #[test]
    fn load_sizes_and_sign_extension() {
        let data = 0xFFFF_FFFF_FFFF_FF80;
        assert_eq!(load_result(&acc(1, false, false), data), 0x80);
        assert_eq!(load_result(&acc(1, true, false), data), 0xFFFF_FF80);
        assert_eq!(
            load_result(&acc(1, true, true), data),
            0xFFFF_FFFF_FFFF_FF80
        );
        assert_eq!(load_result(&acc(2, false, true), 0x1_8000), 0x8000);
        assert_eq!(
            load_result(&acc(2, true, true), 0x1_8000),
            0xFFFF_FFFF_FFFF_8000
        );
        assert_eq!(
            load_result(&acc(4, true, true), 0x8000_0000),
            0xFFFF_FFFF_8000_0000
        );
        assert_eq!(
            load_result(&acc(4, false, false), 0x1_8000_0000),
            0x8000_0000
        );
        assert_eq!(load_result(&acc(8, false, true), u64::MAX), u64::MAX);
        // A positive value is not extended.
        assert_eq!(load_result(&acc(1, true, true), 0x7F), 0x7F);
    }
}
