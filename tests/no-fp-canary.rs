//! The canary for tests/no-fp.sh: instructions its checker must flag (in `bad_*` symbols: every
//! instruction there except `ret`) and must not flag (`good_*`). Built with
//! `rustc --target aarch64-unknown-none --emit obj`; never linked into anything.
#![no_std]

core::arch::global_asm!(
    ".arch_extension sve",
    ".arch_extension sme",
    ".arch_extension aes",
    ".text",
    // What soft-float must never emit: scalar FP, Advanced SIMD, their loads and stores.
    ".global bad_fp_simd",
    "bad_fp_simd:",
    "fmov d0, x1",
    "fadd s0, s1, s2",
    "scvtf d0, x0",
    "movi v0.2d, #0",
    "aese v0.16b, v1.16b",
    "ldr q0, [x0]",
    "stp d8, d9, [sp, #-16]!",
    "ld1 {{v0.16b}}, [x0]",
    ".inst 0x1e270020", // fmov s0, w1 as a raw word
    "ret",
    // SVE and SME instructions.
    ".global bad_sve_sme",
    "bad_sve_sme:",
    "add z0.d, z0.d, z1.d",
    "ptrue p0.b",
    "rdvl x0, #1",
    "ldr z0, [x0]",
    "smstart",
    "smstop sm",
    "zero {{za}}",
    "ldr za[w12, 0], [x0]",
    "ret",
    // Registers holding FP/SVE/SME state or its run-time controls.
    ".global bad_sysreg",
    "bad_sysreg:",
    "msr fpcr, x0",
    "mrs x0, fpsr",
    "msr s3_4_c1_c2_0, x0", // ZCR_EL2
    "msr s3_4_c1_c2_6, x0", // SMCR_EL2
    "msr s3_3_c4_c2_2, x0", // SVCR
    "mrs x0, s3_3_c13_c0_5", // TPIDR2_EL0
    "msr s3_4_c5_c3_0, x0", // FPEXC32_EL2
    "ret",
    // What the hypervisor does use: integer code, the trap controls, the ID registers that
    // describe SVE/SME, cache and TLB maintenance, PSTATE.DAIF, padding.
    ".global good_integer",
    "good_integer:",
    "add x0, x1, x2",
    "ldr x0, [x1]",
    "stp x29, x30, [sp, #-16]!",
    "ldrb w0, [x1]",
    "csel x0, x1, x2, hs",
    "msr s3_4_c1_c1_2, x0", // CPTR_EL2
    "msr cpacr_el1, x0",
    "mrs x0, s3_0_c0_c4_4", // ID_AA64ZFR0_EL1
    "mrs x0, s3_0_c0_c4_5", // ID_AA64SMFR0_EL1
    "mrs x0, id_aa64pfr0_el1",
    "at s1e1r, x0",
    "dc civac, x0",
    "ic ialluis",
    "tlbi vmalls12e1",
    "msr daifset, #2",
    "udf #0",
    "ret",
);
