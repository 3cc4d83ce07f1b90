//! The ID registers the guest reads (trapped by HCR_EL2.TID3) and how each is sanitised: an
//! allow-list of the 4-bit fields that read as the hardware's value (every other field reads 0),
//! the per-VM properties that change it (`IdPolicy`), and which encodings read as zero. The feature policy behind the overrides (the team's, summarised in docs/robustness.md):
//! no feature the hypervisor traps or does not virtualise is advertised, and the physical address
//! range is the IPA size the stage 2 implements.
//!
//! The trapped space is op0 = 3, op1 = 0, CRn = 0, CRm = 1..=7 (Arm ARM D19.2 "ID register
//! groups", HCR_EL2.TID3). Encodings there that the Arm ARM leaves unallocated are "Reserved,
//! RAZ"; registers newer than this table (whose features the hypervisor knows nothing about)
//! also read as zero, which says "not implemented" for every field.

/// Per-VM properties that change what the guest is told (a later guest kind with GIC
/// pass-through sets `gic`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IdPolicy {
    /// The guest may use the GIC CPU interface through System registers: ID_AA64PFR0_EL1.GIC
    /// and ID_PFR1_EL1.GIC pass through. False for the built-in guest, whose interrupts the
    /// hypervisor does not virtualise (its ICC_* accesses are UNDEFINED).
    pub gic: bool,
    /// Some EL implements AArch32 (ID_AA64PFR0_EL1.EL0..EL3 has a 0b0010): else every AArch32
    /// ID register reads as 0 (Arm ARM: their values are UNKNOWN without AArch32; 0 says
    /// "nothing").
    pub aarch32: bool,
    /// FEAT_MOPS is enabled for the guest (HCRX_EL2.MSCEn = 1): ID_AA64ISAR2_EL1.MOPS passes.
    pub mops: bool,
    /// Pointer authentication is the guest's (HCR_EL2.API = APK = 1: PAC instructions and the
    /// key registers do not trap): ID_AA64ISAR1_EL1.APA/API/GPA/GPI and
    /// ID_AA64ISAR2_EL1.APA3/GPA3/PAC_frac pass. Without API/APK those instructions and
    /// registers trap to EL2 (Arm ARM D8.9 / HCR_EL2.API), so advertising them would promise
    /// a feature the guest cannot use: false for the built-in guest.
    pub ptrauth: bool,
}

/// A 4-bit ID field: its lowest bit.
pub type Field = u8;

/// What the guest reads for one encoding: an allow-list. Every field not listed reads as 0
/// ("not implemented"), so a feature newer than this table is never advertised by accident (as
/// KVM's sanitiser does). `PARANGE` is forced, not passed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IdRead {
    /// The hardware's value of these 4-bit fields; all others 0.
    Fields(&'static [Field]),
    /// The whole hardware value: registers each of whose fields is a known AArch32 EL0
    /// instruction-set or memory-model feature (ID_ISARn, ID_MMFRn, MVFRn).
    Whole,
    /// Zero (unallocated, IMPLEMENTATION DEFINED, or a register this table does not know).
    Zero,
}

/// Whether (op0, op1, CRn, CRm, op2) lies in the ID space that HCR_EL2.TID3 traps.
pub fn is_id_space(op0: u8, op1: u8, crn: u8, crm: u8) -> bool {
    op0 == 3 && op1 == 0 && crn == 0 && (1..=7).contains(&crm)
}

/// ID_AA64MMFR0_EL1.PARange for a 40-bit (1 TiB) physical address space.
pub const PARANGE_40: u8 = 0b0010;

/// The size in bits of the physical address range an ID_AA64MMFR0_EL1.PARange value encodes
/// (Arm ARM ID_AA64MMFR0_EL1); None for a reserved encoding.
pub fn parange_bits(parange: u8) -> Option<u32> {
    Some(match parange {
        0b0000 => 32,
        0b0001 => 36,
        0b0010 => 40,
        0b0011 => 42,
        0b0100 => 44,
        0b0101 => 48,
        0b0110 => 52,
        0b0111 => 56,
        _ => return None,
    })
}

/// Whether a CPU whose ID_AA64MMFR0_EL1.PARange is `parange` can give a guest an `ipa_bits` IPA
/// space: the stage-2 input size may not exceed the physical address size the CPU implements
/// (Arm ARM VTCR_EL2.T0SZ/PS: an IPA size beyond PARange is not supported; KVM limits the IPA
/// size to PARange), and the guest is told PARange = `ipa_bits`.
pub fn ipa_size_supported(parange: u8, ipa_bits: u32) -> bool {
    parange_bits(parange).is_some_and(|pa| pa >= ipa_bits)
}

const GIC_PFR0: Field = 24;
const GIC_PFR1: Field = 28;
const MOPS_ISAR2: Field = 16;
// Pointer authentication (only with IdPolicy::ptrauth).
const APA_ISAR1: Field = 4;
const API_ISAR1: Field = 8;
const GPA_ISAR1: Field = 24;
const GPI_ISAR1: Field = 28;
const GPA3_ISAR2: Field = 8;
const APA3_ISAR2: Field = 12;
const PAC_FRAC_ISAR2: Field = 24;

// AArch32 (EL0 may run AArch32): trace, activity monitors and AArch32 EL2 hidden.
const ID_PFR0: &[Field] = &[0, 4, 8, 12, 16, 24, 28]; // State0..3, CSV2, DIT, RAS (not AMU)
const ID_PFR1: &[Field] = &[0, 4, 8, 16, 20, 28]; // ProgMod, Security, MProgMod, GenTimer, Sec_frac, GIC
const ID_DFR0: &[Field] = &[0, 4, 8, 20, 24]; // CopDbg, CopSDbg, MMapDbg, MProfDbg, PerfMon
const ID_PFR2: &[Field] = &[0, 4, 8]; // CSV3, SSBS, RAS_frac
const ID_DFR1: &[Field] = &[0]; // MTPMU
const ID_MMFR5: &[Field] = &[0]; // ETS

const AA64PFR0: &[Field] = &[
    0,  // EL0
    4,  // EL1
    12, // EL3 (the firmware behind SMC)
    16, // FP
    20, // AdvSIMD
    24, // GIC: only with IdPolicy::gic
    28, // RAS: error records emulated as RAZ/WI (HCR_EL2.TERR)
    32, // SVE: offered
    48, // DIT
    56, // CSV2
    60, // CSV3
        // Not: EL2 (no nested virtualisation), SEL2, MPAM, AMU (CPTR_EL2.TAM), RME.
];
const AA64PFR1: &[Field] = &[
    0,  // BT
    4,  // SSBS
    12, // RAS_frac
    32, // CSV2_frac
        // Not: MTE (HCR_EL2.ATA = 0), MPAM_frac, SME (CPTR_EL2.TSM), RNDR_trap, NMI, MTE_frac,
        // GCS, THE, MTEX, DF2, PFAR.
];
const AA64DFR0: &[Field] = &[
    0,  // DebugVer: the guest owns self-hosted debug (MDCR_EL2.TDA = 0)
    8,  // PMUVer: the guest owns the PMU (MDCR_EL2.TPM = 0, HPMN = N)
    12, // BRPs
    20, // WRPs
    28, // CTX_CMPs
    36, // DoubleLock
        // Not: TraceVer (CPTR_EL2.TTA), PMSVer (MDCR_EL2.TPMS), TraceFilt (MDCR_EL2.TTRF),
        // TraceBuffer (MDCR_EL2.E2TB), MTPMU, BRBE, ExtTrcBuff, HPMN0, PMSS, SEBEP.
];
const AA64ISAR0: &[Field] = &[
    4, 8, 12, 16, 20, 28, 32, 36, 40, 44, 48, 52, 56,
    60,
    // AES, SHA1, SHA2, CRC32, Atomic, RDM, SHA3, SM3, SM4, DP, FHM, TS, TLB, RNDR.
    // Not: TME (HCR_EL2.TME = 0 makes TSTART UNDEFINED).
];
const AA64ISAR1: &[Field] = &[
    0, APA_ISAR1, API_ISAR1, 12, 16, 20, GPA_ISAR1, GPI_ISAR1, 32, 36, 40, 44, 48, 52,
    56,
    // DPB, APA, API, JSCVT, FCMA, LRCPC, GPA, GPI, FRINTTS, SB, SPECRES, BF16, DGH, I8MM, XS.
    // APA/API/GPA/GPI only with IdPolicy::ptrauth. Not: LS64.
];
const AA64ISAR2: &[Field] = &[
    0,  // WFxT
    4,  // RPRES
    8,  // GPA3: only with IdPolicy::ptrauth
    12, // APA3: only with IdPolicy::ptrauth
    16, // MOPS: only with IdPolicy::mops (HCRX_EL2.MSCEn)
    20, // BC
    24, // PAC_frac: only with IdPolicy::ptrauth
    28, // CLRBHB
        // Not: SYSREG_128, SYSINSTR_128, and everything newer.
];
const AA64MMFR0: &[Field] = &[
    0,  // PARange: forced to the IPA size (PARANGE_40)
    4,  // ASIDBits
    8,  // BigEnd
    12, // SNSMem
    16, // BigEndEL0
    20, // TGran16
    24, // TGran64
    28, // TGran4
    44, // ExS
        // Not: TGran*_2 (stage 2 is the hypervisor's), FGT, ECV.
];
const AA64MMFR1: &[Field] = &[
    0,  // HAFDBS
    12, // HPDS
    16, // LO
    20, // PAN
    24, // SpecSEI
    36, // ETS
    48, // nTLBPA
    56, // CMOW
    60, // ECBHB
        // Not: VMIDBits, VH, XNX, TWED, HCX (EL2 features), AFP, TIDCP1, and everything newer.
];
const AA64MMFR2: &[Field] = &[
    0,  // CnP
    4,  // UAO
    8,  // LSM
    12, // IESB
    16, // VARange
    20, // CCIDX
    28, // ST
    32, // AT
    36, // IDS
    48, // TTL
    52, // BBM
    60, // E0PD
        // Not: NV, FWB, EVT (EL2 features).
];

/// The rule for ID register (op0 3, op1 0, CRn 0, `crm`, `op2`).
pub fn rule(crm: u8, op2: u8) -> IdRead {
    use IdRead::{Fields, Whole, Zero};
    match (crm, op2) {
        (1, 0) => Fields(ID_PFR0),
        (1, 1) => Fields(ID_PFR1),
        (1, 2) => Fields(ID_DFR0),
        (1, 3) => Zero, // ID_AFR0_EL1: IMPLEMENTATION DEFINED
        // ID_MMFR0..3; ID_ISAR0..5, ID_MMFR4, ID_ISAR6; MVFR0..2.
        (1, 4..=7) | (2, 0..=7) | (3, 0..=2) => Whole,
        (3, 4) => Fields(ID_PFR2),
        (3, 5) => Fields(ID_DFR1),
        (3, 6) => Fields(ID_MMFR5),
        (4, 0) => Fields(AA64PFR0),
        (4, 1) => Fields(AA64PFR1),
        (4, 4) => Whole, // ID_AA64ZFR0_EL1: SVE is offered, with all its extensions
        // ID_AA64SMFR0_EL1 (SME trapped), ID_AA64PFR2_EL1, ID_AA64FPFR0_EL1: zero.
        (5, 0) => Fields(AA64DFR0),
        // ID_AA64DFR1/2_EL1: zero; ID_AA64AFR0/1_EL1: IMPLEMENTATION DEFINED, zero.
        (6, 0) => Fields(AA64ISAR0),
        (6, 1) => Fields(AA64ISAR1),
        (6, 2) => Fields(AA64ISAR2),
        // ID_AA64ISAR3_EL1: zero.
        (7, 0) => Fields(AA64MMFR0),
        (7, 1) => Fields(AA64MMFR1),
        (7, 2) => Fields(AA64MMFR2),
        // ID_AA64MMFR3/4_EL1 and the rest: zero.
        _ => Zero,
    }
}

/// Whether (CRm, op2) is an AArch32 ID register (CRm 1..=3).
fn is_aarch32(crm: u8) -> bool {
    (1..=3).contains(&crm)
}

/// Whether the field at `shift` of register (CRm, op2) passes under `policy`.
fn allowed(crm: u8, op2: u8, shift: Field, policy: IdPolicy) -> bool {
    match (crm, op2, shift) {
        (4, 0, GIC_PFR0) | (1, 1, GIC_PFR1) => policy.gic,
        (6, 2, MOPS_ISAR2) => policy.mops,
        (6, 1, APA_ISAR1 | API_ISAR1 | GPA_ISAR1 | GPI_ISAR1)
        | (6, 2, GPA3_ISAR2 | APA3_ISAR2 | PAC_FRAC_ISAR2) => policy.ptrauth,
        _ => true,
    }
}

/// What the guest reads for (CRm, op2) when the hardware register holds `hw`, under `policy`.
pub fn sanitise(crm: u8, op2: u8, hw: u64, policy: IdPolicy) -> u64 {
    if is_aarch32(crm) && !policy.aarch32 {
        return 0;
    }
    match rule(crm, op2) {
        IdRead::Fields(fields) => {
            let v = fields
                .iter()
                .filter(|&&shift| allowed(crm, op2, shift, policy))
                .fold(0, |v, &shift| v | (hw & (0xF << shift)));
            if (crm, op2) == (7, 0) {
                (v & !0xF) | u64::from(PARANGE_40)
            } else {
                v
            }
        }
        IdRead::Whole => hw,
        IdRead::Zero => 0,
    }
}

/// Whether some EL implements AArch32, from the hardware's ID_AA64PFR0_EL1: EL0..EL3 fields
/// (bits [15:0]) equal to 0b0010 ("AArch64 or AArch32").
pub fn aarch32_implemented(pfr0: u64) -> bool {
    (0..4).any(|el| (pfr0 >> (4 * el)) & 0xF == 0b0010)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: IdPolicy = IdPolicy {
        gic: true,
        aarch32: true,
        mops: true,
        ptrauth: true,
    };
    const BUILTIN: IdPolicy = IdPolicy {
        gic: false,
        aarch32: true,
        mops: false,
        ptrauth: false,
    };

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
        let v = sanitise(7, 0, hw, ALL);
        assert_eq!(field(v, 0), 0b0010);
        assert_eq!(field(v, 56), 0); // FGT
        assert_eq!(field(v, 60), 0); // ECV
        for s in [4, 8, 12, 16, 20, 24, 28] {
            assert_eq!(field(v, s), field(hw, s), "mmfr0 {s}");
        }
        assert_eq!(field(sanitise(7, 0, 0x1, ALL), 0), 0b0010);
    }

    #[test]
    fn ipa_size_needs_the_pa_range() {
        assert!(ipa_size_supported(0b0010, 40)); // exactly 40
        assert!(ipa_size_supported(0b0101, 40)); // 48-bit PA
        assert!(ipa_size_supported(0b0110, 40)); // 52
        assert!(!ipa_size_supported(0b0001, 40)); // 36-bit PA: refuse
        assert!(!ipa_size_supported(0b0000, 40));
        assert!(!ipa_size_supported(0b1111, 40)); // reserved encoding
        assert_eq!(parange_bits(0b0100), Some(44));
    }

    #[test]
    fn trapped_features_hidden() {
        let all = u64::MAX;
        // PFR0: AMU, MPAM, SEL2, RME, EL2 zero; FP, AdvSIMD, SVE, RAS pass.
        let pfr0 = sanitise(4, 0, all, ALL);
        for s in [8, 36, 40, 44, 52] {
            assert_eq!(field(pfr0, s), 0, "pfr0 {s}");
        }
        for s in [0, 4, 16, 20, 24, 28, 32] {
            assert_eq!(field(pfr0, s), 0xF, "pfr0 {s}");
        }
        // PFR1: SME and MTE zero; BT and SSBS pass.
        let pfr1 = sanitise(4, 1, all, ALL);
        assert_eq!(field(pfr1, 24), 0);
        assert_eq!(field(pfr1, 8), 0);
        assert_eq!(field(pfr1, 0), 0xF);
        assert_eq!(field(pfr1, 4), 0xF);
        // DFR0: trace and SPE zero, PMU and debug pass.
        let dfr0 = sanitise(5, 0, all, ALL);
        for s in [4, 32, 40, 44] {
            assert_eq!(field(dfr0, s), 0, "dfr0 {s}");
        }
        assert_eq!(field(dfr0, 0), 0xF);
        assert_eq!(field(dfr0, 8), 0xF);
        // SVE's ZFR0 passes, SME's SMFR0 is zero.
        assert_eq!(sanitise(4, 4, 0x1234, ALL), 0x1234);
        assert_eq!(sanitise(4, 5, all, ALL), 0);
        // LS64 hidden; DPB passes.
        let isar1 = sanitise(6, 1, all, ALL);
        assert_eq!(field(isar1, 60), 0);
        assert_eq!(field(isar1, 0), 0xF);
    }

    #[test]
    fn ptrauth_is_a_per_vm_property() {
        let all = u64::MAX;
        // ISAR1: APA [7:4], API [11:8], GPA [27:24], GPI [31:28].
        let with = sanitise(6, 1, all, ALL);
        let without = sanitise(6, 1, all, BUILTIN);
        for s in [4, 8, 24, 28] {
            assert_eq!(field(with, s), 0xF, "isar1 {s} with ptrauth");
            assert_eq!(field(without, s), 0, "isar1 {s} without ptrauth");
        }
        // The other ISAR1 fields do not depend on it.
        assert_eq!(with & !0xFF00_0FF0, without);
        // ISAR2: GPA3 [11:8], APA3 [15:12], PAC_frac [27:24].
        let with = sanitise(6, 2, all, ALL);
        let without = sanitise(
            6,
            2,
            all,
            IdPolicy {
                mops: true,
                ..BUILTIN
            },
        );
        for s in [8, 12, 24] {
            assert_eq!(field(with, s), 0xF, "isar2 {s} with ptrauth");
            assert_eq!(field(without, s), 0, "isar2 {s} without ptrauth");
        }
        assert_eq!(with & !0x0F00_FF00, without);
        // QEMU -cpu max,pauth-impdef=on: API = 1, GPI = 1 (IMPLEMENTATION DEFINED algorithm).
        let qemu = (1 << 8) | (1 << 28);
        assert_eq!(sanitise(6, 1, qemu, ALL), qemu);
        assert_eq!(sanitise(6, 1, qemu, BUILTIN), 0);
    }

    #[test]
    fn unknown_fields_read_zero() {
        // An allow-list: fields this table does not name read 0 whatever the hardware says.
        let all = u64::MAX;
        assert_eq!(field(sanitise(4, 1, all, ALL), 44), 0); // PFR1.GCS
        assert_eq!(field(sanitise(4, 1, all, ALL), 60), 0); // PFR1.PFAR
        assert_eq!(field(sanitise(6, 2, all, ALL), 56), 0); // ISAR2.LUT
        assert_eq!(field(sanitise(7, 1, all, ALL), 44), 0); // MMFR1.AFP
        assert_eq!(field(sanitise(5, 0, all, ALL), 60), 0); // DFR0.HPMN0
        assert_eq!(sanitise(5, 1, all, ALL), 0); // ID_AA64DFR1_EL1
    }

    #[test]
    fn gic_is_a_per_vm_property() {
        let hw = 0x0100_0011; // GIC = 1, EL1 = EL0 = AArch64 only
        assert_eq!(field(sanitise(4, 0, hw, BUILTIN), 24), 0);
        assert_eq!(field(sanitise(4, 0, hw, ALL), 24), 1);
        // ID_PFR1.GIC (bits [31:28]) likewise.
        let pfr1 = 0x1000_0000;
        assert_eq!(sanitise(1, 1, pfr1, BUILTIN), 0);
        assert_eq!(sanitise(1, 1, pfr1, ALL), pfr1);
        // MOPS only when HCRX_EL2.MSCEn enables it.
        assert_eq!(field(sanitise(6, 2, 1 << 16, BUILTIN), 16), 0);
        assert_eq!(field(sanitise(6, 2, 1 << 16, ALL), 16), 1);
    }

    #[test]
    fn aarch32_registers_without_aarch32() {
        assert!(aarch32_implemented(0x12)); // EL0 AArch32
        assert!(!aarch32_implemented(0x1111));
        let none = IdPolicy {
            aarch32: false,
            ..ALL
        };
        for (crm, op2) in [(1, 0), (1, 1), (2, 0), (3, 0), (3, 6)] {
            assert_eq!(sanitise(crm, op2, u64::MAX, none), 0, "crm {crm} op2 {op2}");
        }
        // The AArch64 ones are unaffected.
        assert_ne!(sanitise(4, 0, u64::MAX, none), 0);
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
            assert_eq!(sanitise(crm, op2, u64::MAX, ALL), 0, "crm {crm} op2 {op2}");
        }
        assert_eq!(sanitise(1, 3, u64::MAX, ALL), 0); // ID_AFR0_EL1
                                                      // The AArch32 instruction-set registers pass whole (ID_ISAR0, MVFR0).
        assert_eq!(sanitise(2, 0, 0x0210_1110, ALL), 0x0210_1110);
        assert_eq!(sanitise(3, 0, 0x1011_1111, ALL), 0x1011_1111);
    }
}
