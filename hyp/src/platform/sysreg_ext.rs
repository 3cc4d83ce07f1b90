//! EL2 trap-control fields and registers that aarch64-cpu 11 does not model: the fields of
//! CPTR_EL2 in its HCR_EL2.E2H = 0 layout (the crate has only TAM) and ZCR_EL2 (absent). vm.rs
//! composes them field by field; the policy itself (what the guest may use) is written there.

use aarch64_cpu::registers::{Readable, Writeable, CPTR_EL2};
use core::arch::global_asm;
use tock_registers::register_bitfields;
use tock_registers::registers::InMemoryRegister;

register_bitfields! {u64,
    /// CPTR_EL2 when HCR_EL2.E2H = 0 (Arm ARM D24.2.38, "CPTR_EL2, Architectural Feature Trap
    /// Register (EL2)", the layout that "applies in all Armv8.0 implementations"). Bits [63:32],
    /// [29:21], [19:14] and 11 are RES0; bits 13, 9 and [7:0] are RES1; TSM (bit 12) is RES1
    /// when FEAT_SME is not implemented and TZ (bit 8) is RES1 when FEAT_SVE is not implemented.
    pub CPTR_EL2_NVHE [
        /// Trap EL1 accesses to CPACR_EL1 (EC 0x18).
        TCPAC OFFSET(31) NUMBITS(1) [],
        /// Trap EL1/EL0 accesses to the Activity Monitor registers (EC 0x18). RES0 without
        /// FEAT_AMUv1.
        TAM OFFSET(30) NUMBITS(1) [],
        /// Trap System-register accesses to the trace unit (EC 0x18). RES0 when the trace unit
        /// has no System-register interface (ID_AA64DFR0_EL1.TraceVer = 0).
        TTA OFFSET(20) NUMBITS(1) [],
        /// RES1.
        RES1_13 OFFSET(13) NUMBITS(1) [],
        /// Trap SME instructions, SVE in streaming mode and SVCR/SMCR accesses (EC 0x1D). RES1
        /// without FEAT_SME.
        TSM OFFSET(12) NUMBITS(1) [],
        /// Trap Advanced SIMD and floating point, and FPCR/FPSR/FPEXC32_EL2 accesses, at EL2, EL1
        /// and EL0 (EC 0x07).
        TFP OFFSET(10) NUMBITS(1) [],
        /// RES1.
        RES1_9 OFFSET(9) NUMBITS(1) [],
        /// Trap non-streaming SVE instructions and ZCR_EL1/ZCR_EL2 accesses (EC 0x19). RES1
        /// without FEAT_SVE.
        TZ OFFSET(8) NUMBITS(1) [],
        /// RES1.
        RES1_7_0 OFFSET(0) NUMBITS(8) [],
    ]
}

/// Writes `value` (composed from `CPTR_EL2_NVHE` fields) to CPTR_EL2. The caller issues the
/// ISB that makes it take effect.
pub fn write_cptr_el2(value: &InMemoryRegister<u64, CPTR_EL2_NVHE::Register>) {
    CPTR_EL2.set(value.get());
}

/// ZCR_EL2.LEN's largest request: (15 + 1) * 128 = 2048 bits, the architectural maximum. The
/// CPU uses the largest length it implements that is not above the request (Arm ARM D24.2.227,
/// "ZCR_EL2, SVE Control Register (EL2)"); bits [8:4] are RAZ/WI, [63:9] RES0.
pub const ZCR_LEN_MAX: u64 = 0xF;

global_asm!(
    r#"
    // zcr_el2_write(x0 = value): MSR ZCR_EL2, x0. aarch64-cpu has no ZCR_EL2, and the soft-float
    // target has no SVE feature for the assembler to accept the name, so the register is named
    // by its encoding (op0=3, op1=4, CRn=1, CRm=2, op2=0). Sets the guest's maximum SVE vector
    // length; it is a System-register write, not an SVE instruction, and touches no vector
    // register. tests/no-fp.sh allows it by this symbol name.
    .global zcr_el2_write
zcr_el2_write:
    msr     s3_4_c1_c2_0, x0
    ret
"#
);

unsafe extern "C" {
    fn zcr_el2_write(value: u64);
}

/// Sets ZCR_EL2 (LEN in bits [3:0]). Only on a CPU with FEAT_SVE (the register is UNDEFINED
/// otherwise) and after CPTR_EL2.TZ = 0 took effect (an ISB), or the write traps to EL2.
/// "An indirect read of ZCR_EL2.LEN appears to occur in program order relative to a direct
/// write", so no ISB is needed before the new length applies.
pub fn write_zcr_el2(value: u64) {
    // SAFETY: writes one System register that only sets the SVE vector length of EL2 and below;
    // no memory, no Rust-visible state. The caller checked FEAT_SVE and cleared CPTR_EL2.TZ.
    unsafe { zcr_el2_write(value) };
}

register_bitfields! {u64,
    /// ICH_HCR_EL2 trap fields aarch64-cpu 11 lacks (Arm IHI 0069 GICv3, "ICH_HCR_EL2").
    pub ICH_HCR_EL2_TRAPS [
        /// Trap all EL1 accesses to ICC_* / ICV_* Group 1 registers to EL2.
        TALL1 OFFSET(12) NUMBITS(1) [],
        /// Trap all EL1 accesses to ICC_* / ICV_* Group 0 registers to EL2.
        TALL0 OFFSET(11) NUMBITS(1) [],
        /// Trap EL1 accesses to the registers common to both groups (ICC_SGI*, ICC_ASGI1R,
        /// ICC_CTLR_EL1, ICC_DIR_EL1, ICC_PMR_EL1, ICC_RPR_EL1) to EL2.
        TC OFFSET(10) NUMBITS(1) [],
        /// Trap EL1 writes to ICC_DIR_EL1 / ICV_DIR_EL1 to EL2.
        TDIR OFFSET(14) NUMBITS(1) [],
        /// Virtual CPU interface enable: 0, no virtual interrupts are delivered.
        EN OFFSET(0) NUMBITS(1) [],
    ]
}

register_bitfields! {u64,
    /// HCRX_EL2 (FEAT_HCX), the one field used here.
    pub HCRX_EL2 [
        /// Memory Set and Copy instructions (FEAT_MOPS) enabled at EL1 and EL0.
        MSCEN OFFSET(11) NUMBITS(1) [],
    ]
}

global_asm!(
    r#"
    // EL2 registers aarch64-cpu 11 does not model, named by encoding so they assemble whatever
    // the target's feature set: each writes x0 to one register and returns.
    .global vpidr_el2_write
vpidr_el2_write:                 // VPIDR_EL2: op0 3, op1 4, CRn 0, CRm 0, op2 0
    msr     s3_4_c0_c0_0, x0
    ret
    .global hstr_el2_write
hstr_el2_write:                  // HSTR_EL2: op0 3, op1 4, CRn 1, CRm 1, op2 3
    msr     s3_4_c1_c1_3, x0
    ret
    .global hcrx_el2_write
hcrx_el2_write:                  // HCRX_EL2 (FEAT_HCX): op0 3, op1 4, CRn 1, CRm 2, op2 2
    msr     s3_4_c1_c2_2, x0
    ret
    .global vsesr_el2_write
vsesr_el2_write:                 // VSESR_EL2 (FEAT_RAS): op0 3, op1 4, CRn 5, CRm 2, op2 3
    msr     s3_4_c5_c2_3, x0
    ret
    .global pmcr_el0_read
pmcr_el0_read:                   // PMCR_EL0: op0 3, op1 3, CRn 9, CRm 12, op2 0
    mrs     x0, s3_3_c9_c12_0
    ret
"#
);

unsafe extern "C" {
    fn vpidr_el2_write(value: u64);
    fn hstr_el2_write(value: u64);
    fn hcrx_el2_write(value: u64);
    fn vsesr_el2_write(value: u64);
    fn pmcr_el0_read() -> u64;
}

/// VPIDR_EL2: the MIDR_EL1 value EL1 reads. Out of reset UNKNOWN on real hardware.
pub fn write_vpidr_el2(value: u64) {
    // SAFETY: sets what the guest's MIDR_EL1 reads return; no memory, no hypervisor state.
    unsafe { vpidr_el2_write(value) };
}

/// HSTR_EL2: traps of AArch32 EL1/EL0 accesses to CP15 registers by CRn. UNKNOWN out of reset.
pub fn write_hstr_el2(value: u64) {
    // SAFETY: trap controls for the guest only.
    unsafe { hstr_el2_write(value) };
}

/// HCRX_EL2. Only on a CPU with FEAT_HCX (UNDEFINED otherwise).
pub fn write_hcrx_el2(value: &InMemoryRegister<u64, HCRX_EL2::Register>) {
    // SAFETY: trap and enable controls for the guest only; the caller checked FEAT_HCX.
    unsafe { hcrx_el2_write(value.get()) };
}

/// VSESR_EL2: the syndrome of a virtual SError injected with HCR_EL2.VSE. Only with FEAT_RAS.
pub fn write_vsesr_el2(value: u64) {
    // SAFETY: only the syndrome the guest's next virtual SError reports; the caller checked
    // FEAT_RAS.
    unsafe { vsesr_el2_write(value) };
}

/// PMCR_EL0. Only with FEAT_PMUv3 (ID_AA64DFR0_EL1.PMUVer neither 0 nor 0xF).
pub fn read_pmcr_el0() -> u64 {
    // SAFETY: reading PMCR_EL0 at EL2 has no side effects; the caller checked FEAT_PMUv3.
    unsafe { pmcr_el0_read() }
}
