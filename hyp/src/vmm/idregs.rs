//! The guest's reads of the ID registers (trapped by HCR_EL2.TID3, EC 0x18): the hardware's value
//! read at EL2, sanitised by the allow-list in arch_decode::idregs (PARange = 40 bits, only
//! fields the table knows, no feature the hypervisor traps, the GIC per VM, zero for unallocated
//! and unknown encodings). Writes are UNDEFINED.
//! Also the ID group 1 registers (HCR_EL2.TID1): REVIDR_EL1 and AIDR_EL1 pass through; SMIDR_EL1
//! is UNDEFINED because the guest is shown no SME.

use arch_decode::esr::SysReg;
use arch_decode::idregs::{self, IdPolicy};
use core::arch::asm;

/// Reads ID register (op0 3, op1 0, CRn 0, `crm`, `op2`) at EL2 by its generic name
/// `S3_0_C0_C<crm>_<op2>`, for the encodings the table passes through; 0 for any other.
macro_rules! read_id_register {
    ($crm:expr, $op2:expr; $(($c:literal, $o:literal)),* $(,)?) => {
        match ($crm, $op2) {
            $(($c, $o) => {
                let v: u64;
                // SAFETY: reading an ID register has no side effects; every encoding listed is
                // an allocated register of the ID space (or RAZ on CPUs that predate it), so
                // the MRS is not UNDEFINED at EL2.
                unsafe {
                    asm!(
                        concat!("mrs {}, s3_0_c0_c", stringify!($c), "_", stringify!($o)),
                        out(reg) v,
                        options(nomem, nostack, preserves_flags)
                    )
                };
                v
            })*
            _ => 0,
        }
    };
}

/// The hardware's value of ID register (CRm, op2), read at EL2 (0 for encodings not listed).
pub fn hardware(crm: u8, op2: u8) -> u64 {
    read_id_register!(crm, op2;
        (1, 0), (1, 1), (1, 2), (1, 4), (1, 5), (1, 6), (1, 7),
        (2, 0), (2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (2, 6), (2, 7),
        (3, 0), (3, 1), (3, 2), (3, 4), (3, 5), (3, 6),
        (4, 0), (4, 1), (4, 4),
        (5, 0), (5, 1),
        (6, 0), (6, 1), (6, 2),
        (7, 0), (7, 1), (7, 2),
    )
}

/// Whether a trapped access is to the TID3 ID space.
pub fn is_id_register(r: &SysReg) -> bool {
    idregs::is_id_space(r.op0, r.op1, r.crn, r.crm)
}

/// The value the guest reads from ID register (CRm, op2) of the TID3 space under the VM's
/// `policy` (vm.rs `Vm::id_policy`).
pub fn read(crm: u8, op2: u8, policy: IdPolicy) -> u64 {
    idregs::sanitise(crm, op2, hardware(crm, op2), policy)
}

/// The value of an ID group 1 register the guest reads (trapped by HCR_EL2.TID1), or None when
/// the access must be UNDEFINED: SMIDR_EL1 (op0 3, op1 1, CRn 0, CRm 0, op2 6) exists only with
/// FEAT_SME, which ID_AA64PFR1_EL1.SME = 0 hides, and every write (these are read-only).
pub fn read_group1(r: &SysReg) -> Option<u64> {
    if !r.read {
        return None;
    }
    let v: u64;
    match r.encoding() {
        // REVIDR_EL1: IMPLEMENTATION DEFINED revision information; harmless to pass through.
        (3, 0, 0, 0, 6) => {
            // SAFETY: reading REVIDR_EL1 at EL2 has no side effects.
            unsafe {
                asm!("mrs {}, revidr_el1", out(reg) v, options(nomem, nostack, preserves_flags))
            };
        }
        // AIDR_EL1: IMPLEMENTATION DEFINED auxiliary ID; harmless to pass through.
        (3, 1, 0, 0, 7) => {
            // SAFETY: reading AIDR_EL1 at EL2 has no side effects.
            unsafe {
                asm!("mrs {}, aidr_el1", out(reg) v, options(nomem, nostack, preserves_flags))
            };
        }
        _ => return None,
    }
    Some(v)
}
