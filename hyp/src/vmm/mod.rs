//! The VM core, independent of any guest kind: the VM (built from a guest kind's
//! `vm::Description`) and its memslots, the vCPU run loop, the trap path (exceptions -> decode ->
//! handler -> inject / stage-2 fault -> ERET), the stage-2 glue (table pages, TLB maintenance),
//! emulated ID registers, guest PSCI, the vCPU lifecycle (power states, CPU_ON starts with their
//! EL1 reset state) and the end of a run (teardown, leak check, report). Its files form layers
//! (docs/hypervisor.md "Layers", checked by tests/layers.sh); nothing here names builtin/.

pub mod boot_protocol;
pub mod decode;
pub mod el1_reset;
pub mod evict;
pub mod exceptions;
pub mod finish;
pub mod frame;
pub mod guest_dtb;
pub mod harness;
pub mod idregs;
pub mod inject;
pub mod lifecycle;
pub mod memslot;
pub mod passthrough;
pub mod psci;
pub mod tables;
pub mod tlb;
pub mod vcpu;
pub mod vm;
pub mod write_log;
