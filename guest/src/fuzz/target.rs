//! Random IPAs for the fuzzer's accesses (the guest runs with its MMU off, so VA = IPA): its own
//! scratch pages, the emulated UART's window (and across its end), holes between memslots, the
//! last page below the 40-bit IPA limit and across it, IPAs beyond it, and (last vCPU only) across
//! the end of guest memory. Never the image, the stacks or another vCPU's region: every address is
//! checked with a margin for the widest access (an SVE vector at 2048 bits, a DC ZVA block,
//! an imm9 offset) before it is used.

use super::rng::Rng;
use crate::abi;

/// The IPA limit of the stage 2 (hyp/src/vmm/vm.rs IPA_BITS, the PARange the guest is shown).
const IPA_LIMIT: u64 = 1 << 40;
/// Bytes an access may reach either side of its address (imm9, SVE vector, DC ZVA block).
const REACH: u64 = 4096;

/// Where the fuzzer may point its accesses.
pub struct Layout {
    /// First scratch byte (own region, after the code page and the EL0 stack page).
    pub scratch: u64,
    /// End of this vCPU's region.
    pub region_end: u64,
    /// End of the data memslot (all regions).
    pub slot_end: u64,
    /// Whether this vCPU's region ends the data memslot (it may straddle off its end).
    pub last: bool,
}

/// A target: the address and which kind of place it is (for the counts).
#[derive(Clone, Copy)]
pub struct Target {
    /// The IPA (= VA) of the access.
    pub addr: u64,
    /// Whether stores there may print through the UART (the data register).
    pub uart_dr: bool,
}

impl Layout {
    /// Whether `[addr - REACH, addr + REACH)` stays clear of the image slot and of every other
    /// vCPU's region.
    fn safe(&self, addr: u64) -> bool {
        let lo = addr.saturating_sub(REACH);
        let hi = addr.saturating_add(REACH);
        let own_start = self.scratch - 2 * abi::PAGE_SIZE;
        // Image slot, stacks and the regions below ours; then the regions above ours.
        let below = (abi::RAM_BASE, own_start);
        let above = (self.region_end, self.slot_end);
        let overlaps = |(s, e): (u64, u64)| s < e && lo < e && hi > s;
        let inside_own = lo >= own_start && hi <= self.region_end;
        inside_own || !(overlaps(below) || overlaps(above))
    }

    /// A random target; `aarch32` keeps it below 4 GiB.
    pub fn pick(&self, rng: &mut Rng, aarch32: bool) -> Target {
        let scratch_len = self.region_end - REACH - self.scratch;
        let kind = rng.below(100);
        let addr = match kind {
            // Own scratch: faults in on first touch; any alignment.
            0..=39 => self.scratch + rng.below(scratch_len),
            // The UART window, anywhere in it.
            40..=54 => abi::UART_BASE + rng.below(abi::UART_SIZE),
            // Across the UART window's end.
            55..=59 => abi::UART_BASE + abi::UART_SIZE - 1 - rng.below(16),
            // A hole: anywhere below the IPA limit (below 4 GiB for AArch32).
            60..=74 => rng.below(if aarch32 { 1 << 32 } else { IPA_LIMIT }),
            // The last page below the IPA limit, and across the limit.
            75..=79 => IPA_LIMIT - 1 - rng.below(abi::PAGE_SIZE),
            // Beyond the IPA limit, up to the 52-bit PA range, or anything at all.
            80..=87 => IPA_LIMIT + rng.below((1 << 52) - IPA_LIMIT),
            88..=91 => rng.next(),
            // Across the end of guest memory (the last region only), else scratch again.
            _ if self.last => self.slot_end - 1 - rng.below(16),
            _ => self.scratch + rng.below(scratch_len),
        };
        let addr = if aarch32 { addr & 0xFFFF_FFFF } else { addr };
        let straddle_end = self.last && addr < self.slot_end && addr + 16 > self.slot_end;
        let addr = if straddle_end || self.safe(addr) {
            addr
        } else {
            // A hole the checks above cannot reject: just below the UART window.
            abi::UART_BASE - REACH - rng.below(1 << 20)
        };
        Target {
            addr,
            // A single-register store within imm9 reach of the data register would print a
            // random byte on the console; the generators turn such stores into loads.
            uart_dr: addr.wrapping_sub(abi::UART_BASE - 512) < 1024,
        }
    }
}
