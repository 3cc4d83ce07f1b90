//! Waiting without spinning: the reporter sleeps in WFI, woken every few milliseconds by its EL2
//! physical timer (CNTHP, PPI 26) through the GICv3, to poll whether the vCPUs are done.
//!
//! Why: under QEMU TCG each CPU is a host thread, and there are usually more vCPUs than host
//! cores. A CPU spinning on a flag steals a host core from the vCPUs still working (and a busy
//! peer makes every broadcast TLBI ~100x dearer). WFE does not help (TCG treats it as a yield and
//! keeps running); WFI with a pending interrupt does. The interrupt is never taken: EL2 runs with
//! IRQs masked, and WFI wakes on a pending interrupt whatever PSTATE's masks say. Re-arming the
//! timer clears it. If the DTB has no GICv3, `Waiter::new` says so and callers spin instead.

use aarch64_cpu::registers::{Writeable, CNTHP_CTL_EL2, ICC_SRE_EL2};
use core::arch::asm;
use tock_registers::interfaces::{ReadWriteable, Readable};
use tock_registers::registers::ReadWrite;

use crate::arch;

/// The EL2 physical timer's private interrupt (INTID 26 on the virt board and Arm's convention).
const CNTHP_PPI: u32 = 26;
/// Bytes between per-CPU redistributors in GICv3 (RD_base + SGI_base frames).
const GICR_STRIDE: u64 = 0x2_0000;
/// SGI_base frame offset within a redistributor.
const GICR_SGI_OFFSET: u64 = 0x1_0000;

/// A 32-bit MMIO register at `addr`.
fn reg32(addr: u64) -> &'static ReadWrite<u32> {
    // SAFETY: callers pass addresses inside the GIC's MMIO windows from the DTB, which mmu.rs
    // maps as Device memory; `ReadWrite` performs volatile accesses only.
    unsafe { &*(addr as *const ReadWrite<u32>) }
}

/// A 64-bit MMIO register at `addr` (read only here).
fn reg64(addr: u64) -> &'static ReadWrite<u64> {
    // SAFETY: as for `reg32`.
    unsafe { &*(addr as *const ReadWrite<u64>) }
}

fn wait_while(mut busy: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if !busy() {
            return;
        }
        core::hint::spin_loop();
    }
}

/// This CPU's timer wake-up, set up.
pub struct Waiter {
    ticks: u64,
}

impl Waiter {
    /// Routes this CPU's CNTHP interrupt through the GICv3 at `gicd` / `gicr` (from the DTB) so
    /// it can wake WFI; `mpidr` picks the redistributor. None if no redistributor matches.
    pub fn new(gicd: u64, gicr: u64, mpidr: u64, period_ticks: u64) -> Option<Self> {
        // Distributor: affinity routing on, group 1 on. (With one security state, GICD_CTLR
        // bit 4 is ARE and bit 1 EnableGrp1; bit 31 RWP says a write is still in progress.)
        let ctlr = reg32(gicd);
        ctlr.set(ctlr.get() | (1 << 4) | (1 << 1));
        wait_while(|| ctlr.get() & (1 << 31) != 0);

        let rd = redistributor(gicr, mpidr)?;
        // Wake the redistributor: clear GICR_WAKER.ProcessorSleep, wait for ChildrenAsleep = 0.
        let waker = reg32(rd + 0x14);
        waker.set(waker.get() & !(1 << 1));
        wait_while(|| waker.get() & (1 << 2) != 0);
        enable_cnthp_ppi(rd, 0x80);

        // CPU interface through system registers at EL2. ICC_SRE_EL2.Enable (EL1 access to
        // ICC_SRE_EL1) is the guest's business and is set per VM by vm.rs init_el2_state: the
        // built-in guest is shown no GIC, so its ICC_SRE_EL1 accesses trap (Enable = 0).
        ICC_SRE_EL2.modify(ICC_SRE_EL2::SRE::SET);
        arch::isb();
        set_priority_mask_and_enable_group1();
        arch::isb();
        Some(Self {
            ticks: period_ticks,
        })
    }

    /// Sleeps until the timer fires (one period) or another interrupt is pending.
    pub fn nap(&self) {
        set_cnthp_tval(self.ticks);
        CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
        arch::isb();
        while CNTHP_CTL_EL2.read(CNTHP_CTL_EL2::ISTATUS) == 0 {
            arch::wfi();
        }
        CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR);
    }
}

/// The redistributor (RD_base) of the CPU with `mpidr` among those from `gicr` on: GICR_TYPER
/// [63:32] is its CPU's affinity, bit 4 (Last) marks the last frame (GICv3 spec 12.11.x).
pub fn redistributor(gicr: u64, mpidr: u64) -> Option<u64> {
    let want = ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff);
    let mut rd = gicr;
    loop {
        let typer = reg64(rd + 0x8).get();
        if typer >> 32 == want {
            return Some(rd);
        }
        if typer & (1 << 4) != 0 {
            return None;
        }
        rd += GICR_STRIDE;
    }
}

/// PPI 26 (CNTHP) in the redistributor at `rd`: group 1 (GICR_IGROUPR0), priority `priority`
/// (GICR_IPRIORITYR), enabled (GICR_ISENABLER0).
fn enable_cnthp_ppi(rd: u64, priority: u32) {
    let sgi = rd + GICR_SGI_OFFSET;
    let group = reg32(sgi + 0x80);
    group.set(group.get() | 1 << CNTHP_PPI);
    let prio = reg32(sgi + 0x400 + u64::from(CNTHP_PPI / 4) * 4);
    let shift = (CNTHP_PPI % 4) * 8;
    prio.set((prio.get() & !(0xff << shift)) | (priority << shift));
    reg32(sgi + 0x100).set(1 << CNTHP_PPI);
}

/// A guest's WFI trapped to EL2 (HCR_EL2.TWI) on a CPU whose GIC the guest owns (pass-through,
/// HCR_EL2.IMO = 0): waits at EL2 until an interrupt is pending for the guest or `ticks` pass,
/// whichever is first. Returns whether it slept (false: the guest's own GIC state would keep
/// the wake-up timer from waking this CPU, and the WFI completes at once, which a WFI may).
///
/// Why it works: a physical IRQ is a WFI wake-up event whatever PSTATE's masks and whatever
/// Exception level it targets (Arm ARM D1.6.2, "Wait for Interrupt"), so the guest's own
/// interrupts (timer, IPIs, UART) wake this WFI as they would have woken the guest's. The
/// timeout is this CPU's EL2 timer (CNTHP, PPI 26, which the guest never uses: Linux and
/// kvm-unit-tests at EL1 use the virtual and physical EL1 timers) at the highest priority, so
/// only the guest's ICC_PMR_EL1 = 0, a running priority of 0 or Group 1 disabled could mask it;
/// those registers are the guest's and are not touched, only read. The timer is disabled again
/// before returning, which takes its level interrupt away before the guest can see it.
pub fn guest_wfi(rd: u64, ticks: u64) -> bool {
    let (pmr, rpr, grp1) = read_pmr_rpr_igrpen1();
    if pmr == 0 || rpr == 0 || grp1 & 1 == 0 {
        return false;
    }
    enable_cnthp_ppi(rd, 0);
    set_cnthp_tval(ticks);
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
    arch::isb();
    arch::wfi();
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR);
    arch::isb();
    true
}

/// ICC_PMR_EL1, ICC_RPR_EL1 and ICC_IGRPEN1_EL1 of this CPU's GIC CPU interface (aarch64-cpu has
/// no typed accessors for them).
fn read_pmr_rpr_igrpen1() -> (u64, u64, u64) {
    let (pmr, rpr, grp1): (u64, u64, u64);
    // SAFETY: reads of this CPU's GIC CPU-interface registers; no side effects.
    unsafe {
        asm!(
            "mrs {pmr}, icc_pmr_el1",
            "mrs {rpr}, icc_rpr_el1",
            "mrs {grp1}, icc_igrpen1_el1",
            pmr = out(reg) pmr,
            rpr = out(reg) rpr,
            grp1 = out(reg) grp1,
            options(nomem, nostack, preserves_flags)
        );
    }
    (pmr, rpr, grp1)
}

/// ICC_PMR_EL1 = 0xff (let every priority through) and ICC_IGRPEN1_EL1 = 1 (group 1 on).
/// aarch64-cpu has no typed accessors for these two.
fn set_priority_mask_and_enable_group1() {
    // SAFETY: GIC CPU-interface configuration for this CPU; EL2 masks IRQs in PSTATE, so enabling
    // delivery only makes WFI wake, no handler runs.
    unsafe {
        asm!(
            "msr icc_pmr_el1, {pmr}",
            "msr icc_igrpen1_el1, {on}",
            pmr = in(reg) 0xffu64,
            on = in(reg) 1u64,
            options(nostack, preserves_flags)
        );
    }
}

/// CNTHP_TVAL_EL2: fire `ticks` from now (aarch64-cpu has no typed accessor for it).
fn set_cnthp_tval(ticks: u64) {
    // SAFETY: programs this CPU's EL2 timer, which nothing else uses.
    unsafe { asm!("msr cnthp_tval_el2, {}", in(reg) ticks, options(nostack, preserves_flags)) };
}
