//! Pure decode functions for the hypervisor's trap boundary (and the kernel-file header parse), kept out of `hyp` so that they run
//! as host unit tests (`cargo test -p arch-decode --target <host>`).
//!
//! Nothing here reads or writes a register: callers pass the raw values (ESR_EL2, HPFAR_EL2,
//! FAR_EL2, PAR_EL1, SPSR_EL2, SCTLR_EL1, the hardware's ID registers) and act on the result.
//! Each module names the Arm ARM (DDI 0487) or SMCCC (DEN 0028) section it follows.

#![cfg_attr(not(test), no_std)]

pub mod abort;
pub mod esr;
pub mod exception;
pub mod idregs;
pub mod image;
pub mod razwi;
pub mod smccc;
