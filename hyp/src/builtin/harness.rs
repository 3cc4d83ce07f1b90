//! The built-in guest's side of the VM core's one interface (vmm/harness.rs): its boot
//! registers, its HVC calls (guest/src/abi.rs: workload barriers and phases, the fuzzer, the
//! PSCI checks, the bad-guest cases, its result), its overcommit memslot, its map policy (dirty
//! logging phases) and its step timers.

use alloc::string::String;
use alloc::vec::Vec;
use arch_decode::smccc::Call;
use core::sync::atomic::Ordering;
use stage2::{Error, Mapped, Stats};

use crate::decode::Abort;
use crate::frame::Action;
use crate::frame::Frame;
use crate::harness::{Guard, Harness};
use crate::memslot::{Memslot, ZeroPage};
use crate::options::Selftest;
use crate::percpu::{self, PerCpu};
use crate::vcpu;
use crate::vm::Vm;
use crate::{abi, badguest, fuzz, layout, phases, psci_check};

/// The built-in guest's harness.
pub struct Builtin;

/// The built-in guest times the zeroing of its pages (steps=on, phases.rs).
impl ZeroPage for Builtin {
    fn zero_page(&self, cpu: usize, zero: &mut dyn FnMut()) {
        phases::timed_zero(cpu, zero)
    }
}

/// The one instance the VM holds.
pub static BUILTIN: Builtin = Builtin;

impl Harness for Builtin {
    /// guest/src/abi.rs: x0..x5 = vCPU id, data region, workload, flags, vCPU count; SP_EL1 =
    /// its stack; EL1h, DAIF masked, MMU off.
    fn boot_frame(&self, vm: &Vm, id: usize) -> Option<Frame> {
        let (base, size) = layout::region(vm, id);
        let mut f = Frame::zeroed();
        f.x[0] = id as u64;
        f.x[1] = base;
        f.x[2] = size;
        f.x[3] = vm.opts.workload.guest_number();
        // vCPU 0 also proves that an abort outside every memslot comes back as an external
        // abort and exercises the PSCI/SMCCC paths; selftest=hang makes the last vCPU never
        // finish.
        let mut flags = if id == 0 { abi::FLAG_PROBE } else { 0 };
        if vm.opts.selftest == Some(Selftest::Hang) && id + 1 == vm.opts.vcpus {
            flags |= abi::FLAG_HANG;
        }
        f.x[4] = flags;
        f.x[5] = vm.opts.vcpus as u64;
        f.sp_el1 = layout::stack_top(id);
        f.elr = vm.entry;
        f.spsr = crate::el1_reset::entry_pstate();
        log::info!(
            "vcpu {id} (MPIDR {:#x}): entering guest at {:#x}, {} region {base:#x}+{size:#x}",
            percpu::this_cpu().mpidr,
            vm.entry,
            layout::data(vm).name
        );
        Some(f)
    }

    fn call(&self, vm: &Vm, cpu: &PerCpu, frame: &mut Frame, call: &Call) -> Option<Action> {
        // The workload calls: barriers, calibration, phase reports, collapse (phases.rs).
        if let Some(action) = phases::call(vm, cpu, frame, call) {
            return Some(action);
        }
        // The guest fuzzer's call (fuzz.rs): run parameters, its counts, whether fuzzers run.
        if let Some(action) = fuzz::call(vm, cpu, frame) {
            return Some(action);
        }
        // workload=psci's check reports (psci_check.rs), then the robustness calls (badguest.rs):
        // run parameters, verify results, bad-guest cases.
        if let Some(v) =
            psci_check::call(vm, cpu.index, call).or_else(|| badguest::call(vm, cpu, call))
        {
            frame.x[0] = v;
            return Some(Action::Resume);
        }
        match call.function_u64() {
            abi::HVC_REPORT => {
                let r = &cpu.result;
                r.checksum.store(call.arg(1), Ordering::Relaxed);
                r.cycles.store(call.arg(2), Ordering::Relaxed);
                r.pages.store(call.arg(3), Ordering::Relaxed);
                r.reported.store(1, Ordering::Release);
                frame.x[0] = 0;
                Some(Action::Resume)
            }
            abi::HVC_FINISH => Some(if call.arg(1) == 0 {
                vcpu::finish_ok(cpu)
            } else {
                log::error!(
                    "vcpu {}: guest finished with status {}",
                    cpu.index,
                    call.arg(1)
                );
                vcpu::stop(cpu, vcpu::WHY_GUEST_STATUS)
            }),
            _ => None,
        }
    }

    /// A vCPU of the built-in guest finished only if it reported its result (HVC_REPORT).
    fn finished_ok(&self, cpu: &PerCpu) -> bool {
        cpu.result.reported.load(Ordering::Relaxed) != 0
    }

    /// Bad-guest case 12: the overcommit memslot, backed only up to its budget (badguest.rs).
    fn unclaimed_abort(
        &self,
        vm: &Vm,
        cpu: &PerCpu,
        frame: &mut Frame,
        a: &Abort,
        data: bool,
    ) -> Option<Action> {
        badguest::overcommit_fault(vm, cpu, frame, a, data)
    }

    fn map_fault(
        &self,
        vm: &Vm,
        g: &Guard<'_>,
        slot: &Memslot,
        a: &Abort,
        pa: u64,
    ) -> Result<Mapped, Error> {
        phases::map_fault(vm, g, slot, a, pa)
    }

    /// The guests' checksums against their backing pages (report.rs).
    fn check(&self, vm: &Vm, all_stopped: bool, failures: &mut Vec<String>) -> String {
        crate::report::check(vm, all_stopped, failures)
    }

    /// The workloads' timing and checks, the fuzzer's and workload=psci's sections (report.rs).
    fn report(&self, vm: &Vm, s: &Stats, failures: &mut Vec<String>) -> String {
        crate::report::report(vm, s, failures)
    }

    /// The bad-guest overcommit slot's backing pages (badguest.rs).
    fn for_each_backed(&self, f: &mut dyn FnMut(u64)) {
        crate::badguest::for_each_backed(f);
    }
}
