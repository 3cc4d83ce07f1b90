//! PSCI calls of the hypervisor itself to the firmware (QEMU's, over the DTB's /psci conduit):
//! starting and stopping physical CPUs and powering the machine off (DEN0022 5.1).

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
