//! Exception entry to the guest's EL1 as the Arm ARM defines it (D1.3 "Exception entry",
//! the AArch64.TakeException pseudocode) and stepping over an emulated instruction: the vector
//! offset, the ESR_EL1 values the hypervisor injects, the target PSTATE, and T32 ITSTATE.
//!
//! SPSR layouts (Arm ARM "SPSR_EL2"): from AArch64, M[4] = 0, M[3:0] = EL and SP selection,
//! SSBS at bit 12; from AArch32, M[4] = 1, T at bit 5, IT[1:0] at bits [26:25], IT[7:2] at bits
//! [15:10], SSBS at bit 23. NZCV [31:28], DIT (24), PAN (22), SS (21), IL (20) are in the same
//! place in both.

use crate::esr::{ec, IL};

/// SPSR.M[4]: the exception was taken from AArch32.
const M4_AARCH32: u64 = 1 << 4;
/// AArch32 SPSR.T: the T32 instruction set.
const T32: u64 = 1 << 5;
const NZCV: u64 = 0xF << 28;
const DIT: u64 = 1 << 24;
const PAN: u64 = 1 << 22;
/// AArch64 SPSR.SSBS (bit 12).
const SSBS_A64: u64 = 1 << 12;
/// D, A, I, F (bits [9:6]).
const DAIF: u64 = 0xF << 6;
/// M[3:0] = EL1h (EL1 using SP_EL1).
const M_EL1H: u64 = 0b0101;
/// M[3:0] = EL1t (EL1 using SP_EL0).
const M_EL1T: u64 = 0b0100;
/// SCTLR_EL1.SPAN (bit 23): 0 = set PSTATE.PAN on exception entry to EL1.
const SCTLR_SPAN: u64 = 1 << 23;
/// SCTLR_EL1.DSSBS (bit 44): the PSTATE.SSBS value on exception entry to EL1.
const SCTLR_DSSBS: u64 = 1 << 44;

/// Where the guest was when it trapped, as the vector table sees it (Arm ARM D1.3.1 "Exception
/// vectors": offsets from VBAR_EL1 for an exception taken to EL1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// EL1 with SP_EL0 (EL1t): "current EL with SP0", +0x000.
    CurrentSp0,
    /// EL1 with SP_EL1 (EL1h): "current EL with SPx", +0x200.
    CurrentSpx,
    /// EL0 in AArch64: "lower EL using AArch64", +0x400.
    LowerAarch64,
    /// EL0 in AArch32: "lower EL using AArch32", +0x600.
    LowerAarch32,
}

impl Source {
    /// The source of an exception whose saved PSTATE is `spsr` (SPSR_EL2). A guest runs only
    /// at EL1 or EL0, so M[3:0] values for EL2/EL3 cannot occur; they are treated as EL0.
    pub fn of(spsr: u64) -> Self {
        if spsr & M4_AARCH32 != 0 {
            return Self::LowerAarch32;
        }
        match spsr & 0xF {
            M_EL1H => Self::CurrentSpx,
            M_EL1T => Self::CurrentSp0,
            _ => Self::LowerAarch64,
        }
    }

    /// The vector offset of a synchronous exception from this source (add 0x80 for IRQ, 0x100
    /// for FIQ, 0x180 for SError).
    pub fn sync_offset(self) -> u64 {
        match self {
            Self::CurrentSp0 => 0x000,
            Self::CurrentSpx => 0x200,
            Self::LowerAarch64 => 0x400,
            Self::LowerAarch32 => 0x600,
        }
    }

    /// Whether the exception stays at EL1 (EC "without a change in EL": 0x21, 0x25).
    pub fn same_el(self) -> bool {
        matches!(self, Self::CurrentSp0 | Self::CurrentSpx)
    }
}

/// Features of the virtual CPU that change exception entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EntryFeatures {
    /// FEAT_PAN: PSTATE.PAN exists.
    pub pan: bool,
    /// FEAT_SSBS: PSTATE.SSBS exists.
    pub ssbs: bool,
}

/// The PSTATE the guest runs with at its EL1 vector (AArch64.TakeException, target EL1):
/// EL1h; D, A, I, F masked; NZCV and DIT kept; PAN set if SCTLR_EL1.SPAN = 0, else kept; SSBS =
/// SCTLR_EL1.DSSBS; IL, SS, BTYPE, UAO, TCO and everything else 0. `old` is SPSR_EL2 (either
/// layout), `sctlr` is SCTLR_EL1.
pub fn target_pstate(old: u64, sctlr: u64, features: EntryFeatures) -> u64 {
    let mut p = M_EL1H | DAIF | (old & (NZCV | DIT));
    if features.pan && (sctlr & SCTLR_SPAN == 0 || old & PAN != 0) {
        p |= PAN;
    }
    if features.ssbs && sctlr & SCTLR_DSSBS != 0 {
        p |= SSBS_A64;
    }
    p
}

/// ESR_EL1 of an injected UNDEF (Arm ARM "ISS encoding for exceptions with an unknown
/// reason"): EC 0x00, ISS 0. IL is 1: the Arm ARM defines IL as 1 for EC 0x00, whatever the
/// instruction's length.
pub fn undef_esr() -> u64 {
    u64::from(ec::UNKNOWN) << 26 | IL
}

/// The FSC of a synchronous external abort, not on a translation table walk.
pub const FSC_SYNC_EXTERNAL: u64 = 0b01_0000;

/// ESR_EL1 of an injected synchronous external abort (data or instruction): `abort_esr` with
/// FSC 0x10.
pub fn sync_external_abort_esr(
    source: Source,
    data: bool,
    write: bool,
    cache_maintenance: bool,
    far_valid: bool,
) -> u64 {
    abort_esr(
        source,
        data,
        write,
        cache_maintenance,
        far_valid,
        FSC_SYNC_EXTERNAL,
    )
}

/// The FSC of an Address size fault at level 0 ("as if exceeding PARange"): what a guest gets
/// for an IPA at or above the IPA size it was told (ID_AA64MMFR0_EL1.PARange), as KVM's
/// `kvm_inject_size_fault` gives it.
pub const FSC_ADDRESS_SIZE_L0: u64 = 0b00_0000;

/// ESR_EL1 of an injected abort (data or instruction) with fault status code `fsc`.
///
/// The injected ISS has ISV = 0: the Arm ARM (ESR_ELx, ISV) says ISV is 0 for all faults
/// reported in ESR_EL1 (only a stage-2 Data Abort taken to EL2 may report a syndrome). IL is
/// therefore 1 ("IL is 1 for ... an Instruction Abort, a Data Abort with ISV = 0, ..."), also
/// for a 16-bit T32 instruction. WnR and CM come from the access (data aborts only); FnV = 1
/// when FAR_EL1 cannot be given.
pub fn abort_esr(
    source: Source,
    data: bool,
    write: bool,
    cache_maintenance: bool,
    far_valid: bool,
    fsc: u64,
) -> u64 {
    let class = match (data, source.same_el()) {
        (true, false) => ec::DABT_LOW,
        (true, true) => ec::DABT_CUR,
        (false, false) => ec::IABT_LOW,
        (false, true) => ec::IABT_CUR,
    };
    let mut esr = u64::from(class) << 26 | IL | (fsc & 0x3F);
    if !far_valid {
        esr |= 1 << 10;
    }
    if data && cache_maintenance {
        // A fault on a cache maintenance instruction reports CM = 1 and WnR = 1.
        esr |= 1 << 8 | 1 << 6;
    } else if data && write {
        esr |= 1 << 6;
    }
    esr
}

/// The PC after the instruction at `elr` of length `len` bytes (2 or 4, from ESR.IL); AArch32
/// PCs stay 32-bit.
pub fn next_pc(elr: u64, len: u64, spsr: u64) -> u64 {
    let pc = elr.wrapping_add(len);
    if spsr & M4_AARCH32 != 0 {
        pc & 0xFFFF_FFFF
    } else {
        pc
    }
}

/// ITSTATE (IT[7:0]) of an AArch32 SPSR: IT[1:0] from bits [26:25], IT[7:2] from [15:10].
pub fn itstate(spsr: u64) -> u8 {
    ((((spsr >> 10) & 0x3F) << 2) | ((spsr >> 25) & 0b11)) as u8
}

fn with_itstate(spsr: u64, it: u8) -> u64 {
    let it = u64::from(it);
    (spsr & !(0x3F << 10) & !(0b11 << 25)) | ((it >> 2) << 10) | ((it & 0b11) << 25)
}

/// PSTATE.SS (bit 21 in both SPSR layouts): software step.
const SS: u64 = 1 << 21;
/// AArch64 PSTATE.BTYPE (bits [11:10]): branch target type (FEAT_BTI).
const BTYPE_A64: u64 = 0b11 << 10;

/// The SPSR after the hypervisor completed (emulated or skipped) the trapped instruction, as if
/// the CPU had executed it:
/// - PSTATE.SS := 0: a software step of one instruction is complete, so the step exception
///   comes next (Arm ARM D2.12 "Software Step exceptions": an instruction that completes
///   without an exception moves the state machine to active-pending, i.e. SS = 0).
/// - AArch64: PSTATE.BTYPE := 0: every instruction that is not a branch sets BTYPE to 0b00
///   (Arm ARM "PSTATE.BTYPE"), and no trapped instruction the hypervisor completes branches.
///   (From AArch32, bits [11:10] are IT[3:2] and are left to ITAdvance.)
/// - T32: ITSTATE advances (`advance_itstate`).
pub fn pstate_after_step(spsr: u64) -> u64 {
    let spsr = spsr & !SS;
    if spsr & M4_AARCH32 == 0 {
        spsr & !BTYPE_A64
    } else {
        advance_itstate(spsr)
    }
}

/// The SPSR after an instruction completed without branching: ITAdvance (Arm ARM
/// "Pseudocode: ITAdvance") for a T32 instruction from AArch32 — if IT[2:0] is 0 the IT block
/// ends (IT = 0), else IT[4:0] shifts left by one. Unchanged for AArch64 and A32.
pub fn advance_itstate(spsr: u64) -> u64 {
    if spsr & M4_AARCH32 == 0 || spsr & T32 == 0 {
        return spsr;
    }
    let it = itstate(spsr);
    let next = if it & 0b111 == 0 {
        0
    } else {
        (it & 0b1110_0000) | ((it << 1) & 0b1_1111)
    };
    with_itstate(spsr, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_offsets() {
        assert_eq!(Source::of(0x3C5).sync_offset(), 0x200); // EL1h, DAIF masked
        assert_eq!(Source::of(0x3C4).sync_offset(), 0x000); // EL1t
        assert_eq!(Source::of(0x000).sync_offset(), 0x400); // EL0t AArch64
        assert_eq!(Source::of(0x10).sync_offset(), 0x600); // AArch32 User
        assert_eq!(Source::of(0x30).sync_offset(), 0x600); // AArch32 User, T32
        assert!(Source::of(0x3C5).same_el());
        assert!(!Source::of(0x30).same_el());
    }

    #[test]
    fn injected_esrs() {
        assert_eq!(undef_esr(), 0x0200_0000);
        // The bad-guest matrix's values: EL1 load / store, EL1 fetch.
        let el1 = Source::CurrentSpx;
        assert_eq!(
            sync_external_abort_esr(el1, true, false, false, true),
            0x9600_0010
        );
        assert_eq!(
            sync_external_abort_esr(el1, true, true, false, true),
            0x9600_0050
        );
        assert_eq!(
            sync_external_abort_esr(el1, false, false, false, true),
            0x8600_0010
        );
        // From AArch32 EL0 (16-bit or not): EC 0x24, IL = 1 (ISV = 0).
        let a32 = Source::LowerAarch32;
        assert_eq!(
            sync_external_abort_esr(a32, true, true, false, true),
            0x9200_0050
        );
        assert_eq!(
            sync_external_abort_esr(a32, false, false, false, true),
            0x8200_0010
        );
        // FnV, CM.
        assert_eq!(
            sync_external_abort_esr(el1, true, false, false, false),
            0x9600_0410
        );
        assert_eq!(
            sync_external_abort_esr(el1, true, false, true, true),
            0x9600_0150
        );
    }

    #[test]
    fn pstate_on_entry() {
        let all = EntryFeatures {
            pan: true,
            ssbs: true,
        };
        // From EL0 AArch64 with NZCV set, interrupts unmasked, SPAN = 0: PAN set.
        let p = target_pstate(0xF000_0000, 0, all);
        assert_eq!(p, 0xF000_0000 | PAN | 0x3C5);
        // SPAN = 1: PAN kept as it was (clear here, set in the second case).
        assert_eq!(target_pstate(0, SCTLR_SPAN, all), 0x3C5);
        assert_eq!(target_pstate(PAN, SCTLR_SPAN, all), PAN | 0x3C5);
        // No FEAT_PAN: never set.
        assert_eq!(target_pstate(0, 0, EntryFeatures::default()), 0x3C5);
        // SSBS from SCTLR_EL1.DSSBS, not from the old PSTATE; DIT kept.
        assert_eq!(
            target_pstate(DIT | SSBS_A64, SCTLR_SPAN | SCTLR_DSSBS, all),
            DIT | SSBS_A64 | 0x3C5
        );
        assert_eq!(target_pstate(SSBS_A64, SCTLR_SPAN, all), 0x3C5);
        // SS, IL, BTYPE, T, IT, GE from an AArch32 source are dropped.
        let a32 = 0x10 | T32 | (1 << 21) | (1 << 20) | (0b11 << 25) | (0x3F << 10) | (0xF << 16);
        assert_eq!(target_pstate(a32, SCTLR_SPAN, all), 0x3C5);
    }

    fn t32_with_it(it: u8) -> u64 {
        with_itstate(0x30, it)
    }

    #[test]
    fn itstate_layout() {
        let s = t32_with_it(0b1010_1101);
        assert_eq!(s & (0b11 << 25), 0b01 << 25);
        assert_eq!((s >> 10) & 0x3F, 0b10_1011);
        assert_eq!(itstate(s), 0b1010_1101);
    }

    #[test]
    fn it_advance() {
        // A four-instruction block: IT[7:5] = firstcond[3:1] = 000, IT[4:0] = 11001.
        let mut s = t32_with_it(0b0001_1001); // cond 000 1, mask 1001 -> IT[4:0] = 11001
        s = advance_itstate(s);
        assert_eq!(itstate(s), 0b0001_0010);
        s = advance_itstate(s);
        assert_eq!(itstate(s), 0b0000_0100);
        s = advance_itstate(s);
        assert_eq!(itstate(s), 0b0000_1000);
        // IT[2:0] = 000: the last instruction of the block; IT goes to 0.
        s = advance_itstate(s);
        assert_eq!(itstate(s), 0);
        // Outside an IT block nothing changes.
        assert_eq!(advance_itstate(t32_with_it(0)), t32_with_it(0));
        // The other SPSR bits survive.
        let s = with_itstate(0x8000_0030 | (1 << 22), 0b1110_0100);
        let n = advance_itstate(s);
        assert_eq!(n & !(0x3F << 10) & !(0b11 << 25), 0x8000_0030 | (1 << 22));
        assert_eq!(itstate(n), 0b1110_1000);
        // AArch64 and A32 SPSRs are left alone.
        assert_eq!(advance_itstate(0x3C5 | (0x3F << 10)), 0x3C5 | (0x3F << 10));
        assert_eq!(advance_itstate(0x10 | (1 << 25)), 0x10 | (1 << 25));
    }

    #[test]
    fn step_clears_ss_and_btype() {
        // AArch64 EL1h with SS and BTYPE = 0b11, NZCV, DAIF: SS and BTYPE go, the rest stays.
        let a64 = 0xF000_03C5 | SS | BTYPE_A64;
        assert_eq!(pstate_after_step(a64), 0xF000_03C5);
        // AArch32 T32 in an IT block with SS: SS goes, bits [11:10] are IT[3:2] and advance.
        let s = with_itstate(0x30 | SS, 0b0001_1001);
        let n = pstate_after_step(s);
        assert_eq!(n & SS, 0);
        assert_eq!(itstate(n), 0b0001_0010);
        // A32: only SS changes.
        assert_eq!(pstate_after_step(0x10 | SS | (1 << 11)), 0x10 | (1 << 11));
    }

    #[test]
    fn address_size_fault_esr() {
        // EL1 load / store to an IPA above the IPA size: FSC 0b000000 (level 0).
        let el1 = Source::CurrentSpx;
        assert_eq!(
            abort_esr(el1, true, false, false, true, FSC_ADDRESS_SIZE_L0),
            0x9600_0000
        );
        assert_eq!(
            abort_esr(el1, true, true, false, true, FSC_ADDRESS_SIZE_L0),
            0x9600_0040
        );
        assert_eq!(
            abort_esr(
                Source::LowerAarch64,
                false,
                false,
                false,
                true,
                FSC_ADDRESS_SIZE_L0
            ),
            0x8200_0000
        );
    }

    #[test]
    fn pc_advance() {
        assert_eq!(next_pc(0x4000_1000, 4, 0x3C5), 0x4000_1004);
        assert_eq!(next_pc(0x8000, 2, 0x30), 0x8002);
        assert_eq!(next_pc(0xFFFF_FFFE, 2, 0x30), 0);
    }
}
