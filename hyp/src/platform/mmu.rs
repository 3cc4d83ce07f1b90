//! The hypervisor's own (EL2 stage-1) address space: an identity map of 1 GiB blocks.
//!
//! RAM (every /memory range in the DTB) is Normal write-back cacheable, everything below the
//! first RAM bank is Device-nGnRnE (the virt board's MMIO lives there), and nothing else is
//! mapped. Exclusives and atomics are only architecturally guaranteed on Normal cacheable
//! memory, so this runs before anything uses a lock or an atomic read-modify-write.

use aarch64_cpu::registers::{
    ReadWriteable, Readable, Writeable, ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2,
};
use core::cell::UnsafeCell;
use tock_registers::register_bitfields;
use tock_registers::registers::InMemoryRegister;

use crate::arch;

register_bitfields! {u64,
    /// A level-1 block descriptor of the EL2 translation regime (4 KiB granule).
    BLOCK [
        /// Execute-never at EL2.
        XN OFFSET(54) NUMBITS(1) [],
        /// Output address bits [47:30] of the 1 GiB block.
        OUTPUT_ADDR_1G OFFSET(30) NUMBITS(18) [],
        /// Access flag: set, so the first access does not fault.
        AF OFFSET(10) NUMBITS(1) [],
        /// Shareability.
        SH OFFSET(8) NUMBITS(2) [NonShareable = 0b00, InnerShareable = 0b11],
        /// Access permissions. In a single-privilege regime such as EL2, AP[1] is RES1.
        AP OFFSET(6) NUMBITS(2) [ReadWrite = 0b01],
        /// Index into MAIR_EL2.
        ATTR_INDEX OFFSET(2) NUMBITS(3) [Device = 0, Normal = 1],
        /// Descriptor type: 0b01 = block (at level 1).
        TYPE OFFSET(0) NUMBITS(2) [Block = 0b01]
    ]
}

/// Entries in a level-1 table: 512 x 1 GiB = the 39-bit address space of T0SZ = 25.
const ENTRIES: usize = 512;
const GIB: u64 = 1 << 30;

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; ENTRIES]>);

// SAFETY: written only by CPU0 in `build`, before any other CPU runs; read by the hardware.
unsafe impl Sync for Table {}

static LEVEL1: Table = Table(UnsafeCell::new([0; ENTRIES]));

/// Fills the identity map. CPU0, MMU off, before any other CPU is started. `ram` are the RAM
/// ranges from the DTB as (base, size).
pub fn build(ram: &[(u64, u64)]) {
    let first_ram = ram.iter().map(|r| r.0).min().unwrap_or(0);
    // SAFETY: only CPU0 runs, and no translation uses this table yet (see `Table`).
    let table = unsafe { &mut *LEVEL1.0.get() };
    for (i, entry) in table.iter_mut().enumerate() {
        let base = i as u64 * GIB;
        let is_ram = ram.iter().any(|&(b, s)| base < b + s && b < base + GIB);
        let desc: InMemoryRegister<u64, BLOCK::Register> = InMemoryRegister::new(0);
        if is_ram {
            desc.write(
                BLOCK::OUTPUT_ADDR_1G.val(i as u64)
                    + BLOCK::AF::SET
                    + BLOCK::SH::InnerShareable
                    + BLOCK::AP::ReadWrite
                    + BLOCK::ATTR_INDEX::Normal
                    + BLOCK::TYPE::Block,
            );
        } else if base + GIB <= first_ram {
            desc.write(
                BLOCK::XN::SET
                    + BLOCK::OUTPUT_ADDR_1G.val(i as u64)
                    + BLOCK::AF::SET
                    + BLOCK::SH::NonShareable
                    + BLOCK::AP::ReadWrite
                    + BLOCK::ATTR_INDEX::Device
                    + BLOCK::TYPE::Block,
            );
        }
        *entry = desc.get();
    }
}

/// The physical address size for TCR_EL2.PS: what the CPU implements, capped at 48 bits
/// (TCR_EL2.PS encodings above 0b101 need FEAT_LPA and 52-bit descriptors we do not use).
pub fn pa_range() -> u64 {
    ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101)
}

/// Turns on this CPU's EL2 MMU and caches with the table from `build`. Every CPU calls it.
pub fn enable() {
    // Attr0 = Device-nGnRnE for MMIO; Attr1 = Normal, write-back read/write-allocate, for RAM.
    MAIR_EL2.write(
        MAIR_EL2::Attr0_Device::nonGathering_nonReordering_noEarlyWriteAck
            + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    TCR_EL2.write(
        // Physical address size: what the CPU has (capped, see pa_range).
        TCR_EL2::PS.val(pa_range())
            // 4 KiB granule.
            + TCR_EL2::TG0::KiB_4
            // Table walks: inner shareable, write-back write-allocate cacheable.
            + TCR_EL2::SH0::Inner
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            // 39-bit VA (64 - 25): the walk starts at level 1 with 1 GiB blocks.
            + TCR_EL2::T0SZ.val(25),
    );
    TTBR0_EL2.set_baddr(LEVEL1.0.get() as u64);
    arch::el2_invalidate_tlb_local();
    SCTLR_EL2.modify(
        // Stage-1 translation on.
        SCTLR_EL2::M::Enable
            // Data and unified caches on.
            + SCTLR_EL2::C::Cacheable
            // Instruction cache on.
            + SCTLR_EL2::I::Cacheable
            // Alignment faults off: Rust's unaligned-capable code paths stay legal on Normal
            // memory (the target is strict-align anyway).
            + SCTLR_EL2::A::Disable
            // Little-endian data at EL2.
            + SCTLR_EL2::EE::Little,
    );
    arch::isb();
}
