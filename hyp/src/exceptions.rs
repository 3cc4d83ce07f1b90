//! EL2 exception vectors, guest entry/exit, and the saved guest context (`Frame`).
//!
//! A vCPU runs on its CPU's EL2 stack: `enter_guest` pushes the hypervisor's callee-saved
//! registers and ERETs; every trap from the guest pushes a `Frame` right below them, calls
//! `vcpu::handle_exit`, and either restores the frame and ERETs (resume) or pops it and returns
//! from `enter_guest` (the vCPU is done). The frame holds the full guest context: x0-x30,
//! SP_EL1, ELR_EL2, SPSR_EL2, q0-q31, FPSR, FPCR (the hypervisor's Rust code may use SIMD
//! registers, so they are guest state to preserve). EL1 system registers are not touched by the
//! hypervisor except deliberately (abort injection), so they stay live in the CPU.

use aarch64_cpu::registers::{Writeable, VBAR_EL2};
use core::arch::global_asm;

use crate::arch;

/// The saved guest context. Layout is shared with the assembly below.
#[repr(C)]
#[derive(Clone)]
pub struct Frame {
    /// x0..x30.
    pub x: [u64; 31],
    /// The guest's stack pointer (SP_EL1).
    pub sp_el1: u64,
    /// Where the guest resumes (ELR_EL2).
    pub elr: u64,
    /// The guest's PSTATE (SPSR_EL2).
    pub spsr: u64,
    /// q0..q31.
    pub q: [u128; 32],
    /// FPSR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
}

const _: () = assert!(core::mem::size_of::<Frame>() == 800);
const _: () = assert!(core::mem::offset_of!(Frame, sp_el1) == 248);
const _: () = assert!(core::mem::offset_of!(Frame, elr) == 256);
const _: () = assert!(core::mem::offset_of!(Frame, q) == 272);
const _: () = assert!(core::mem::offset_of!(Frame, fpsr) == 784);

impl Frame {
    /// An all-zero frame.
    pub const fn zeroed() -> Self {
        Self {
            x: [0; 31],
            sp_el1: 0,
            elr: 0,
            spsr: 0,
            q: [0; 32],
            fpsr: 0,
            fpcr: 0,
        }
    }

    /// Reads general-purpose register `n`, where 31 means XZR (reads as zero).
    pub fn reg(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes general-purpose register `n`; writes to 31 (XZR) are discarded.
    pub fn set_reg(&mut self, n: u8, value: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = value;
        }
    }
}

/// Which vector an exception came through: `group * 4 + type`.
pub mod kind {
    /// Synchronous exception from a lower EL in AArch64 (HVC, SMC, aborts, ...).
    pub const LOWER_SYNC: u64 = 8;
    // 9, 10, 11: IRQ, FIQ, SError from a lower EL in AArch64; 12..15: the same from AArch32.
}

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

    // x2 = base of the q-register area
    .macro QREGS op
    \op     q0, q1, [x2, #0]
    \op     q2, q3, [x2, #32]
    \op     q4, q5, [x2, #64]
    \op     q6, q7, [x2, #96]
    \op     q8, q9, [x2, #128]
    \op     q10, q11, [x2, #160]
    \op     q12, q13, [x2, #192]
    \op     q14, q15, [x2, #224]
    \op     q16, q17, [x2, #256]
    \op     q18, q19, [x2, #288]
    \op     q20, q21, [x2, #320]
    \op     q22, q23, [x2, #352]
    \op     q24, q25, [x2, #384]
    \op     q26, q27, [x2, #416]
    \op     q28, q29, [x2, #448]
    \op     q30, q31, [x2, #480]
    .endm

    .text
    // An exception from the guest. sp = the new frame, x0 = vector kind, guest x0/x1 saved.
__hyp_trap_lower:
    SAVE_GPRS
    add     x2, sp, #272
    QREGS   stp
    mrs     x3, fpsr
    mrs     x4, fpcr
    add     x5, x2, #512
    stp     x3, x4, [x5]
    // The trap's entry time, for the hyp-side fault latency.
    mrs     x2, cntpct_el0
    mov     x1, x0
    mov     x0, sp
    bl      hyp_handle_lower
    cbnz    x0, __hyp_leave_guest
    // Resume the guest from the (possibly edited) frame.
    add     x2, sp, #272
    add     x5, x2, #512
    ldp     x3, x4, [x5]
    msr     fpsr, x3
    msr     fpcr, x4
    QREGS   ldp
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
    ldp     d8, d9, [sp, #0]
    ldp     d10, d11, [sp, #16]
    ldp     d12, d13, [sp, #32]
    ldp     d14, d15, [sp, #48]
    ldp     x19, x20, [sp, #64]
    ldp     x21, x22, [sp, #80]
    ldp     x23, x24, [sp, #96]
    ldp     x25, x26, [sp, #112]
    ldp     x27, x28, [sp, #128]
    ldp     x29, x30, [sp, #144]
    add     sp, sp, #160
    ret

    // An exception taken at EL2 itself: a hypervisor bug (or semihosting without -semihosting).
__hyp_trap_current:
    SAVE_GPRS
    mov     x1, x0
    mov     x0, sp
    bl      hyp_handle_current
5:  wfi
    b       5b

    // enter_guest(x0 = initial frame): save our callee-saved registers and ERET into the guest.
    .global enter_guest
enter_guest:
    sub     sp, sp, #160
    stp     d8, d9, [sp, #0]
    stp     d10, d11, [sp, #16]
    stp     d12, d13, [sp, #32]
    stp     d14, d15, [sp, #48]
    stp     x19, x20, [sp, #64]
    stp     x21, x22, [sp, #80]
    stp     x23, x24, [sp, #96]
    stp     x25, x26, [sp, #112]
    stp     x27, x28, [sp, #128]
    stp     x29, x30, [sp, #144]
    mov     x1, x0
    add     x2, x1, #272
    add     x5, x2, #512
    ldp     x3, x4, [x5]
    msr     fpsr, x3
    msr     fpcr, x4
    QREGS   ldp
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
"#,
    frame = const core::mem::size_of::<Frame>(),
);

unsafe extern "C" {
    static hyp_vectors: u8;
    fn enter_guest(frame: *const Frame);
}

/// Points this CPU's VBAR_EL2 at our vectors. Every CPU, first thing after its MMU is on.
pub fn install() {
    VBAR_EL2.set(&raw const hyp_vectors as u64);
    arch::isb();
}

/// Runs the guest from `initial` on this CPU until its vCPU is done.
pub fn run_guest(initial: &Frame) {
    // SAFETY: `enter_guest` saves every callee-saved register the AAPCS64 requires, runs the
    // guest (which cannot touch EL2 state), and returns here through __hyp_leave_guest with
    // them restored and SP back where it was. `initial` is only read.
    unsafe { enter_guest(initial) };
}

#[unsafe(no_mangle)]
extern "C" fn hyp_handle_lower(frame: &mut Frame, kind: u64, entry_ticks: u64) -> u64 {
    match crate::vcpu::handle_exit(frame, kind, entry_ticks) {
        crate::vcpu::Action::Resume => 0,
        crate::vcpu::Action::Leave => 1,
    }
}

#[unsafe(no_mangle)]
extern "C" fn hyp_handle_current(frame: &mut Frame, kind: u64) -> ! {
    crate::exit::fatal_el2_exception(frame, kind)
}
