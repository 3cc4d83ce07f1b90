//! Guest PSCI: the dispatch of the PSCI / SMCCC architecture calls the hypervisor serves to its
//! guest (answers: psci_lifecycle, lifecycle.rs). The hypervisor's own calls to the firmware are
//! platform/firmware.rs.

use crate::lifecycle;
use arch_decode::smccc::Call;

/// What a guest PSCI call asks the hypervisor to do after setting x0.
pub enum GuestPsci {
    /// Return `value` in x0 and resume.
    Return(u64),
    /// CPU_OFF: the vCPU was powered off (lifecycle.rs); it leaves the guest until a CPU_ON.
    CpuOff,
    /// SYSTEM_OFF: the run ends (lifecycle::system_event was called); this vCPU leaves.
    SystemOff,
    /// SYSTEM_RESET: as SYSTEM_OFF, with its own outcome (lifecycle::End::SystemReset).
    SystemReset,
    /// Not a PSCI or SMCCC architecture call we serve.
    NotSupported,
}

/// Serves a guest PSCI 1.1 (DEN0022) or SMCCC architecture (DEN0028) call from vCPU `id`:
/// `call` carries the function ID (W0) and the arguments as SMCCC passes them (W1.. for an
/// SMC32/HVC32 call; arch_decode::smccc::Call). `entry_ok` says whether the guest can execute
/// at an IPA (CPU_ON's entry point check). What each call answers is in
/// psci_lifecycle::calls (the offer) and lifecycle.rs (the power states).
pub fn guest_call(id: usize, call: &Call, entry_ok: impl FnOnce(u64) -> bool) -> GuestPsci {
    use psci_lifecycle::calls::{self, GuestCall};
    use psci_lifecycle::to_x0;
    match calls::decode(call.function, &call.args) {
        GuestCall::Version => GuestPsci::Return(calls::PSCI_VERSION_1_1),
        GuestCall::CpuSuspend { power_state } => {
            GuestPsci::Return(to_x0(calls::cpu_suspend(power_state)))
        }
        GuestCall::CpuOff => {
            lifecycle::cpu_off(id);
            GuestPsci::CpuOff
        }
        GuestCall::CpuOn {
            target,
            entry,
            context,
        } => GuestPsci::Return(lifecycle::cpu_on(id, target, entry, context, entry_ok)),
        GuestCall::AffinityInfo { target, level } => {
            GuestPsci::Return(lifecycle::affinity_info(id, target, level))
        }
        GuestCall::MigrateInfoType => GuestPsci::Return(calls::MIGRATE_TYPE_NOT_PRESENT),
        GuestCall::SystemOff => {
            lifecycle::system_event(id, lifecycle::End::SystemOff);
            GuestPsci::SystemOff
        }
        GuestCall::SystemReset => {
            lifecycle::system_event(id, lifecycle::End::SystemReset);
            GuestPsci::SystemReset
        }
        GuestCall::Features(f) => GuestPsci::Return(to_x0(calls::features(f))),
        GuestCall::SmcccVersion => GuestPsci::Return(calls::SMCCC_VERSION_1_1),
        GuestCall::ArchFeatures(f) => GuestPsci::Return(to_x0(calls::arch_features(f))),
        GuestCall::NotSupported => GuestPsci::NotSupported,
    }
}

/// SMCCC NOT_SUPPORTED (-1) as a register value.
pub fn not_supported() -> u64 {
    arch_decode::smccc::NOT_SUPPORTED
}
