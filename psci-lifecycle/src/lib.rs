//! The guest's view of PSCI 1.1 (Arm DEN0022 "Power State Coordination Interface", issue E):
//! vCPU power states and the pure part of every call the hypervisor serves. Portable and
//! `no_std` (it needs `alloc`), so the state machine is tested on the host with real threads;
//! the hypervisor (hyp/src/vmm/lifecycle.rs) adds what needs the machine: waiting, entering the
//! guest, resetting EL1.
//!
//! - [`affinity`]: MPIDR affinity values as PSCI passes them (`target_cpu`, AFFINITY_INFO levels).
//! - [`power`]: per-vCPU state OFF -> ON_PENDING -> ON with atomics: CPU_ON, CPU_OFF,
//!   AFFINITY_INFO, the start of a vCPU turned on, and when the VM can no longer run.
//! - [`calls`]: a guest SMC/HVC decoded into a PSCI or SMCCC call, and the answers that depend on
//!   nothing but the call (PSCI_VERSION, PSCI_FEATURES, MIGRATE_INFO_TYPE, SMCCC_VERSION,
//!   SMCCC_ARCH_FEATURES, CPU_SUSPEND's power_state check).

#![no_std]

extern crate alloc;

pub mod affinity;
pub mod calls;
pub mod power;

/// A PSCI return code (DEN0022 5.2.2, "Return error codes") as the signed 32-bit value the
/// caller sees in W0 (X0 sign-extended for an SMC64/HVC64 call).
pub type Error = i32;

/// The register value of a PSCI return code: sign-extended to 64 bits, as SMCCC returns a signed
/// 32-bit result in X0 (DEN0028 "Return values": the upper half of X0 is then the sign).
pub fn to_x0(code: i32) -> u64 {
    i64::from(code) as u64
}
