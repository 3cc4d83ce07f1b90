//! The PL011 UART the hypervisor prints on (found in the DTB), as a typed MMIO register block.

use core::fmt;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// Flag register.
    FR [
        /// Transmit FIFO full: wait before writing DR.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    /// Line control.
    LCR_H [
        /// Word length: 8 bits.
        WLEN OFFSET(5) NUMBITS(2) [EightBit = 0b11],
        /// FIFOs enabled.
        FEN OFFSET(4) NUMBITS(1) []
    ],
    /// Control.
    CR [
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) []
    ]
}

register_structs! {
    /// The PL011 registers we use.
    Regs {
        (0x00 => dr: WriteOnly<u32>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x2c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x30 => cr: ReadWrite<u32, CR::Register>),
        (0x34 => @END),
    }
}

/// A PL011 at a fixed, identity-mapped MMIO address.
pub struct Pl011 {
    regs: &'static Regs,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the MMIO address of a PL011, mapped as Device memory, used by no one else.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees a PL011 register block lives at `base`.
        let regs = unsafe { &*(base as *const Regs) };
        Self { regs }
    }

    /// 8 data bits, FIFOs on, transmitter and receiver on. (The virt board's PL011 needs no
    /// baud-rate setup.)
    pub fn init(&self) {
        self.regs.cr.set(0);
        self.regs
            .lcr_h
            .write(LCR_H::WLEN::EightBit + LCR_H::FEN::SET);
        self.regs
            .cr
            .write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Writes one byte, waiting while the transmit FIFO is full.
    pub fn put(&self, byte: u8) {
        while self.regs.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.regs.dr.set(u32::from(byte));
    }
}

// SAFETY: the registers are MMIO; `Pl011` is only ever used behind the console's lock, so one
// CPU at a time drives it.
unsafe impl Send for Pl011 {}

impl fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}
