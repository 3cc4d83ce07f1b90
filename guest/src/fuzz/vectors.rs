//! The fuzzer's machine layer: its own EL1 vector table, calling a generated snippet at EL1,
//! dropping to EL0 (AArch64, A32, T32) and coming back, making generated code executable, and
//! the FP/SVE register survival check.
//!
//! Every exception the fuzzer causes lands here (Arm ARM D1.3 "Exception entry", vector offsets
//! from VBAR_EL1: +0x200 current EL with SP_ELx, +0x400 lower EL using AArch64, +0x600 lower EL
//! using AArch32). A synchronous exception at EL1 is counted by ESR_EL1.EC and the faulting
//! instruction skipped (A64 instructions are 4 bytes). Any synchronous exception or SError from
//! EL0 ends the excursion: the vector records ESR/ELR/SPSR/FAR and x6/x7 and returns from
//! `fuzz_el0_enter` on the stack it left from (SP_EL1 is still the one that ERETed).
//! IRQ and FIQ stay masked (the fuzzer never writes DAIF), so those vectors report an
//! unexpected exception.

use core::arch::{asm, global_asm};

/// What the vectors record, shared with the assembly below (offsets in the `global_asm!`).
#[repr(C)]
pub struct State {
    /// ESR_EL1 of the latest exception.
    pub esr: u64,
    /// ELR_EL1 of the latest exception from EL0.
    pub elr: u64,
    /// SPSR_EL1 of the latest exception from EL0.
    pub spsr: u64,
    /// FAR_EL1 of the latest exception.
    pub far: u64,
    /// x6 at the latest exception from EL0 (the "reached the successor" marker).
    pub x6: u64,
    /// x7 at the latest exception from EL0 (the "reached the SVC" marker).
    pub x7: u64,
    /// Which vector the latest exception came through: 0 current EL, 1 lower AArch64, 2 lower
    /// AArch32, 3 SError from a lower EL.
    pub vector: u64,
    /// Exceptions taken in all.
    pub exceptions: u64,
    /// Exceptions by ESR_EL1.EC.
    pub ec: [u64; 64],
}

const _: () = assert!(core::mem::offset_of!(State, vector) == 48);
const _: () = assert!(core::mem::offset_of!(State, exceptions) == 56);
const _: () = assert!(core::mem::offset_of!(State, ec) == 64);

impl State {
    /// Nothing recorded yet.
    pub const fn new() -> Self {
        Self {
            esr: 0,
            elr: 0,
            spsr: 0,
            far: 0,
            x6: 0,
            x7: 0,
            vector: 0,
            exceptions: 0,
            ec: [0; 64],
        }
    }
}

/// `State::vector` values.
pub const VEC_CURRENT: u64 = 0;
/// See `VEC_CURRENT`.
pub const VEC_LOWER_A64: u64 = 1;
/// See `VEC_CURRENT`.
pub const VEC_LOWER_A32: u64 = 2;

global_asm!(
    r#"
    // Count one exception: x9 = &State, x10 = ESR_EL1. Clobbers x10, x11.
    .macro FUZZ_COUNT
    str     x10, [x9, #0]
    mrs     x11, far_el1
    str     x11, [x9, #24]
    ldr     x11, [x9, #56]
    add     x11, x11, #1
    str     x11, [x9, #56]
    ubfx    x10, x10, #26, #6
    add     x10, x9, x10, lsl #3
    ldr     x11, [x10, #64]
    add     x11, x11, #1
    str     x11, [x10, #64]
    .endm

    .section .text.fuzz_vectors, "ax"
    .balign 0x800
    .global fuzz_vectors
fuzz_vectors:
    // Current EL with SP_EL0: never used (SPSel stays 1).
    .rept 4
    .balign 0x80
    b       fuzz_unexpected
    .endr
    // Current EL with SP_ELx.
    .balign 0x80
    b       fuzz_cur_sync
    .balign 0x80
    b       fuzz_unexpected
    .balign 0x80
    b       fuzz_unexpected
    .balign 0x80
    b       fuzz_cur_serror
    // Lower EL using AArch64.
    .balign 0x80
    mov     x8, #1
    b       fuzz_lower
    .balign 0x80
    b       fuzz_unexpected
    .balign 0x80
    b       fuzz_unexpected
    .balign 0x80
    mov     x8, #3
    b       fuzz_lower
    // Lower EL using AArch32.
    .balign 0x80
    mov     x8, #2
    b       fuzz_lower
    .balign 0x80
    b       fuzz_unexpected
    .balign 0x80
    b       fuzz_unexpected
    .balign 0x80
    mov     x8, #3
    b       fuzz_lower

    .text
    // IRQ/FIQ (masked: never expected) and exceptions on SP_EL0: finish with "unexpected
    // exception" (HVC_FINISH status 2), ESR in x2 for the hypervisor's log.
fuzz_unexpected:
    movz    x0, #{finish_lo}
    movk    x0, #{finish_hi}, lsl #16
    mov     x1, #{unexpected}
    mrs     x2, esr_el1
    hvc     #0
3:  b       3b

fuzz_cur_sync:
    sub     sp, sp, #32
    stp     x9, x10, [sp]
    stp     x11, x12, [sp, #16]
    mrs     x9, tpidr_el1
    str     xzr, [x9, #48]
    mrs     x10, esr_el1
    FUZZ_COUNT
    // An illegal exception return (EC 0x0E) leaves us at EL1 on the excursion's stack: an EL0
    // state this CPU refused. End the excursion as if EL0 had faulted.
    mrs     x10, esr_el1
    ubfx    x10, x10, #26, #6
    cmp     x10, #0x0E
    b.eq    1f
    mrs     x10, elr_el1
    add     x10, x10, #4
    msr     elr_el1, x10
    ldp     x11, x12, [sp, #16]
    ldp     x9, x10, [sp]
    add     sp, sp, #32
    eret
1:  add     sp, sp, #32
    b       fuzz_excursion_end

    // An SError at EL1 (asynchronous: nothing to skip). Count it and go on.
fuzz_cur_serror:
    sub     sp, sp, #32
    stp     x9, x10, [sp]
    stp     x11, x12, [sp, #16]
    mrs     x9, tpidr_el1
    mrs     x10, esr_el1
    FUZZ_COUNT
    ldp     x11, x12, [sp, #16]
    ldp     x9, x10, [sp]
    add     sp, sp, #32
    eret

    // From EL0: sp = the excursion frame, x8 = vector number (x8..x12 are EL0's, discarded).
fuzz_lower:
    mrs     x9, tpidr_el1
    str     x6, [x9, #32]
    str     x7, [x9, #40]
    str     x8, [x9, #48]
    mrs     x11, elr_el1
    str     x11, [x9, #8]
    mrs     x11, spsr_el1
    str     x11, [x9, #16]
    mrs     x10, esr_el1
    FUZZ_COUNT
fuzz_excursion_end:
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldr     x18, [sp, #96]
    ldp     d8, d9, [sp, #112]
    ldp     d10, d11, [sp, #128]
    ldp     d12, d13, [sp, #144]
    ldp     d14, d15, [sp, #160]
    add     sp, sp, #176
    ret

    // fuzz_el0_enter(x0 = pc, x1 = spsr, x2 = &[u64; 8] initial x0..x7, x3 = EL0 stack): ERET to
    // EL0; returns when the excursion's first exception reaches fuzz_lower.
    .global fuzz_el0_enter
fuzz_el0_enter:
    sub     sp, sp, #176
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    str     x18, [sp, #96]
    stp     d8, d9, [sp, #112]
    stp     d10, d11, [sp, #128]
    stp     d12, d13, [sp, #144]
    stp     d14, d15, [sp, #160]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    msr     sp_el0, x3
    // AArch32 EL0 sees X13 as SP_usr and X14 as LR_usr.
    mov     x13, x3
    mov     x14, #0
    ldp     x4, x5, [x2, #32]
    ldp     x6, x7, [x2, #48]
    ldp     x0, x1, [x2, #0]
    ldp     x2, x3, [x2, #16]
    eret
"#,
    finish_lo = const crate::abi::HVC_FINISH & 0xFFFF,
    finish_hi = const crate::abi::HVC_FINISH >> 16,
    unexpected = const crate::abi::STATUS_UNEXPECTED_EXCEPTION,
);

unsafe extern "C" {
    static fuzz_vectors: u8;
    fn fuzz_el0_enter(pc: u64, spsr: u64, regs: *const [u64; 8], sp: u64);
}

/// The `State` the vectors write behind the compiler's back (from an exception, not through any
/// Rust reference): the fuzzer only ever reads it with volatile reads through this handle, so no
/// value is cached across a snippet call or an excursion.
#[derive(Clone, Copy)]
pub struct Recorder(*const State);

impl Recorder {
    /// A copy of everything recorded so far.
    pub fn snapshot(self) -> State {
        // SAFETY: the pointer is the fuzzer's `State`, alive for the rest of the vCPU's life
        // (`install`); the vectors write it only while an exception is being taken, never
        // concurrently with this read (one vCPU, exceptions are synchronous here).
        unsafe { core::ptr::read_volatile(self.0) }
    }

    /// Exceptions recorded with ESR_EL1.EC = `ec`.
    pub fn ec(self, ec: u64) -> u64 {
        // SAFETY: as in `snapshot`; `ec` < 64 indexes inside the array.
        unsafe { core::ptr::read_volatile(&raw const (*self.0).ec[(ec & 63) as usize]) }
    }
}

/// Points VBAR_EL1 at the fuzzer's vectors and TPIDR_EL1 at `state`, which must outlive every
/// later exception (the fuzzer's stack frame that never returns) and must not be used directly
/// afterwards: read it through the returned `Recorder`.
pub fn install(state: *mut State) -> Recorder {
    // SAFETY: fuzz_vectors is a 2 KiB-aligned vector table in our image; TPIDR_EL1 is read only
    // by those vectors, which write the `State` it points at. The ISB makes both take effect
    // before the next exception.
    unsafe {
        asm!("msr tpidr_el1, {s}", "msr vbar_el1, {v}", "isb",
             s = in(reg) state as u64,
             v = in(reg) &raw const fuzz_vectors as u64,
             options(nostack));
    }
    Recorder(state)
}

/// Makes `len` bytes of freshly written instructions at `addr` executable (Arm ARM D7.5.2
/// "Concurrent modification and execution of instructions" / the self-modifying-code sequence):
/// clean the data cache to the point of unification, DSB ISH, invalidate the instruction cache
/// to the point of unification, DSB ISH, ISB. Line sizes from CTR_EL0.
pub fn sync_code(addr: u64, len: u64) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let dline = 4u64 << ((ctr >> 16) & 0xF);
    let iline = 4u64 << (ctr & 0xF);
    let mut a = addr & !(dline - 1);
    while a < addr + len {
        // SAFETY: cache maintenance by VA of our own code buffer; it changes no memory.
        unsafe { asm!("dc cvau, {}", in(reg) a, options(nostack)) };
        a += dline;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb ish", options(nostack)) };
    let mut a = addr & !(iline - 1);
    while a < addr + len {
        // SAFETY: as above, for the instruction cache.
        unsafe { asm!("ic ivau, {}", in(reg) a, options(nostack)) };
        a += iline;
    }
    // SAFETY: barriers.
    unsafe { asm!("dsb ish", "isb", options(nostack)) };
}

/// Calls the A64 snippet at `code` (ending in RET) with x0..x7 = `regs`; returns x0, x1.
pub fn call_el1(code: u64, regs: &[u64; 8]) -> (u64, u64) {
    let (r0, r1);
    // SAFETY: the snippet is generated code in our own region that writes only x0..x7, the
    // SVE/SME registers z0-z7/p0-p7/ZA and, through HVC/SMC, what SMCCC lets the callee
    // clobber (x0..x17); its memory accesses go to the fuzzer's targets, which exclude all Rust
    // objects (target.rs). Faults are skipped by our vectors. Streaming mode / ZA are left by the
    // snippet's own SMSTOP if an SMSTART ever succeeded.
    unsafe {
        asm!("blr {code}",
             code = in(reg) code,
             inlateout("x0") regs[0] => r0, inlateout("x1") regs[1] => r1,
             inlateout("x2") regs[2] => _, inlateout("x3") regs[3] => _,
             inlateout("x4") regs[4] => _, inlateout("x5") regs[5] => _,
             inlateout("x6") regs[6] => _, inlateout("x7") regs[7] => _,
             clobber_abi("C"));
    }
    (r0, r1)
}

/// Runs the EL0 snippet at `pc` in the state `spsr` (AArch64 EL0t, or AArch32 User with T for
/// Thumb) with x0..x7 = `regs` and stack `sp`, until its first exception.
pub fn enter_el0(pc: u64, spsr: u64, regs: &[u64; 8], sp: u64) {
    // SAFETY: fuzz_el0_enter saves every callee-saved register (x18-x30, d8-d15) and SP stays
    // SP_EL1 at the frame it pushed; the vectors restore them and return here. EL0 can touch
    // only its targets and its stack page (our region).
    unsafe { fuzz_el0_enter(pc, spsr, regs, sp) };
}

/// Puts `a`/`b` in v16, v31 (and, with SVE, all of z17), makes two HVC_NULL calls and an
/// emulated UART load, and returns a bit mask of the registers that changed (bit 0 v16, 1 v31,
/// 2 z17).
pub fn fp_survives(a: u64, b: u64, sve: bool) -> u64 {
    let (d16lo, d16hi, d31lo, d31hi, zdiff): (u64, u64, u64, u64, u64);
    // SAFETY: only the declared registers are written; HVC_NULL returns x0 = 0 and touches
    // nothing else; the load reads the emulated UART's flag register. SVE instructions are
    // emitted as .inst words and only run when the ID registers say SVE is there.
    unsafe {
        asm!(
            "fmov d16, {a}",
            "mov  v16.d[1], {b}",
            "fmov d31, {b}",
            "mov  v31.d[1], {a}",
            "cbz  {sve}, 1f",
            ".inst 0x05e03931", // mov z17.d, x9
            "1:",
            "mov  x0, {null}",
            "hvc  #0",
            "ldr  w10, [{uart}]",
            "mov  x0, {null}",
            "hvc  #0",
            "mov  {zdiff}, #0",
            "cbz  {sve}, 2f",
            ".inst 0x25d8e3e0", // ptrue p0.d
            ".inst 0x05e03932", // mov z18.d, x9
            ".inst 0x24d2a231", // cmpne p1.d, p0/z, z17.d, z18.d
            "cset {zdiff}, ne",
            "2:",
            "fmov {d16lo}, d16",
            "mov  {d16hi}, v16.d[1]",
            "fmov {d31lo}, d31",
            "mov  {d31hi}, v31.d[1]",
            a = in(reg) a,
            b = in(reg) b,
            sve = in(reg) u64::from(sve),
            null = in(reg) crate::abi::HVC_NULL,
            uart = in(reg) crate::abi::UART_BASE + 0x18,
            zdiff = out(reg) zdiff,
            d16lo = out(reg) d16lo,
            d16hi = out(reg) d16hi,
            d31lo = out(reg) d31lo,
            d31hi = out(reg) d31hi,
            in("x9") a ^ b.rotate_left(17),
            out("x0") _, out("x1") _, out("x2") _, out("x3") _, out("x10") _,
            out("v16") _, out("v17") _, out("v18") _, out("v31") _,
            options(nostack),
        );
    }
    u64::from(d16lo != a || d16hi != b) | u64::from(d31lo != b || d31hi != a) << 1 | zdiff << 2
}
