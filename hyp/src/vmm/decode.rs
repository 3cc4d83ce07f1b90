//! Turns the syndrome registers of a trap from the guest (ESR_EL2, FAR_EL2, HPFAR_EL2) into a
//! typed `Exit`: every exception class a guest can cause gets a variant. The field decoding is
//! the host-tested `arch_decode` crate; this file only reads the registers (and, where the Arm
//! ARM leaves HPFAR_EL2 UNKNOWN and the fault needs an IPA, translates FAR_EL2 with AT S1E1R).
//! The handlers in vcpu.rs act on the result.

use aarch64_cpu::registers::{Readable, ESR_EL2, FAR_EL2, HPFAR_EL2};
use arch_decode::abort::{self as abort_rules, FaultKind};

pub use arch_decode::abort::Plan;
use arch_decode::esr::{self, ec};

pub use arch_decode::esr::{Access, SysReg};

use crate::frame::kind;

/// The fault status code class of an abort (ESR ISS DFSC/IFSC bits [5:2]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultType {
    /// No valid entry at `level`.
    Translation,
    /// Valid entry with the access flag clear.
    AccessFlag,
    /// Valid entry that forbids the access.
    Permission,
    /// Anything else (external abort, address size, alignment, TLB conflict, ...): the raw FSC.
    Other(u8),
}

/// A stage-2 data or instruction abort from the guest.
#[allow(dead_code)] // `level` and `cache_maintenance` are decoded for logs, gdb and handlers.
#[derive(Clone, Copy, Debug)]
pub struct Abort {
    /// What the fault asks for, decided from the syndrome before any address is computed.
    pub plan: Plan,
    /// The faulting IPA: from HPFAR_EL2 (`Plan::Hpfar`) or FAR_EL2 translated by AT S1E1R
    /// (`Plan::TranslateFar`); 0 for the other plans, which are answered without an address.
    pub ipa: u64,
    /// The faulting virtual address (FAR_EL2); meaningless if `far_valid` is false.
    pub far: u64,
    /// FAR_EL2 holds the address (ESR.FnV = 0).
    pub far_valid: bool,
    /// Caused by a write (WnR); always false for instruction aborts.
    pub write: bool,
    /// A cache maintenance or address translation instruction (CM).
    pub cache_maintenance: bool,
    /// Fault class.
    pub fault: FaultType,
    /// Table level the fault was reported at (FSC bits [1:0]).
    pub level: u8,
    /// The instruction's access, if the syndrome describes it (ISV = 1, data aborts only).
    pub access: Option<Access>,
    /// The fault happened on a stage-1 table walk (S1PTW).
    pub s1ptw: bool,
    /// An instruction abort (a fetch), not a data abort.
    pub fetch: bool,
    /// The raw ESR_EL2, for logging and injection.
    pub esr: u64,
}

/// Why the guest trapped.
#[derive(Clone, Copy, Debug)]
pub enum Exit {
    /// EC 0x24: data abort from a lower EL.
    DataAbort(Abort),
    /// EC 0x20: instruction abort from a lower EL.
    InstructionAbort(Abort),
    /// An abort whose IPA had to come from FAR_EL2, but the guest's stage 1 no longer
    /// translates it (it changed its tables since, or the AT took an exception at EL2): re-run
    /// the access, as KVM does.
    AbortRetry,
    /// EC 0x16: HVC from AArch64 (ELR already points past it), with its immediate.
    Hvc(u16),
    /// EC 0x17: SMC from AArch64, trapped by HCR_EL2.TSC (ELR points at it), with its immediate.
    Smc(u16),
    /// EC 0x18: a trapped MSR/MRS/System instruction.
    SysReg(SysReg),
    /// EC 0x01: a trapped WFI/WFE (`wfe`: ISS.TI bit 0, set for WFE and WFET).
    Wfx { wfe: bool },
    /// EC 0x1D: SME trapped by CPTR_EL2.TSM.
    Sme,
    /// EC 0x19: SVE trapped by CPTR_EL2.TZ.
    Sve,
    /// EC 0x07: FP/AdvSIMD trapped by CPTR_EL2.TFP.
    Fp,
    /// A physical IRQ taken to EL2 while the guest ran (HCR_EL2.IMO).
    Irq,
    /// A physical FIQ taken to EL2 while the guest ran (HCR_EL2.FMO).
    Fiq,
    /// A physical SError taken to EL2 while the guest ran (HCR_EL2.AMO).
    SError,
    /// Any other class (EC 0x00, AArch32 coprocessor traps, PAC, HVC32/SMC32, ...): the raw ESR.
    /// None of them has a handler; each gets an UNDEF.
    Other(u64),
}

fn fault_type(fsc: u8) -> FaultType {
    match abort_rules::fault_kind(fsc) {
        FaultKind::Translation => FaultType::Translation,
        FaultKind::AccessFlag => FaultType::AccessFlag,
        FaultKind::Permission => FaultType::Permission,
        _ => FaultType::Other(fsc),
    }
}

/// Decodes an abort; None if the IPA had to be found from FAR_EL2 and the guest's stage 1 no
/// longer translates it.
///
/// The fault is classified first (arch_decode::abort::plan): HPFAR_EL2 is read only where the
/// Arm ARM defines it, and AT S1E1R runs only for a stage-2 permission fault on the access itself
/// (not S1PTW), the one fault that needs an IPA HPFAR_EL2 does not give. External aborts, TLB
/// conflicts and other fault codes are answered without an address, so they never run an AT
/// (whose own walk could take the same external abort, at EL2).
fn abort(esr: u64, data: bool) -> Option<Abort> {
    let iss = esr::abort(esr, data);
    let far = FAR_EL2.get();
    let plan = abort_rules::plan(iss.fsc, iss.s1ptw, !iss.far_not_valid);
    let ipa = match plan {
        Plan::Hpfar => abort_rules::ipa_from_hpfar(HPFAR_EL2.get(), far),
        Plan::TranslateFar => abort_rules::ipa_from_par(crate::arch::at_s1e1r(far), far)?,
        Plan::ForwardExternal | Plan::TlbConflict | Plan::InjectExternal => 0,
    };
    Some(Abort {
        plan,
        ipa,
        far,
        far_valid: !iss.far_not_valid,
        write: iss.write,
        cache_maintenance: iss.cache_maintenance,
        fault: fault_type(iss.fsc),
        level: abort_rules::fault_level(iss.fsc),
        access: iss.access,
        s1ptw: iss.s1ptw,
        fetch: !data,
        esr,
    })
}

/// Decodes the current trap. `vector` is the `frame::kind` it came through.
pub fn decode(vector: u64) -> Exit {
    match vector {
        // Synchronous, from a lower EL (AArch64 EL1 / any EL0; 12 would be an AArch32 EL1).
        kind::LOWER_SYNC | 12 => {}
        9 | 13 => return Exit::Irq,
        10 | 14 => return Exit::Fiq,
        _ => return Exit::SError,
    }
    let esr = ESR_EL2.get();
    match esr::class(esr) {
        ec::DABT_LOW => abort(esr, true).map_or(Exit::AbortRetry, Exit::DataAbort),
        ec::IABT_LOW => abort(esr, false).map_or(Exit::AbortRetry, Exit::InstructionAbort),
        ec::HVC64 => Exit::Hvc(esr::imm16(esr)),
        ec::SMC64 => Exit::Smc(esr::imm16(esr)),
        ec::SYS64 => Exit::SysReg(esr::sysreg(esr)),
        ec::WFX => Exit::Wfx { wfe: esr & 1 != 0 },
        ec::SME => Exit::Sme,
        ec::SVE => Exit::Sve,
        ec::FP_ASIMD => Exit::Fp,
        _ => Exit::Other(esr),
    }
}
