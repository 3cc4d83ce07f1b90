//! Exceptions the hypervisor makes the guest take at its EL1, and stepping the guest's PC over an
//! instruction the hypervisor completed for it.
//!
//! Injection does what the Arm ARM's exception entry to EL1 does (D1.3 "Exception entry",
//! AArch64.TakeException): ESR_EL1 and FAR_EL1 describe the exception, ELR_EL1 = the preferred
//! return address (the instruction that trapped), SPSR_EL1 = the PSTATE the guest had (in the
//! AArch32 layout, T and IT bits included, when it ran AArch32 EL0: SPSR_EL2 already holds that
//! layout), then PSTATE = EL1h with D/A/I/F masked (PAN, SSBS per SCTLR_EL1) and PC = VBAR_EL1 +
//! the vector for where the guest was (current EL with SP0 / SPx, lower EL AArch64 / AArch32).
//! Whatever VBAR_EL1 holds is used: a guest with its MMU on has its vectors at a virtual
//! address, and a guest without vectors takes the exception where the architecture says.
//! The pure parts (offsets, ESR values, PSTATE, ITAdvance) are arch_decode::exception.

use aarch64_cpu::registers::{
    ReadWriteable, Readable, Writeable, ELR_EL1, ESR_EL1, ESR_EL2, FAR_EL1, HCR_EL2,
    ID_AA64MMFR1_EL1, ID_AA64PFR1_EL1, SCTLR_EL1, SPSR_EL1, VBAR_EL1,
};
use arch_decode::esr;
use arch_decode::exception::{self as entry, EntryFeatures, Source};

use crate::frame::Frame;

/// What exception entry depends on in this CPU: FEAT_PAN and FEAT_SSBS.
fn features() -> EntryFeatures {
    EntryFeatures {
        pan: ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::PAN) != 0,
        // ID_AA64PFR1_EL1.SSBS is bits [7:4] (aarch64-cpu has no field for it).
        ssbs: (ID_AA64PFR1_EL1.get() >> 4) & 0xF != 0,
    }
}

/// Takes a synchronous exception to the guest's EL1 with syndrome `esr` and, if given, fault
/// address `far`. The frame's ELR/SPSR are the interrupted context and become ELR/SPSR_EL1.
fn enter_el1(frame: &mut Frame, esr: u64, far: Option<u64>) {
    let source = Source::of(frame.spsr);
    ESR_EL1.set(esr);
    if let Some(far) = far {
        FAR_EL1.set(far);
    }
    ELR_EL1.set(frame.elr);
    SPSR_EL1.set(frame.spsr);
    frame.spsr = entry::target_pstate(frame.spsr, SCTLR_EL1.get(), features());
    frame.elr = VBAR_EL1.get().wrapping_add(source.sync_offset());
}

/// Injects an UNDEF (ESR_EL1 EC 0x00, IL = 1, ISS 0): what the guest gets for an instruction
/// or register access the hypervisor does not offer. ELR_EL1 = the instruction itself.
pub fn undef(frame: &mut Frame) {
    enter_el1(frame, entry::undef_esr(), None);
}

/// Injects a synchronous external abort on a data access (`data`) or an instruction fetch, for
/// the address `far` (None: FnV = 1, FAR_EL1 UNKNOWN). `write` and `cache_maintenance` are the
/// trapped access's WnR and CM. ESR_EL1 as arch_decode::exception::sync_external_abort_esr says
/// (EC 0x24/0x25 or 0x20/0x21 by source, IL = 1 because the injected ISV is 0, FSC 0x10).
pub fn sync_external_abort(
    frame: &mut Frame,
    data: bool,
    write: bool,
    cache_maintenance: bool,
    far: Option<u64>,
) {
    abort(
        frame,
        data,
        write,
        cache_maintenance,
        far,
        entry::FSC_SYNC_EXTERNAL,
    );
}

/// Injects an abort like `sync_external_abort` with fault status code `fsc` instead (e.g.
/// `FSC_ADDRESS_SIZE_L0` for an IPA beyond the guest's PARange).
pub fn abort(
    frame: &mut Frame,
    data: bool,
    write: bool,
    cache_maintenance: bool,
    far: Option<u64>,
    fsc: u64,
) {
    let esr = entry::abort_esr(
        Source::of(frame.spsr),
        data,
        write,
        cache_maintenance,
        far.is_some(),
        fsc,
    );
    enter_el1(frame, esr, far);
}

/// Steps over the instruction that trapped, after the hypervisor completed it: PC += 2 or 4 as
/// ESR_EL2.IL says (a 16-bit T32 instruction is 2), PSTATE.SS and (AArch64) BTYPE are cleared as
/// executing the instruction would have, and for T32 in an IT block ITSTATE advances as the Arm
/// ARM's ITAdvance does (arch_decode::exception::pstate_after_step). Call only while ESR_EL2 still holds this trap's syndrome,
/// and only for traps that report the instruction's length (data aborts with ISV = 1, EC 0x18,
/// trapped SMC, WFx).
pub fn skip_instruction(frame: &mut Frame) {
    let len = esr::instruction_len(ESR_EL2.get());
    frame.elr = entry::next_pc(frame.elr, len, frame.spsr);
    frame.spsr = entry::pstate_after_step(frame.spsr);
}

/// Makes a virtual SError pending for the guest (HCR_EL2.VSE; Arm ARM D1.4 "Virtual
/// interrupts"): it is taken at EL1 when the guest unmasks PSTATE.A. With FEAT_RAS its ESR_EL1
/// syndrome is VSESR_EL2, which is UNKNOWN out of reset: it is written (0: an IMPLEMENTATION
/// DEFINED error with no further information) before VSE is set, here and at cold start
/// (vm.rs). Without FEAT_RAS the syndrome is IMPLEMENTATION DEFINED. The CPU clears VSE when the
/// guest takes it.
pub fn virtual_serror() {
    if crate::vm::has_ras() {
        crate::sysreg_ext::write_vsesr_el2(0);
    }
    HCR_EL2.modify(HCR_EL2::VSE::SET);
}
