//! The guest's reads of the ID registers (trapped by HCR_EL2.TID3, EC 0x18): the hardware's value
//! read at EL2, sanitised by the table in arch_decode::idregs (PARange = 40 bits, no feature the
//! hypervisor traps, zero for unallocated and unknown encodings). Writes are UNDEFINED.

use arch_decode::esr::SysReg;
use arch_decode::idregs::{self, IdRead};
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

fn hardware(crm: u8, op2: u8) -> u64 {
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

/// The value the guest reads from ID register (CRm, op2) of the TID3 space.
pub fn read(crm: u8, op2: u8) -> u64 {
    match idregs::rule(crm, op2) {
        IdRead::Hardware(fields) => idregs::apply(hardware(crm, op2), fields),
        IdRead::Zero => 0,
    }
}
