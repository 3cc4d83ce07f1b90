//! The guest <-> hypervisor contract: guest-physical layout, entry registers and HVC calls.
//!
//! This one file is compiled into both the guest and the hypervisor (`#[path]` include), so the
//! two sides cannot drift. docs/hypervisor.md describes the same ABI for people.

/// Guest RAM starts here (IPA), as on QEMU's virt board. The guest image is linked here.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The first memslot: guest image, then free space, then one stack per vCPU at its top.
pub const IMAGE_SLOT_SIZE: u64 = 16 << 20;
/// Each vCPU's stack; vCPU `i` has its stack top at `RAM_BASE + IMAGE_SLOT_SIZE - i * STACK_SIZE`.
pub const STACK_SIZE: u64 = 64 << 10;
/// The second memslot: one data region of `mem` bytes per vCPU, vCPU `i` at `DATA_BASE + i * mem`.
pub const DATA_BASE: u64 = RAM_BASE + IMAGE_SLOT_SIZE;
/// An emulated PL011: a store to its data register (offset 0) prints a byte.
pub const UART_BASE: u64 = 0x0900_0000;
/// Size of the emulated UART's MMIO window.
pub const UART_SIZE: u64 = 0x1000;
/// An IPA in no memslot and no device: a load from it gets a synchronous external abort.
pub const UNMAPPED_PROBE: u64 = 0x2000_0000;

/// Bytes in a page (the guest touches memory page by page).
pub const PAGE_SIZE: u64 = 4096;

// Entry registers: x0 = vCPU id, x1 = data region base, x2 = data region size,
// x3 = workload number, x4 = flags, x5 = number of vCPUs. SP_EL1 = this vCPU's stack top.
// EL1h, DAIF masked, MMU off. (guest/src/workloads/ has the workloads; expect.rs their data.)

/// Workload `demand`: write 8 bytes to every page of the own region, read it back, checksum it.
pub const WORKLOAD_DEMAND: u64 = 0;
/// Workload `overlap`: every vCPU writes its own 8-byte slot in every page of one shared region.
pub const WORKLOAD_OVERLAP: u64 = 1;
/// Workload `random`: `demand` in a seeded random page order.
pub const WORKLOAD_RANDOM: u64 = 2;
/// Workload `pagetable`: one shared region; create, update (write-protect), adjust (collapse).
pub const WORKLOAD_PAGETABLE: u64 = 3;
/// Workload `dirtylog` (KVM's dirty_log_perf_test): each vCPU its own region; populate (timed
/// phase `PHASE_RUN`), logging on (`BARRIER_DIRTY_ENABLE`), `iters=` dirty passes (each between
/// `BARRIER_DIRTY_PASS` and `BARRIER_DIRTY_HARVEST`, where the hypervisor gets and clears the
/// log), logging off (`BARRIER_DIRTY_DISABLE`), verify. Pass `i` (1-based) writes
/// `expect::value(id, page, i)` to word 0 of every page of the region, populate pass 0.
pub const WORKLOAD_DIRTYLOG: u64 = 4;
/// `dirtylog`: logging on (the hypervisor write-protects the data memslot).
pub const BARRIER_DIRTY_ENABLE: u64 = 16;
/// `dirtylog`: start of a dirty pass (the guests start their clocks at the release).
pub const BARRIER_DIRTY_PASS: u64 = 17;
/// `dirtylog`: end of a dirty pass: the hypervisor harvests and clears the dirty log and checks
/// it against the pages each vCPU reported writing (`HVC_DIRTY_PASS`).
pub const BARRIER_DIRTY_HARVEST: u64 = 18;
/// `dirtylog`: logging off.
pub const BARRIER_DIRTY_DISABLE: u64 = 19;
/// Most dirty passes `dirtylog` runs (`iters=`).
pub const MAX_DIRTY_ITERS: u64 = 32;
/// Workload `aging` (issue 11): each vCPU its own region, faulted in over `iters=` passes. Pass
/// `k` (1-based, between `BARRIER_AGING_PASS` and `BARRIER_AGING_CHECK`) writes the k-th of
/// `iters` slices of the region (faulting it in) and reads half of the slices before it
/// (`expect::aging_touched`), then reports with `HVC_AGING_PASS`; meanwhile an ager CPU clears
/// the stage-2 access flags, and at `BARRIER_AGING_CHECK` the hypervisor runs a last aging pass
/// and checks that every page touched in the pass was found young. Verify as `demand`.
pub const WORKLOAD_AGING: u64 = 5;
/// Start of an aging pass (the ager starts aging concurrently).
pub const BARRIER_AGING_PASS: u64 = 20;
/// End of an aging pass: the hypervisor stops the ager, ages once more and checks.
pub const BARRIER_AGING_CHECK: u64 = 21;
/// HVC (`aging`): pass x1 (1-based) ended: x2 = CNTVCT ticks from the pass's release, x3 =
/// pages touched, x4 = of them, pages written for the first time (faulted in). Sent before
/// `BARRIER_AGING_CHECK`. Returns x0 = 0.
pub const HVC_AGING_PASS: u64 = 0xC600_001A;
/// HVC (`dirtylog`): this vCPU's dirty pass ended. x1 = pass (1-based), x2 = CNTVCT ticks from
/// the pass's release to its end, x3 = pages written: the first x3 pages of its region, one
/// word each, in that pass. Sent before `BARRIER_DIRTY_HARVEST`. Returns x0 = 0.
pub const HVC_DIRTY_PASS: u64 = 0xC600_0018;
/// HVC (`dirtylog` with `evil=on`, vCPU 0 during its dirty pass): get and clear the log now,
/// racing the other vCPUs' writes; the harvested pages count for pass x1. Returns x0 = pages
/// harvested, or SMCCC NOT_SUPPORTED without `evil=on`.
pub const HVC_DIRTY_HARVEST: u64 = 0xC600_0019;
/// `dirtylog` with `evil=on`: vCPU 0 asks for a racing harvest after every this many pages.
pub const EVIL_HARVEST_EVERY: u64 = 64;

/// HVC: barrier. x1 = barrier number (`BARRIER_*`). Returns when every vCPU has called it with
/// x0 = CNTPCT at the release (the last arriver runs the hypervisor's action for it first).
pub const HVC_BARRIER: u64 = 0xC600_0003;
/// HVC: an empty call (calibration of the trap round trip). Returns x0 = 0.
pub const HVC_NULL: u64 = 0xC600_0004;
/// HVC: calibration result. x1 = 0 (vCPU 0 alone) or 1 (all vCPUs at once), x2 = ticks,
/// x3 = HVC_NULL calls made. Returns x0 = 0.
pub const HVC_CALIB: u64 = 0xC600_0005;
/// HVC: a timed phase ended. x1 = phase (`PHASE_*`), x2 = ticks from the phase's release to this
/// vCPU's end, x3 = pages touched, x4 = words that did not verify afterwards (must be 0).
pub const HVC_PHASE: u64 = 0xC600_0006;
/// HVC: collapse the 2 MiB chunk at IPA x1 into one block (`pagetable` adjust). Returns x0 = 0.
pub const HVC_COLLAPSE: u64 = 0xC600_0007;

/// Barriers. Calibration: before the solo loop, before the all-vCPU loop, after it.
pub const BARRIER_CALIB_SOLO: u64 = 0;
/// See `BARRIER_CALIB_SOLO`.
pub const BARRIER_CALIB_ALL: u64 = 1;
/// See `BARRIER_CALIB_SOLO`.
pub const BARRIER_CALIB_END: u64 = 2;
/// Start of a timed phase `p`: `BARRIER_PHASE + 2 * p` (the hypervisor's action runs here).
pub const BARRIER_PHASE: u64 = 3;
/// End of timed phase `p` (before verification): `BARRIER_PHASE + 2 * p + 1`.
pub const BARRIER_PHASE_END: u64 = 4;

/// Timed phases. Every workload has `PHASE_RUN`; `pagetable` has create, update and adjust.
pub const PHASE_RUN: u64 = 0;
/// `pagetable`: concurrent first faults on the same pages and blocks.
pub const PHASE_CREATE: u64 = 0;
/// `pagetable`: the region was write-protected ("dirty logging" on): permission faults, splits.
pub const PHASE_UPDATE: u64 = 1;
/// `pagetable`: logging off; the hypervisor collapses tables into blocks while vCPUs touch.
pub const PHASE_ADJUST: u64 = 2;
/// Phases a workload can have.
pub const PHASES: usize = 3;
/// HVC_NULL calls in each calibration loop.
pub const CALIB_CALLS: u64 = 4096;
/// Flag: before the workload, load from `UNMAPPED_PROBE` and expect an injected external abort,
/// then make PSCI calls over SMC and an unknown HVC, and print what came back.
pub const FLAG_PROBE: u64 = 1;
/// Flag (selftest=hang): spin forever without trapping, so the hypervisor's timeout must fire.
pub const FLAG_HANG: u64 = 2;
/// An HVC function id nobody implements (answered with SMCCC NOT_SUPPORTED).
pub const HVC_UNKNOWN: u64 = 0xC600_00FF;

/// HVC (SMCCC fast call, vendor-specific hypervisor range): report the workload result.
/// x1 = checksum, x2 = cycles (CNTVCT ticks), x3 = pages touched. Returns x0 = 0.
pub const HVC_REPORT: u64 = 0xC600_0001;
/// HVC: this vCPU is done. x1 = status (0 = ok, anything else = the guest saw a failure).
/// Does not return.
pub const HVC_FINISH: u64 = 0xC600_0002;
/// Guest status for `HVC_FINISH`: an exception the guest did not expect.
pub const STATUS_UNEXPECTED_EXCEPTION: u64 = 2;
/// Guest status for `HVC_FINISH`: the guest panicked.
pub const STATUS_PANIC: u64 = 3;
/// Guest status for `HVC_FINISH`: an unknown workload number.
pub const STATUS_BAD_WORKLOAD: u64 = 4;
/// Guest status for `HVC_FINISH`: memory did not hold what the workload wrote.
pub const STATUS_MISMATCH: u64 = 5;

// --- Robustness (docs/robustness.md): the `verify` workload under chaos=on, the bad-guest matrix.
// The guest learns its run parameters with `HVC_QUERY` (no entry registers needed).

/// Workload `verify`: rewrite and re-read patterns over the own region for a while, counting
/// words that read back wrong; the last pass writes the `demand` pattern so the hypervisor can
/// check the backing pages too.
pub const WORKLOAD_VERIFY: u64 = 10;
/// Workload `badguest`: the last vCPU runs the bad-guest cases, the others `verify`.
pub const WORKLOAD_BADGUEST: u64 = 11;
/// HVC: a run parameter. x1 = `QUERY_*`. Returns it in x0.
pub const HVC_QUERY: u64 = 0xC600_0013;
/// `HVC_QUERY`: how long `verify` runs, in CNTVCT ticks (0 = one pass).
pub const QUERY_VERIFY_TICKS: u64 = 0;
/// `HVC_QUERY`: the number of vCPUs.
pub const QUERY_VCPUS: u64 = 1;
/// `HVC_QUERY`: 1 if the CPU has FEAT_FGT (the hypervisor then traps SMPRI_EL1 and TPIDR2_EL0
/// with fine-grained traps and answers UNDEF; the guest cannot see FGT in its ID registers).
pub const QUERY_FGT: u64 = 2;
/// `HVC_QUERY`: `dirtylog`'s number of dirty passes, `aging`'s passes (`iters=`,
/// 1..=`MAX_DIRTY_ITERS`).
pub const QUERY_DIRTY_ITERS: u64 = 3;
/// `HVC_QUERY`: 1 if `dirtylog` runs its 'evil' variant (`evil=on`: harvests race the writes).
pub const QUERY_DIRTY_EVIL: u64 = 4;
/// HVC: `verify` result. x1 = passes, x2 = words that read back wrong (lost writes),
/// x3 = words checked. Returns x0 = 0.
pub const HVC_VERIFY: u64 = 0xC600_0010;
/// HVC: one bad-guest case done. x1 = case number (1..=22), x2 = what the guest observed
/// (an ESR_EL1, an x0 answer, ...), x3 = a second observation (0 if none). Returns x0 = 0.
pub const HVC_BADGUEST: u64 = 0xC600_0011;
/// HVC: the guest is about to turn its stage-1 MMU on (x1 = 1) or has turned it off (x1 = 0):
/// the hypervisor clears (sets) HCR_EL2.DC for this vCPU, which otherwise forces stage 1 off.
pub const HVC_STAGE1: u64 = 0xC600_0012;
/// Bad-guest case 11: every vCPU writes its own word of this page at once (image slot, unused
/// by the image and the stacks), after meeting at the barrier word on the page before it.
pub const STORM_PAGE: u64 = RAM_BASE + (8 << 20);
/// Bad-guest case 12: a memslot that the hypervisor backs with at most `OVERCOMMIT_BUDGET`
/// pages; touching more gets an injected external abort for each page it cannot back.
pub const OVERCOMMIT_BASE: u64 = 0x10_0000_0000;
/// Size of the overcommit memslot.
pub const OVERCOMMIT_SIZE: u64 = 16 << 20;
/// Pages of the overcommit memslot the hypervisor will back.
pub const OVERCOMMIT_BUDGET: u64 = 64;
/// HVC (bad-guest case 19): write-protect the 2 MiB chunk of the data memslot that holds IPA
/// x1, under the exclusive guard, and turn "dirty logging" on (as `pagetable`'s update phase
/// does). Returns x0 = leaves write-protected, or -1 if x1 is not in the data memslot.
pub const HVC_WP_CHUNK: u64 = 0xC600_0014;
/// HVC (bad-guest case 19): turn dirty logging off and count the 4 KiB pages in
/// [x1, x1 + x2) that stage 2 maps writable (`translate`). Returns x0 = the count.
pub const HVC_WP_COUNT: u64 = 0xC600_0015;
/// Bad-guest case 21: the page the guest touches in streaming mode (image slot, unused by the
/// image and the stacks, never touched before, right after `STORM_PAGE`).
pub const SME_PAGE: u64 = STORM_PAGE + PAGE_SIZE;

// --- The guest fuzzer (`workload=fuzz`, docs/robustness.md "Guest fuzzer"). vCPU 0 runs `verify`
// while every other vCPU runs a seeded random stream of what a guest can do to reach the
// hypervisor (guest/src/fuzz/); with one vCPU, that vCPU fuzzes.

/// Workload `fuzz`.
pub const WORKLOAD_FUZZ: u64 = 12;
/// HVC: the fuzzer's call. x1 = `FUZZ_*` sub-call, arguments in x2..x4.
pub const HVC_FUZZ: u64 = 0xC600_0016;
/// `HVC_FUZZ` sub-call: run parameters. Returns x0 = seed (`seed=`), x1 = operations per fuzzing
/// vCPU (`ops=`), x2 = this vCPU's role (`FUZZ_ROLE_*`), x3 = the op classes to run (bit
/// `FUZZ_CLASS_*` set = on).
pub const FUZZ_PARAMS: u64 = 0;
/// `HVC_FUZZ` sub-call: one count. x2 = table (`FUZZ_TABLE_*`), x3 = index, x4 = count. Returns 0.
pub const FUZZ_COUNT: u64 = 1;
/// `HVC_FUZZ` sub-call: this fuzzing vCPU is done (sent after its counts). x2 = operations done,
/// x3 = oracle violations (`FUZZ_TABLE_VIOLATION` summed). Returns 0.
pub const FUZZ_DONE: u64 = 2;
/// `HVC_FUZZ` sub-call: how many fuzzing vCPUs are still running (neither done nor stopped).
/// The verifying vCPU polls it to run for as long as the fuzzers do.
pub const FUZZ_RUNNING: u64 = 3;
/// `FUZZ_PARAMS` role: run `verify` until `FUZZ_RUNNING` answers 0.
pub const FUZZ_ROLE_VERIFY: u64 = 0;
/// `FUZZ_PARAMS` role: fuzz.
pub const FUZZ_ROLE_FUZZ: u64 = 1;
/// `FUZZ_COUNT` table: exceptions the fuzzer's own vectors took, index = ESR_EL1.EC (0..64).
pub const FUZZ_TABLE_EC: u64 = 0;
/// `FUZZ_COUNT` table: operations run, index = `FUZZ_CLASS_*`.
pub const FUZZ_TABLE_CLASS: u64 = 1;
/// `FUZZ_COUNT` table: oracle violations, index = `FUZZ_VIOLATION_*`.
pub const FUZZ_TABLE_VIOLATION: u64 = 2;
/// Op class: MRS/MSR to a random system-register encoding (op0 2 or 3), built at run time.
pub const FUZZ_CLASS_SYSREG: u64 = 0;
/// Op class: HVC with a random function id, arguments and immediate.
pub const FUZZ_CLASS_HVC: u64 = 1;
/// Op class: SMC (trapped by HCR_EL2.TSC) with a random function id, arguments and immediate.
pub const FUZZ_CLASS_SMC: u64 = 2;
/// Op class: a load/store/pair/exclusive/atomic/DC ZVA/SIMD access at EL1 to a random IPA.
pub const FUZZ_CLASS_MEM: u64 = 3;
/// Op class: a drop to AArch64 EL0 running one random op, back by SVC.
pub const FUZZ_CLASS_EL0_A64: u64 = 4;
/// Op class: a drop to AArch32 EL0 in A32 running one random op, back by SVC.
pub const FUZZ_CLASS_EL0_A32: u64 = 5;
/// Op class: a drop to AArch32 EL0 in T32 (half of them inside an IT block), back by SVC.
pub const FUZZ_CLASS_EL0_T32: u64 = 6;
/// Op class: SVE instructions (allowed: must not UNDEF when ID_AA64PFR0_EL1.SVE says present).
pub const FUZZ_CLASS_SVE: u64 = 7;
/// Op class: SME instructions and registers (trapped: every one must UNDEF).
pub const FUZZ_CLASS_SME: u64 = 8;
/// Op class: values in V/Z registers must survive exits (HVC, MMIO, an injected abort).
pub const FUZZ_CLASS_FPSTATE: u64 = 9;
/// Number of op classes.
pub const FUZZ_CLASSES: usize = 10;
/// Op class names (option `classes=`, report), indexed by `FUZZ_CLASS_*`.
pub const FUZZ_CLASS_NAMES: [&str; FUZZ_CLASSES] = [
    "sysreg", "hvc", "smc", "mem", "el0a64", "el0a32", "el0t32", "sve", "sme", "fpstate",
];
/// Violation: an EL0 excursion came back by SVC from the wrong place or with its marker
/// registers wrong (an emulated access skipped the wrong length or ITSTATE was not advanced).
pub const FUZZ_VIOLATION_EL0_RETURN: u64 = 0;
/// Violation: an exception from AArch32 EL0 arrived at the lower-EL AArch64 vector, or the reverse.
pub const FUZZ_VIOLATION_VECTOR: u64 = 1;
/// Violation: an SME instruction or register access did not UNDEF.
pub const FUZZ_VIOLATION_SME: u64 = 2;
/// Violation: an SVE instruction UNDEFed (or trapped) although ID_AA64PFR0_EL1 offers SVE, or
/// ran although it does not.
pub const FUZZ_VIOLATION_SVE: u64 = 3;
/// Violation: a V or Z register lost its value across exits to the hypervisor.
pub const FUZZ_VIOLATION_FPSTATE: u64 = 4;
/// Number of violation kinds.
pub const FUZZ_VIOLATIONS: usize = 5;
/// Violation names (report), indexed by `FUZZ_VIOLATION_*`.
pub const FUZZ_VIOLATION_NAMES: [&str; FUZZ_VIOLATIONS] = [
    "el0-return",
    "wrong-vector",
    "sme-not-undef",
    "sve-undef",
    "fpstate-lost",
];

// --- The PSCI lifecycle workload (`workload=psci`, hyp/src/builtin/psci_check.rs, guest/src/psci.rs).
// vCPU 1 turns itself off twice and is turned on again each time at `psci_restart` with a
// context ID; vCPU 0 checks the answers that need no other vCPU; every vCPU but vCPU 1 races a
// CPU_ON at it once. Afterwards every vCPU runs `verify` (one pass).

/// Workload `psci`.
pub const WORKLOAD_PSCI: u64 = 13;
/// HVC: one PSCI check done. x1 = check number (`PSCI_CHECK_*`), x2 and x3 = what the guest
/// observed. Returns x0 = 0.
pub const HVC_PSCI_CHECK: u64 = 0xC600_0017;
/// The vCPU that turns itself off and is turned on again.
pub const PSCI_TARGET: u64 = 1;
/// A page of the image slot for the workload's shared words and context blocks (after
/// `SME_PAGE`, unused by the image and the stacks). Words: 0 = round-2 flag (set by the target
/// before its second CPU_OFF), 1 = race barrier count, 2..4 = the target's MPIDR and data
/// region. The two context IDs are addresses in it (the target does not dereference them).
pub const PSCI_PAGE: u64 = SME_PAGE + PAGE_SIZE;
/// The context ID of the first CPU_ON of the target.
pub const PSCI_CONTEXT_1: u64 = PSCI_PAGE + 0x100;
/// The context ID of the racing CPU_ONs (second start).
pub const PSCI_CONTEXT_2: u64 = PSCI_PAGE + 0x200;
/// Check: PSCI_VERSION / SMCCC_VERSION.
pub const PSCI_CHECK_VERSION: u64 = 1;
/// Check: PSCI_FEATURES(CPU_ON_64) / PSCI_FEATURES(SMCCC_VERSION).
pub const PSCI_CHECK_FEATURES: u64 = 2;
/// Check: PSCI_FEATURES(SYSTEM_RESET2_64) / MIGRATE_INFO_TYPE.
pub const PSCI_CHECK_NOT_OFFERED: u64 = 3;
/// Check: AFFINITY_INFO(own MPIDR, level 0) / (own MPIDR, level 1).
pub const PSCI_CHECK_AFFINITY_SELF: u64 = 4;
/// Check: AFFINITY_INFO(own MPIDR, level 4) / (MPIDR 0xff_ffff, level 0).
pub const PSCI_CHECK_AFFINITY_BAD: u64 = 5;
/// Check: CPU_ON_64 of the target with Aff3 = 1 / with a misaligned entry point while it is OFF.
pub const PSCI_CHECK_CPU_ON_BAD: u64 = 6;
/// Check: AFFINITY_INFO(target) once it turned itself off (after the bad CPU_ONs) / the
/// answer of the CPU_ON that turns it on.
pub const PSCI_CHECK_OFF_THEN_ON: u64 = 7;
/// Check (the target, first start): x0 / SCTLR_EL1 & (M | C | I).
pub const PSCI_CHECK_START_1: u64 = 8;
/// Check (the target, first start): DAIF / CurrentEL | SPSel.
pub const PSCI_CHECK_START_PSTATE: u64 = 9;
/// Check (each racing caller): its CPU_ON's answer / its vCPU id. Counted, not stored.
pub const PSCI_CHECK_RACE: u64 = 10;
/// Check (the target, second start): x0 / SCTLR_EL1 & (M | C | I).
pub const PSCI_CHECK_START_2: u64 = 11;
/// Check (the target): CPU_OFF returned (never expected; obs = its x0).
pub const PSCI_CHECK_OFF_RETURNED: u64 = 12;
