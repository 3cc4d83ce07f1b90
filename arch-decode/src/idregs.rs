//! The ID registers the guest reads (trapped by HCR_EL2.TID3) and how each is sanitised: which
//! encodings read as the hardware's value with some 4-bit fields overridden, and which read as
//! zero. The feature policy behind the overrides (the team's, summarised in docs/robustness.md):
//! no feature the hypervisor traps or does not virtualise is advertised, and the physical address
//! range is the IPA size the stage 2 implements.
//!
//! The trapped space is op0 = 3, op1 = 0, CRn = 0, CRm = 1..=7 (Arm ARM D19.2 "ID register
//! groups", HCR_EL2.TID3). Encodings there that the Arm ARM leaves unallocated are "Reserved,
//! RAZ"; registers newer than this table (whose features the hypervisor knows nothing about)
//! also read as zero, which says "not implemented" for every field.

/// A 4-bit ID field forced to a value: (lowest bit, value).
pub type Field = (u8, u8);

/// What the guest reads for one encoding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IdRead {
    /// The hardware's value with these fields overridden.
    Hardware(&'static [Field]),
    /// Zero (unallocated, IMPLEMENTATION DEFINED, or a register this table does not know).
    Zero,
}

/// Whether (op0, op1, CRn, CRm, op2) lies in the ID space that HCR_EL2.TID3 traps.
pub fn is_id_space(op0: u8, op1: u8, crn: u8, crm: u8) -> bool {
    op0 == 3 && op1 == 0 && crn == 0 && (1..=7).contains(&crm)
}

/// ID_AA64MMFR0_EL1.PARange for a 40-bit (1 TiB) physical address space.
pub const PARANGE_40: u8 = 0b0010;

// AArch32 ID registers (EL0 may run AArch32): trace and activity monitors hidden.
const ID_PFR0: &[Field] = &[(20, 0)]; // AMU
const ID_DFR0: &[Field] = &[(12, 0), (16, 0), (28, 0)]; // CopTrc, MMapTrc, TraceFilt
const PASS: &[Field] = &[];

const AA64PFR0: &[Field] = &[
    (36, 0), // SEL2: no Secure EL2
    (40, 0), // MPAM: not offered
    (44, 0), // AMU: activity monitors trapped (CPTR_EL2.TAM)
    (52, 0), // RME: no Realm Management Extension
];
const AA64PFR1: &[Field] = &[
    (8, 0),  // MTE: not offered (HCR_EL2.ATA = 0)
    (16, 0), // MPAM_frac
    (24, 0), // SME: trapped (CPTR_EL2.TSM)
    (28, 0), // RNDR_trap: an EL3 control
    (36, 0), // NMI: PSTATE.ALLINT is not handled by exception injection
    (40, 0), // MTE_frac
    (52, 0), // MTEX
    (60, 0), // PFAR: PFAR_EL1/EL2 are not virtualised
];
const AA64DFR0: &[Field] = &[
    (4, 0),  // TraceVer: trace trapped (CPTR_EL2.TTA)
    (32, 0), // PMSVer: SPE trapped (MDCR_EL2.TPMS)
    (40, 0), // TraceFilt
    (44, 0), // TraceBuffer
    (52, 0), // BRBE: branch record buffer not virtualised
    (56, 0), // ExtTrcBuff
];
const AA64ISAR0: &[Field] = &[(24, 0)]; // TME: HCR_EL2.TME = 0 makes TSTART UNDEFINED
const AA64ISAR1: &[Field] = &[
    (4, 0),  // APA: pointer authentication traps (HCR_EL2.API = APK = 0)
    (8, 0),  // API
    (24, 0), // GPA
    (28, 0), // GPI
    (60, 0), // LS64: needs HCRX_EL2 enables
];
const AA64ISAR2: &[Field] = &[
    (8, 0),  // GPA3
    (12, 0), // APA3
    (16, 0), // MOPS: needs HCRX_EL2.MSCEn
    (24, 0), // PAC_frac
    (32, 0), // SYSREG_128: needs HCRX_EL2.D128En
    (36, 0), // SYSINSTR_128
];
const AA64MMFR0: &[Field] = &[
    (0, PARANGE_40), // PARange: the stage-2 IPA size (hyp/src/vmm/vm.rs IPA_BITS = 40)
    (56, 0),         // FGT: an EL2 feature
];
const AA64MMFR1: &[Field] = &[
    (8, 0),  // VH: no nested virtualisation
    (32, 0), // TWED: an EL2 feature
    (40, 0), // HCX: an EL2 feature
];
const AA64MMFR2: &[Field] = &[
    (24, 0), // NV: no nested virtualisation
    (40, 0), // FWB: an EL2 feature
    (56, 0), // EVT: an EL2 feature
];

/// The rule for ID register (op0 3, op1 0, CRn 0, `crm`, `op2`).
pub fn rule(crm: u8, op2: u8) -> IdRead {
    use IdRead::{Hardware, Zero};
    match (crm, op2) {
        (1, 0) => Hardware(ID_PFR0),
        (1, 2) => Hardware(ID_DFR0),
        (1, 3) => Zero, // ID_AFR0_EL1: IMPLEMENTATION DEFINED
        // ID_PFR1, ID_MMFR0..3; ID_ISAR0..5, ID_MMFR4, ID_ISAR6.
        (1, 1) | (1, 4..=7) | (2, 0..=7) => Hardware(PASS),
        // MVFR0..2, ID_PFR2, ID_DFR1, ID_MMFR5 (CRm 3, op2 3 and 7 are unallocated).
        (3, 0..=2) | (3, 4..=6) => Hardware(PASS),
        (4, 0) => Hardware(AA64PFR0),
        (4, 1) => Hardware(AA64PFR1),
        (4, 4) => Hardware(PASS), // ID_AA64ZFR0_EL1: SVE is offered
        // ID_AA64SMFR0_EL1 (SME trapped), ID_AA64PFR2_EL1, ID_AA64FPFR0_EL1: zero.
        (5, 0) => Hardware(AA64DFR0),
        (5, 1) => Hardware(PASS), // ID_AA64DFR1_EL1
        // ID_AA64DFR2_EL1: zero; ID_AA64AFR0/1_EL1: IMPLEMENTATION DEFINED, zero.
        (6, 0) => Hardware(AA64ISAR0),
        (6, 1) => Hardware(AA64ISAR1),
        (6, 2) => Hardware(AA64ISAR2),
        // ID_AA64ISAR3_EL1: zero.
        (7, 0) => Hardware(AA64MMFR0),
        (7, 1) => Hardware(AA64MMFR1),
        (7, 2) => Hardware(AA64MMFR2),
        // ID_AA64MMFR3/4_EL1 and the rest: zero.
        _ => Zero,
    }
}

/// Applies `fields` to the hardware value `hw`.
pub fn apply(hw: u64, fields: &[Field]) -> u64 {
    fields.iter().fold(hw, |v, &(shift, value)| {
        (v & !(0xF << shift)) | (u64::from(value & 0xF) << shift)
    })
}

/// What the guest reads for (CRm, op2) when the hardware register holds `hw` (ignored for
/// zero rules).
pub fn sanitise(crm: u8, op2: u8, hw: u64) -> u64 {
    match rule(crm, op2) {
        IdRead::Hardware(fields) => apply(hw, fields),
        IdRead::Zero => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(v: u64, shift: u8) -> u64 {
        (v >> shift) & 0xF
    }

    #[test]
    fn id_space() {
        assert!(is_id_space(3, 0, 0, 1));
        assert!(is_id_space(3, 0, 0, 7));
        assert!(!is_id_space(3, 0, 0, 0)); // MIDR, MPIDR: not TID3
        assert!(!is_id_space(3, 1, 0, 4)); // op1 != 0
        assert!(!is_id_space(3, 0, 1, 4)); // SCTLR_EL1's CRn
        assert!(!is_id_space(2, 0, 0, 4));
    }

    #[test]
    fn parange_is_40_bits() {
        // -cpu max: PARange 52 bits (0b0110), 4K/16K/64K granules, FGT, ECV.
        let hw = 0x1122_0000_0010_1126;
        let v = sanitise(7, 0, hw);
        assert_eq!(field(v, 0), 0b0010);
        assert_eq!(field(v, 56), 0);
        // Every other field unchanged.
        assert_eq!(v & !0xF & !(0xF << 56), hw & !0xF & !(0xF << 56));
        // A CPU with a smaller PA range still reports 40 bits: the guest's IPA space.
        assert_eq!(field(sanitise(7, 0, 0x1), 0), 0b0010);
    }

    #[test]
    fn trapped_features_hidden() {
        let all = u64::MAX;
        // PFR0: AMU, MPAM, SEL2, RME zero; FP, AdvSIMD, SVE, GIC pass.
        let pfr0 = sanitise(4, 0, all);
        for s in [36, 40, 44, 52] {
            assert_eq!(field(pfr0, s), 0, "pfr0 {s}");
        }
        for s in [16, 20, 24, 32] {
            assert_eq!(field(pfr0, s), 0xF, "pfr0 {s}");
        }
        // PFR1: SME and MTE zero; BT and SSBS pass.
        let pfr1 = sanitise(4, 1, all);
        assert_eq!(field(pfr1, 24), 0);
        assert_eq!(field(pfr1, 8), 0);
        assert_eq!(field(pfr1, 0), 0xF);
        assert_eq!(field(pfr1, 4), 0xF);
        // DFR0: trace and SPE zero, PMU and debug pass.
        let dfr0 = sanitise(5, 0, all);
        for s in [4, 32, 40, 44] {
            assert_eq!(field(dfr0, s), 0, "dfr0 {s}");
        }
        assert_eq!(field(dfr0, 0), 0xF);
        assert_eq!(field(dfr0, 8), 0xF);
        // SVE's ZFR0 passes, SME's SMFR0 is zero.
        assert_eq!(sanitise(4, 4, 0x1234), 0x1234);
        assert_eq!(sanitise(4, 5, all), 0);
        // Pointer authentication hidden.
        let isar1 = sanitise(6, 1, all);
        assert_eq!(field(isar1, 4) | field(isar1, 8), 0);
        assert_eq!(field(isar1, 0), 0xF); // DPB
    }

    #[test]
    fn unallocated_and_unknown_read_zero() {
        for (crm, op2) in [
            (3, 3),
            (3, 7),
            (4, 2),
            (4, 3),
            (4, 6),
            (4, 7),
            (5, 2),
            (5, 3),
        ] {
            assert_eq!(rule(crm, op2), IdRead::Zero, "crm {crm} op2 {op2}");
        }
        for (crm, op2) in [
            (5, 4),
            (5, 5),
            (5, 6),
            (5, 7),
            (6, 3),
            (6, 7),
            (7, 3),
            (7, 7),
        ] {
            assert_eq!(sanitise(crm, op2, u64::MAX), 0, "crm {crm} op2 {op2}");
        }
        assert_eq!(sanitise(1, 3, u64::MAX), 0); // ID_AFR0_EL1
                                                 // The AArch32 registers pass (ID_ISAR0, MVFR0).
        assert_eq!(sanitise(2, 0, 0x0210_1110), 0x0210_1110);
        assert_eq!(sanitise(3, 0, 0x1011_1111), 0x1011_1111);
    }
}
