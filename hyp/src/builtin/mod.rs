//! The built-in test guest's harness: its image loader, workloads' hypervisor side (barriers,
//! timed phases, calibration), the bad-guest matrix, the fuzzer, the chaos pruner and the
//! end-of-run report. It attaches to the VM core through one interface, vmm/harness.rs (harness.rs here
//! implements it), and the report, which main.rs calls.

pub mod badguest;
pub mod calibrate;
pub mod chaos;
pub mod dirtylog;
pub mod fuzz;
pub mod guest_image;
pub mod harness;
pub mod migrate;
pub mod phases;
pub mod psci_check;
pub mod report;
