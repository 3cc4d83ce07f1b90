//! Physical interrupts that arrive while a guest runs (HCR_EL2.IMO/FMO route them to EL2). The
//! hypervisor enables none for the guest; the only source is its own EL2 timer (idle.rs), which
//! it disables after each nap. So an IRQ/FIQ exit is acknowledged at the GICv3 CPU interface if
//! one is pending, EOI'd, logged by the caller, and the guest resumes: it never stops a vCPU.

use aarch64_cpu::registers::{Readable, ICC_SRE_EL2, ID_AA64PFR0_EL1};
use core::arch::asm;

/// INTIDs 1020..=1023 are special (1023 = spurious: nothing pending); they are not EOI'd.
const FIRST_SPECIAL_INTID: u64 = 1020;

/// Which interrupt group to acknowledge: group 1 for IRQ, group 0 for FIQ (with one security
/// state and ICC_CTLR/SCR defaults, GICv3 signals group 0 as FIQ and group 1 as IRQ).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Group {
    /// Group 0 (FIQ): ICC_IAR0_EL1 / ICC_EOIR0_EL1.
    Zero,
    /// Group 1 (IRQ): ICC_IAR1_EL1 / ICC_EOIR1_EL1.
    One,
}

/// Whether this CPU's GICv3 CPU interface is usable through system registers at EL2: the
/// interface is implemented (ID_AA64PFR0_EL1.GIC, bits [27:24], != 0) and enabled at EL2
/// (ICC_SRE_EL2.SRE = 1, set by idle.rs when it routes the nap timer). Otherwise an ICC_* access
/// at EL2 would be UNDEFINED, i.e. a hypervisor exception.
fn cpu_interface_enabled() -> bool {
    (ID_AA64PFR0_EL1.get() >> 24) & 0xF != 0 && ICC_SRE_EL2.read(ICC_SRE_EL2::SRE) == 1
}

/// Acknowledges the highest-priority pending interrupt of `group` and ends it (EOI, which with
/// ICC_CTLR_EL1.EOImode = 0 also deactivates it). Returns its INTID, or None if no CPU interface
/// is usable or nothing was pending (1023, or another special INTID).
pub fn acknowledge(group: Group) -> Option<u64> {
    if !cpu_interface_enabled() {
        return None;
    }
    let intid = read_iar(group) & 0xFF_FFFF;
    if (FIRST_SPECIAL_INTID..=1023).contains(&intid) {
        return None;
    }
    write_eoir(group, intid);
    Some(intid)
}

/// ICC_IAR{0,1}_EL1 (aarch64-cpu has no typed accessors for these).
fn read_iar(group: Group) -> u64 {
    let v: u64;
    // SAFETY: acknowledging an interrupt changes only the GIC's state for it (pending ->
    // active), which `write_eoir` ends; the CPU interface is enabled (checked by the caller).
    unsafe {
        match group {
            Group::Zero => asm!("mrs {}, icc_iar0_el1", out(reg) v, options(nostack)),
            Group::One => asm!("mrs {}, icc_iar1_el1", out(reg) v, options(nostack)),
        }
    }
    v
}

/// ICC_EOIR{0,1}_EL1.
fn write_eoir(group: Group, intid: u64) {
    // SAFETY: ends the interrupt this CPU just acknowledged; no memory is touched.
    unsafe {
        match group {
            Group::Zero => asm!("msr icc_eoir0_el1, {}", in(reg) intid, options(nostack)),
            Group::One => asm!("msr icc_eoir1_el1, {}", in(reg) intid, options(nostack)),
        }
    }
}
