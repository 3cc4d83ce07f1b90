//! Running a vCPU and handling its exits: trap -> decode (`Exit`) -> handler -> resume or stop.
//!
//! The stage-2 fault path (`handle_stage2_fault`) is the point of the project. In parallel mode
//! it takes no lock of any kind: memslot lookup is a read of immutable data, the backing page is
//! agreed by compare-exchange, table pages come from this CPU's cache, counters are this CPU's,
//! and the stage2 crate's shared guard is a lock-free RCU read-side section. Nothing on it logs.

use aarch64_cpu::registers::{Readable, CNTPCT_EL0};
use arch_decode::esr::load_result;
use arch_decode::smccc::{self, Call};
use core::sync::atomic::Ordering;
use stage2::{Error, Mapped};

use crate::decode::{decode, Abort, Access, Exit, FaultType, Plan, SysReg};
use crate::frame::{Action, Frame};
use crate::lifecycle;
use crate::memslot::{Memslot, NoBacking};
use crate::options::Mode;
use crate::percpu::{self, log_sampled, status, Counters, PerCpu, Trap};
use crate::pool::{self, PAGE};
use crate::psci::{self, GuestPsci};
use crate::vm::{self, Vm};
use crate::{idregs, inject, irq};
use arch_decode::abort::Unbacked;

/// Why a vCPU was stopped (index stored in `VcpuResult::why`).
/// (Guest traps are never a reason: each gets an answer, see `handle_exit`.)
pub const REASONS: [&str; 9] = [
    "none",
    "the guest finished with a non-zero status",
    "(unused: the fault path is handed the memslot its caller found)",
    "out of memory backing guest RAM",
    "stage-2 map failed",
    "the guest turned its vCPU off before reporting",
    "(unused: a fault status the hypervisor cannot repair gets an injected abort)",
    "a workload barrier could not complete (timed out, or another vCPU was stopped)",
    "the stage-2 table pool ran dry (tables=) and RCU had nothing to return",
];
/// The guest reported a non-zero status (the built-in guest's HVC_FINISH).
pub const WHY_GUEST_STATUS: u32 = 1;
const WHY_OOM: u32 = 3;
const WHY_MAP: u32 = 4;
const WHY_OFF_EARLY: u32 = 5;
/// A barrier (phases.rs) waited past the run's timeout.
pub const WHY_BARRIER: u32 = 7;
const WHY_TABLES: u32 = 8;

/// The registers vCPU `id` starts with at its boot entry: the harness's (the built-in guest:
/// builtin/harness.rs), or for a guest from files its boot protocol (boot_protocol.rs): x0 = the
/// DTB's IPA, x1..x3 = 0, EL1h with D/A/I/F masked, MMU and caches off (configure_this_cpu), at
/// the kernel's load address.
fn boot_frame(vm: &Vm, id: usize) -> Frame {
    if let Some(f) = vm.harness.boot_frame(vm, id) {
        return f;
    }
    let dtb = match &vm.guest {
        vm::Guest::Files { layout, .. } => layout.dtb,
        vm::Guest::Builtin => 0,
    };
    let mut f = Frame::zeroed();
    f.x[0] = dtb;
    f.elr = vm.entry;
    f.spsr = crate::el1_reset::entry_pstate();
    log::info!(
        "vcpu {id} (MPIDR {:#x}): entering the {} guest at {:#x}, DTB at {dtb:#x}",
        percpu::this_cpu().mpidr,
        vm.guest_name(),
        vm.entry,
    );
    f
}

/// A vCPU that is OFF when the run ends has finished if the harness says so (a guest from files:
/// always, its OS turned it off or never started it). Returns with the vCPU out of the guest for
/// good: `left` is set last.
pub fn run(vm: &Vm, id: usize) {
    let cpu = percpu::this_cpu();
    if lifecycle::run_vcpu(vm, id, || boot_frame(vm, id)) == lifecycle::Stopped::OffAtEnd {
        if vm.harness.finished_ok(cpu) {
            finish_ok(cpu);
        } else {
            stop(cpu, WHY_OFF_EARLY);
        }
    }
    // The reporter tears the stage-2 table down once every vCPU has set this: this CPU has left
    // its last trap and drained its page caches (lifecycle::run_vcpu), so it neither walks the
    // table nor touches the pools any more.
    cpu.result.left.store(1, Ordering::Release);
}

/// Stops the vCPU with reason `why` (an index into `REASONS`).
pub fn stop(cpu: &PerCpu, why: u32) -> Action {
    cpu.result.why.store(why, Ordering::Relaxed);
    cpu.result.status.store(status::FAILED, Ordering::Release);
    Action::Leave
}

/// The vCPU finished its work: it leaves the guest.
pub fn finish_ok(cpu: &PerCpu) -> Action {
    cpu.result.status.store(status::DONE, Ordering::Release);
    Action::Leave
}

/// Where the vectors (exceptions.rs, `__hyp_trap_lower`) branch for every trap from the guest,
/// with the saved frame, the vector kind (frame.rs `kind`) and CNTPCT at entry. Returns 0 to
/// restore the frame and ERET, 1 to leave the guest (the vCPU is done).
#[unsafe(no_mangle)]
extern "C" fn hyp_handle_lower(frame: &mut Frame, kind: u64, entry_ticks: u64) -> u64 {
    match handle_exit(frame, kind, entry_ticks) {
        Action::Resume => 0,
        Action::Leave => 1,
    }
}

/// Entry from the vectors for every trap from the guest. `entry_ticks` is CNTPCT at entry.
///
/// Every exception class gets an answer and none stops the vCPU (docs/robustness.md has the
/// table): aborts are mapped, emulated or answered with an injected external abort; HVC/SMC
/// are served per SMCCC; ID-register reads are emulated; every other trapped instruction or
/// register access gets an injected UNDEF; physical interrupts are acknowledged and the guest
/// resumes.
pub fn handle_exit(frame: &mut Frame, kind: u64, entry_ticks: u64) -> Action {
    let cpu = percpu::this_cpu();
    let vm = vm::get();
    // A guest from files whose run has ended (SYSTEM_OFF on another vCPU): whatever brought
    // this vCPU here, it leaves the guest (evict.rs makes the ones that never trap fault).
    if !vm.builtin() && lifecycle::end() != lifecycle::End::Stopped {
        return finish_ok(cpu);
    }
    // The aborts are bound by reference: a by-value binding copied the whole `Abort` out of the
    // decoded `Exit` (a `memcpy` call, about 40 instructions on every fault) whenever `decode`
    // was not inlined here.
    match decode(kind) {
        Exit::DataAbort(ref a) => handle_abort(vm, cpu, frame, a, true, entry_ticks),
        Exit::InstructionAbort(ref a) => handle_abort(vm, cpu, frame, a, false, entry_ticks),
        Exit::AbortRetry => {
            // The guest changed its stage 1 since the fault: re-running the access faults
            // again (with a FAR that translates) or succeeds. This CPU's stale stage-1 entry
            // goes first, or the re-run could fault the same way for ever.
            cpu.counters.trap(Trap::AbortRetry);
            crate::arch::abort_retry_invalidate_local();
            Action::Resume
        }
        Exit::Hvc(imm) => {
            Counters::inc(&cpu.counters.hvc);
            cpu.counters.trap(Trap::Hvc);
            handle_call(cpu, frame, "HVC", imm)
        }
        Exit::Smc(imm) => {
            Counters::inc(&cpu.counters.smc);
            cpu.counters.trap(Trap::Smc);
            // A trapped SMC leaves ELR_EL2 at the SMC itself: step over it.
            inject::skip_instruction(frame);
            handle_call(cpu, frame, "SMC", imm)
        }
        Exit::SysReg(r) => handle_sysreg(cpu, frame, &r),
        Exit::Wfx { wfe } => {
            // A guest from files: WFI waits at EL2 and leaves when the run is over
            // (lifecycle::guest_wfx). The built-in guest does not trap them (TWI/TWE clear):
            // WFI/WFE may complete at any time (Arm ARM "Wait for Interrupt"), a NOP is correct.
            cpu.counters.trap(Trap::Wfx);
            if !vm.builtin() && lifecycle::guest_wfx(cpu.index, wfe) {
                return finish_ok(cpu);
            }
            inject::skip_instruction(frame);
            Action::Resume
        }
        Exit::Sme => undef(
            cpu,
            frame,
            Trap::SmeUndef,
            "SME instruction or register (EC 0x1D)",
        ),
        Exit::Sve => undef(cpu, frame, Trap::SveUndef, "SVE instruction (EC 0x19)"),
        Exit::Fp => undef(
            cpu,
            frame,
            Trap::FpUndef,
            "FP/AdvSIMD instruction (EC 0x07)",
        ),
        Exit::Other(esr) => {
            let n = cpu.counters.trap(Trap::OtherUndef);
            if log_sampled(n) {
                log::warn!(
                    "vcpu {}: trap ESR_EL2={esr:#x} (EC {:#x}) at ELR {:#x} has no handler: \
                     injected UNDEF ({n} so far)",
                    cpu.index,
                    esr >> 26,
                    frame.elr
                );
            }
            inject::undef(frame);
            Action::Resume
        }
        Exit::Irq => interrupt(cpu, irq::Group::One, Trap::Irq, "IRQ"),
        Exit::Fiq => interrupt(cpu, irq::Group::Zero, Trap::Fiq, "FIQ"),
        Exit::SError => {
            let n = cpu.counters.trap(Trap::Serror);
            if log_sampled(n) {
                log::warn!(
                    "vcpu {}: physical SError while the guest ran (ELR {:#x}): injected a \
                     virtual SError ({n} so far)",
                    cpu.index,
                    frame.elr
                );
            }
            inject::virtual_serror();
            Action::Resume
        }
    }
}

/// Injects an UNDEF for a trapped instruction of class `t`, with a sampled log line.
fn undef(cpu: &PerCpu, frame: &mut Frame, t: Trap, what: &str) -> Action {
    let n = cpu.counters.trap(t);
    if log_sampled(n) {
        log::warn!(
            "vcpu {}: {what} at ELR {:#x}: not offered, injected UNDEF ({n} so far)",
            cpu.index,
            frame.elr
        );
    }
    inject::undef(frame);
    Action::Resume
}

/// A physical IRQ/FIQ taken while the guest ran: acknowledge and end it if one is pending at the
/// GIC (irq.rs), log, resume the guest.
fn interrupt(cpu: &PerCpu, group: irq::Group, t: Trap, what: &str) -> Action {
    let n = cpu.counters.trap(t);
    let intid = irq::acknowledge(group);
    if log_sampled(n) {
        match intid {
            Some(id) => log::info!(
                "vcpu {}: {what} exit: acknowledged INTID {id} ({n} so far); guest resumes",
                cpu.index
            ),
            None => log::info!(
                "vcpu {}: {what} exit: nothing pending (spurious) ({n} so far); guest resumes",
                cpu.index
            ),
        }
    }
    Action::Resume
}

/// Data cache maintenance by set/way (DC ISW, DC CSW, DC CISW: op0 1, op1 0, CRn 7, CRm 6/10/14,
/// op2 2), trapped by HCR_EL2.TSW.
fn is_set_way(r: &SysReg) -> bool {
    matches!(r.encoding(), (1, 0, 7, 6 | 10 | 14, 2))
}

/// A trapped MSR/MRS/System instruction (EC 0x18).
fn handle_sysreg(cpu: &PerCpu, frame: &mut Frame, r: &SysReg) -> Action {
    if idregs::is_id_register(r) && r.read {
        frame.set_reg(r.rt, idregs::read(r.crm, r.op2, vm::get().id_policy()));
        cpu.counters.trap(Trap::SysregEmulated);
        inject::skip_instruction(frame);
        return Action::Resume;
    }
    if let Some(v) = idregs::read_group1(r) {
        frame.set_reg(r.rt, v);
        cpu.counters.trap(Trap::SysregEmulated);
        inject::skip_instruction(frame);
        return Action::Resume;
    }
    if arch_decode::razwi::is_raz_wi(r.op0, r.op1, r.crn, r.crm, r.op2) {
        // RAS error records (HCR_EL2.TERR) and ACTLR_EL1 (HCR_EL2.TACR): RAZ/WI, a CPU without
        // error records and without auxiliary controls (arch_decode::razwi).
        if r.read {
            frame.set_reg(r.rt, 0);
        }
        let n = cpu.counters.trap(Trap::SysregEmulated);
        if log_sampled(n) {
            log::info!(
                "vcpu {}: {} S{}_{}_C{}_C{}_{}: RAZ/WI ({n} emulated so far)",
                cpu.index,
                if r.read { "MRS" } else { "MSR" },
                r.op0,
                r.op1,
                r.crn,
                r.crm,
                r.op2
            );
        }
        inject::skip_instruction(frame);
        return Action::Resume;
    }
    if is_set_way(r) {
        // Set/way operations act on this PE's caches only, and a guest cannot know the physical
        // cache geometry, so they cannot be passed through (Arm ARM "Performing cache
        // maintenance instructions": set/way is for power management, not coherency). What a
        // guest means by them is "my memory is in RAM now", e.g. before it turns its caches or
        // MMU off and reads memory uncached.
        // - With FEAT_S2FWB the guest's accesses to RAM are forced Write-Back whatever its own
        //   attributes (HCR_EL2.FWB), so cached and "uncached" views never differ: a NOP loses
        //   nothing.
        // - Without it, an uncached guest read goes past dirty lines in the caches: clean and
        //   invalidate every backed page of every memslot to the point of coherency (KVM's
        //   stage2_flush_vm does the same). One full pass per trapped operation: set/way loops
        //   are rare (firmware, power-down paths), and each op then really leaves memory clean.
        if !crate::arch::has_fwb() {
            vm::get().clean_invalidate_backed_memory();
        }
        cpu.counters.trap(Trap::SysregEmulated);
        inject::skip_instruction(frame);
        return Action::Resume;
    }
    // A write to an ID register, or anything without a handler: UNDEF, as an unimplemented
    // register is (Arm ARM "Reserved encodings in the System instruction space").
    let n = cpu.counters.trap(Trap::SysregUndef);
    if log_sampled(n) {
        log::warn!(
            "vcpu {}: {} S{}_{}_C{}_C{}_{} (x{}) at ELR {:#x}: not offered, injected UNDEF \
             ({n} so far)",
            cpu.index,
            if r.read { "MRS" } else { "MSR/SYS" },
            r.op0,
            r.op1,
            r.crn,
            r.crm,
            r.op2,
            r.rt,
            frame.elr
        );
    }
    inject::undef(frame);
    Action::Resume
}

/// The guest's emulated UART window if `ipa` is in it (the guest kind's description, vm.rs).
fn uart_at(vm: &Vm, ipa: u64) -> Option<vm::Window> {
    vm.uart.filter(|w| w.contains(ipa))
}

fn handle_abort(
    vm: &Vm,
    cpu: &PerCpu,
    frame: &mut Frame,
    a: &Abort,
    data: bool,
    entry_ticks: u64,
) -> Action {
    // The fault is classified before its address is looked at (decode.rs, arch_decode::abort::
    // plan): the answers below need no IPA.
    match a.plan {
        // A synchronous external abort from the memory system is the guest's, whatever the IPA:
        // forward it (KVM does the same when the host's RAS code does not claim it).
        Plan::ForwardExternal => {
            return inject_abort(cpu, frame, a, data, "took a synchronous external abort")
        }
        // TLB conflict: this CPU's TLB holds overlapping entries; invalidate them and re-run.
        Plan::TlbConflict => {
            let n = cpu.counters.trap(Trap::AbortRetry);
            if log_sampled(n) {
                log::warn!(
                    "vcpu {}: TLB conflict abort (ESR {:#x}): invalidated this CPU's stage 1+2 \
                     entries, access re-runs",
                    cpu.index,
                    a.esr
                );
            }
            crate::arch::tlb_conflict_invalidate_local();
            return Action::Resume;
        }
        // Alignment, unsupported atomic update, ...: nothing to repair; never stop the vCPU.
        Plan::InjectExternal => {
            return inject_abort(
                cpu,
                frame,
                a,
                data,
                "has a fault status the hypervisor cannot repair",
            )
        }
        Plan::Hpfar | Plan::TranslateFar => {}
    }
    // One memslot lookup per fault: the slot found here is the one the fault path maps in.
    if let Some(slot) = vm.slot(a.ipa) {
        if let FaultType::Other(fsc) = a.fault {
            // A stage-2 address size fault inside a memslot: the output address of our own
            // table is beyond VTCR_EL2.PS, which no guest can cause. Answer the guest anyway;
            // the log says it is the hypervisor's.
            log::error!(
                "vcpu {}: fault status {fsc:#x} at IPA {:#x} in a memslot (ESR {:#x})",
                cpu.index,
                a.ipa,
                a.esr
            );
            return inject_abort(cpu, frame, a, data, "faulted with an unexpected status");
        }
        cpu.counters.trap(Trap::AbortMemslot);
        let action = handle_stage2_fault(vm, cpu, slot, a);
        percpu::record_fault_time(cpu, CNTPCT_EL0.get().wrapping_sub(entry_ticks));
        return action;
    }
    let cache_maintenance = data && a.cache_maintenance;
    if let (true, false, Some(uart)) = (data, cache_maintenance, uart_at(vm, a.ipa)) {
        match a.access {
            // Only an access that lies wholly inside the window is the UART's: one that runs
            // past its end gets what its second half gets, and nothing is mapped there.
            Some(access) if uart.holds(a.ipa, u64::from(access.size)) => {
                cpu.counters.trap(Trap::AbortMmio);
                return emulate_uart(cpu, frame, a, access, uart.base);
            }
            Some(_) => {
                return inject_abort(cpu, frame, a, data, "straddles the end of the UART window")
            }
            None => {
                return inject_abort(
                    cpu,
                    frame,
                    a,
                    data,
                    "cannot be emulated (no syndrome: ISV = 0)",
                )
            }
        }
    }
    if let vm::Guest::Files { devices, .. } = &vm.guest {
        // A redistributor frame of a CPU the guest was not given, the RD_base control page of
        // one it was, or a removed device's window (passthrough.rs).
        if let (true, Some(access)) = (data, a.access) {
            let size = u64::from(access.size);
            let stored = a.write.then(|| {
                let bits = 8 * size;
                frame.reg(access.reg) & (u64::MAX >> (64 - bits))
            });
            if let Some(value) = devices.emulate(a.ipa, size, stored) {
                cpu.counters.trap(Trap::AbortMmio);
                Counters::inc(&cpu.counters.mmio);
                if !a.write {
                    frame.set_reg(access.reg, load_result(&access, value));
                }
                inject::skip_instruction(frame);
                return Action::Resume;
            }
        }
    } else if let Some(action) = vm.harness.unclaimed_abort(vm, cpu, frame, a, data) {
        // The harness's own memory (the built-in guest's overcommit memslot, badguest.rs).
        return action;
    }
    match arch_decode::abort::unbacked(a.ipa, vm::IPA_BITS, cache_maintenance) {
        Unbacked::AddressSizeFault => {
            inject::abort(
                frame,
                data,
                a.write,
                a.cache_maintenance,
                a.far_valid.then_some(a.far),
                arch_decode::exception::FSC_ADDRESS_SIZE_L0,
            );
            Counters::inc(&cpu.counters.injected);
            let n = cpu.counters.trap(Trap::AbortInjected);
            if log_sampled(n) {
                log::info!(
                    "vcpu {}: {} at IPA {:#x} is beyond the {}-bit IPA space: injected an \
                     address size fault, level 0 ({n} so far)",
                    cpu.index,
                    if data { "access" } else { "fetch" },
                    a.ipa,
                    vm::IPA_BITS
                );
            }
            Action::Resume
        }
        Unbacked::SkipCacheMaintenance => {
            let n = cpu.counters.trap(Trap::AbortSkipped);
            if log_sampled(n) {
                log::info!(
                    "vcpu {}: cache maintenance at IPA {:#x} (not RAM: nothing there can be \
                     cached): skipped ({n} so far)",
                    cpu.index,
                    a.ipa
                );
            }
            inject::skip_instruction(frame);
            Action::Resume
        }
        Unbacked::ExternalAbort => inject_abort(cpu, frame, a, data, "is outside guest memory"),
    }
}

/// The stage-2 fault path for an abort at an IPA in `slot`: backing page -> `stage2` map -> ERET
/// re-runs the access. Never inlined, so gdb can always break on it
/// (`break hyp::vmm::vcpu::handle_stage2_fault`).
#[inline(never)]
fn handle_stage2_fault(vm: &Vm, cpu: &PerCpu, slot: &Memslot, a: &Abort) -> Action {
    // A memslot with a write log (migrate=on) gates its faults with a write freeze
    // (write_log.rs): a closed gate is waited for here, outside every lock and section, and the
    // access re-runs (it faults again if it still needs to).
    let log = vm.write_log.get().filter(|l| l.covers(slot));
    let _entered = match log {
        None => None,
        Some(l) => match l.enter() {
            Some(entered) => Some(entered),
            None => {
                l.wait_for_thaw(lifecycle::ended);
                return Action::Resume;
            }
        },
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
    let pa = match slot.backing_or_alloc(ipa, cpu, vm.backing, vm.harness) {
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
    // 4 KiB pages or 2 MiB blocks, relax or split: the harness's policy (harness.rs); while
    // the memslot's write log is logging (decided inside its gate), the logging policy.
    let result = match log.filter(|l| l.logging()) {
        Some(l) => l.map_fault(vm, &guard, slot, a, pa),
        None => vm.harness.map_fault(vm, &guard, slot, a, pa),
    };
    drop(guard);
    // Free the table pages this CPU retired whose grace period ended (never while in a section).
    s2.reclaim(cpu.index);
    let c = &cpu.counters;
    Counters::inc(&c.faults);
    match result {
        Ok(Mapped::Installed | Mapped::Replaced) => Counters::inc(&c.installed),
        // A permission fault the policy answered without a new mapping: a relax of the valid
        // leaf (harness.rs `map_plain`, write_log.rs, the built-in guest's dirty log; the map
        // policies return Mapped::Spurious for it, stage2's relax does not say whether this CPU
        // or another changed the entry). Counted apart from `spurious`, which is only "the
        // entry was already valid" after a translation fault.
        Ok(Mapped::Spurious) if a.fault == FaultType::Permission => Counters::inc(&c.relaxed),
        // Another CPU mapped it first: the access will succeed when re-run.
        Ok(Mapped::Spurious) => Counters::inc(&c.spurious),
        // Another CPU was mid-update: re-run the access, which faults again if still needed.
        Err(Error::Retry) => Counters::inc(&c.retries),
        Err(Error::NoMemory) => return table_pool_dry(s2, cpu),
        Err(_) => return stop(cpu, WHY_MAP),
    }
    if a.fetch {
        // The page may be recycled: no stale I-cache line of its earlier life may be fetched.
        crate::arch::icache_sync_for_exec_fault();
    }
    // Do NOT advance ELR: the faulting instruction re-executes against the new mapping.
    Action::Resume
}

/// The stage-2 table pool ran dry (nothing was published: `map` allocates before it breaks).
/// Table pages come back two ways: retired tables after a grace period (so wait for every pending
/// one: `barrier`, outside any section), and pages other CPUs hold in their caches (so ask them
/// to hand those back at their next trap: `request_drain`). If either can still give pages,
/// re-run the access; stop this vCPU cleanly (the others go on) only when neither can, or when
/// the other CPUs kept their pages for `DRY_PATIENCE_S` seconds.
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
    let elsewhere = pool::tables_cached_elsewhere(cpu);
    if elsewhere > 0 {
        let now = CNTPCT_EL0.get();
        let since = cpu.table_dry_since.load(Ordering::Relaxed);
        if since == 0 {
            cpu.table_dry_since.store(now, Ordering::Relaxed);
            log::warn!(
                "vcpu {}: stage-2 table pool dry: asking the other CPUs for the {elsewhere} \
                 table pages in their caches",
                cpu.index
            );
        }
        let patience = DRY_PATIENCE_S * aarch64_cpu::registers::CNTFRQ_EL0.get();
        if since == 0 || now.wrapping_sub(since) < patience {
            vm::get().tables.request_drain();
            Counters::inc(&cpu.counters.retries);
            return Action::Resume;
        }
    }
    log::error!(
        "vcpu {}: stage-2 table pool dry, nothing waiting for a grace period and {elsewhere} \
         pages cached on other CPUs: stopping this vCPU",
        cpu.index
    );
    stop(cpu, WHY_TABLES)
}

/// How long a vCPU whose table pool ran dry waits for other CPUs to hand back cached pages.
const DRY_PATIENCE_S: u64 = 2;

/// The emulated PL011's registers as the guest reads them: FR (0x18) = TXFE | RXFE (transmit
/// FIFO empty, so never full; nothing to receive), everything else 0.
fn uart_register(offset: u64) -> u32 {
    const FR: u64 = 0x18;
    const FR_TXFE: u32 = 1 << 7;
    const FR_RXFE: u32 = 1 << 4;
    if offset == FR {
        FR_TXFE | FR_RXFE
    } else {
        0
    }
}

/// Emulates an access to the guest's PL011 (wholly inside its window): a store to DR prints a
/// byte; a load returns the registers' bytes at the access's offset and size, zero- or
/// sign-extended into Wt/Xt as the syndrome (SAS, SSE, SF) says. The PC then steps over the
/// instruction by its length (ESR.IL) and, in a T32 IT block, ITSTATE advances.
/// A `.flat`'s "EXIT: STATUS=n" line is recorded (`FLAT_EXIT_STATUS`); its SYSTEM_OFF ends the run.
/// `base` is the window's first IPA.
fn emulate_uart(cpu: &PerCpu, frame: &mut Frame, a: &Abort, access: Access, base: u64) -> Action {
    Counters::inc(&cpu.counters.mmio);
    let offset = a.ipa - base;
    if a.write {
        if offset == 0 {
            let byte = frame.reg(access.reg) as u8;
            // SAFETY: this CPU's console line, touched only by this CPU (see PerCpu).
            let line = unsafe { &mut *cpu.uart_line.get() };
            if byte == b'\n' || line.len() >= 200 {
                let text = core::str::from_utf8(line).unwrap_or("<non-UTF-8 output>");
                log::info!("guest: {text}");
                guest_exit_line(text);
                line.clear();
            }
            if byte != b'\n' && byte != b'\r' {
                line.push(byte);
            }
        }
    } else {
        // Little-endian bytes of the 32-bit registers from `offset` on.
        let data = (0..u64::from(access.size)).fold(0u64, |v, i| {
            let at = offset + i;
            let byte = (uart_register(at & !3) >> ((at & 3) * 8)) & 0xFF;
            v | u64::from(byte) << (8 * i)
        });
        frame.set_reg(access.reg, load_result(&access, data));
    }
    inject::skip_instruction(frame);
    // A `.flat` prints its EXIT line and then powers off through PSCI SYSTEM_OFF (kvm-unit-tests
    // lib/arm/io.c `exit`), which ends the run for every vCPU (lifecycle.rs): go on to it.
    Action::Resume
}

/// Answers an abort with an injected synchronous external abort (inject.rs) at FAR_EL2, counts
/// it and logs it (sampled). Used for accesses outside every memslot and device, accesses the
/// UART cannot emulate, and memory that cannot be backed (badguest.rs).
pub fn inject_abort(cpu: &PerCpu, frame: &mut Frame, a: &Abort, data: bool, why: &str) -> Action {
    inject::sync_external_abort(
        frame,
        data,
        a.write,
        a.cache_maintenance,
        a.far_valid.then_some(a.far),
    );
    Counters::inc(&cpu.counters.injected);
    let n = cpu.counters.trap(Trap::AbortInjected);
    if log_sampled(n) {
        log::info!(
            "vcpu {}: {} at IPA {:#x} {why}: injected a synchronous external abort ({n} so far)",
            cpu.index,
            if data { "access" } else { "fetch" },
            a.ipa
        );
    }
    Action::Resume
}

/// PSCI 1.1 and the SMCCC architecture calls, for every guest kind (psci.rs). SYSTEM_OFF /
/// SYSTEM_RESET end the run: this vCPU leaves, finished if the harness says its work was done;
/// CPU_OFF leaves until a CPU_ON (lifecycle.rs).
fn guest_psci_call(vm: &Vm, cpu: &PerCpu, frame: &mut Frame, conduit: &str, call: &Call) -> Action {
    let function = call.function;
    match psci::guest_call(cpu.index, call, |ipa| vm.slot(ipa).is_some()) {
        GuestPsci::Return(v) => {
            frame.x[0] = v;
            Action::Resume
        }
        GuestPsci::SystemOff | GuestPsci::SystemReset => {
            if vm.harness.finished_ok(cpu) {
                finish_ok(cpu)
            } else {
                stop(cpu, WHY_OFF_EARLY)
            }
        }
        // Powered off (lifecycle.rs): leave; lifecycle::run_vcpu waits for a CPU_ON.
        GuestPsci::CpuOff => Action::Leave,
        GuestPsci::NotSupported => {
            // An unknown function ID answered NOT_SUPPORTED is the architected answer (SMCCC
            // DEN0028, "Unknown Function Identifier"): guests probe this way (Linux asks for the
            // TRNG at 0x84000050, the built-in guest asks for 0xc60000ff on purpose), so it is
            // information, not a warning.
            if log_sampled(Counters::bump(&cpu.counters.calls_unsupported)) {
                log::info!(
                    "vcpu {}: unsupported {conduit} function {function:#x}: NOT_SUPPORTED",
                    cpu.index
                );
            }
            frame.x[0] = smccc::NOT_SUPPORTED;
            Action::Resume
        }
    }
}

/// The status a `.flat` guest printed on its console ("EXIT: STATUS=n", kvm-unit-tests'
/// lib/arm/io.c), 0 = none yet.
pub static FLAT_EXIT_STATUS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records the `EXIT: STATUS=n` of a guest console line; whether it was one.
fn guest_exit_line(text: &str) -> bool {
    if let Some(rest) = text.split("EXIT: STATUS=").nth(1) {
        let digits: &str = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or("");
        if let Ok(n) = digits.parse::<u64>() {
            FLAT_EXIT_STATUS.store(n, Ordering::Release);
            return true;
        }
    }
    false
}

/// HVC and trapped SMC: the harness's ABI and PSCI, per SMCCC (DEN0028): the function ID
/// is W0 and an SMC32/HVC32 call's arguments are W1..W7 (arch_decode::smccc). A non-zero
/// immediate is not an SMCCC call (SMCCC 2.x: the immediate is 0): NOT_SUPPORTED.
fn handle_call(cpu: &PerCpu, frame: &mut Frame, conduit: &str, imm: u16) -> Action {
    if imm != 0 {
        if log_sampled(Counters::bump(&cpu.counters.calls_unsupported)) {
            log::warn!(
                "vcpu {}: {conduit} #{imm:#x} (non-zero immediate): NOT_SUPPORTED",
                cpu.index
            );
        }
        frame.x[0] = smccc::NOT_SUPPORTED;
        return Action::Resume;
    }
    let mut regs = [0; 8];
    regs.copy_from_slice(&frame.x[..8]);
    let call = Call::new(&regs);
    let vm = vm::get();
    // The harness's own ABI first (the built-in guest's calls, builtin/harness.rs), then PSCI.
    if let Some(action) = vm.harness.call(vm, cpu, frame, &call) {
        return action;
    }
    guest_psci_call(vm, cpu, frame, conduit, &call)
}
