//! Getting every vCPU of a guest from files out of the guest when the run has ended (PSCI
//! SYSTEM_OFF / SYSTEM_RESET), so that teardown can take the stage-2 table back.
//!
//! The guest's CPUs take no interrupt to EL2 (GICv3 pass-through, HCR_EL2.IMO/FMO = 0), so the
//! hypervisor cannot interrupt them. Two things make them trap instead:
//! - a WFI traps (HCR_EL2.TWI, lifecycle::guest_wfx): Linux parks its other CPUs in a WFI loop
//!   before it calls SYSTEM_OFF;
//! - a vCPU that spins without WFI (kvm-unit-tests' secondaries wait in WFE, which QEMU 7.2 never
//!   traps, whatever HCR_EL2.TWE says) is made to fault: `evict` unmaps the guest's RAM at
//!   stage 2. The unmap's broadcast TLB invalidation reaches every CPU, so the vCPU's next access
//!   to its RAM, data or instruction fetch, is a stage-2 fault, and the exit handler leaves the
//!   guest instead of mapping (vcpu.rs `handle_exit`: any exit after the end leaves).
//!
//! Neither loses anything: the run is over and the guest's memory is not checked afterwards.

use crate::vm::Vm;
use crate::{lifecycle, percpu};

/// Unmaps the guest's RAM at stage 2 if the run has ended (lifecycle::end), on this CPU (the
/// reporter, out of the guest). Repeatable: a vCPU that checked the end just before it was
/// declared may still map one page afterwards, and a second call takes that away too.
/// Returns the leaves removed. The built-in guest is never evicted: its vCPUs finish on their
/// own and its memory is checked after the run.
pub fn evict(vm: &Vm) -> u64 {
    if vm.builtin() || lifecycle::end() == lifecycle::End::Stopped {
        return 0;
    }
    let s2 = vm.s2.get();
    let g = s2.exclusive(percpu::this_cpu().index);
    vm.slots
        .iter()
        .map(|ram| match g.unmap(ram.ipa, ram.ipa + ram.size) {
            Ok(done) => done.leaves,
            Err(e) => {
                log::error!("evict: unmapping guest RAM ({}) failed: {e:?}", ram.name);
                0
            }
        })
        .sum()
}
