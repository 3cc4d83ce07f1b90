//! The robustness calls of the guest ABI (`HVC_QUERY`, `HVC_VERIFY`, `HVC_BADGUEST`,
//! `HVC_STAGE1`) and the bad-guest matrix's books: what each case must get as an answer, what
//! the guest saw, and the outcome table of the report (docs/robustness.md).

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0};
use core::sync::atomic::Ordering;

use crate::abi;
use crate::chaos;
use crate::exceptions::Frame;
use crate::percpu::PerCpu;
use crate::vm::Vm;

/// The vCPU that runs the bad cases: the last one (its region ends the data slot, which case 9
/// needs to straddle out of guest memory).
pub fn is_bad_vcpu(vm: &Vm, id: usize) -> bool {
    vm.opts.workload == crate::options::Workload::Badguest && id + 1 == vm.opts.vcpus
}

/// Serves a robustness HVC; None if `function` is not one of them.
pub fn call(vm: &Vm, cpu: &PerCpu, frame: &mut Frame, function: u64) -> Option<u64> {
    match function {
        abi::HVC_QUERY => Some(match frame.x[1] {
            abi::QUERY_VERIFY_TICKS => vm.opts.duration_s * CNTFRQ_EL0.get(),
            abi::QUERY_VCPUS => vm.opts.vcpus as u64,
            _ => crate::psci::not_supported(),
        }),
        abi::HVC_VERIFY => {
            let v = &chaos::verify_results()[cpu.index];
            v.passes.store(frame.x[1], Ordering::Relaxed);
            v.lost.store(frame.x[2], Ordering::Relaxed);
            v.words.store(frame.x[3], Ordering::Relaxed);
            v.reported.store(true, Ordering::Release);
            Some(0)
        }
        _ => None,
    }
}
