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
            .chain(self.guest_frames.iter().map(move |&f| (f, stride)))
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
    /// 0) or the redistributor of a CPU it was not given (GICR_TYPER of that frame, else 0). The
    /// value a read returns, or Some(_) for a write (ignored); None when `ipa` is in neither.
    /// `size` is the access size in bytes.
    pub fn emulate(&self, ipa: u64, size: u64) -> Option<u64> {
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
        if self.guest_frames.contains(&frame) {
            return None;
        }
        let offset = ipa - frame;
        let typer = read_typer(frame);
        // GICR_TYPER is 64 bits at 0x8; a 32-bit read of either half is allowed.
        Some(match (offset, size) {
            (GICR_TYPER, 8) => typer,
            (GICR_TYPER, 4) => typer & 0xFFFF_FFFF,
            (0xC, 4) => typer >> 32,
            _ => 0,
        })
    }
}
