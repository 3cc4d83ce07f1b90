//! Waiting without spinning: the reporter sleeps in WFI, woken every few milliseconds by its EL2
//! physical timer (CNTHP, PPI 26) through the GICv3, to poll whether the vCPUs are done.
//!
//! Why: under QEMU TCG each CPU is a host thread, and there are usually more vCPUs than host
//! cores. A CPU spinning on a flag steals a host core from the vCPUs still working (and a busy
//! peer makes every broadcast TLBI ~100x dearer). WFE does not help (TCG treats it as a yield and
//! keeps running); WFI with a pending interrupt does. The interrupt is never taken: EL2 runs with
//! IRQs masked, and WFI wakes on a pending interrupt whatever PSTATE's masks say. Re-arming the
//! timer clears it. If the DTB has no GICv3, `Waiter::new` says so and callers spin instead.
//!
//! The GIC is programmed through the `arm-gic` crate's typed registers (`arm_gic::gicv3`), not
//! `GicV3` itself: `GicV3::setup` resets every redistributor and the distributor, and a guest
//! from files owns the GIC (pass-through), so the hypervisor only ever touches the bits named
//! here. Each wait checks, before every WFI, that the guest has not cut the wake-up path
//! (`wake_path_intact`) and polls the counter instead when it has: no EL2 wait is unbounded.

use aarch64_cpu::registers::{Writeable, CNTHP_CTL_EL2, ICC_SRE_EL2};
use arm_gic::gicv3::registers::{Gicd, GicdCtlr, GicrSgi, Waker};
use arm_gic::gicv3::{GicCpuInterface, GicDistributor, GicRedistributor, Group};
use arm_gic::IntId;
use arm_sysregs::el1::accessors::{read_icc_igrpen1_el1, read_icc_rpr_el1};
use arm_sysregs::el1::registers::IccIgrpen1El1;
use core::arch::asm;
use core::ptr::NonNull;
use safe_mmio::{field_shared, SharedMmioPointer, UniqueMmioPointer};
use tock_registers::interfaces::{ReadWriteable, Readable};

use crate::arch;

/// The EL2 physical timer's private interrupt (INTID 26 = PPI 10 on the virt board and Arm's
/// convention).
const CNTHP_PPI: IntId = IntId::ppi(10);
/// GICD_CTLR with one security state (QEMU virt without EL3; GICv3 spec 12.9.4): bit 4 is ARE
/// and bit 1 EnableGrp1. `arm-gic` names the bits by their two-security-state Secure view, in
/// which the same bits are ARE_S and EnableGrp1NS.
const GICD_ARE_AND_GRP1: GicdCtlr = GicdCtlr::ARE_S.union(GicdCtlr::EnableGrp1NS);
/// Priority of the nap timer's PPI (the lowest Non-secure half's highest, as `arm-gic` uses).
const NAP_PRIORITY: u8 = 0x80;

/// The distributor at `gicd` (from the DTB).
fn distributor(gicd: u64) -> GicDistributor<'static> {
    // SAFETY: `gicd` is the GICD frame from the DTB, which mmu.rs maps as Device memory for the
    // whole run. It is not unique: every CPU and a pass-through guest use it too. The hypervisor
    // only reads GICD_CTLR and sets its ARE / EnableGrp1 bits (idempotent, no other register),
    // each access a single volatile one, so an alias changes nothing the driver relies on.
    GicDistributor::new(unsafe { UniqueMmioPointer::new(mmio(gicd)) })
}

/// The redistributor (RD_base + SGI_base frames) at `rd`.
fn redistributor_at(rd: u64) -> GicRedistributor<'static> {
    // SAFETY: `rd` is a redistributor inside the GICR window from the DTB (found by
    // `redistributor`), mapped as Device memory by mmu.rs for the whole run. The hypervisor
    // programs only the redistributor of the CPU it runs on, whose vCPU is not running; the
    // guest may alias it from another vCPU, which is why every wait re-checks its state.
    GicRedistributor::new(unsafe { UniqueMmioPointer::new(mmio(rd)) })
}

/// A read-only view of the registers of type `T` at `addr` (same mapping as above).
fn shared<T>(addr: u64) -> SharedMmioPointer<'static, T> {
    // SAFETY: as for `distributor` / `redistributor_at`; a `SharedMmioPointer` only reads, and
    // the registers read here (GICD_CTLR, GICR_TYPER, GICR_WAKER, GICR_I*R0, GICR_IPRIORITYR)
    // have no read side effects.
    unsafe { UniqueMmioPointer::new(mmio(addr)) }.into()
}

fn mmio<T>(addr: u64) -> NonNull<T> {
    NonNull::new(addr as *mut T).expect("GIC frame at address 0")
}

/// Turns on affinity routing and Group 1 at the distributor at `gicd`, leaving every other bit
/// as it is; waits for GICD_CTLR.RWP (the crate's `modify_control`). For the hypervisor's own
/// GIC use only: the built-in guest is shown no GIC, and a guest from files gets the GIC with
/// these bits on before it starts (lifecycle::init) and may reprogram them as it likes.
pub fn enable_distributor(gicd: u64) {
    distributor(gicd).modify_control(GICD_ARE_AND_GRP1, true);
}

/// This CPU's timer wake-up, set up.
pub struct Waiter {
    gicd: u64,
    rd: u64,
    ticks: u64,
}

impl Waiter {
    /// Routes this CPU's CNTHP interrupt through the GICv3 at `gicd` / `gicr` (from the DTB) so
    /// it can wake WFI, turning on the distributor too: for the built-in guest, which is shown
    /// no GIC, so the hypervisor owns it. `mpidr` picks the redistributor. None if none matches.
    pub fn new(gicd: u64, gicr: u64, mpidr: u64, period_ticks: u64) -> Option<Self> {
        enable_distributor(gicd);
        Self::beside_guest(gicd, gicr, mpidr, period_ticks)
    }

    /// As `new`, but leaves the distributor alone: for a CPU whose vCPU is OFF while a guest
    /// from files owns the GIC. This CPU's redistributor and CPU interface are set up (its
    /// guest vCPU is not running and starts from reset EL1 state at its next CPU_ON).
    pub fn beside_guest(gicd: u64, gicr: u64, mpidr: u64, period_ticks: u64) -> Option<Self> {
        let rd = redistributor(gicr, mpidr)?;
        // Wake the redistributor: clear GICR_WAKER.ProcessorSleep, wait for ChildrenAsleep = 0
        // (AlreadyAwake is not an error here).
        let _ = redistributor_at(rd).mark_core_awake();
        enable_cnthp_ppi(rd, NAP_PRIORITY);

        // CPU interface through system registers at EL2. ICC_SRE_EL2.Enable (EL1 access to
        // ICC_SRE_EL1) is the guest's business and is set per VM by vm.rs init_el2_state: the
        // built-in guest is shown no GIC, so its ICC_SRE_EL1 accesses trap (Enable = 0). So not
        // `GicCpuInterface::enable_system_register_el2`, which writes Enable as well.
        ICC_SRE_EL2.modify(ICC_SRE_EL2::SRE::SET);
        arch::isb();
        // ICC_PMR_EL1 = 0xff (let every priority through), ICC_IGRPEN1_EL1 = 1 (Group 1 on).
        // EL2 masks IRQs in PSTATE, so enabling delivery only makes WFI wake, no handler runs.
        GicCpuInterface::set_priority_mask(0xff);
        GicCpuInterface::enable_group1(true);
        arch::isb();
        Some(Self {
            gicd,
            rd,
            ticks: period_ticks,
        })
    }

    /// Sleeps until the timer fires (one period) or another interrupt is pending. Before each
    /// WFI it checks the wake-up path (`wake_path_intact`); if a guest that owns the GIC has
    /// cut it, the CPU polls the timer's status (i.e. CNTPCT against the timer's compare
    /// value) instead, so the nap still ends after one period.
    pub fn nap(&self) {
        set_cnthp_tval(self.ticks);
        CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
        arch::isb();
        while CNTHP_CTL_EL2.read(CNTHP_CTL_EL2::ISTATUS) == 0 {
            if wake_path_intact(self.gicd, self.rd) {
                arch::wfi();
            } else {
                core::hint::spin_loop();
            }
        }
        CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR);
    }
}

/// Whether the CNTHP PPI, once pending at the redistributor `rd`, reaches this CPU's interface
/// and so wakes a WFI: the distributor has affinity routing and Group 1 on (GICD_CTLR, which
/// gates PPIs too when ARE = 1), the redistributor is awake (GICR_WAKER.ProcessorSleep and
/// ChildrenAsleep clear), the PPI is enabled (GICR_ISENABLER0) in Group 1 (GICR_IGROUPR0), the
/// CPU interface has Group 1 on (ICC_IGRPEN1_EL1) and the PPI's priority is above both the
/// priority mask (ICC_PMR_EL1) and the running priority (ICC_RPR_EL1). All reads, no writes.
///
/// Limit: a guest vCPU on another CPU can still cut the path between this check and the WFI
/// (a few instructions); the CPU then sleeps until any other interrupt of its own arrives.
/// WFIT (FEAT_WFxT, a WFI with a timeout) would bound that too; it is not used yet.
fn wake_path_intact(gicd: u64, rd: u64) -> bool {
    let ctlr = field_shared!(shared::<Gicd>(gicd), ctlr).read();
    if !ctlr.contains(GICD_ARE_AND_GRP1) {
        return false;
    }
    let frames = shared::<GicrSgi>(rd);
    let gicr = field_shared!(frames, gicr);
    let waker = field_shared!(gicr, waker).read();
    if waker.intersects(Waker::PROCESSOR_SLEEP | Waker::CHILDREN_ASLEEP) {
        return false;
    }
    let sgi = field_shared!(frames, sgi);
    let bit = 1 << CNTHP_PPI.raw_value();
    let enabled = field_shared!(sgi, isenabler).get(0).unwrap().read() & bit != 0;
    let group1 = field_shared!(sgi, igroupr).get(0).unwrap().read() & bit != 0;
    let n = CNTHP_PPI.raw_value() as usize;
    let word = field_shared!(sgi, ipriorityr).get(n / 4).unwrap().read();
    let priority = word.to_le_bytes()[n % 4];
    enabled
        && group1
        && read_icc_igrpen1_el1().contains(IccIgrpen1El1::ENABLE)
        && priority < GicCpuInterface::get_priority_mask()
        && priority < read_icc_rpr_el1().priority()
}

/// The redistributor (RD_base) of the CPU with `mpidr` among those from `gicr` on, by its
/// GICR_TYPER affinity; GICR_TYPER.Last marks the last one (GICv3 spec 12.11.x).
///
/// Not `arm_gic::gicv3::GicRedistributorIterator`: it yields drivers, not their addresses, and
/// the hypervisor keeps each vCPU's redistributor address (lifecycle.rs). So the walk steps
/// itself: one `GicrSgi` (RD_base + SGI_base, 128 KiB) per redistributor in GICv3, two (with
/// the VLPI frames) where GICR_TYPER.VLPIS says GICv4 virtual LPIs are supported, the rule the
/// crate applies (its `get_redistributor_frame_count`, not public).
pub fn redistributor(gicr: u64, mpidr: u64) -> Option<u64> {
    // MPIDR_EL1's affinity fields: Aff3 [39:32], Aff2..Aff0 [23:0] (GicrTyper::core_mpidr's shape).
    let want = mpidr & 0xff_00ff_ffff;
    let mut rd = gicr;
    loop {
        let typer = redistributor_at(rd).typer();
        if typer.core_mpidr() == want {
            return Some(rd);
        }
        if typer.last_redistributor() {
            return None;
        }
        let frames = if typer.virtual_lpis_supported() { 2 } else { 1 };
        rd += frames * core::mem::size_of::<GicrSgi>() as u64;
    }
}

/// The CNTHP PPI in the redistributor at `rd`: Group 1 (GICR_IGROUPR0 / GICR_IGRPMODR0),
/// priority `priority` (GICR_IPRIORITYR), enabled (GICR_ISENABLER0).
fn enable_cnthp_ppi(rd: u64, priority: u8) {
    let mut r = redistributor_at(rd);
    // The INTID is a PPI, so none of these can fail (InvalidGicrIntid is for others).
    let _ = r.set_group(CNTHP_PPI, Group::Group1NS);
    let _ = r.set_interrupt_priority(CNTHP_PPI, priority);
    let _ = r.enable_interrupt(CNTHP_PPI, true);
}

/// A guest's WFI trapped to EL2 (HCR_EL2.TWI) on a CPU whose GIC the guest owns (pass-through,
/// HCR_EL2.IMO = 0): waits at EL2 until an interrupt is pending for the guest or `ticks` pass,
/// whichever is first. `gicd` is the distributor, `rd` this CPU's redistributor. Returns
/// whether it slept (false: the guest's own GIC state would keep the wake-up timer from waking
/// this CPU, and the WFI completes at once, which a WFI may).
///
/// Why it works: a physical IRQ is a WFI wake-up event whatever PSTATE's masks and whatever
/// Exception level it targets (Arm ARM D1.6.2, "Wait for Interrupt"), so the guest's own
/// interrupts (timer, IPIs, UART) wake this WFI as they would have woken the guest's. The
/// timeout is this CPU's EL2 timer (CNTHP, PPI 26, which the guest never uses: Linux and
/// kvm-unit-tests at EL1 use the virtual and physical EL1 timers) at the highest priority, so
/// only the guest's ICC_PMR_EL1 = 0, a running priority of 0, Group 1 disabled at the CPU
/// interface or the distributor, or a sleeping redistributor could mask it; those registers
/// are the guest's and are not touched, only read (`wake_path_intact`). The timer is disabled
/// again before returning, which takes its level interrupt away before the guest can see it.
pub fn guest_wfi(gicd: u64, rd: u64, ticks: u64) -> bool {
    enable_cnthp_ppi(rd, 0);
    if !wake_path_intact(gicd, rd) {
        return false;
    }
    set_cnthp_tval(ticks);
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
    arch::isb();
    arch::wfi();
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR);
    arch::isb();
    true
}

/// CNTHP_TVAL_EL2: fire `ticks` from now (aarch64-cpu has no typed accessor for it).
fn set_cnthp_tval(ticks: u64) {
    // SAFETY: programs this CPU's EL2 timer, which nothing else uses.
    unsafe { asm!("msr cnthp_tval_el2, {}", in(reg) ticks, options(nostack, preserves_flags)) };
}
