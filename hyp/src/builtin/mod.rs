//! The built-in test guest's harness: its memory map (layout.rs, which describes its VM to the
//! core), image loader, workloads' hypervisor side (barriers, timed phases, calibration), the
//! bad-guest matrix, the fuzzer, the chaos pruner, the ager (workload=aging), the live migrator (migrate=on) and their
//! end-of-run checks and report fields. The three tools on the spare CPU share its stop handshake (spare_cpu.rs).
//! It attaches to the VM core through one interface, vmm/harness.rs (harness.rs here implements
//! it: boot registers, HVC calls, map policy, `check`/`report`), and vm::Description.

pub mod aging;
pub mod badguest;
pub mod calibrate;
pub mod chaos;
pub mod dirtylog;
pub mod fuzz;
pub mod guest_image;
pub mod harness;
pub mod layout;
pub mod migrate;
pub mod phases;
pub mod psci_check;
pub mod report;
pub mod spare_cpu;
