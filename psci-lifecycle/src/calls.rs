//! A guest's SMC/HVC decoded into the PSCI 1.1 (DEN0022) or SMCCC (DEN0028) call it makes, and
//! the answers that depend only on the call.
//!
//! Offered: PSCI_VERSION, CPU_SUSPEND, CPU_OFF, CPU_ON, AFFINITY_INFO, MIGRATE_INFO_TYPE,
//! SYSTEM_OFF, SYSTEM_RESET, PSCI_FEATURES (everything DEN0022 makes mandatory for 1.1, plus
//! MIGRATE_INFO_TYPE), and SMCCC_VERSION (1.1) with SMCCC_ARCH_FEATURES, which SMCCC 1.1 makes
//! mandatory once SMCCC_VERSION answers. Everything else is NOT_SUPPORTED: MIGRATE and
//! MIGRATE_INFO_UP_CPU (no Trusted OS, MIGRATE_INFO_TYPE 2), SYSTEM_RESET2, SYSTEM_SUSPEND,
//! CPU_FREEZE, CPU_DEFAULT_SUSPEND, NODE_HW_STATE, the statistics, MEM_PROTECT,
//! SET_SUSPEND_MODE, and the SMCCC workarounds (SMCCC_ARCH_FEATURES answers NOT_SUPPORTED for
//! them, which tells the guest "no firmware mitigation here").
//!
//! Arguments arrive as `arch_decode::smccc::Call` gives them: an SMC32/HVC32 call's W1..W7,
//! zero-extended, so a 32-bit call cannot name Aff3 or a 64-bit address.

use smccc::arch::{SMCCC_ARCH_FEATURES, SMCCC_VERSION};
use smccc::psci::*;

/// PSCI 1.1, as PSCI_VERSION returns it (major << 16 | minor).
pub const PSCI_VERSION_1_1: u64 = 1 << 16 | 1;
/// SMCCC 1.1, as SMCCC_VERSION returns it (DEN0028: major << 16 | minor).
pub const SMCCC_VERSION_1_1: u64 = 1 << 16 | 1;
/// MIGRATE_INFO_TYPE: "Trusted OS is either not present or does not require migration"
/// (DEN0022 5.1.8).
pub const MIGRATE_TYPE_NOT_PRESENT: u64 = 2;

/// A decoded call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestCall {
    /// PSCI_VERSION.
    Version,
    /// CPU_SUSPEND(power_state, entry_point, context_id).
    CpuSuspend {
        /// The requested power state (original format, DEN0022 5.1.2).
        power_state: u64,
    },
    /// CPU_OFF.
    CpuOff,
    /// CPU_ON(target_cpu, entry_point_address, context_id).
    CpuOn {
        /// The target's MPIDR affinity value.
        target: u64,
        /// Where it starts.
        entry: u64,
        /// Its x0.
        context: u64,
    },
    /// AFFINITY_INFO(target_affinity, lowest_affinity_level).
    AffinityInfo {
        /// The affinity value.
        target: u64,
        /// The lowest level of the instance (0..=3).
        level: u64,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// PSCI_FEATURES(function ID): its answer, computed by [`features`].
    Features(u32),
    /// SMCCC_VERSION.
    SmcccVersion,
    /// SMCCC_ARCH_FEATURES(function ID): its answer, computed by [`arch_features`].
    ArchFeatures(u32),
    /// Not a call this implementation offers (answer NOT_SUPPORTED).
    NotSupported,
}

/// Decodes the call with function ID `function` (W0) and arguments `args` (x1..x7).
pub fn decode(function: u32, args: &[u64; 7]) -> GuestCall {
    match function {
        PSCI_VERSION => GuestCall::Version,
        PSCI_CPU_SUSPEND_32 | PSCI_CPU_SUSPEND_64 => GuestCall::CpuSuspend {
            power_state: args[0],
        },
        PSCI_CPU_OFF => GuestCall::CpuOff,
        PSCI_CPU_ON_32 | PSCI_CPU_ON_64 => GuestCall::CpuOn {
            target: args[0],
            entry: args[1],
            context: args[2],
        },
        PSCI_AFFINITY_INFO_32 | PSCI_AFFINITY_INFO_64 => GuestCall::AffinityInfo {
            target: args[0],
            level: args[1],
        },
        PSCI_MIGRATE_INFO_TYPE => GuestCall::MigrateInfoType,
        PSCI_SYSTEM_OFF => GuestCall::SystemOff,
        PSCI_SYSTEM_RESET => GuestCall::SystemReset,
        // PSCI_FEATURES and SMCCC_ARCH_FEATURES are SMC32 calls: the queried ID is W1.
        PSCI_FEATURES => GuestCall::Features(args[0] as u32),
        SMCCC_VERSION => GuestCall::SmcccVersion,
        SMCCC_ARCH_FEATURES => GuestCall::ArchFeatures(args[0] as u32),
        _ => GuestCall::NotSupported,
    }
}

/// The PSCI functions offered (both conventions where PSCI defines both).
const OFFERED: [u32; 13] = [
    PSCI_VERSION,
    PSCI_CPU_SUSPEND_32,
    PSCI_CPU_SUSPEND_64,
    PSCI_CPU_OFF,
    PSCI_CPU_ON_32,
    PSCI_CPU_ON_64,
    PSCI_AFFINITY_INFO_32,
    PSCI_AFFINITY_INFO_64,
    PSCI_MIGRATE_INFO_TYPE,
    PSCI_SYSTEM_OFF,
    PSCI_SYSTEM_RESET,
    PSCI_FEATURES,
    // DEN0022 5.1.14: PSCI_FEATURES also answers for SMCCC_VERSION (how a guest learns SMCCC
    // 1.1 is there before calling it).
    SMCCC_VERSION,
];

/// PSCI_FEATURES (DEN0022 5.1.14): 0 for an offered function (for CPU_SUSPEND, 0 is its feature
/// flags: platform-coordinated mode only, original power_state format), NOT_SUPPORTED (-1)
/// otherwise.
pub fn features(function: u32) -> i32 {
    if OFFERED.contains(&function) {
        0
    } else {
        error::NOT_SUPPORTED
    }
}

/// SMCCC_ARCH_FEATURES (DEN0028 7.3): 0 for SMCCC_VERSION and SMCCC_ARCH_FEATURES itself,
/// NOT_SUPPORTED (-1) for everything else (SMCCC_ARCH_SOC_ID and the Spectre workarounds
/// included).
pub fn arch_features(function: u32) -> i32 {
    if function == SMCCC_VERSION || function == SMCCC_ARCH_FEATURES {
        0
    } else {
        error::NOT_SUPPORTED
    }
}

/// CPU_SUSPEND's answer (DEN0022 5.1.2), original power_state format: StateID [15:0],
/// StateType [16] (0 standby, 1 power down), PowerLevel [25:24], the rest reserved (must be 0,
/// else INVALID_PARAMETERS). A valid request returns SUCCESS at once, to the instruction after
/// the call: for standby that is a wake-up that came immediately (allowed: "the core might wake
/// up at any time"), and a power-down request may be "downgraded to standby" by the
/// implementation, which then returns SUCCESS the same way. The entry point and context ID are
/// therefore never used.
pub fn cpu_suspend(power_state: u64) -> i32 {
    const VALID: u64 = 0xFFFF | 1 << 16 | 3 << 24;
    if power_state & !VALID != 0 {
        error::INVALID_PARAMETERS
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_calls() {
        let a = [1, 0x4000_0000, 7, 0, 0, 0, 0];
        assert_eq!(decode(PSCI_VERSION, &a), GuestCall::Version);
        assert_eq!(
            decode(PSCI_CPU_ON_64, &a),
            GuestCall::CpuOn {
                target: 1,
                entry: 0x4000_0000,
                context: 7
            }
        );
        assert_eq!(
            decode(PSCI_AFFINITY_INFO_32, &a),
            GuestCall::AffinityInfo {
                target: 1,
                level: 0x4000_0000
            }
        );
        assert_eq!(decode(PSCI_SYSTEM_RESET, &a), GuestCall::SystemReset);
        assert_eq!(
            decode(PSCI_FEATURES, &[1 << 32 | 0x8400_0002, 0, 0, 0, 0, 0, 0]),
            GuestCall::Features(PSCI_CPU_OFF)
        );
        assert_eq!(decode(1337, &a), GuestCall::NotSupported);
        assert_eq!(decode(PSCI_MIGRATE_32, &a), GuestCall::NotSupported);
        assert_eq!(decode(PSCI_SYSTEM_RESET2_64, &a), GuestCall::NotSupported);
    }

    #[test]
    fn features_answers() {
        for f in OFFERED {
            assert_eq!(features(f), 0, "{f:#x}");
        }
        // What Linux asks at boot (besides SMCCC_VERSION).
        assert_eq!(features(PSCI_SYSTEM_SUSPEND_64), -1);
        assert_eq!(features(PSCI_SYSTEM_RESET2_64), -1);
        assert_eq!(features(PSCI_CPU_SUSPEND_64), 0);
        assert_eq!(features(PSCI_MIGRATE_32), -1);
        assert_eq!(features(0x8400_00FF), -1);
        assert_eq!(arch_features(SMCCC_VERSION), 0);
        assert_eq!(arch_features(SMCCC_ARCH_FEATURES), 0);
        assert_eq!(arch_features(smccc::arch::SMCCC_ARCH_WORKAROUND_1), -1);
    }

    #[test]
    fn cpu_suspend_power_state() {
        assert_eq!(cpu_suspend(0), 0);
        assert_eq!(cpu_suspend(1 << 16 | 2 << 24 | 0x1234), 0);
        assert_eq!(cpu_suspend(1 << 17), error::INVALID_PARAMETERS);
        assert_eq!(cpu_suspend(1 << 30), error::INVALID_PARAMETERS);
    }
}
