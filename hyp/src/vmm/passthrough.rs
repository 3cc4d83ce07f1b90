//! Device pass-through for a guest from files: the GICv3 distributor, the redistributor frames
//! of the CPUs that run its vCPUs, and the PL011, mapped at stage 2 as Device memory at their
//! physical addresses (IPA = PA), so interrupts, timers, IPIs and console output need no exit.
//!
//! Limits this rests on (docs/guests.md), enforced where noted:
//! - One vCPU per physical CPU, pinned: vCPU i runs on CPU i, whose MPIDR it reads (VMPIDR_EL2),
//!   so its GICR frame and GICD_IROUTER affinities are its own (vm.rs, main.rs).
//! - HCR_EL2.IMO/FMO = 0 while a guest from files runs: physical IRQs and FIQs go to the guest's
//!   EL1, the hypervisor takes none (vm.rs `configure_this_cpu`).
//! - A CPU the hypervisor keeps (the chaos pruner, the reporter after its vCPU ended, CPUs that
//!   run no vCPU) has its GICR frame left unmapped: the guest cannot reconfigure its SGIs/PPIs.
//!   Linux walks every frame until GICR_TYPER.Last to find its own, so a read of such a frame's
//!   GICR_TYPER is emulated with the real value, every other read is zero and writes are ignored
//!   (`emulate_gicr`).
//! - The distributor is the guest's: it may route SPIs anywhere. Nothing but the guest's own
//!   devices (the PL011) raises SPIs on this board once the DMA devices are out of its DTB.
//! - No LPIs: GICR_PROPBASER and GICR_PENDBASER take *physical* addresses, and a redistributor
//!   with LPIs enabled reads and writes the memory they name — the hypervisor's included. So the
//!   RD_base frame (64 KiB) of each of the guest's redistributors is not mapped but emulated
//!   (`emulate_rd_base`; GICv3 spec IHI 0069, 12.10 "The GIC Redistributor register map"):
//!   GICR_TYPER reads without PLPIS, DirectLPI, Dirty, MPAM, RVPEID and VSGI, which makes
//!   GICR_CTLR.EnableLPIs, PROPBASER, PENDBASER, the direct-LPI and the MPAM registers RES0
//!   (RAZ/WI here); GICR_CTLR reads without EnableLPIs, CES and IR (IR would advertise
//!   INVLPIR/INVALLR/SYNCR); CTLR's writable bits, STATUSR and WAKER reach the hardware, and so
//!   do reads of the ID registers (0xFFD0..0xFFFC: Linux reads GICR_PIDR2); everything else in
//!   the frame, the IMPLEMENTATION DEFINED block at 0xC000 included (on other boards it could
//!   hold anything), reads 0 and ignores writes. Only SGI_base (SGIs and PPIs) is mapped.
//!   GICR_TYPER.VLPIS is kept: it sets the frame stride the guest computes, and the VLPI frames
//!   (GICR_VPROPBASER/VPENDBASER: physical addresses again) are never mapped, RAZ/WI. Linux
//!   enables LPIs only with an ITS, which the guest's DTB does not have, so nothing it does is
//!   lost. Not hidden: GICD_TYPER.LPIS (the distributor is passed through whole), so a guest that
//!   trusts it rather than GICR_TYPER.PLPIS would find LPIs silently absent.

use alloc::vec::Vec;
use stage2::{Attrs, Size};

use crate::pool::PAGE;
use crate::vm::S2;

/// Bytes of the GICv3 distributor (GICD) frame.
const GICD_SIZE: u64 = 64 << 10;
/// Bytes of one redistributor (RD_base + SGI_base frames, GICv3 without VLPIs).
const GICR_FRAME: u64 = 128 << 10;
/// Two more 64 KiB frames per redistributor with GICR_TYPER.VLPIS (GICv4).
const GICR_FRAME_VLPI: u64 = 256 << 10;
/// GICR_TYPER: offset, and its Last (bit 4) and VLPIS (bit 1) bits; affinity in bits [63:32].
const GICR_TYPER: u64 = 0x8;
const TYPER_LAST: u64 = 1 << 4;
const TYPER_VLPIS: u64 = 1 << 1;
/// GICR_TYPER bits hidden from the guest (IHI 0069, GICR_TYPER): PLPIS (0, physical LPIs),
/// Dirty (2, GICR_VPENDBASER.Dirty), DirectLPI (3), MPAM (6), RVPEID (7), VSGI (26).
const TYPER_HIDDEN: u64 = 1 << 0 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 7 | 1 << 26;
/// The RD_base registers the guest's accesses reach (offsets, IHI 0069 12.10).
const GICR_CTLR: u64 = 0x0;
const GICR_IIDR: u64 = 0x4;
const GICR_STATUSR: u64 = 0x10;
const GICR_WAKER: u64 = 0x14;
/// GICR_CTLR bits a guest read does not see: EnableLPIs (0), CES (1: LPI-related), IR (2:
/// INVLPIR/INVALLR/SYNCR implemented). A write never sets EnableLPIs.
const CTLR_ENABLE_LPIS: u64 = 1 << 0;
const CTLR_HIDDEN: u64 = CTLR_ENABLE_LPIS | 1 << 1 | 1 << 2;
/// The RD_base identification registers (GICR_PIDR4..CIDR3), read-only.
const GICR_ID_REGS: core::ops::Range<u64> = 0xFFD0..0x1_0000;
/// Bytes of the RD_base frame, emulated whole; SGI_base follows it.
const RD_BASE: u64 = 0x1_0000;
/// RD_base + SGI_base; VLPI frames beyond are never mapped.
const GICR_MAPPED: u64 = GICR_FRAME;
/// The most redistributors walked (a bound on a malformed region, not a board table).
const MAX_FRAMES: usize = 512;
/// The PL011's MMIO window.
const UART_SIZE: u64 = 0x1000;

/// The devices a guest from files gets.
pub struct Passthrough {
    /// GICD base.
    gicd: u64,
    /// First redistributor, the stride between them, and how many there are (up to Last).
    gicr: (u64, u64, usize),
    /// Base of each redistributor frame given to the guest.
    guest_frames: Vec<u64>,
    /// The PL011 base, if the guest prints straight to it.
    uart: Option<u64>,
    /// Windows of devices removed from the guest's DTB that read as zero and ignore writes
    /// (guest_dtb::virtio_windows), as (base, bytes).
    raz_wi: Vec<(u64, u64)>,
}

fn read_typer(frame: u64) -> u64 {
    // SAFETY: `frame` is a redistributor frame found by walking from the DTB's GICR base up to
    // GICR_TYPER.Last; it lies below RAM, which the hypervisor maps as Device memory (mmu.rs).
    // GICR_TYPER is read-only with no side effect.
    unsafe { core::ptr::read_volatile((frame + GICR_TYPER) as *const u64) }
}

/// GICR_TYPER as the guest sees it: the hardware's without `TYPER_HIDDEN`.
fn guest_typer(frame: u64) -> u64 {
    read_typer(frame) & !TYPER_HIDDEN
}

fn read_rd32(frame: u64, offset: u64) -> u32 {
    // SAFETY: `frame` is one of the guest's redistributor frames (Passthrough::new) and `offset`
    // one of CTLR, IIDR, STATUSR, WAKER or an ID register: 32-bit registers whose reads have no
    // side effect, in the Device-mapped region below RAM (mmu.rs).
    unsafe { core::ptr::read_volatile((frame + offset) as *const u32) }
}

fn write_rd32(frame: u64, offset: u64, value: u32) {
    // SAFETY: as `read_rd32`; `offset` is CTLR (EnableLPIs already cleared by the caller),
    // STATUSR or WAKER of the redistributor of a CPU that runs this guest's vCPU: the guest
    // could write them itself if the page were mapped, and none names memory.
    unsafe { core::ptr::write_volatile((frame + offset) as *mut u32, value) }
}

/// MPIDR_EL1 affinity (Aff3 in [39:32], Aff2..Aff0 in [23:0]) as GICR_TYPER[63:32] holds it
/// (Aff3.Aff2.Aff1.Aff0).
fn typer_affinity(mpidr: u64) -> u64 {
    ((mpidr >> 32) & 0xFF) << 24 | (mpidr & 0xFF_FFFF)
}

impl Passthrough {
    /// Finds the redistributor frames of `cpus` (MPIDRs) by walking GICR_TYPER from `gicr`.
    /// `uart` is the PL011 to pass through (None: it stays emulated, as for a `.flat`).
    pub fn new(
        gicd: u64,
        gicr: u64,
        cpus: &[u64],
        uart: Option<u64>,
        raz_wi: Vec<(u64, u64)>,
    ) -> Result<Self, &'static str> {
        let mut frame = gicr;
        let mut guest_frames = Vec::new();
        let mut stride = GICR_FRAME;
        let mut count = 0;
        loop {
            let typer = read_typer(frame);
            if typer & TYPER_VLPIS != 0 {
                stride = GICR_FRAME_VLPI;
            }
            if cpus.iter().any(|&m| typer_affinity(m) == typer >> 32) {
                guest_frames.push(frame);
            }
            count += 1;
            if typer & TYPER_LAST != 0 {
                break;
            }
            if count == MAX_FRAMES {
                return Err("no redistributor has GICR_TYPER.Last set");
            }
            frame += stride;
        }
        if guest_frames.len() != cpus.len() {
            return Err("a guest CPU has no redistributor frame");
        }
        Ok(Self {
            gicd,
            gicr: (gicr, stride, count),
            guest_frames,
            uart,
            raz_wi,
        })
    }

    /// The (IPA = PA, bytes) ranges mapped as Device memory.
    fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let stride = self.gicr.1;
        [(self.gicd, GICD_SIZE)]
            .into_iter()
            // Each frame's SGI_base only: RD_base is emulated, VLPI frames stay unmapped.
            .chain(
                self.guest_frames
                    .iter()
                    .map(move |&f| (f + RD_BASE, stride.min(GICR_MAPPED) - RD_BASE)),
            )
            .chain(self.uart.map(|u| (u, UART_SIZE)))
    }

    /// Maps every pass-through range at stage 2 as Device-nGnRE read/write, never executable
    /// (`Attrs::device_rw`), in 4 KiB pages. Before any vCPU runs.
    pub fn map(&self, s2: &S2, cpu: usize) -> Result<usize, stage2::Error> {
        let g = s2.exclusive(cpu);
        let mut pages = 0;
        for (base, size) in self.ranges() {
            let mut at = base;
            while at < base + size {
                g.map(at, at, Size::Page4K, Attrs::device_rw())?;
                at += PAGE;
                pages += 1;
            }
        }
        Ok(pages)
    }

    /// A guest access to an emulated device window: a removed device's window (`raz_wi`: reads
    /// 0), the redistributor of a CPU it was not given (GICR_TYPER of that frame, else 0), or
    /// the RD_base frame or a VLPI frame of one of its own (`emulate_rd_base`). The
    /// value a read returns, or Some(_) for a write; None when `ipa` is in none of them. `size`
    /// is the access size in bytes; `write` the value a store writes (None for a load).
    pub fn emulate(&self, ipa: u64, size: u64, write: Option<u64>) -> Option<u64> {
        if self
            .raz_wi
            .iter()
            .any(|&(base, bytes)| ipa >= base && ipa + size <= base + bytes)
        {
            return Some(0);
        }
        let (base, stride, count) = self.gicr;
        if ipa < base || ipa >= base + stride * count as u64 {
            return None;
        }
        let frame = base + (ipa - base) / stride * stride;
        let offset = ipa - frame;
        if self.guest_frames.contains(&frame) {
            return match offset {
                o if o < RD_BASE => Some(emulate_rd_base(frame, o, size, write)),
                o if o >= GICR_MAPPED => Some(0), // a VLPI frame: RAZ/WI
                _ => None,                        // mapped: not an emulated access
            };
        }
        let typer = guest_typer(frame);
        // GICR_TYPER is 64 bits at 0x8; a 32-bit read of either half is allowed.
        Some(match (offset, size) {
            (GICR_TYPER, 8) => typer,
            (GICR_TYPER, 4) => typer & 0xFFFF_FFFF,
            (0xC, 4) => typer >> 32,
            _ => 0,
        })
    }
}

/// An access to the RD_base frame of one of the guest's redistributors (module doc):
/// GICR_TYPER without `TYPER_HIDDEN` (64-bit, or either 32-bit half); CTLR (without
/// `CTLR_HIDDEN`), IIDR, STATUSR, WAKER and the ID registers (32-bit reads) from the hardware;
/// CTLR (EnableLPIs cleared), STATUSR and WAKER writes to it; everything else — PROPBASER,
/// PENDBASER, SETLPIR, CLRLPIR, INVLPIR, INVALLR, SYNCR (RES0 with PLPIS = 0 and DirectLPI =
/// 0), MPAMIDR/PARTIDR (MPAM = 0), reserved and IMPLEMENTATION DEFINED offsets, accesses of
/// other sizes — reads 0 and ignores writes. Returns what a load reads (0 for a store).
fn emulate_rd_base(frame: u64, offset: u64, size: u64, write: Option<u64>) -> u64 {
    match (offset, size, write) {
        (GICR_TYPER, 8, None) => guest_typer(frame),
        (GICR_TYPER, 4, None) => guest_typer(frame) & 0xFFFF_FFFF,
        (0xC, 4, None) => guest_typer(frame) >> 32,
        (GICR_CTLR, 4, None) => u64::from(read_rd32(frame, offset)) & !CTLR_HIDDEN,
        (GICR_IIDR | GICR_STATUSR | GICR_WAKER, 4, None) => u64::from(read_rd32(frame, offset)),
        (o, 4, None) if GICR_ID_REGS.contains(&o) && o % 4 == 0 => {
            u64::from(read_rd32(frame, offset))
        }
        (GICR_CTLR, 4, Some(v)) => {
            write_rd32(frame, offset, (v & !CTLR_ENABLE_LPIS) as u32);
            0
        }
        // STATUSR is write-1-to-clear; WAKER.ProcessorSleep is how a CPU's redistributor is
        // woken (Linux gic_enable_redist, kvm-unit-tests gicv3_enable_defaults).
        (GICR_STATUSR | GICR_WAKER, 4, Some(v)) => {
            write_rd32(frame, offset, v as u32);
            0
        }
        _ => 0,
    }
}
