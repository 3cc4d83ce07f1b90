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
//!   first 4 KiB page of each of the guest's RD_base frames (CTLR, IIDR, TYPER, STATUSR, WAKER,
//!   the LPI registers; GICv3 spec IHI 0069, 12.10 "The GIC Redistributor register map") is not
//!   mapped but emulated (`emulate_rd_control`): GICR_TYPER reads with PLPIS = 0 and DirectLPI =
//!   0, which makes GICR_CTLR.EnableLPIs, PROPBASER, PENDBASER and the direct-LPI registers RES0
//!   (RAZ/WI here); CTLR (without EnableLPIs), STATUSR and WAKER reach the hardware. The GICv4
//!   VLPI frames (GICR_TYPER.VLPIS) hold GICR_VPROPBASER/VPENDBASER, physical addresses again:
//!   never mapped, RAZ/WI. Linux enables LPIs only with an ITS, which the guest's DTB does not
//!   have, so nothing it does is lost.

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
/// GICR_TYPER.PLPIS (bit 0, physical LPIs) and DirectLPI (bit 3): hidden from the guest.
const TYPER_PLPIS: u64 = 1 << 0;
const TYPER_DIRECT_LPI: u64 = 1 << 3;
/// The registers of the RD_base control page the guest's accesses reach (offsets, GICv3 spec
/// 12.10): CTLR (its EnableLPIs bit 0 kept clear), STATUSR, WAKER.
const GICR_CTLR: u64 = 0x0;
const CTLR_ENABLE_LPIS: u64 = 1 << 0;
const GICR_IIDR: u64 = 0x4;
const GICR_STATUSR: u64 = 0x10;
const GICR_WAKER: u64 = 0x14;
/// Bytes of the RD_base control page that is emulated, not mapped.
const RD_CONTROL: u64 = 0x1000;
/// RD_base + SGI_base: what a guest frame maps (VLPI frames beyond stay unmapped).
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

/// GICR_TYPER as the guest sees it: the hardware's, without physical or direct LPIs.
fn guest_typer(frame: u64) -> u64 {
    read_typer(frame) & !(TYPER_PLPIS | TYPER_DIRECT_LPI)
}

fn read_rd32(frame: u64, offset: u64) -> u32 {
    // SAFETY: `frame` is one of the guest's redistributor frames (Passthrough::new) and `offset`
    // one of CTLR, IIDR, STATUSR, WAKER: 32-bit registers whose reads have no side effect, in
    // the Device-mapped region below RAM (mmu.rs).
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
            // Each frame without its RD_base control page (emulated) and its VLPI frames.
            .chain(
                self.guest_frames
                    .iter()
                    .map(move |&f| (f + RD_CONTROL, stride.min(GICR_MAPPED) - RD_CONTROL)),
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
    /// the RD_base control page or a VLPI frame of one of its own (`emulate_rd_control`). The
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
                o if o < RD_CONTROL => Some(emulate_rd_control(frame, o, size, write)),
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

/// An access to the RD_base control page of one of the guest's redistributors (module doc):
/// GICR_TYPER without PLPIS/DirectLPI (64-bit, or either 32-bit half); CTLR, IIDR, STATUSR and
/// WAKER (32-bit) from and to the hardware, a CTLR write with EnableLPIs cleared; everything
/// else — PROPBASER, PENDBASER, SETLPIR, CLRLPIR, INVLPIR, INVALLR, SYNCR (RES0 with PLPIS = 0
/// and DirectLPI = 0), MPAM registers (MPAM is hidden), reserved offsets and accesses of other
/// sizes — reads 0 and ignores writes. Returns what a load reads (0 for a store).
fn emulate_rd_control(frame: u64, offset: u64, size: u64, write: Option<u64>) -> u64 {
    match (offset, size, write) {
        (GICR_TYPER, 8, None) => guest_typer(frame),
        (GICR_TYPER, 4, None) => guest_typer(frame) & 0xFFFF_FFFF,
        (0xC, 4, None) => guest_typer(frame) >> 32,
        (GICR_CTLR | GICR_IIDR | GICR_STATUSR | GICR_WAKER, 4, None) => {
            let v = u64::from(read_rd32(frame, offset));
            if offset == GICR_CTLR {
                v & !CTLR_ENABLE_LPIS
            } else {
                v
            }
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
