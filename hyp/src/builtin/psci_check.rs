//! The books of `workload=psci` (the built-in guest's PSCI lifecycle test, guest/src/psci.rs):
//! what each check must observe, what the guest saw (`HVC_PSCI_CHECK`), the racing CPU_ON
//! answers, and the report's table and RESULT fields `psci_checks=` / `psci_ok=`.
//!
//! The expected values are DEN0022's (PSCI 1.1) and DEN0028's (SMCCC 1.1) answers for this VM;
//! the lifecycle's own counters (lifecycle.rs) must also say that vCPU 1 was started by CPU_ON
//! and turned itself off exactly twice and that no other vCPU was.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arch_decode::smccc::Call;

use crate::abi;
use crate::options::Workload;
use crate::vm::Vm;

const ERR: fn(i32) -> u64 = |e| i64::from(e) as u64;

/// One check: what it is, its two expected observations, and the vCPUs it needs.
struct Check {
    n: u64,
    what: &'static str,
    obs1: u64,
    obs2: u64,
    min_vcpus: usize,
}

/// The checks with a stored observation (PSCI_CHECK_RACE and _OFF_RETURNED are counted).
fn checks() -> [Check; 9] {
    [
        Check {
            n: abi::PSCI_CHECK_VERSION,
            what: "PSCI_VERSION / SMCCC_VERSION: 1.1 / 1.1",
            obs1: 0x1_0001,
            obs2: 0x1_0001,
            min_vcpus: 1,
        },
        Check {
            n: abi::PSCI_CHECK_FEATURES,
            what: "PSCI_FEATURES(CPU_ON_64) / (SMCCC_VERSION): 0 / 0",
            obs1: 0,
            obs2: 0,
            min_vcpus: 1,
        },
        Check {
            n: abi::PSCI_CHECK_NOT_OFFERED,
            what: "PSCI_FEATURES(SYSTEM_RESET2_64): NOT_SUPPORTED / MIGRATE_INFO_TYPE: 2",
            obs1: ERR(-1),
            obs2: 2,
            min_vcpus: 1,
        },
        Check {
            n: abi::PSCI_CHECK_AFFINITY_SELF,
            what: "AFFINITY_INFO(self, level 0) / (self, level 1): ON / ON",
            obs1: 0,
            obs2: 0,
            min_vcpus: 1,
        },
        Check {
            n: abi::PSCI_CHECK_AFFINITY_BAD,
            what: "AFFINITY_INFO(self, level 4) / (MPIDR 0xffffff): INVALID_PARAMETERS x2",
            obs1: ERR(-2),
            obs2: ERR(-2),
            min_vcpus: 1,
        },
        Check {
            n: abi::PSCI_CHECK_CPU_ON_BAD,
            what: "CPU_ON(vCPU 1 with Aff3 = 1) / (OFF vCPU 1, entry + 2): INVALID_PARAMETERS / \
                   INVALID_ADDRESS",
            obs1: ERR(-2),
            obs2: ERR(-9),
            min_vcpus: 2,
        },
        Check {
            n: abi::PSCI_CHECK_OFF_THEN_ON,
            what: "vCPU 1 after CPU_OFF (and the bad CPU_ONs): AFFINITY_INFO OFF / CPU_ON SUCCESS",
            obs1: 1,
            obs2: 0,
            min_vcpus: 2,
        },
        Check {
            n: abi::PSCI_CHECK_START_1,
            what: "vCPU 1 started by CPU_ON: x0 = context ID / SCTLR_EL1.{M,C,I} = 0",
            obs1: abi::PSCI_CONTEXT_1,
            obs2: 0,
            min_vcpus: 2,
        },
        Check {
            n: abi::PSCI_CHECK_START_PSTATE,
            what: "vCPU 1 started by CPU_ON: DAIF all masked / EL1h (CurrentEL | SPSel)",
            obs1: 0x3C0,
            obs2: 1 << 2 | 1,
            min_vcpus: 2,
        },
    ]
}

/// The second start's check (x0 / SCTLR bits), kept apart: its context is the race winner's.
fn start_2() -> Check {
    Check {
        n: abi::PSCI_CHECK_START_2,
        what: "vCPU 1 started by the racing CPU_ONs: x0 = context ID / SCTLR_EL1.{M,C,I} = 0",
        obs1: abi::PSCI_CONTEXT_2,
        obs2: 0,
        min_vcpus: 2,
    }
}

struct Seen {
    reported: AtomicBool,
    obs1: AtomicU64,
    obs2: AtomicU64,
}

const CHECK_SLOTS: usize = 16;
static SEEN: [Seen; CHECK_SLOTS] = [const {
    Seen {
        reported: AtomicBool::new(false),
        obs1: AtomicU64::new(0),
        obs2: AtomicU64::new(0),
    }
}; CHECK_SLOTS];
/// Racing CPU_ON answers: SUCCESS, ALREADY_ON, ON_PENDING, anything else.
static RACE: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static OFF_RETURNED: AtomicU64 = AtomicU64::new(0);

/// Serves `HVC_PSCI_CHECK` (workload=psci only); None for other calls.
pub fn call(vm: &Vm, id: usize, call: &Call) -> Option<u64> {
    if call.function_u64() != abi::HVC_PSCI_CHECK || vm.opts.workload != Workload::Psci {
        return None;
    }
    let (n, obs1, obs2) = (call.arg(1), call.arg(2), call.arg(3));
    match n {
        abi::PSCI_CHECK_RACE => {
            let slot = match obs1 as i64 {
                0 => 0,
                -4 => 1,
                -5 => 2,
                _ => 3,
            };
            RACE[slot].fetch_add(1, Ordering::Relaxed);
            log::info!(
                "psci check: vcpu {id}'s racing CPU_ON answered {}",
                obs1 as i64
            );
        }
        abi::PSCI_CHECK_OFF_RETURNED => {
            OFF_RETURNED.fetch_add(1, Ordering::Relaxed);
            log::error!("psci check: vcpu {id}: CPU_OFF returned {:#x}", obs1);
        }
        _ => {
            let Some(s) = SEEN.get(n as usize) else {
                return Some(crate::psci::not_supported());
            };
            s.obs1.store(obs1, Ordering::Relaxed);
            s.obs2.store(obs2, Ordering::Relaxed);
            s.reported.store(true, Ordering::Release);
            log::info!("psci check {n} (vcpu {id}): observed {obs1:#x} / {obs2:#x}");
        }
    }
    Some(0)
}

/// Prints the check table; returns the RESULT fields. Pushes a failure for each check that
/// applies to this vCPU count and was not reported or observed wrong.
pub fn report(vm: &Vm, failures: &mut Vec<String>) -> String {
    if vm.opts.workload != Workload::Psci {
        return String::new();
    }
    let vcpus = vm.opts.vcpus;
    crate::println!("");
    crate::println!(
        "PSCI lifecycle checks (vCPU {} is the target):",
        abi::PSCI_TARGET
    );
    let mut all: Vec<Check> = checks().into_iter().collect();
    all.push(start_2());
    let (mut total, mut ok_count) = (0, 0);
    for c in all.iter().filter(|c| vcpus >= c.min_vcpus) {
        let s = &SEEN[c.n as usize];
        let reported = s.reported.load(Ordering::Acquire);
        let (o1, o2) = (
            s.obs1.load(Ordering::Relaxed),
            s.obs2.load(Ordering::Relaxed),
        );
        let ok = reported && o1 == c.obs1 && o2 == c.obs2;
        total += 1;
        ok_count += usize::from(ok);
        crate::println!(
            "{:>4}  {:<92} {}",
            c.n,
            c.what,
            match (reported, ok) {
                (false, _) => String::from("not reported"),
                (true, true) => String::from("ok"),
                (true, false) => format!("WRONG: {o1:#x} / {o2:#x}"),
            }
        );
        if !ok {
            failures.push(format!(
                "psci check {} ({}): {}",
                c.n,
                c.what,
                if reported {
                    format!("observed {o1:#x} / {o2:#x}")
                } else {
                    String::from("never reported")
                }
            ));
        }
    }
    let race: [u64; 4] = core::array::from_fn(|i| RACE[i].load(Ordering::Relaxed));
    if vcpus >= 2 {
        // Every vCPU but the target calls CPU_ON at it at once: one SUCCESS, the rest
        // ALREADY_ON or ON_PENDING (DEN0022 5.1.4).
        let callers = vcpus as u64 - 1;
        let ok = race[0] == 1 && race[3] == 0 && race.iter().sum::<u64>() == callers;
        total += 1;
        ok_count += usize::from(ok);
        crate::println!(
            "{:>4}  {:<92} {}",
            abi::PSCI_CHECK_RACE,
            format!("{callers} racing CPU_ONs at vCPU 1: exactly one SUCCESS, others ALREADY_ON / ON_PENDING"),
            format!(
                "{}: {} SUCCESS, {} ALREADY_ON, {} ON_PENDING, {} other",
                if ok { "ok" } else { "WRONG" },
                race[0],
                race[1],
                race[2],
                race[3]
            )
        );
        if !ok {
            failures.push(format!(
                "psci race: {} SUCCESS, {} ALREADY_ON, {} ON_PENDING, {} other answers from \
                 {callers} callers",
                race[0], race[1], race[2], race[3]
            ));
        }
        // The lifecycle's own books: vCPU 1 started twice by CPU_ON and off twice, no other.
        let counts: Vec<(u64, u64)> = (0..vcpus).map(crate::lifecycle::counts).collect();
        let ok = counts.iter().enumerate().all(|(i, &c)| {
            c == if i as u64 == abi::PSCI_TARGET {
                (2, 2)
            } else {
                (0, 0)
            }
        });
        total += 1;
        ok_count += usize::from(ok);
        if !ok {
            failures.push(format!(
                "psci lifecycle counts (CPU_ON starts, CPU_OFFs) per vCPU {counts:?}: expected \
                 (2, 2) for vCPU 1, (0, 0) for the others"
            ));
        }
    }
    let returned = OFF_RETURNED.load(Ordering::Relaxed);
    if returned != 0 {
        failures.push(format!("psci: CPU_OFF returned {returned} times"));
    }
    format!(
        " psci_checks={total} psci_ok={ok_count} psci_race_success={} psci_race_already_on={} \
         psci_race_on_pending={}",
        race[0], race[1], race[2]
    )
}
