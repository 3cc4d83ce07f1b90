//! Turns the syndrome registers of a trap from the guest (ESR_EL2, FAR_EL2, HPFAR_EL2) into a
//! typed `Exit`. Nothing here has side effects; the handlers in vcpu.rs act on the result.

use aarch64_cpu::registers::{Readable, ESR_EL2, FAR_EL2, HPFAR_EL2};

use crate::exceptions::kind;

/// The fault status code class of an abort (ESR ISS DFSC/IFSC bits [5:2]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultType {
    /// No valid entry at `level`.
    Translation,
    /// Valid entry with the access flag clear.
    AccessFlag,
    /// Valid entry that forbids the access.
    Permission,
    /// Anything else (external abort, alignment, TLB conflict, ...): the raw FSC.
    Other(u8),
}

/// How a single-register load/store accessed memory (valid when ESR.ISV = 1). Every field the
/// syndrome gives is decoded, whether or not today's handlers need it.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// Access size in bytes (SAS).
    pub size: u8,
    /// The transfer register (SRT); 31 = XZR/WZR.
    pub reg: u8,
    /// A load sign-extends (SSE).
    pub sign_extend: bool,
    /// The register is 64-bit (SF).
    pub sixty_four: bool,
}

/// A stage-2 data or instruction abort from the guest.
#[allow(dead_code)] // `level` and `s1ptw` are decoded for logs, gdb and future handlers.
#[derive(Clone, Copy, Debug)]
pub struct Abort {
    /// The faulting IPA: page from HPFAR_EL2, offset from FAR_EL2.
    pub ipa: u64,
    /// The faulting virtual address (FAR_EL2); meaningless if `far_valid` is false.
    pub far: u64,
    /// FAR_EL2 holds the address (ESR.FnV = 0).
    pub far_valid: bool,
    /// Caused by a write (WnR); always false for instruction aborts.
    pub write: bool,
    /// Fault class.
    pub fault: FaultType,
    /// Table level the fault was reported at (FSC bits [1:0]).
    pub level: u8,
    /// The instruction's access, if the syndrome describes it (ISV = 1, data aborts only).
    pub access: Option<Access>,
    /// The fault happened on a stage-1 table walk (S1PTW).
    pub s1ptw: bool,
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
    /// EC 0x16: HVC from AArch64 (ELR already points past it).
    Hvc,
    /// EC 0x17: SMC from AArch64, trapped by HCR_EL2.TSC (ELR points at it).
    Smc,
    /// A physical IRQ/FIQ/SError routed to EL2.
    Interrupt(u64),
    /// Anything else: the raw ESR.
    Other(u64),
}

/// Exception class: data abort from a lower EL.
pub const EC_DABT_LOW: u64 = 0x24;
/// Exception class: instruction abort from a lower EL.
pub const EC_IABT_LOW: u64 = 0x20;
const EC_HVC64: u64 = 0x16;
const EC_SMC64: u64 = 0x17;

fn fault_type(fsc: u8) -> FaultType {
    match fsc >> 2 {
        0b0001 => FaultType::Translation,
        0b0010 => FaultType::AccessFlag,
        0b0011 => FaultType::Permission,
        _ => FaultType::Other(fsc),
    }
}

/// IPA of a stage-2 abort: HPFAR_EL2.FIPA holds IPA[51:12] in bits [43:4]; the page offset
/// comes from FAR_EL2. (HPFAR is valid for stage-2 translation, access-flag and permission
/// faults, the ones this hypervisor resolves.)
pub fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar & 0x0000_0FFF_FFFF_FFF0) << 8) | (far & 0xFFF)
}

fn abort(esr: u64, data: bool) -> Abort {
    let iss = esr & 0x1FF_FFFF;
    let fsc = (iss & 0x3F) as u8;
    let far = FAR_EL2.get();
    let isv = data && iss & (1 << 24) != 0;
    Abort {
        ipa: fault_ipa(HPFAR_EL2.get(), far),
        far,
        far_valid: iss & (1 << 10) == 0,
        write: data && iss & (1 << 6) != 0,
        fault: fault_type(fsc),
        level: fsc & 0b11,
        access: isv.then(|| Access {
            size: 1 << ((iss >> 22) & 0b11),
            reg: ((iss >> 16) & 0x1F) as u8,
            sign_extend: iss & (1 << 21) != 0,
            sixty_four: iss & (1 << 15) != 0,
        }),
        s1ptw: iss & (1 << 7) != 0,
        esr,
    }
}

/// Decodes the current trap. `vector` is the `exceptions::kind` it came through.
pub fn decode(vector: u64) -> Exit {
    if vector != kind::LOWER_SYNC {
        return Exit::Interrupt(vector);
    }
    let esr = ESR_EL2.get();
    match ESR_EL2.read(ESR_EL2::EC) {
        EC_DABT_LOW => Exit::DataAbort(abort(esr, true)),
        EC_IABT_LOW => Exit::InstructionAbort(abort(esr, false)),
        EC_HVC64 => Exit::Hvc,
        EC_SMC64 => Exit::Smc,
        _ => Exit::Other(esr),
    }
}
