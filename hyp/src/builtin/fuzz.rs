//! The hypervisor side of the guest fuzzer (`workload=fuzz`, docs/robustness.md "Guest
//! fuzzer"): who fuzzes, the seed, the `HVC_FUZZ` call that hands out the run parameters and
//! takes the guests' counts, the pass checks and the report section.
//!
//! vCPU 0 runs `verify` (its lost writes and checksum are checked by chaos.rs like any verify
//! run); every other vCPU fuzzes. With one vCPU, that vCPU fuzzes and nothing verifies.

use aarch64_cpu::registers::{Readable, CNTPCT_EL0};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Once;

use crate::abi;
use crate::frame::Action;
use crate::frame::Frame;
use crate::options::Workload;
use crate::percpu::{self, status, PerCpu, Trap};
use crate::vm::Vm;

/// What one fuzzing vCPU reported.
struct Book {
    /// FUZZ_DONE arrived.
    done: AtomicBool,
    /// Operations it says it ran.
    ops: AtomicU64,
    /// Exceptions its vectors took, by ESR_EL1.EC.
    ec: [AtomicU64; 64],
    /// Operations by class.
    class: [AtomicU64; abi::FUZZ_CLASSES],
    /// Oracle violations by kind.
    violation: [AtomicU64; abi::FUZZ_VIOLATIONS],
}

impl Book {
    fn new() -> Self {
        Self {
            done: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            ec: core::array::from_fn(|_| AtomicU64::new(0)),
            class: core::array::from_fn(|_| AtomicU64::new(0)),
            violation: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

static SEED: Once<u64> = Once::new();
static BOOKS: Once<Box<[Book]>> = Once::new();

/// Whether vCPU `id` fuzzes in this run (every vCPU but vCPU 0, or the only one).
pub fn fuzzes(vm: &Vm, id: usize) -> bool {
    vm.opts.workload == Workload::Fuzz && (id != 0 || vm.opts.vcpus == 1)
}

/// Fixes the seed (`seed=`, or CNTPCT now) and logs it. CPU0, before any vCPU runs.
pub fn init(vm: &Vm) {
    if vm.opts.workload != Workload::Fuzz {
        return;
    }
    let seed = *SEED.call_once(|| vm.opts.seed.unwrap_or_else(|| CNTPCT_EL0.get()));
    BOOKS.call_once(|| (0..vm.opts.vcpus).map(|_| Book::new()).collect());
    log::info!(
        "fuzz: seed {seed:#x} (replay with seed={seed:#x}), {} ops per fuzzing vCPU, classes {}",
        vm.opts.ops,
        class_list(vm.opts.classes)
    );
}

fn class_list(mask: u64) -> String {
    let names: Vec<&str> = (0..abi::FUZZ_CLASSES)
        .filter(|c| mask & 1 << c != 0)
        .map(|c| abi::FUZZ_CLASS_NAMES[c])
        .collect();
    names.join(",")
}

fn books() -> &'static [Book] {
    BOOKS.get().map_or(&[], |b| &b[..])
}

/// Serves `HVC_FUZZ` (function id in W0, SMCCC); None for any other call.
pub fn call(vm: &Vm, cpu: &PerCpu, frame: &mut Frame) -> Option<Action> {
    if frame.x[0] as u32 != abi::HVC_FUZZ as u32 || vm.opts.workload != Workload::Fuzz {
        return None;
    }
    let book = books().get(cpu.index)?;
    let (sub, a2, a3, a4) = (frame.x[1], frame.x[2], frame.x[3], frame.x[4]);
    let mut ret = 0;
    match sub {
        abi::FUZZ_PARAMS => {
            ret = SEED.get().copied().unwrap_or(0);
            frame.x[1] = vm.opts.ops;
            frame.x[2] = if fuzzes(vm, cpu.index) {
                abi::FUZZ_ROLE_FUZZ
            } else {
                abi::FUZZ_ROLE_VERIFY
            };
            frame.x[3] = vm.opts.classes;
        }
        abi::FUZZ_COUNT => {
            let slot = match a2 {
                abi::FUZZ_TABLE_EC => book.ec.get(a3 as usize),
                abi::FUZZ_TABLE_CLASS => book.class.get(a3 as usize),
                abi::FUZZ_TABLE_VIOLATION => book.violation.get(a3 as usize),
                _ => None,
            };
            match slot {
                Some(s) => s.store(a4, Ordering::Relaxed),
                None => ret = crate::psci::not_supported(),
            }
        }
        abi::FUZZ_DONE => {
            book.ops.store(a2, Ordering::Relaxed);
            book.done.store(true, Ordering::Release);
            log::info!(
                "vcpu {}: fuzz done: {a2} ops, {a3} oracle violations",
                cpu.index
            );
        }
        abi::FUZZ_RUNNING => {
            ret = percpu::all()[..vm.opts.vcpus]
                .iter()
                .filter(|c| fuzzes(vm, c.index))
                .filter(|c| c.result.status.load(Ordering::Acquire) == status::RUNNING)
                .filter(|c| !books()[c.index].done.load(Ordering::Acquire))
                .count() as u64;
        }
        _ => ret = crate::psci::not_supported(),
    }
    frame.x[0] = ret;
    Some(Action::Resume)
}

/// A short name for an exception class (Arm ARM D17.2.37 "ESR_EL1", EC field).
fn ec_name(ec: usize) -> &'static str {
    match ec {
        0x00 => "unknown reason (UNDEF)",
        0x01 => "WFI/WFE",
        0x03 => "MCR/MRC cp15",
        0x04 => "MCRR/MRRC cp15",
        0x05 => "MCR/MRC cp14",
        0x06 => "LDC/STC cp14",
        0x07 => "SVE/SIMD/FP access",
        0x0C => "MRRC cp14",
        0x0E => "illegal execution state",
        0x11 => "SVC from AArch32",
        0x15 => "SVC from AArch64",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "MSR/MRS/system instruction",
        0x19 => "SVE access",
        0x1D => "SME access",
        0x20 => "instruction abort, lower EL",
        0x21 => "instruction abort, same EL",
        0x22 => "PC alignment",
        0x24 => "data abort, lower EL",
        0x25 => "data abort, same EL",
        0x26 => "SP alignment",
        0x2F => "SError",
        0x30..=0x35 => "debug",
        0x38 => "BKPT (AArch32)",
        0x3C => "BRK",
        _ => "other",
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Prints the fuzzer's section of the report, pushes its failures (a fuzzing vCPU that did not
/// do all its ops, oracle violations) and returns its RESULT fields.
pub fn report(vm: &Vm, failures: &mut Vec<String>) -> String {
    if vm.opts.workload != Workload::Fuzz {
        return String::new();
    }
    let seed = SEED.get().copied().unwrap_or(0);
    let books = books();
    let ids: Vec<usize> = (0..vm.opts.vcpus).filter(|&i| fuzzes(vm, i)).collect();
    let (mut done_ops, mut exceptions, mut violations) = (0, 0, 0);
    for &id in &ids {
        let b = &books[id];
        let ops = get(&b.ops);
        done_ops += ops;
        exceptions += b.ec.iter().map(get).sum::<u64>();
        let v: u64 = b.violation.iter().map(get).sum();
        violations += v;
        if !b.done.load(Ordering::Acquire) {
            failures.push(format!("vcpu {id} never finished fuzzing"));
        } else if ops != vm.opts.ops {
            failures.push(format!("vcpu {id} ran {ops} of {} fuzz ops", vm.opts.ops));
        }
        if v != 0 {
            let kinds: Vec<String> = (0..abi::FUZZ_VIOLATIONS)
                .filter(|&k| get(&b.violation[k]) != 0)
                .map(|k| format!("{} {}", abi::FUZZ_VIOLATION_NAMES[k], get(&b.violation[k])))
                .collect();
            failures.push(format!(
                "vcpu {id}: {v} fuzz oracle violations ({})",
                kinds.join(", ")
            ));
        }
    }
    let cols = |label: &str, w: usize| -> String {
        let mut line = format!("  {label:<w$}");
        for &id in &ids {
            line.push_str(&format!(" {:>9}", format!("cpu{id}")));
        }
        line.push_str(&format!(" {:>10}", "total"));
        line
    };
    // One table row: `v(id)` for each fuzzing vCPU, then the total.
    let row = |label: String, w: usize, v: &dyn Fn(usize) -> u64| -> (String, u64) {
        let mut line = format!("  {label:<w$}");
        let mut total = 0;
        for &id in &ids {
            let n = v(id);
            total += n;
            line.push_str(&format!(" {n:>9}"));
        }
        line.push_str(&format!(" {total:>10}"));
        (line, total)
    };
    crate::println!(
        "guest fuzzer: seed {seed:#x} (replay: seed={seed:#x}), {} ops on each of {} fuzzing \
         vCPUs, classes {}; {}",
        vm.opts.ops,
        ids.len(),
        class_list(vm.opts.classes),
        if ids.len() < vm.opts.vcpus {
            "vCPU 0 ran verify meanwhile"
        } else {
            "no vCPU verified (vcpus=1)"
        }
    );
    crate::println!("exceptions the fuzzing vCPUs' own vectors took (ESR_EL1.EC):");
    crate::println!("{}", cols("EC    class", 34));
    let mut ecs = Vec::new();
    for ec in 0..64 {
        let (line, total) = row(format!("{ec:#04x}  {}", ec_name(ec)), 34, &|id| {
            get(&books[id].ec[ec])
        });
        if total != 0 {
            crate::println!("{line}");
            ecs.push(format!("{ec:02x}:{total}"));
        }
    }
    crate::println!("operations by class:");
    let mut classes = Vec::new();
    for c in 0..abi::FUZZ_CLASSES {
        let (line, total) = row(String::from(abi::FUZZ_CLASS_NAMES[c]), 34, &|id| {
            get(&books[id].class[c])
        });
        crate::println!("{line}");
        classes.push(format!("{}:{total}", abi::FUZZ_CLASS_NAMES[c]));
    }
    crate::println!("oracle violations (must all be 0):");
    for k in 0..abi::FUZZ_VIOLATIONS {
        let (line, _) = row(String::from(abi::FUZZ_VIOLATION_NAMES[k]), 34, &|id| {
            get(&books[id].violation[k])
        });
        crate::println!("{line}");
    }
    crate::println!("the hypervisor's exits on the fuzzing vCPUs, by trap class (percpu.rs):");
    let cpus = percpu::all();
    for t in Trap::ALL {
        let (line, _) = row(String::from(t.name()), 34, &|id| {
            get(&cpus[id].counters.traps[t as usize])
        });
        crate::println!("{line}");
    }
    format!(
        " fuzz_seed={seed:#x} fuzz_ops={} fuzzers={} fuzz_done={done_ops} \
         fuzz_violations={violations} fuzz_exceptions={exceptions} fuzz_ecs={} fuzz_classes={}",
        vm.opts.ops,
        ids.len(),
        if ecs.is_empty() {
            String::from("none")
        } else {
            ecs.join(",")
        },
        classes.join(",")
    )
}
