//! The guest <-> hypervisor contract: guest-physical layout, entry registers and HVC calls.
//!
//! This one file is compiled into both the guest and the hypervisor (`#[path]` include), so the
//! two sides cannot drift. docs/hypervisor.md describes the same ABI for people.

/// Guest RAM starts here (IPA), as on QEMU's virt board. The guest image is linked here.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The first memslot: guest image, then free space, then one stack per vCPU at its top.
pub const IMAGE_SLOT_SIZE: u64 = 16 << 20;
/// Each vCPU's stack; vCPU `i` has its stack top at `RAM_BASE + IMAGE_SLOT_SIZE - i * STACK_SIZE`.
pub const STACK_SIZE: u64 = 64 << 10;
/// The second memslot: one data region of `mem` bytes per vCPU, vCPU `i` at `DATA_BASE + i * mem`.
pub const DATA_BASE: u64 = RAM_BASE + IMAGE_SLOT_SIZE;
/// An emulated PL011: a store to its data register (offset 0) prints a byte.
pub const UART_BASE: u64 = 0x0900_0000;
/// Size of the emulated UART's MMIO window.
pub const UART_SIZE: u64 = 0x1000;
/// An IPA in no memslot and no device: a load from it gets a synchronous external abort.
pub const UNMAPPED_PROBE: u64 = 0x2000_0000;

/// Bytes in a page (the guest touches memory page by page).
pub const PAGE_SIZE: u64 = 4096;

// Entry registers: x0 = vCPU id, x1 = data region base, x2 = data region size,
// x3 = workload number, x4 = flags. SP_EL1 = this vCPU's stack top. EL1h, DAIF masked, MMU off.

/// Workload `demand`: write every page of the region, read it back, checksum it.
pub const WORKLOAD_DEMAND: u64 = 0;
/// Flag: before the workload, load from `UNMAPPED_PROBE` and expect an injected external abort,
/// then make PSCI calls over SMC and an unknown HVC, and print what came back.
pub const FLAG_PROBE: u64 = 1;
/// Flag (selftest=hang): spin forever without trapping, so the hypervisor's timeout must fire.
pub const FLAG_HANG: u64 = 2;
/// An HVC function id nobody implements (answered with SMCCC NOT_SUPPORTED).
pub const HVC_UNKNOWN: u64 = 0xC600_00FF;

/// HVC (SMCCC fast call, vendor-specific hypervisor range): report the workload result.
/// x1 = checksum, x2 = cycles (CNTVCT ticks), x3 = pages touched. Returns x0 = 0.
pub const HVC_REPORT: u64 = 0xC600_0001;
/// HVC: this vCPU is done. x1 = status (0 = ok, anything else = the guest saw a failure).
/// Does not return.
pub const HVC_FINISH: u64 = 0xC600_0002;
/// Guest status for `HVC_FINISH`: an exception the guest did not expect.
pub const STATUS_UNEXPECTED_EXCEPTION: u64 = 2;
/// Guest status for `HVC_FINISH`: the guest panicked.
pub const STATUS_PANIC: u64 = 3;
/// Guest status for `HVC_FINISH`: an unknown workload number.
pub const STATUS_BAD_WORKLOAD: u64 = 4;
