//! What the trap entry (exceptions.rs) and the handlers above it share: the saved guest context
//! (`Frame`), the vector an exception came through (`kind`), and what a handler tells the trap
//! return path (`Action`). A leaf: every layer of the trap path imports it, it imports nothing.

/// The saved guest context. Layout is shared with the assembly in exceptions.rs.
#[repr(C)]
#[derive(Clone)]
pub struct Frame {
    /// x0..x30.
    pub x: [u64; 31],
    /// The guest's stack pointer (SP_EL1).
    pub sp_el1: u64,
    /// Where the guest resumes (ELR_EL2).
    pub elr: u64,
    /// The guest's PSTATE (SPSR_EL2).
    pub spsr: u64,
}

// The assembly in exceptions.rs hard-codes these offsets; the size keeps SP 16-byte aligned
// (AAPCS64 and SCTLR_EL2.SA) while a frame is on the stack.
const _: () = assert!(core::mem::size_of::<Frame>() == 272);
const _: () = assert!(core::mem::size_of::<Frame>().is_multiple_of(16));
const _: () = assert!(core::mem::offset_of!(Frame, sp_el1) == 248);
const _: () = assert!(core::mem::offset_of!(Frame, elr) == 256);
const _: () = assert!(core::mem::offset_of!(Frame, spsr) == 264);

impl Frame {
    /// An all-zero frame.
    pub const fn zeroed() -> Self {
        Self {
            x: [0; 31],
            sp_el1: 0,
            elr: 0,
            spsr: 0,
        }
    }

    /// Reads general-purpose register `n`, where 31 means XZR (reads as zero).
    pub fn reg(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes general-purpose register `n`; writes to 31 (XZR) are discarded.
    pub fn set_reg(&mut self, n: u8, value: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = value;
        }
    }
}

/// Which vector an exception came through: `group * 4 + type`.
pub mod kind {
    /// Synchronous exception from a lower EL in AArch64 (HVC, SMC, aborts, ...).
    pub const LOWER_SYNC: u64 = 8;
    // 9, 10, 11: IRQ, FIQ, SError from a lower EL in AArch64; 12..15: the same from AArch32.
}

/// What the trap return path does after a handler ran.
pub enum Action {
    /// Restore the frame and ERET to the guest.
    Resume,
    /// The vCPU is done: return from `run`.
    Leave,
}
