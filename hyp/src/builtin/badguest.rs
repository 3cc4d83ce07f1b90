//! The robustness calls of the guest ABI (`HVC_QUERY`, `HVC_VERIFY`, `HVC_BADGUEST`,
//! `HVC_STAGE1`) and the bad-guest matrix's books: what each case must get as an answer, what
//! the guest saw, and the outcome table of the report (docs/robustness.md).

use aarch64_cpu::registers::{ReadWriteable, Readable, CNTFRQ_EL0, HCR_EL2};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Once;
use stage2::{Attrs, Size};

use arch_decode::smccc::Call;

use crate::abi;
use crate::chaos;
use crate::decode::{Abort, FaultType};
use crate::frame::Action;
use crate::frame::Frame;
use crate::memslot::{Memslot, CHUNK};
use crate::options::{Mode, Workload};
use crate::percpu::PerCpu;
use crate::pool::{self, PAGE};
use crate::vm::Vm;

/// The vCPU that runs the bad cases: the last one (its region ends the data slot, which case 9
/// needs to straddle out of guest memory).
pub fn is_bad_vcpu(vm: &Vm, id: usize) -> bool {
    vm.opts.workload == crate::options::Workload::Badguest && id + 1 == vm.opts.vcpus
}

/// Serves a robustness HVC; None if `call` is not one of them. `call` carries
/// the SMCCC function ID (W0) and arguments (truncated for SMC32/HVC32).
pub fn call(vm: &Vm, cpu: &PerCpu, call: &Call) -> Option<u64> {
    match call.function_u64() {
        abi::HVC_QUERY => Some(match call.arg(1) {
            abi::QUERY_VERIFY_TICKS => vm.opts.duration_s * CNTFRQ_EL0.get(),
            abi::QUERY_VCPUS => vm.opts.vcpus as u64,
            abi::QUERY_FGT => u64::from(crate::vm::has_fgt()),
            abi::QUERY_DIRTY_ITERS => vm.opts.iters,
            abi::QUERY_DIRTY_EVIL => u64::from(vm.opts.evil),
            _ => crate::psci::not_supported(),
        }),
        abi::HVC_VERIFY => {
            let v = &chaos::verify_results()[cpu.index];
            v.passes.store(call.arg(1), Ordering::Relaxed);
            v.lost.store(call.arg(2), Ordering::Relaxed);
            v.words.store(call.arg(3), Ordering::Relaxed);
            v.reported.store(true, Ordering::Release);
            Some(0)
        }
        abi::HVC_BADGUEST => Some(badguest_call(
            vm,
            cpu,
            call.arg(1),
            call.arg(2),
            call.arg(3),
        )),
        abi::HVC_WP_CHUNK => Some(write_protect_chunk(vm, cpu, call.arg(1))),
        abi::HVC_WP_COUNT => Some(count_writable(vm, cpu, call.arg(1), call.arg(2))),
        abi::HVC_STAGE1 => {
            // HCR_EL2.DC makes the guest's stage 1 behave as off; a guest that wants its own
            // tables asks for it to be cleared first (and set again once its MMU is off).
            if call.arg(1) == 1 {
                HCR_EL2.modify(HCR_EL2::DC::CLEAR);
            } else {
                HCR_EL2.modify(HCR_EL2::DC::SET);
            }
            crate::arch::guest_invalidate_tlb_local();
            Some(0)
        }
        _ => None,
    }
}

/// One case of the matrix: what the guest does and what it must get back.
struct Case {
    what: &'static str,
    answer: &'static str,
    /// The first observation the guest must report.
    obs1: u64,
    /// The second, if it is checked.
    obs2: Option<u64>,
}

const ERR: fn(i32) -> u64 = |e| i64::from(e) as u64;

/// Cases in the matrix.
const CASES: usize = 23;

/// The matrix. `obs2` of case 11 is the vCPU count (checked at run time).
fn cases() -> [Case; CASES] {
    [
        Case {
            what: "load / store to an IPA outside every memslot and device",
            answer: "injected synchronous external abort: ESR_EL1 0x96000010 / 0x96000050 (WnR)",
            obs1: 0x9600_0010,
            obs2: Some(0x9600_0050),
        },
        Case {
            what: "store to the UART's neighbour page (MMIO to nothing)",
            answer: "injected synchronous external abort: ESR_EL1 0x96000050",
            obs1: 0x9600_0050,
            obs2: None,
        },
        Case {
            what: "load pair from the UART (data abort with ISV = 0)",
            answer: "injected synchronous external abort: ESR_EL1 0x96000010",
            obs1: 0x9600_0010,
            obs2: None,
        },
        Case {
            what: "unknown HVC function id",
            answer: "x0 = -1 (SMCCC NOT_SUPPORTED)",
            obs1: u64::MAX,
            obs2: None,
        },
        Case {
            what: "unknown SMC function id (trapped by HCR_EL2.TSC)",
            answer: "x0 = -1 (SMCCC NOT_SUPPORTED)",
            obs1: u64::MAX,
            obs2: None,
        },
        Case {
            what: "PSCI CPU_ON with a bad target / with an entry outside RAM",
            answer: "-2 INVALID_PARAMETERS / -9 INVALID_ADDRESS",
            obs1: ERR(-2),
            obs2: Some(ERR(-9)),
        },
        Case {
            what: "instruction fetch from an unmapped IPA / from the UART",
            answer: "injected synchronous external abort: ESR_EL1 0x86000010 (EC 0x21) for both",
            obs1: 0x8600_0010,
            obs2: Some(0x8600_0010),
        },
        Case {
            what: "own stage-1 tables mapping an IPA outside every memslot / above the IPA size",
            answer: "injected synchronous external abort 0x96000010 / address size fault, level 0 \
                     (above the 40-bit PARange the guest is told) 0x96000000",
            obs1: 0x9600_0010,
            obs2: Some(0x9600_0000),
        },
        Case {
            what: "8-byte store straddling into an untouched page / off the end of guest memory",
            answer: "faults in and lands (1) / injected external abort 0x96000050",
            obs1: 1,
            obs2: Some(0x9600_0050),
        },
        Case {
            what: "LSE ldadd, cas and ldxr/stxr on pages not mapped yet",
            answer: "fault in, then succeed with the right values (1 / 1)",
            obs1: 1,
            obs2: Some(1),
        },
        Case {
            what: "fault storm: every vCPU writes one untouched page at once",
            answer: "every write lands: 0 wrong words (of one per vCPU)",
            obs1: 0,
            obs2: None,
        },
        Case {
            what: "pool exhaustion: touch a 16 MiB memslot the hypervisor backs 64 pages of",
            answer: "64 pages back, then the access fails cleanly: injected external abort \
                     0x96000050 (backing pages do not come back by RCU, so no wait)",
            obs1: abi::OVERCOMMIT_BUDGET,
            obs2: Some(0x9600_0050),
        },
        Case {
            what: "SMC32 PSCI_VERSION with junk in x0[63:32] / PSCI_FEATURES(CPU_OFF), junk in x1[63:32]",
            answer: "W0 = 0x10001 (PSCI 1.1) / 0 (SMCCC: function id is W0, SMC32 ignores upper halves)",
            obs1: 0x1_0001,
            obs2: Some(0),
        },
        Case {
            what: "SMC32 PSCI CPU_ON_32(vCPU 0, entry in RAM): clean / junk in every upper half",
            answer: "W0 = -4 ALREADY_ON for both (the junk call is the clean call)",
            obs1: 0xFFFF_FFFC,
            obs2: Some(0xFFFF_FFFC),
        },
        Case {
            what: "HVC #1 (non-zero immediate) with PSCI_VERSION / with HVC_QUERY",
            answer: "-1 NOT_SUPPORTED for both (SMCCC: the immediate must be 0): W0 0xffffffff / x0 -1",
            obs1: 0xFFFF_FFFF,
            obs2: Some(u64::MAX),
        },
        Case {
            what: "AArch32 EL0: 16-bit T32 STR to the UART data register, then adds #1, adds #2",
            answer: "the store is emulated, PC += 2 (ESR.IL = 0): r2 = 3 / back by SVC: 0x44000000",
            obs1: 3,
            obs2: Some(0x4400_0000),
        },
        Case {
            what: "AArch32 EL0: 16-bit STRB to the UART first in an ITTE EQ block (Z = 1), adds #4 after",
            answer: "PC += 2 and ITSTATE advances: then-add runs, else-add not: r2 = 5 / SVC 0x44000000",
            obs1: 5,
            obs2: Some(0x4400_0000),
        },
        Case {
            what: "AArch32 EL0: 16-bit T32 LDR from an IPA outside every memslot",
            answer: "injected external abort at VBAR_EL1 + 0x600 (lower EL, AArch32): ESR_EL1 \
                     0x92000010 (EC 0x24, ISV = 0 so IL = 1) / 0x600, ELR/SPSR at the load",
            obs1: 0x9200_0010,
            obs2: Some(0x600),
        },
        Case {
            what: "dirty logging: a load whose stage-1 walk sets AF in a write-protected 2 MiB chunk",
            answer: "S1PTW = 1 counts as a write: the block is split, that page alone made writable: \
                     load ok, AF set (1) / 0 other pages of the chunk writable",
            obs1: 1,
            obs2: Some(0),
        },
        Case {
            what: "MSR ICC_SGI1R_EL1 / MRS S3_0_C15_C0_0 (unknown system registers)",
            answer: "injected UNDEF: ESR_EL1 0x02000000 (EC 0x00, IL = 1) for both",
            obs1: 0x0200_0000,
            obs2: Some(0x0200_0000),
        },
        Case {
            what: "CPACR_EL1.SMEN on, smstart sm, then a store to a page not mapped yet",
            answer: "SME trapped (CPTR_EL2.TSM): smstart gets UNDEF 0x02000000; the fault is served \
                     and the store lands (1); the hypervisor lives",
            obs1: 0x0200_0000,
            obs2: Some(1),
        },
        Case {
            what: "ID_AA64PFR0_EL1.GIC / MRS ICC_PMR_EL1 (the GIC is not offered to this guest)",
            answer: "GIC = 0 (a per-VM property: hidden for the built-in guest) / injected UNDEF \
                     0x02000000 (ICH_HCR_EL2.TALL0/TALL1/TC trap every ICC_* access)",
            obs1: 0,
            obs2: Some(0x0200_0000),
        },
        Case {
            what: "store through a non-identity stage-1 mapping (VA 2 GiB up -> IPA 1 GiB up) \
                   into a write-protected chunk: permission fault, S1PTW = 0",
            answer: "the IPA comes from AT S1E1R of FAR_EL2 (HPFAR_EL2 is UNKNOWN): the store \
                     lands (1), only its page made writable (1)",
            obs1: 1,
            obs2: Some(1),
        },
    ]
}

/// What the guest reported per case: (reported, obs1, obs2).
struct Seen {
    reported: AtomicBool,
    obs1: AtomicU64,
    obs2: AtomicU64,
}

static SEEN: [Seen; CASES] = [const {
    Seen {
        reported: AtomicBool::new(false),
        obs1: AtomicU64::new(0),
        obs2: AtomicU64::new(0),
    }
}; CASES];

fn case_ok(vm: &Vm, n: usize, c: &Case, obs1: u64, obs2: u64) -> bool {
    let want2 = if n == 11 {
        Some(vm.opts.vcpus as u64)
    } else {
        c.obs2
    };
    obs1 == c.obs1 && want2.is_none_or(|w| w == obs2)
}

fn badguest_call(vm: &Vm, cpu: &PerCpu, case: u64, obs1: u64, obs2: u64) -> u64 {
    let cases = cases();
    let Some(c) = (case as usize).checked_sub(1).and_then(|i| cases.get(i)) else {
        log::warn!("vcpu {}: HVC_BADGUEST for unknown case {case}", cpu.index);
        return crate::psci::not_supported();
    };
    let s = &SEEN[case as usize - 1];
    s.obs1.store(obs1, Ordering::Relaxed);
    s.obs2.store(obs2, Ordering::Relaxed);
    s.reported.store(true, Ordering::Release);
    let ok = case_ok(vm, case as usize, c, obs1, obs2);
    log::info!(
        "badguest case {case} ({}): guest saw {obs1:#x} / {obs2:#x}: {}",
        c.what,
        if ok { "expected" } else { "WRONG" }
    );
    0
}

/// Case 19: write-protects the 2 MiB chunk of the data memslot that holds `ipa`, under the
/// exclusive guard with one range invalidation, and turns "dirty logging" on, as the
/// `pagetable` workload's update phase does for its whole region (phases.rs). Returns the leaves
/// write-protected, or NOT_SUPPORTED if the chunk is not inside the data memslot.
fn write_protect_chunk(vm: &Vm, cpu: &PerCpu, ipa: u64) -> u64 {
    let chunk = ipa & !(CHUNK - 1);
    if !crate::layout::data(vm).contains(ipa) {
        return crate::psci::not_supported();
    }
    // The part of the chunk inside the data memslot: with 4k backing the last vCPU's region can
    // end mid-chunk (e.g. vcpus=3 mem=1M), and nothing is mapped past the slot.
    let start = chunk.max(crate::layout::data(vm).ipa);
    let end = (chunk + CHUNK).min(crate::layout::data(vm).ipa + crate::layout::data(vm).size);
    crate::phases::set_logging(true);
    let s2 = vm.s2.get();
    let g = s2.exclusive(cpu.index);
    let r = g.write_protect(start, end);
    drop(g);
    s2.reclaim(cpu.index);
    match r {
        Ok(done) => {
            log::info!(
                "vcpu {}: write-protected chunk {chunk:#x} ({} leaves), logging on",
                cpu.index,
                done.leaves
            );
            done.leaves
        }
        Err(e) => {
            log::error!(
                "vcpu {}: write-protect of {chunk:#x} failed: {e:?}",
                cpu.index
            );
            crate::psci::not_supported()
        }
    }
}

/// Case 19: turns dirty logging off and counts the 4 KiB pages of [start, start + len) (at most
/// one chunk, inside the data memslot) that stage 2 maps writable now. NOT_SUPPORTED for a bad
/// range.
fn count_writable(vm: &Vm, cpu: &PerCpu, start: u64, len: u64) -> u64 {
    crate::phases::set_logging(false);
    let end = start.saturating_add(len);
    if len == 0
        || len > CHUNK
        || !crate::layout::data(vm).contains(start)
        || !crate::layout::data(vm).contains(end - 1)
    {
        return crate::psci::not_supported();
    }
    let s2 = vm.s2.get();
    let g = match vm.opts.mode {
        Mode::Parallel => s2.shared(cpu.index),
        Mode::Locked => s2.exclusive(cpu.index),
    };
    let writable = (start & !(PAGE - 1)..end)
        .step_by(PAGE as usize)
        .filter(|&ipa| g.translate(ipa).is_some_and(|t| t.attrs.perms.write))
        .count() as u64;
    drop(g);
    s2.reclaim(cpu.index);
    writable
}

/// The overcommit memslot of case 12 and the pages of it backed so far.
static OVERCOMMIT: Once<Memslot> = Once::new();
static OVERCOMMIT_USED: AtomicU64 = AtomicU64::new(0);
static OVERCOMMIT_REFUSED: AtomicU64 = AtomicU64::new(0);

/// Case 12's fault path: a memslot the hypervisor can only back `OVERCOMMIT_BUDGET` pages of
/// (as if the host were out of memory). Within the budget it is the ordinary fault path (backing
/// looked up inside the stage-2 section, then `map`); past it the access fails cleanly with an
/// injected synchronous external abort, which is what KVM/QEMU give a guest for memory that
/// cannot be backed (the hwpoison path). Nothing panics and the vCPU goes on.
pub fn overcommit_fault(
    vm: &Vm,
    cpu: &PerCpu,
    frame: &mut Frame,
    a: &Abort,
    data: bool,
) -> Option<Action> {
    if vm.opts.workload != Workload::Badguest {
        return None;
    }
    let slot = OVERCOMMIT
        .call_once(|| Memslot::new("overcommit", abi::OVERCOMMIT_BASE, abi::OVERCOMMIT_SIZE));
    if !slot.contains(a.ipa) || a.fault != FaultType::Translation {
        return None;
    }
    let ipa = a.ipa & !(PAGE - 1);
    let index = ((ipa - slot.ipa) / PAGE) as usize;
    pool::top_up(cpu, vm.tables, vm.backing);
    let s2 = vm.s2.get();
    let guard = match vm.opts.mode {
        Mode::Parallel => s2.shared(cpu.index),
        Mode::Locked => s2.exclusive(cpu.index),
    };
    let pa = match slot.backing(index) {
        Some(pa) => Some(pa),
        None if OVERCOMMIT_USED.fetch_add(1, Ordering::Relaxed) >= abi::OVERCOMMIT_BUDGET => {
            OVERCOMMIT_USED.fetch_sub(1, Ordering::Relaxed);
            None
        }
        None => slot.backing_or_alloc(ipa, cpu, vm.backing, vm.harness).ok(),
    };
    let Some(pa) = pa else {
        drop(guard);
        OVERCOMMIT_REFUSED.fetch_add(1, Ordering::Relaxed);
        return Some(crate::vcpu::inject_abort(
            cpu,
            frame,
            a,
            data,
            "cannot be backed (overcommit budget used up)",
        ));
    };
    let r = guard.map(ipa, pa, Size::Page4K, Attrs::normal_rwx());
    drop(guard);
    s2.reclaim(cpu.index);
    match r {
        Ok(_) | Err(stage2::Error::Retry) => Some(Action::Resume),
        Err(e) => {
            log::error!("vcpu {}: overcommit map {ipa:#x} failed: {e:?}", cpu.index);
            Some(crate::vcpu::inject_abort(
                cpu,
                frame,
                a,
                data,
                "could not be mapped",
            ))
        }
    }
}

/// Calls `f` with the PA of every backed page of the overcommit slot (if it exists).
pub fn for_each_backed(f: impl FnMut(u64)) {
    if let Some(slot) = OVERCOMMIT.get() {
        slot.for_each_backed(f);
    }
}

/// Returns the overcommit slot's backing pages (teardown, after every vCPU stopped).
pub fn release(vm: &Vm) {
    if let Some(slot) = OVERCOMMIT.get() {
        slot.release(vm.backing);
    }
}

/// Prints the outcome table; returns the RESULT fields. Pushes a failure for every case not
/// reported or answered wrongly.
pub fn report(vm: &Vm, failures: &mut Vec<String>) -> String {
    if vm.opts.workload != Workload::Badguest {
        return String::new();
    }
    crate::println!("");
    crate::println!(
        "bad-guest matrix (vCPU {} ran the cases):",
        vm.opts.vcpus - 1
    );
    crate::println!(
        "{:>4}  {:<78} {:<22} {}",
        "case",
        "what the guest did -> the answer it must get",
        "observed",
        "ok"
    );
    let mut passed = 0;
    for (i, c) in cases().iter().enumerate() {
        let n = i + 1;
        let s = &SEEN[i];
        let reported = s.reported.load(Ordering::Acquire);
        let (o1, o2) = (
            s.obs1.load(Ordering::Relaxed),
            s.obs2.load(Ordering::Relaxed),
        );
        let ok = reported && case_ok(vm, n, c, o1, o2);
        passed += usize::from(ok);
        crate::println!(
            "{n:>4}  {:<78} {:<22} {}",
            c.what,
            if reported {
                format!("{o1:#x} / {o2:#x}")
            } else {
                String::from("not reported")
            },
            if ok { "ok" } else { "WRONG" }
        );
        crate::println!("      -> {}", c.answer);
        if !ok {
            failures.push(format!(
                "badguest case {n} ({}): {}",
                c.what,
                if reported {
                    format!("observed {o1:#x} / {o2:#x}, expected {}", c.answer)
                } else {
                    String::from("never reported")
                }
            ));
        }
    }
    let refused = OVERCOMMIT_REFUSED.load(Ordering::Relaxed);
    crate::println!(
        "pool exhaustion: {} overcommit pages backed, {refused} accesses failed cleanly \
         (injected abort; no wait: RCU returns table pages, not guest pages)",
        OVERCOMMIT_USED.load(Ordering::Relaxed)
    );
    format!(
        " badguest_cases={CASES} badguest_ok={passed} oom_backed={} oom_failed_cleanly={refused}",
        OVERCOMMIT_USED.load(Ordering::Relaxed)
    )
}
