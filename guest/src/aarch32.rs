//! AArch32 EL0 for the bad-guest matrix (cases 16 to 18): hand-encoded T32 snippets and the EL1
//! code that drops to them and comes back.
//!
//! EL1 stays AArch64 (HCR_EL2.RW = 1); EL0 may be AArch32 when ID_AA64PFR0_EL1.EL0 = 0b0010
//! (QEMU `-cpu max`). `run` saves the EL1 callee-saved registers on its stack, loads r0..r7
//! (= x0..x7, Arm ARM "mapping of AArch32 registers to AArch64"), sets SPSR_EL1 to User mode in
//! T32 with A/I/F masked and ERETs to the snippet. Any exception the snippet takes from there (its
//! closing SVC, or an abort the hypervisor injects) is taken to EL1 through one of the lower-EL
//! vectors of `bg_vectors` (guest/src/badguest.rs), which branch to `bg_lower_return` with the
//! vector offset in x9: it stores r0..r7, the offset, ELR_EL1 and SPSR_EL1, restores the EL1
//! registers from the same stack and returns ESR_EL1. The guest's MMU is off and HCR_EL2.DC = 1,
//! so EL0 may fetch and access every address (the snippets live in the image, below 4 GiB).

use core::arch::{asm, global_asm};

global_asm!(
    r#"
    .text
    // u64 bg_el0_a32(u64 entry, u64 *state): state[0..8] = r0..r7 in and out, state[8] = the
    // vector offset the snippet came back through, state[9] = ELR_EL1, state[10] = SPSR_EL1.
    .global bg_el0_a32
bg_el0_a32:
    stp     x29, x30, [sp, #-112]!
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    stp     x1, x18, [sp, #96]
    msr     elr_el1, x0
    // SPSR_EL1: M[4] = 1 (AArch32), M[3:0] = 0b0000 (User), T (bit 5) = 1, F/I/A masked.
    mov     x9, #0x1f0
    msr     spsr_el1, x9
    mov     x9, x1
    ldp     x0, x1, [x9, #0]
    ldp     x2, x3, [x9, #16]
    ldp     x4, x5, [x9, #32]
    ldp     x6, x7, [x9, #48]
    eret

    // A lower-EL vector of bg_vectors came here with x9 = its offset; SP is SP_EL1 as
    // bg_el0_a32 left it (EL0 cannot change it).
    .global bg_lower_return
bg_lower_return:
    ldr     x10, [sp, #96]
    stp     x0, x1, [x10, #0]
    stp     x2, x3, [x10, #16]
    stp     x4, x5, [x10, #32]
    stp     x6, x7, [x10, #48]
    mrs     x11, elr_el1
    stp     x9, x11, [x10, #64]
    mrs     x11, spsr_el1
    str     x11, [x10, #80]
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldr     x18, [sp, #104]
    ldp     x29, x30, [sp], #112
    mrs     x0, esr_el1
    ret

    // T32 snippets (hand-encoded: the assembler here only speaks A64). Each ends with SVC #0,
    // then SVC #1 and a branch-to-self as a net if a wrong ITSTATE made the SVC #0 not execute.
    .balign 4
    .global bg_t32_store
bg_t32_store:
    .hword  0x6008      // str   r0, [r1]        STR (imm) T1: the trapped MMIO store
    .hword  0x1c52      // adds  r2, r2, #1      must run: PC += 2 after the store
    .hword  0x1c92      // adds  r2, r2, #2
    .hword  0xdf00      // svc   #0
    .hword  0xdf01      // svc   #1
    .hword  0xe7fe      // b     .

    .balign 4
    .global bg_t32_it
bg_t32_it:
    .hword  0x429b      // cmp   r3, r3          Z = 1
    .hword  0xbf06      // itte  eq
    .hword  0x7008      // strbeq r0, [r1]       STRB (imm) T1 in the IT block: the trapped store
    .hword  0x3201      // addeq r2, #1          then: runs
    .hword  0x3202      // addne r2, #2          else: must not run
    .hword  0x3204      // adds  r2, #4          after the block: runs
    .hword  0xdf00      // svc   #0
    .hword  0xdf01      // svc   #1
    .hword  0xe7fe      // b     .

    .balign 4
    .global bg_t32_load
bg_t32_load:
    .hword  0x680a      // ldr   r2, [r1]        LDR (imm) T1 from an IPA outside every memslot
    .hword  0xdf00      // svc   #0
    .hword  0xdf01      // svc   #1
    .hword  0xe7fe      // b     .
"#
);

unsafe extern "C" {
    fn bg_el0_a32(entry: u64, state: *mut [u64; 11]) -> u64;
    static bg_t32_store: u8;
    static bg_t32_it: u8;
    static bg_t32_load: u8;
}

/// The T32 snippets `run` can drop to.
#[derive(Clone, Copy)]
pub enum Snippet {
    /// `str r0, [r1]; adds r2, #1; adds r2, #2; svc #0`: r2 = 3 if the store's emulation
    /// advanced the PC by 2.
    Store,
    /// `cmp r3, r3; itte eq; strbeq r0, [r1]; addeq r2, #1; addne r2, #2; adds r2, #4; svc #0`:
    /// r2 = 5 if the emulation advanced the PC by 2 and ITSTATE by one instruction.
    ItStore,
    /// `ldr r2, [r1]; svc #0`: with r1 outside every memslot, an injected external abort.
    Load,
}

impl Snippet {
    /// The address of the snippet's first instruction.
    pub fn entry(self) -> u64 {
        match self {
            Snippet::Store => &raw const bg_t32_store as u64,
            Snippet::ItStore => &raw const bg_t32_it as u64,
            Snippet::Load => &raw const bg_t32_load as u64,
        }
    }
}

/// What a snippet left behind when it came back to EL1.
pub struct Back {
    /// ESR_EL1 of the exception that ended it.
    pub esr: u64,
    /// r0..r7 at that point.
    pub r: [u64; 8],
    /// The offset from VBAR_EL1 of the vector it came through (0x600: lower EL, AArch32, sync).
    pub vector: u64,
    /// ELR_EL1 of that exception.
    pub elr: u64,
    /// SPSR_EL1 of that exception.
    pub spsr: u64,
}

/// Whether EL0 can run AArch32 (ID_AA64PFR0_EL1.EL0 = 0b0010).
pub fn el0_has_aarch32() -> bool {
    let pfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
    pfr0 & 0xF == 0b0010
}

/// Clears SCTLR_EL1.ITD, so that IT blocks of more than one instruction are allowed at EL0
/// (Arm ARM, SCTLR_EL1.ITD: with ITD = 1 most IT forms are UNDEFINED at AArch32 EL0).
fn allow_it_blocks() {
    // SAFETY: ITD only affects AArch32 EL0 execution, which nothing else in this guest uses.
    unsafe {
        asm!("mrs {t}, sctlr_el1", "bic {t}, {t}, #(1 << 7)", "msr sctlr_el1, {t}", "isb",
             t = out(reg) _, options(nomem, nostack));
    }
}

/// Runs `snippet` at AArch32 EL0 (User, T32) with r0..r2 = `r0`, `r1`, `r2` (r3..r7 = 0) until
/// it takes an exception to EL1. Needs `bg_vectors` installed and `el0_has_aarch32()`.
pub fn run(snippet: Snippet, r0: u64, r1: u64, r2: u64) -> Back {
    allow_it_blocks();
    let mut state = [0u64; 11];
    state[0] = r0;
    state[1] = r1;
    state[2] = r2;
    // SAFETY: the snippet is T32 code in our image that touches no memory Rust owns (only the
    // MMIO or unmapped address in r1) and ends in an exception to EL1, which bg_lower_return
    // turns back into a return from bg_el0_a32 with every callee-saved register (and x18)
    // restored;
    // `state` is ours and outlives the call. x8..x18 are caller-saved in the AAPCS64.
    let esr = unsafe { bg_el0_a32(snippet.entry(), &raw mut state) };
    let mut r = [0u64; 8];
    r.copy_from_slice(&state[..8]);
    Back {
        esr,
        r,
        vector: state[8],
        elr: state[9],
        spsr: state[10],
    }
}
