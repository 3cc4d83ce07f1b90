//! Running a vCPU and handling its exits: trap -> decode (`Exit`) -> handler -> resume or stop.
//!
//! The stage-2 fault path (`handle_stage2_fault`) is the point of the project. In parallel mode
//! it takes no lock of any kind: memslot lookup is a read of immutable data, the backing page is
//! agreed by compare-exchange, table pages come from this CPU's cache, counters are this CPU's,
//! and the stage2 crate's shared guard is a lock-free RCU read-side section. Nothing on it logs.

use aarch64_cpu::registers::{
    Readable, Writeable, CNTPCT_EL0, ELR_EL1, ESR_EL1, FAR_EL1, SPSR_EL1, SPSR_EL2, VBAR_EL1,
};
use core::sync::atomic::Ordering;
use stage2::{Error, Mapped};
use tock_registers::registers::InMemoryRegister;

use crate::abi;
use crate::decode::{decode, Abort, Exit, FaultType};
use crate::exceptions::{self, Frame};
use crate::memslot::NoBacking;
use crate::options::{Mode, Selftest};
use crate::percpu::{self, status, Counters, PerCpu};
use crate::pool::{self, PAGE};
use crate::psci::{self, GuestPsci};
use crate::vm::{self, Vm};

/// What the trap return path does.
pub enum Action {
    /// Restore the frame and ERET to the guest.
    Resume,
    /// The vCPU is done: return from `run`.
    Leave,
}

/// Why a vCPU was stopped (index stored in `VcpuResult::why`).
pub const REASONS: [&str; 11] = [
    "none",
    "the guest finished with a non-zero status",
    "unhandled trap from the guest",
    "external abort but the guest has no vector table (VBAR_EL1 unset)",
    "out of memory backing guest RAM",
    "stage-2 map failed",
    "the guest turned its vCPU off before reporting",
    "unexpected interrupt",
    "unexpected fault status in a memslot",
    "a workload barrier timed out waiting for the other vCPUs",
    "the stage-2 table pool ran dry (tables=) and RCU had nothing to return",
];
const WHY_GUEST_STATUS: u32 = 1;
const WHY_TRAP: u32 = 2;
const WHY_NO_VBAR: u32 = 3;
const WHY_OOM: u32 = 4;
const WHY_MAP: u32 = 5;
const WHY_OFF_EARLY: u32 = 6;
const WHY_IRQ: u32 = 7;
const WHY_FSC: u32 = 8;
/// A barrier (phases.rs) waited past the run's timeout.
pub const WHY_BARRIER: u32 = 9;
const WHY_TABLES: u32 = 10;

/// PSTATE for entering the guest or its exception vector: EL1h, D/A/I/F masked.
fn el1h_masked() -> u64 {
    let spsr: InMemoryRegister<u64, SPSR_EL2::Register> = InMemoryRegister::new(0);
    spsr.write(
        SPSR_EL2::D::Masked
            + SPSR_EL2::A::Masked
            + SPSR_EL2::I::Masked
            + SPSR_EL2::F::Masked
            + SPSR_EL2::M::EL1h,
    );
    spsr.get()
}

/// Runs vCPU `id` (= this CPU's index) until it finishes or is stopped.
pub fn run(vm: &Vm, id: usize) {
    let (base, size) = vm.region(id);
    let mut f = Frame::zeroed();
    f.x[0] = id as u64;
    f.x[1] = base;
    f.x[2] = size;
    f.x[3] = vm.opts.workload.guest_number();
    // vCPU 0 also proves that an abort outside every memslot comes back as an external abort
    // and exercises the PSCI/SMCCC paths; selftest=hang makes the last vCPU never finish.
    let mut flags = if id == 0 { abi::FLAG_PROBE } else { 0 };
    if vm.opts.selftest == Some(Selftest::Hang) && id + 1 == vm.opts.vcpus {
        flags |= abi::FLAG_HANG;
    }
    f.x[4] = flags;
    f.x[5] = vm.opts.vcpus as u64;
    f.sp_el1 = abi::DATA_BASE - id as u64 * abi::STACK_SIZE;
    f.elr = vm.entry;
    f.spsr = el1h_masked();
    log::info!(
        "vcpu {id} (MPIDR {:#x}): entering guest at {:#x}, {} region {base:#x}+{size:#x}",
        percpu::this_cpu().mpidr,
        vm.entry,
        vm.data.name
    );
    exceptions::run_guest(&f);
}

fn stop(cpu: &PerCpu, why: u32) -> Action {
    cpu.result.why.store(why, Ordering::Relaxed);
    cpu.result.status.store(status::FAILED, Ordering::Release);
    Action::Leave
}

fn finish_ok(cpu: &PerCpu) -> Action {
    cpu.result.status.store(status::DONE, Ordering::Release);
    Action::Leave
}

/// Entry from the vectors for every trap from the guest. `entry_ticks` is CNTPCT at entry.
pub fn handle_exit(frame: &mut Frame, kind: u64, entry_ticks: u64) -> Action {
    let cpu = percpu::this_cpu();
    let vm = vm::get();
    match decode(kind) {
        Exit::DataAbort(a) => handle_abort(vm, cpu, frame, &a, true, entry_ticks),
        Exit::InstructionAbort(a) => handle_abort(vm, cpu, frame, &a, false, entry_ticks),
        Exit::Hvc => {
            Counters::inc(&cpu.counters.hvc);
            handle_call(cpu, frame, "HVC")
        }
        Exit::Smc => {
            Counters::inc(&cpu.counters.smc);
            // A trapped SMC leaves ELR_EL2 at the SMC itself: step over it.
            frame.elr += 4;
            handle_call(cpu, frame, "SMC")
        }
        Exit::Interrupt(k) => {
            log::error!(
                "vcpu {}: unexpected exception vector {k} from the guest",
                cpu.index
            );
            stop(cpu, WHY_IRQ)
        }
        Exit::Other(esr) => {
            log::error!(
                "vcpu {}: unhandled trap ESR_EL2={esr:#x} (EC {:#x}) at ELR {:#x}",
                cpu.index,
                esr >> 26,
                frame.elr
            );
            stop(cpu, WHY_TRAP)
        }
    }
}

fn handle_abort(
    vm: &Vm,
    cpu: &PerCpu,
    frame: &mut Frame,
    a: &Abort,
    data: bool,
    entry_ticks: u64,
) -> Action {
    if vm.slot(a.ipa).is_some() {
        let action = handle_stage2_fault(vm, cpu, a);
        percpu::record_fault_time(cpu, CNTPCT_EL0.get().wrapping_sub(entry_ticks));
        return action;
    }
    if data && a.ipa >= abi::UART_BASE && a.ipa < abi::UART_BASE + abi::UART_SIZE {
        if let Some(access) = a.access {
            emulate_uart(cpu, frame, a, access);
            return Action::Resume;
        }
    }
    // Bad-guest case 12: the overcommit memslot, backed only up to its budget (badguest.rs).
    if let Some(action) = crate::badguest::overcommit_fault(vm, cpu, frame, a, data) {
        return action;
    }
    let why = if data && a.ipa >= abi::UART_BASE && a.ipa < abi::UART_BASE + abi::UART_SIZE {
        "cannot be emulated (no syndrome: ISV = 0)"
    } else {
        "is outside guest memory"
    };
    inject_external_abort(vm, cpu, frame, a, data, why)
}

/// The stage-2 fault path: memslot -> backing page -> `stage2` map -> ERET re-runs the access.
/// Never inlined, so gdb can always break on it (`break hyp::vcpu::handle_stage2_fault`).
#[inline(never)]
fn handle_stage2_fault(vm: &Vm, cpu: &PerCpu, a: &Abort) -> Action {
    if let FaultType::Other(_) = a.fault {
        log::error!(
            "vcpu {}: fault ESR {:#x} at IPA {:#x} in a memslot",
            cpu.index,
            a.esr,
            a.ipa
        );
        return stop(cpu, WHY_FSC);
    }
    let Some(slot) = vm.slot(a.ipa) else {
        return stop(cpu, WHY_TRAP);
    };
    // Refill this CPU's page caches (in batches) before entering the stage-2 section, so the
    // map itself never waits on the shared allocator.
    pool::top_up(cpu, vm.tables, vm.backing);
    let s2 = vm.s2.get();
    let ipa = a.ipa & !(PAGE - 1);
    // Locked mode: the whole fault, backing allocation included, runs under the MMU lock.
    let locked = match vm.opts.mode {
        Mode::Locked => Some(s2.exclusive(cpu.index)),
        Mode::Parallel => None,
    };
    // The memslot's backing is looked up (or allocated) INSIDE the stage-2 section, as KVM does
    // under the MMU lock held for read: a page migration (chaos.rs) unmaps the IPA, copies the
    // page and repoints the memslot under the exclusive guard, so it can never fall between this
    // lookup and the map below and leave the table pointing at a page the memslot has dropped.
    let guard = locked.unwrap_or_else(|| s2.shared(cpu.index));
    let pa = match slot.backing_or_alloc(ipa, cpu, vm.backing) {
        Ok(pa) => pa,
        // Another CPU is zeroing this 2 MiB chunk: re-run the access.
        Err(NoBacking::Busy) => {
            drop(guard);
            Counters::inc(&cpu.counters.faults);
            Counters::inc(&cpu.counters.retries);
            return Action::Resume;
        }
        Err(NoBacking::OutOfMemory) => {
            // Leave the section (or the MMU lock) before saying we stopped: the reporter tears
            // the table down.
            drop(guard);
            return stop(cpu, WHY_OOM);
        }
    };
    // 4 KiB pages or 2 MiB blocks, relax or split: the workload's policy (phases.rs).
    let result = crate::phases::map_fault(vm, &guard, slot, a, pa);
    drop(guard);
    // Free the table pages this CPU retired whose grace period ended (never while in a section).
    s2.reclaim(cpu.index);
    let c = &cpu.counters;
    Counters::inc(&c.faults);
    match result {
        Ok(Mapped::Installed | Mapped::Replaced) => Counters::inc(&c.installed),
        // Another CPU mapped it first: the access will succeed when re-run.
        Ok(Mapped::Spurious) => Counters::inc(&c.spurious),
        // Another CPU was mid-update: re-run the access, which faults again if still needed.
        Err(Error::Retry) => Counters::inc(&c.retries),
        Err(Error::NoMemory) => return table_pool_dry(s2, cpu),
        Err(_) => return stop(cpu, WHY_MAP),
    }
    // Do NOT advance ELR: the faulting instruction re-executes against the new mapping.
    Action::Resume
}

/// The stage-2 table pool ran dry (nothing was published: `map` allocates before it breaks).
/// Table pages retired by collapses and unmaps come back after a grace period, so wait for every
/// pending one (`barrier`, outside any section); if that returned pages, re-run the access,
/// otherwise stop this vCPU cleanly (the others go on) and say so.
#[cold]
fn table_pool_dry(s2: &crate::vm::S2, cpu: &PerCpu) -> Action {
    let before = s2.stats().tables_reclaimed;
    s2.barrier(cpu.index);
    let returned = s2.stats().tables_reclaimed - before;
    if returned > 0 {
        log::warn!(
            "vcpu {}: stage-2 table pool dry: waited for RCU, {returned} table pages came back",
            cpu.index
        );
        Counters::inc(&cpu.counters.retries);
        return Action::Resume;
    }
    log::error!(
        "vcpu {}: stage-2 table pool dry and nothing waiting for a grace period: stopping this vCPU",
        cpu.index
    );
    stop(cpu, WHY_TABLES)
}

/// Emulates an access to the guest's PL011: a store to DR prints a byte; loads read 0 (FR = 0
/// says "transmit FIFO not full"). ISV = 1 gave us the register and size; ELR steps over it.
fn emulate_uart(cpu: &PerCpu, frame: &mut Frame, a: &Abort, access: crate::decode::Access) {
    Counters::inc(&cpu.counters.mmio);
    let offset = a.ipa - abi::UART_BASE;
    if a.write {
        if offset == 0 {
            let byte = frame.reg(access.reg) as u8;
            // SAFETY: this CPU's console line, touched only by this CPU (see PerCpu).
            let line = unsafe { &mut *cpu.uart_line.get() };
            if byte == b'\n' || line.len() >= 200 {
                let text = core::str::from_utf8(line).unwrap_or("<non-UTF-8 output>");
                log::info!("guest: {text}");
                line.clear();
            }
            if byte != b'\n' && byte != b'\r' {
                line.push(byte);
            }
        }
    } else {
        frame.set_reg(access.reg, 0);
    }
    frame.elr += 4;
}

/// Injects a synchronous external abort for an access outside every memslot and device, as the
/// Arm ARM's exception entry to EL1 would: ESR/FAR/ELR/SPSR_EL1, then PSTATE = EL1h masked and
/// PC = VBAR_EL1 + the vector for "synchronous, from where the guest was".
pub fn inject_external_abort(
    vm: &Vm,
    cpu: &PerCpu,
    frame: &mut Frame,
    a: &Abort,
    data: bool,
    why: &str,
) -> Action {
    let vbar = VBAR_EL1.get();
    if vbar == 0 || !vm.image.contains(vbar) {
        log::error!(
            "vcpu {}: {} abort at IPA {:#x} (ELR {:#x}) outside guest memory and no guest \
             vector table: stopping this vCPU",
            cpu.index,
            if data { "data" } else { "instruction" },
            a.ipa,
            frame.elr
        );
        return stop(cpu, WHY_NO_VBAR);
    }
    // SPSR.M[3:0]: 0b0101 = EL1h, 0b0100 = EL1t, 0b0000 = EL0t.
    let (same_el, offset) = match frame.spsr & 0xF {
        0b0101 => (true, 0x200),
        0b0100 => (true, 0x000),
        _ => (false, 0x400),
    };
    // EC: data abort 0x24 (lower EL) / 0x25 (same EL); instruction abort 0x20 / 0x21.
    let ec: u64 = match (data, same_el) {
        (true, false) => 0x24,
        (true, true) => 0x25,
        (false, false) => 0x20,
        (false, true) => 0x21,
    };
    let il = 1 << 25; // a 32-bit instruction
    let wnr = if data && a.write { 1 << 6 } else { 0 };
    let fnv = if a.far_valid { 0 } else { 1 << 10 };
    let fsc_external = 0b01_0000; // synchronous external abort, not on a table walk
    ESR_EL1.set(ec << 26 | il | fnv | wnr | fsc_external);
    FAR_EL1.set(a.far);
    ELR_EL1.set(frame.elr);
    SPSR_EL1.set(frame.spsr);
    frame.spsr = el1h_masked();
    frame.elr = vbar + offset;
    Counters::inc(&cpu.counters.injected);
    log::info!(
        "vcpu {}: {} at IPA {:#x} {why}: injected a synchronous external abort",
        cpu.index,
        if data { "access" } else { "fetch" },
        a.ipa
    );
    Action::Resume
}

/// HVC and trapped SMC: the guest ABI (abi.rs) and PSCI. x0 = function id.
fn handle_call(cpu: &PerCpu, frame: &mut Frame, conduit: &str) -> Action {
    let function = frame.x[0];
    // The workload calls: barriers, calibration, phase reports, collapse (phases.rs).
    if let Some(action) = crate::phases::call(vm::get(), cpu, frame) {
        return action;
    }
    // The guest fuzzer's call (fuzz.rs): run parameters, its counts, whether fuzzers still run.
    if let Some(action) = crate::fuzz::call(vm::get(), cpu, frame) {
        return action;
    }
    // The robustness calls (badguest.rs): run parameters, verify results, bad-guest cases.
    if let Some(v) = crate::badguest::call(vm::get(), cpu, frame, function) {
        frame.x[0] = v;
        return Action::Resume;
    }
    match function {
        abi::HVC_REPORT => {
            let r = &cpu.result;
            r.checksum.store(frame.x[1], Ordering::Relaxed);
            r.cycles.store(frame.x[2], Ordering::Relaxed);
            r.pages.store(frame.x[3], Ordering::Relaxed);
            r.reported.store(1, Ordering::Release);
            frame.x[0] = 0;
            Action::Resume
        }
        abi::HVC_FINISH => {
            if frame.x[1] == 0 {
                finish_ok(cpu)
            } else {
                log::error!(
                    "vcpu {}: guest finished with status {}",
                    cpu.index,
                    frame.x[1]
                );
                stop(cpu, WHY_GUEST_STATUS)
            }
        }
        _ => match psci::guest_call(function, frame.x[1]) {
            GuestPsci::Return(v) => {
                frame.x[0] = v;
                Action::Resume
            }
            GuestPsci::CpuOff | GuestPsci::SystemOff => {
                if cpu.result.reported.load(Ordering::Relaxed) != 0 {
                    finish_ok(cpu)
                } else {
                    stop(cpu, WHY_OFF_EARLY)
                }
            }
            GuestPsci::NotSupported => {
                log::warn!(
                    "vcpu {}: unsupported {conduit} function {function:#x}: NOT_SUPPORTED",
                    cpu.index
                );
                frame.x[0] = psci::not_supported();
                Action::Resume
            }
        },
    }
}
