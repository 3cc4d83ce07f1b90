//! Physical interrupts that arrive while a guest runs (HCR_EL2.IMO/FMO route them to EL2). The
//! hypervisor enables none for the guest; the only source is its own EL2 timer (idle.rs), which
//! it disables after each nap. So an IRQ/FIQ exit is acknowledged at the GICv3 CPU interface if
//! one is pending, EOI'd, logged by the caller, and the guest resumes: it never stops a vCPU.

use aarch64_cpu::registers::{Readable, ICC_SRE_EL2, ID_AA64PFR0_EL1};
use arm_gic::gicv3::GicCpuInterface;
use arm_gic::{IntId, InterruptGroup};

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

/// Acknowledges the highest-priority pending interrupt of `group` (ICC_IAR{0,1}_EL1) and ends
/// it (ICC_EOIR{0,1}_EL1, which with ICC_CTLR_EL1.EOImode = 0 also deactivates it), through
/// `arm-gic`'s CPU interface. Returns its INTID, or None if no CPU interface is usable or
/// nothing was pending (1023, or another special INTID 1020..=1022, which is not EOI'd).
pub fn acknowledge(group: Group) -> Option<u64> {
    if !cpu_interface_enabled() {
        return None;
    }
    let group = match group {
        Group::Zero => InterruptGroup::Group0,
        Group::One => InterruptGroup::Group1,
    };
    // None is 1023 (spurious: nothing pending).
    let intid = GicCpuInterface::get_and_acknowledge_interrupt(group)?;
    if [
        IntId::SPECIAL_SECURE,
        IntId::SPECIAL_NONSECURE,
        IntId::SPECIAL_NMI,
    ]
    .contains(&intid)
    {
        return None;
    }
    GicCpuInterface::end_interrupt(intid, group);
    Some(u64::from(intid.raw_value()))
}
