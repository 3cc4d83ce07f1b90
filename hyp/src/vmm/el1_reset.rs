//! The EL1 state a vCPU started by PSCI CPU_ON gets: what "reset" means when a vCPU that ran
//! before (and called CPU_OFF) is turned on again, and for a secondary's first start.
//!
//! DEN0022 6.4.3 ("CPU_ON", entry state of the target core): the core starts at the entry point
//! in the caller's Exception level (EL1) and execution state (AArch64: HCR_EL2.RW), with "MMU
//! off, data and unified caches off, instruction cache off or on (IMPLEMENTATION DEFINED)" and
//! the caller's endianness; x0 = context ID; PSTATE.DAIF all masked; every other register
//! UNKNOWN. The rule this file implements: the hypervisor writes exactly the registers below,
//! to values that make the entry state the specification's and make nothing of the previous ON
//! period act on the new one; every other EL1 register (TTBRx/TCR/MAIR, TPIDRs, the FP/SIMD
//! registers, the GIC CPU interface, ...) keeps what the vCPU left, which is a legal value of
//! an UNKNOWN register, and the guest sets it before use (its MMU is off until it does).
//!
//! - SCTLR_EL1: M = 0 (MMU off), C = 0 (data caches off), I = 0 (instruction cache off), A = 0,
//!   EE = the caller's, E0E = 0, WXN/UCI/UCT/DZE/pointer authentication/BTI/MTE controls 0,
//!   SA = SA0 = 1, nTWI = nTWE = 1, and the bits that were RES1 in Armv8.0 (LSMAOE, nTLSMD,
//!   SPAN, EIS, TSCXT, EOS) 1, which is also their "behave as Armv8.0" value where a later
//!   feature made them fields (Linux's INIT_SCTLR_EL1_MMU_OFF is the same value).
//! - VBAR_EL1 = 0, CPACR_EL1 (FP/SIMD not trapped), HCR_EL2 and the rest of this CPU's EL2
//!   state: as at the vCPU's first start (vm::configure_this_cpu runs again first), which also
//!   drops this CPU's TLB entries for the VM and its instruction cache (guest_cold_start_local),
//!   so no stage-1 translation of the previous ON period survives.
//! - CNTV_CTL_EL0 = CNTP_CTL_EL0 = 0: the EL1 timers disabled (their reset value), so a timer
//!   armed before CPU_OFF does not fire into the new start.
//! - MDSCR_EL1 = 0: no software step, breakpoint or watchpoint enable carried over.
//! - FPCR = FPSR = 0 (exceptions::run_guest, at every entry).
//! - PSTATE (SPSR_EL2) = EL1h, D/A/I/F masked; PC = the entry point; x0 = context ID;
//!   x1..x30 and SP_EL1 = 0 (lifecycle::start_frame).

use aarch64_cpu::registers::{
    Readable, Writeable, CNTP_CTL_EL0, CNTV_CTL_EL0, MDSCR_EL1, SCTLR_EL1, SPSR_EL2,
};
use tock_registers::register_bitfields;
use tock_registers::registers::InMemoryRegister;

use crate::arch;

register_bitfields! {u64,
    /// The SCTLR_EL1 bits aarch64-cpu 11 does not name (Arm ARM D24.2 "SCTLR_EL1"). Each was
    /// RES1 in Armv8.0; the feature that made it a field gives 1 the Armv8.0 behaviour.
    SCTLR_EL1_V80_RES1 [
        /// FEAT_LSMAOC: Load/Store Multiple atomicity and ordering at EL0 (AArch32) as in v8.0.
        LSMAOE OFFSET(29) NUMBITS(1) [],
        /// FEAT_LSMAOC: no trap of Load/Store Multiple to Device memory at EL0 (AArch32).
        NTLSMD OFFSET(28) NUMBITS(1) [],
        /// FEAT_PAN: PSTATE.PAN unchanged on an exception to EL1.
        SPAN OFFSET(23) NUMBITS(1) [],
        /// FEAT_ExS: exception entry is context synchronizing.
        EIS OFFSET(22) NUMBITS(1) [],
        /// FEAT_CSV2: SCXTNUM_EL0 accesses not trapped.
        TSCXT OFFSET(20) NUMBITS(1) [],
        /// FEAT_ExS: exception return is context synchronizing.
        EOS OFFSET(11) NUMBITS(1) [],
    ]
}

/// Writes the EL1 reset state above (the SCTLR_EL1, timer and debug part; EL2 state and the
/// registers in the frame are the caller's). `big_endian`: the CPU_ON caller's SCTLR_EL1.EE.
pub fn reset(big_endian: bool) {
    let sctlr: InMemoryRegister<u64, SCTLR_EL1::Register> = InMemoryRegister::new(0);
    sctlr.write(
        SCTLR_EL1::M::Disable
            + SCTLR_EL1::A::Disable
            + SCTLR_EL1::C::NonCacheable
            + SCTLR_EL1::SA::Enable
            + SCTLR_EL1::SA0::Enable
            + SCTLR_EL1::I::NonCacheable
            + SCTLR_EL1::NTWI::DontTrap
            + SCTLR_EL1::NTWE::DontTrap
            + SCTLR_EL1::E0E::LittleEndian
            + if big_endian {
                SCTLR_EL1::EE::BigEndian
            } else {
                SCTLR_EL1::EE::LittleEndian
            },
    );
    let v80: InMemoryRegister<u64, SCTLR_EL1_V80_RES1::Register> = InMemoryRegister::new(0);
    v80.write(
        SCTLR_EL1_V80_RES1::LSMAOE::SET
            + SCTLR_EL1_V80_RES1::NTLSMD::SET
            + SCTLR_EL1_V80_RES1::SPAN::SET
            + SCTLR_EL1_V80_RES1::EIS::SET
            + SCTLR_EL1_V80_RES1::TSCXT::SET
            + SCTLR_EL1_V80_RES1::EOS::SET,
    );
    SCTLR_EL1.set(sctlr.get() | v80.get());
    CNTV_CTL_EL0.set(0);
    CNTP_CTL_EL0.set(0);
    MDSCR_EL1.set(0);
    arch::isb();
}

/// PSTATE for entering the guest at a start (or its exception vector): EL1h (SP_EL1), D/A/I/F
/// masked, NZCV and everything else 0.
pub fn entry_pstate() -> u64 {
    let spsr: InMemoryRegister<u64, SPSR_EL2::Register> = InMemoryRegister::new(0);
    spsr.write(
        SPSR_EL2::D::Masked
            + SPSR_EL2::A::Masked
            + SPSR_EL2::I::Masked
            + SPSR_EL2::F::Masked
            + SPSR_EL2::M::EL1h,
    );
    spsr.get()
}
