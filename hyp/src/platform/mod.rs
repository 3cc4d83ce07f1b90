//! The machine under the hypervisor: boot, the EL2 MMU and caches, the console, the device tree
//! QEMU hands over, firmware PSCI, the GIC as the hypervisor uses it, per-CPU data and the
//! physical page pools. Knows nothing about VMs or guests.

pub mod arch;
pub mod boot;
pub mod console;
pub mod dtb;
pub mod exit;
pub mod firmware;
pub mod idle;
pub mod irq;
pub mod mmu;
pub mod percpu;
pub mod pool;
pub mod sysreg_ext;
pub mod uart;
