//! EL2 exception vectors and guest entry/exit (the assembly that saves and restores `Frame`).
//!
//! A vCPU runs on its CPU's EL2 stack: `enter_guest` pushes the hypervisor's callee-saved
//! registers and ERETs; every trap from the guest pushes a `Frame` (frame.rs) right below them,
//! branches to `hyp_handle_lower` (vcpu.rs: decode and handle), and either restores the frame and
//! ERETs (resume) or pops it and returns from `enter_guest` (the vCPU is done). The frame holds
//! the guest context the hypervisor's own code can clobber: x0-x30, SP_EL1, ELR_EL2, SPSR_EL2.
//!
//! This is the bottom of the trap path and imports nothing above it: the vectors reach the
//! handler through the symbol `hyp_handle_lower` (defined in vcpu.rs), as the hardware reaches
//! the vectors through VBAR_EL2.
//!
//! The guest's FP/SIMD/SVE state (v0-v31 or z0-z31, p0-p15, FFR, FPSR, FPCR) is **not** in the
//! frame: it stays in the registers for the whole life of the vCPU. That holds because each
//! physical CPU runs exactly one vCPU (nothing else ever loads its own FP state there) and the
//! hypervisor never executes an FP/SIMD/SVE instruction: it is built for
//! `aarch64-unknown-none-softfloat`, so the compiler emits none, and the assembly here uses none
//! except `guest_fp_reset` (FPCR/FPSR := 0 once before the first entry). `tests/no-fp.sh`
//! disassembles the hypervisor and fails if that ever changes. SME state cannot be live either:
//! CPTR_EL2.TSM traps it (vm.rs). EL1 system registers are likewise not touched by the hypervisor
//! except deliberately (abort injection), so they stay live in the CPU.

use aarch64_cpu::registers::{Writeable, VBAR_EL2};
use core::arch::global_asm;

use crate::arch;
use crate::frame::Frame;

global_asm!(
    r#"
    .macro VENTRY label, kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       \label
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global hyp_vectors
hyp_vectors:
    VENTRY  __hyp_trap_current, 0
    VENTRY  __hyp_trap_current, 1
    VENTRY  __hyp_trap_current, 2
    VENTRY  __hyp_trap_current, 3
    VENTRY  __hyp_trap_current, 4
    VENTRY  __hyp_trap_current, 5
    VENTRY  __hyp_trap_current, 6
    VENTRY  __hyp_trap_current, 7
    VENTRY  __hyp_trap_lower, 8
    VENTRY  __hyp_trap_lower, 9
    VENTRY  __hyp_trap_lower, 10
    VENTRY  __hyp_trap_lower, 11
    VENTRY  __hyp_trap_lower, 12
    VENTRY  __hyp_trap_lower, 13
    VENTRY  __hyp_trap_lower, 14
    VENTRY  __hyp_trap_lower, 15

    .macro SAVE_GPRS
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, sp_el1
    stp     x30, x2, [sp, #240]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [sp, #256]
    .endm

    .text
    // An exception from the guest. sp = the new frame, x0 = vector kind, guest x0/x1 saved.
__hyp_trap_lower:
    SAVE_GPRS
    // The trap's entry time, for the hyp-side fault latency.
    mrs     x2, cntpct_el0
    mov     x1, x0
    mov     x0, sp
    bl      hyp_handle_lower
    cbnz    x0, __hyp_leave_guest
    // Resume from the (possibly edited) frame: the guest, or (from __hyp_trap_current) the
    // hypervisor code an AT fixup returns to.
__hyp_restore_frame:
    ldp     x2, x3, [sp, #256]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x30, x2, [sp, #240]
    msr     sp_el1, x2
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame}
    eret

    // The vCPU is done: drop the frame and return from enter_guest.
__hyp_leave_guest:
    add     sp, sp, #{frame}
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    add     sp, sp, #96
    ret

    // An exception taken at EL2 itself: the AT of arch::at_s1e1r faulting (fixed up: resume after
    // it), else a hypervisor bug (or semihosting without -semihosting), which does not return.
    // Restoring SP_EL1 from the frame writes back the value just read: harmless.
__hyp_trap_current:
    SAVE_GPRS
    mov     x1, x0
    mov     x0, sp
    bl      hyp_handle_current
    b       __hyp_restore_frame

    // enter_guest(x0 = initial frame): save our callee-saved registers and ERET into the guest.
    //
    // AAPCS64 also makes d8-d15 callee-saved, but they are not saved here: no code in the
    // hypervisor can hold a value in them (soft-float Rust never names an FP/SIMD register and
    // this file's assembly uses none), so no caller of enter_guest relies on them, and between
    // entry and return they hold the guest's v8-v15, which must stay untouched.
    .global enter_guest
enter_guest:
    sub     sp, sp, #96
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    mov     x1, x0
    ldp     x2, x3, [x1, #256]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldr     x2, [x1, #248]
    msr     sp_el1, x2
    ldp     x2, x3, [x1, #16]
    ldp     x4, x5, [x1, #32]
    ldp     x6, x7, [x1, #48]
    ldp     x8, x9, [x1, #64]
    ldp     x10, x11, [x1, #80]
    ldp     x12, x13, [x1, #96]
    ldp     x14, x15, [x1, #112]
    ldp     x16, x17, [x1, #128]
    ldp     x18, x19, [x1, #144]
    ldp     x20, x21, [x1, #160]
    ldp     x22, x23, [x1, #176]
    ldp     x24, x25, [x1, #192]
    ldp     x26, x27, [x1, #208]
    ldp     x28, x29, [x1, #224]
    ldr     x30, [x1, #240]
    ldp     x0, x1, [x1, #0]
    eret

    // guest_fp_reset(): FPCR := 0, FPSR := 0, the guest's floating-point control and status
    // before its first instruction (round to nearest, no trapped exceptions, no default NaN or
    // flush-to-zero, no cumulative flags), so it does not inherit whatever firmware or reset
    // left. The one deliberate FP-state access in the hypervisor (the allow-list of
    // tests/no-fp.sh names this symbol). MSR FPCR/FPSR is a system-register write, not an FP
    // data-processing instruction; it traps to EL2 only with CPTR_EL2.TFP = 1 (and to EL3 with
    // CPTR_EL3.TFP = 1), and vm.rs configure_this_cpu writes TFP = 0 before any vCPU runs. It is
    // legal in and out of streaming mode. Encoded by name (FPCR = S3_3_C4_C4_0,
    // FPSR = S3_3_C4_C4_1) so it assembles for a target without the fp-armv8 feature.
    .global guest_fp_reset
guest_fp_reset:
    msr     s3_3_c4_c4_0, xzr
    msr     s3_3_c4_c4_1, xzr
    ret
"#,
    frame = const core::mem::size_of::<Frame>(),
);

unsafe extern "C" {
    static hyp_vectors: u8;
    fn enter_guest(frame: *const Frame);
    fn guest_fp_reset();
}

/// Points this CPU's VBAR_EL2 at our vectors. Every CPU, first thing after its MMU is on.
pub fn install() {
    VBAR_EL2.set(&raw const hyp_vectors as u64);
    arch::isb();
}

/// Runs the guest from `initial` on this CPU until its vCPU is done.
///
/// The guest's FP/SIMD state starts with FPCR = FPSR = 0 (`guest_fp_reset`); its vector
/// registers hold whatever the CPU holds (architecturally UNKNOWN out of reset, as for a real CPU).
/// CPTR_EL2 must already allow FP/SIMD (vm::configure_this_cpu ran on this CPU).
pub fn run_guest(initial: &Frame) {
    // SAFETY: `guest_fp_reset` writes only FPCR and FPSR, which no hypervisor code reads
    // (soft-float); CPTR_EL2.TFP = 0 on this CPU, so the writes do not trap.
    unsafe { guest_fp_reset() };
    // SAFETY: `enter_guest` saves every callee-saved register the AAPCS64 requires, runs the
    // guest (which cannot touch EL2 state), and returns here through __hyp_leave_guest with
    // them restored and SP back where it was. `initial` is only read.
    unsafe { enter_guest(initial) };
}

/// An exception taken at EL2. The one expected kind is a synchronous exception (vector 0 or 4:
/// current EL with SP0 / SPx) taken by the AT S1E1R of `arch::at_s1e1r` while this CPU's
/// "AT in progress" marker is set: the guest's stage-1 walk (which the guest controls) can end
/// in an external abort reported as an exception. It is answered as KVM answers it: the AT
/// counts as failed (PAR_EL1.F = 1) and execution resumes after it (`arch::at_fault_fixup`), so
/// the abort is re-run. ESR_EL2/FAR_EL2 now hold this exception's syndrome; the caller of the AT
/// reads neither again (decode.rs read them first, and a re-run needs no syndrome). Anything
/// else is a hypervisor bug and stops the machine with a report.
#[unsafe(no_mangle)]
extern "C" fn hyp_handle_current(frame: &mut Frame, kind: u64) {
    if kind == 0 || kind == 4 {
        if let Some(resume) = arch::at_fault_fixup(frame.elr) {
            frame.elr = resume;
            return;
        }
    }
    crate::exit::fatal_el2_exception(frame.elr, frame.spsr, kind)
}
