//! The first instructions: CPU0's entry from QEMU and the secondaries' entry from PSCI CPU_ON.
//! Both run at EL2 with the MMU and caches off; they set a stack and jump to Rust.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    // CPU0, EL2, MMU off, DAIF masked. QEMU passes no DTB pointer (see dtb.rs).
    adrp    x0, __boot_stack_top
    add     x0, x0, :lo12:__boot_stack_top
    mov     sp, x0
    // Clear .bss (16-byte aligned both ends, see linker.ld). The MMU is off, so these stores
    // go straight to memory.
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
1:  cmp     x0, x1
    b.hs    2f
    stp     xzr, xzr, [x0], #16
    b       1b
2:  msr     tpidr_el2, xzr
    bl      primary_main
3:  wfi
    b       3b

    // A secondary CPU, started by PSCI CPU_ON with x0 = its BootRecord (see main.rs), whose
    // first field is the stack top and second the CPU index.
    .global secondary_entry
secondary_entry:
    ldr     x1, [x0]
    mov     sp, x1
    ldr     x1, [x0, #8]
    msr     tpidr_el2, x1
    bl      secondary_main
4:  wfi
    b       4b
"#
);

unsafe extern "C" {
    /// The secondaries' entry point, for PSCI CPU_ON.
    pub fn secondary_entry();
    /// First byte of the hypervisor image (linker.ld).
    pub static __image_start: u8;
    /// First byte after the hypervisor image, stacks included (linker.ld).
    pub static __image_end: u8;
}

/// A secondary CPU's start-up data, read by `secondary_entry` with the MMU off.
#[repr(C)]
pub struct BootRecord {
    /// Initial SP (top of a heap-allocated stack).
    pub stack_top: u64,
    /// CPU index (written to TPIDR_EL2).
    pub cpu: u64,
}

/// The image's physical extent.
pub fn image_range() -> (u64, u64) {
    (
        &raw const __image_start as u64,
        &raw const __image_end as u64,
    )
}
