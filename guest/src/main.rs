//! The test guest: a tiny EL1 program, one copy per vCPU, that touches its own memory region.
//!
//! It runs with its stage-1 MMU off (the hypervisor sets HCR_EL2.DC so its accesses are Normal
//! cacheable memory), prints through the hypervisor's emulated PL011, and reports over HVC.
//! Everything it keeps is on its own stack: the image is shared by every vCPU.

#![no_std]
#![no_main]

// The workspace's default target is the hypervisor's soft-float one (`cargo build --workspace`);
// the guest uses FP/SIMD/SVE and is built for aarch64-unknown-none by hyp/build.rs.
#[cfg(target_abi = "softfloat")]
compile_error!(
    "the guest is built for aarch64-unknown-none by hyp/build.rs (cargo build -p hyp); to build \
     it alone: cargo build -p guest --release --target aarch64-unknown-none"
);

#[allow(dead_code)] // Shared with the hypervisor, which uses the rest.
mod abi;
#[allow(dead_code)] // `word` is the pattern of workloads checked by the hypervisor only.
mod pattern;
mod workloads;
// Robustness: the bad-guest matrix (with its AArch32 EL0 snippets) and the lost-write-counting
// workload (docs/robustness.md).
mod aarch32;
mod badguest;
mod verify;
// The guest fuzzer (workload=fuzz, docs/robustness.md "Guest fuzzer").
mod fuzz;
// The PSCI lifecycle workload (workload=psci).
mod psci;

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::ptr::write_volatile;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    // x0..x5 = vCPU id, region base, region size, workload, flags, vCPUs (abi.rs); SP is set.
    bl      guest_main
1:  b       1b

    // Exception vectors for the external-abort probe. Only "current EL, SP_ELx, synchronous"
    // (+0x200) is expected: it records ESR_EL1 in x0 and skips the faulting load.
    .section .text.vectors, "ax"
    .balign 0x800
    .global guest_vectors
guest_vectors:
    .rept 4
    .balign 0x80
    b       guest_unexpected_exception
    .endr
    .balign 0x80
    mrs     x0, esr_el1
    mrs     x10, elr_el1
    add     x10, x10, #4
    msr     elr_el1, x10
    eret
    .rept 11
    .balign 0x80
    b       guest_unexpected_exception
    .endr

    .text
guest_unexpected_exception:
    movz    x0, #0x0002
    movk    x0, #0xC600, lsl #16
    mov     x1, #{unexpected}
    hvc     #0
2:  b       2b

    // u64 guest_probe_read(u64 addr): loads from addr; returns the ESR_EL1 of the abort it
    // took, or 0 if the load completed. Clobbers x9, x10.
    .global guest_probe_read
guest_probe_read:
    mov     x9, x0
    mov     x0, #0
    ldr     x10, [x9]
    ret
"#,
    unexpected = const abi::STATUS_UNEXPECTED_EXCEPTION,
);

unsafe extern "C" {
    static guest_vectors: u8;
    fn guest_probe_read(addr: u64) -> u64;
}

/// The emulated UART: every byte is a 32-bit store to the PL011 data register.
struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // SAFETY: UART_BASE is the emulated PL011's data register; the store traps to the
            // hypervisor, which emulates it. It aliases no Rust object.
            unsafe { write_volatile(abi::UART_BASE as *mut u32, u32::from(b)) };
        }
        Ok(())
    }
}

macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = writeln!(Uart, $($arg)*);
    }};
}

/// A fast hypervisor call with up to three arguments; returns x0.
fn hvc(function: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret;
    // SAFETY: HVC traps to our hypervisor, which implements the calls in abi.rs and touches
    // only x0..x3 of our registers; no memory of ours is read or written.
    unsafe {
        asm!("hvc #0", inlateout("x0") function => ret, in("x1") a1, in("x2") a2, in("x3") a3,
             options(nostack));
    }
    ret
}

/// An SMC with up to one argument; returns x0. With HCR_EL2.TSC it traps to the hypervisor.
fn smc(function: u64, a1: u64) -> u64 {
    let ret;
    // SAFETY: as for `hvc`: the hypervisor serves it and touches only x0..x3.
    unsafe {
        asm!("smc #0", inlateout("x0") function => ret, in("x1") a1, options(nostack));
    }
    ret
}

/// PSCI function ids (SMCCC 32-bit fast calls).
const PSCI_VERSION: u64 = 0x8400_0000;
const PSCI_CPU_OFF: u64 = 0x8400_0002;
const PSCI_FEATURES: u64 = 0x8400_000A;

/// Tells the hypervisor this vCPU is done; never returns.
fn finish(status: u64) -> ! {
    hvc(abi::HVC_FINISH, status, 0, 0);
    // The hypervisor does not resume a finished vCPU; spin if it ever did.
    loop {
        core::hint::spin_loop();
    }
}

/// The virtual counter (CNTVCT_EL0), readable at EL1.
fn cntvct() -> u64 {
    let t;
    // SAFETY: reading CNTVCT_EL0 has no side effects.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) t, options(nomem, nostack)) };
    t
}

/// Installs our vectors, loads from an IPA the hypervisor knows nothing about and returns the
/// ESR_EL1 of the external abort it injected (0 if none came).
fn probe_external_abort() -> u64 {
    // SAFETY: guest_vectors is 2 KiB aligned code in our image; VBAR_EL1 only takes effect for
    // the exception the probe provokes next. The ISB makes the new VBAR visible to it.
    unsafe {
        asm!("msr vbar_el1, {}", "isb", in(reg) &raw const guest_vectors as u64,
             options(nostack));
    }
    // SAFETY: the load faults (no memslot there); our +0x200 vector skips it and returns ESR.
    unsafe { guest_probe_read(abi::UNMAPPED_PROBE) }
}

#[unsafe(no_mangle)]
extern "C" fn guest_main(
    id: u64,
    base: u64,
    size: u64,
    workload: u64,
    flags: u64,
    vcpus: u64,
) -> ! {
    if flags & abi::FLAG_HANG != 0 {
        println!("vcpu {id}: selftest=hang: spinning forever");
        loop {
            core::hint::spin_loop();
        }
    }
    if flags & abi::FLAG_PROBE != 0 {
        let esr = probe_external_abort();
        println!("vcpu {id}: external abort probe: ESR_EL1={esr:#x}");
        let version = smc(PSCI_VERSION, 0);
        let features = smc(PSCI_FEATURES, PSCI_CPU_OFF) as i64;
        let unknown = hvc(abi::HVC_UNKNOWN, 0, 0, 0) as i64;
        println!(
            "vcpu {id}: SMC PSCI_VERSION={version:#x} PSCI_FEATURES(CPU_OFF)={features} \
             unknown HVC={unknown}"
        );
    }
    // The robustness workloads (docs/robustness.md) live in their own modules.
    match workload {
        abi::WORKLOAD_VERIFY => verify::workload(id, base, size),
        abi::WORKLOAD_BADGUEST => badguest::workload(id, base, size),
        abi::WORKLOAD_FUZZ => fuzz::workload(id, base, size, vcpus),
        abi::WORKLOAD_PSCI => psci::workload(id, base, size, vcpus),
        _ => {}
    }
    workloads::calibrate(id);
    let shared = workloads::expect::shared(workload);
    let ctx = workloads::Ctx {
        id,
        vcpus,
        workload,
        slot: if shared { base } else { base - id * size },
        region: base,
        pages: size / abi::PAGE_SIZE,
    };
    match workloads::run(&ctx) {
        Some(o) => {
            println!(
                "vcpu {id}: workload {workload} done: {} pages, checksum {:#018x}, {} ticks, {} \
                 mismatches",
                o.pages, o.checksum, o.ticks, o.mismatches
            );
            hvc(abi::HVC_REPORT, o.checksum, o.ticks, o.pages);
            finish(if o.mismatches == 0 {
                0
            } else {
                abi::STATUS_MISMATCH
            })
        }
        None => {
            println!("vcpu {id}: unknown workload {workload}");
            finish(abi::STATUS_BAD_WORKLOAD)
        }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("guest panic: {info}");
    finish(abi::STATUS_PANIC)
}
