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
