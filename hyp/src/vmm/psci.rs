//! PSCI: the hypervisor's own calls to firmware (QEMU, over the DTB's conduit) and the PSCI
//! calls it serves to its guest.

use core::sync::atomic::{AtomicBool, Ordering};
use smccc::psci;
use smccc::{Hvc, Smc};

/// The conduit from the DTB's /psci `method`.
static USE_SMC: AtomicBool = AtomicBool::new(true);

/// Records the DTB's PSCI method. CPU0, once.
pub fn init(smc: bool) {
    USE_SMC.store(smc, Ordering::Relaxed);
}

/// Starts CPU `mpidr` at `entry` (EL2, MMU off) with `context` in x0.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), psci::error::Error> {
    if USE_SMC.load(Ordering::Relaxed) {
        psci::cpu_on::<Smc>(mpidr, entry, context)
    } else {
        psci::cpu_on::<Hvc>(mpidr, entry, context)
    }
}

/// Powers this CPU off; only returns if the firmware refused.
pub fn cpu_off() {
    let _ = if USE_SMC.load(Ordering::Relaxed) {
        psci::cpu_off::<Smc>()
    } else {
        psci::cpu_off::<Hvc>()
    };
}

/// Powers the machine off (QEMU exits with status 0).
pub fn system_off() -> ! {
    let _ = if USE_SMC.load(Ordering::Relaxed) {
        psci::system_off::<Smc>()
    } else {
        psci::system_off::<Hvc>()
    };
    loop {
        core::hint::spin_loop();
    }
}

/// What a guest PSCI call asks the hypervisor to do after setting x0.
pub enum GuestPsci {
    /// Return `value` in x0 and resume.
    Return(u64),
    /// Stop this vCPU (CPU_OFF).
    CpuOff,
    /// Stop the VM (SYSTEM_OFF): this vCPU stops and the run ends when the others do.
    SystemOff,
    /// Not a PSCI call we serve.
    NotSupported,
}

/// PSCI 1.1, as (major << 16 | minor).
const GUEST_PSCI_VERSION: u64 = 1 << 16 | 1;

/// The PSCI functions offered to the guest.
const SUPPORTED: [u32; 6] = [
    psci::PSCI_VERSION,
    psci::PSCI_CPU_ON_32,
    psci::PSCI_CPU_ON_64,
    psci::PSCI_CPU_OFF,
    psci::PSCI_SYSTEM_OFF,
    psci::PSCI_FEATURES,
];

/// Serves a guest PSCI call: `function` is the SMCCC function ID (W0), `arg1` the first
/// argument as SMCCC passes it (already truncated to W1 for an SMC32/HVC32 call;
/// arch_decode::smccc::Call).
pub fn guest_call(function: u32, arg1: u64) -> GuestPsci {
    match function {
        psci::PSCI_VERSION => GuestPsci::Return(GUEST_PSCI_VERSION),
        psci::PSCI_CPU_OFF => GuestPsci::CpuOff,
        psci::PSCI_SYSTEM_OFF => GuestPsci::SystemOff,
        psci::PSCI_FEATURES => {
            // PSCI_FEATURES is an SMC32 call: its argument is a function ID in W1.
            let supported = SUPPORTED.contains(&(arg1 as u32));
            GuestPsci::Return(if supported { 0 } else { not_supported() })
        }
        _ => GuestPsci::NotSupported,
    }
}

/// SMCCC NOT_SUPPORTED (-1) as a register value.
pub fn not_supported() -> u64 {
    arch_decode::smccc::NOT_SUPPORTED
}

/// Guest PSCI CPU_ON (`function` is CPU_ON_32 or CPU_ON_64). Every vCPU is started by the
/// hypervisor and never powered off and on again, so a valid request can only find its target
/// on. The answers, in the order PSCI 1.1 (DEN0022) lists the checks: INVALID_PARAMETERS for a
/// target that is no vCPU of this VM (vCPU i is MPIDR Aff0 = i), INVALID_ADDRESS for an entry
/// point outside guest memory or not 4-byte aligned, else ALREADY_ON.
pub fn guest_cpu_on(target: u64, entry: u64, vcpus: usize, entry_in_ram: bool) -> u64 {
    let aff = target & 0xFF_00FF_FFFF;
    let answer = if aff >= vcpus as u64 {
        psci::error::INVALID_PARAMETERS
    } else if !entry_in_ram || !entry.is_multiple_of(4) {
        psci::error::INVALID_ADDRESS
    } else {
        psci::error::ALREADY_ON
    };
    i64::from(answer) as u64
}
