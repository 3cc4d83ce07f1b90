//! Leaving QEMU: semihosting SYS_EXIT carries the exit status; without `-semihosting` the HLT
//! is undefined at EL2, the resulting EL2 exception lands in `fatal_el2_exception`, which sees
//! we were exiting and powers off through PSCI SYSTEM_OFF (QEMU then exits 0).

use core::sync::atomic::{AtomicBool, Ordering};
use qemu_exit::QEMUExit;

use crate::{arch, console, firmware};

static EXITING: AtomicBool = AtomicBool::new(false);

/// Exits QEMU with `code` (0 = pass). Any CPU may call it; the others just stop.
pub fn exit(code: u32) -> ! {
    EXITING.store(true, Ordering::SeqCst);
    // Everything printed and written so far completes before the machine goes away.
    arch::dsb_sy();
    qemu_exit::AArch64::new().exit(code)
}

/// An exception taken at EL2 through vector `kind`, with ELR_EL2 `elr` and SPSR_EL2 `spsr` as
/// the vectors saved them: print what we know and exit with a failure.
pub fn fatal_el2_exception(elr: u64, spsr: u64, kind: u64) -> ! {
    if EXITING.load(Ordering::SeqCst) {
        // The semihosting HLT trapped: QEMU runs without -semihosting.
        firmware::system_off();
    }
    let esr = aarch64_cpu::registers::ESR_EL2.get();
    let far = aarch64_cpu::registers::FAR_EL2.get();
    console::write_line_forced(format_args!(
        "FAIL: hypervisor exception: vector {kind} ESR_EL2={esr:#x} ELR_EL2={:#x} FAR_EL2={far:#x} \
         SPSR_EL2={:#x} on cpu{}",
        elr,
        spsr,
        crate::percpu::index()
    ));
    console::write_line_forced(format_args!("RESULT status=fail reason=hyp-exception"));
    exit(3)
}

use aarch64_cpu::registers::Readable;
