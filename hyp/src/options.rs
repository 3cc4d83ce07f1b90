//! Run options: `/chosen/bootargs` (QEMU `-append`, i.e. what follows `cargo run --`), parsed
//! strictly. Every option has a default; an unknown, malformed or repeated option is an error,
//! never silently defaulted.

use alloc::format;
use alloc::string::String;

/// How the stage-2 fault path synchronises.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// The stage2 crate's shared (lock-free, RCU read-side) mode: no lock on the fault path.
    Parallel,
    /// The same code under the stage2 crate's exclusive guard (one global lock): the baseline.
    Locked,
}

impl Mode {
    /// The option value.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Parallel => "parallel",
            Mode::Locked => "locked",
        }
    }
}

/// What the guest does. More are planned (overlap, pagetable, random); each adds a variant
/// here, a number in guest/src/abi.rs and a function in the guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Workload {
    /// Each vCPU writes 8 bytes to every page of its own region, reads back and checksums.
    Demand,
    /// Every vCPU writes its own 8-byte slot in every page of one shared region.
    Overlap,
    /// `Demand` in a seeded random page order.
    Random,
    /// Shared region, timed phases create / update (write-protect) / adjust (collapse).
    Pagetable,
    /// KVM's dirty_log_perf_test: own regions; populate, logging on, `iters=` dirty passes each
    /// followed by a get-and-clear of the log, logging off (phases.rs, guest dirtylog.rs).
    Dirtylog,
    /// Aging with no lock: each vCPU faults its region in over `iters=` passes and touches a
    /// pass-dependent part of what it mapped, while an ager CPU clears the stage-2 access flags
    /// (VTCR_EL2.HA) and checks that every page touched since the last pass was found young
    /// (hyp/src/builtin/aging.rs, guest aging.rs).
    Aging,
    /// Each vCPU rewrites and re-reads patterns over its region for `duration=`, counting words
    /// that read back wrong (lost writes); the workload of `chaos=on` (docs/robustness.md).
    Verify,
    /// The bad-guest matrix: the last vCPU runs every bad case, the others `verify`.
    Badguest,
    /// The PSCI lifecycle: vCPU 1 turns itself off and is turned on again (by vCPU 0, then by
    /// racing CPU_ONs of all the others); vCPU 0 checks the other answers; then every vCPU runs
    /// `verify` (hyp/src/builtin/psci_check.rs, guest/src/psci.rs).
    Psci,
    /// The guest fuzzer: every vCPU but vCPU 0 runs `ops=` random operations seeded by `seed=`,
    /// vCPU 0 runs `verify` meanwhile (hyp/src/fuzz.rs, guest/src/fuzz/).
    Fuzz,
}

impl Workload {
    /// Every workload, for parsing and `help`.
    pub const ALL: [Workload; 10] = [
        Workload::Demand,
        Workload::Overlap,
        Workload::Random,
        Workload::Pagetable,
        Workload::Dirtylog,
        Workload::Aging,
        Workload::Verify,
        Workload::Badguest,
        Workload::Fuzz,
        Workload::Psci,
    ];

    /// The option value.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Demand => "demand",
            Workload::Overlap => "overlap",
            Workload::Random => "random",
            Workload::Pagetable => "pagetable",
            Workload::Dirtylog => "dirtylog",
            Workload::Aging => "aging",
            Workload::Verify => "verify",
            Workload::Badguest => "badguest",
            Workload::Fuzz => "fuzz",
            Workload::Psci => "psci",
        }
    }

    /// The number the guest receives in x3.
    pub fn guest_number(self) -> u64 {
        match self {
            Workload::Demand => crate::abi::WORKLOAD_DEMAND,
            Workload::Overlap => crate::abi::WORKLOAD_OVERLAP,
            Workload::Random => crate::abi::WORKLOAD_RANDOM,
            Workload::Pagetable => crate::abi::WORKLOAD_PAGETABLE,
            Workload::Dirtylog => crate::abi::WORKLOAD_DIRTYLOG,
            Workload::Aging => crate::abi::WORKLOAD_AGING,
            Workload::Verify => crate::abi::WORKLOAD_VERIFY,
            Workload::Badguest => crate::abi::WORKLOAD_BADGUEST,
            Workload::Fuzz => crate::abi::WORKLOAD_FUZZ,
            Workload::Psci => crate::abi::WORKLOAD_PSCI,
        }
    }
}

/// How the data memslot is backed and mapped (`backing=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backing {
    /// 4 KiB pages, mapped by 4 KiB stage-2 pages.
    Page4K,
    /// One contiguous 2 MiB allocation per 2 MiB chunk, mapped by 2 MiB blocks.
    Block2M,
}

impl Backing {
    /// The option value.
    pub fn name(self) -> &'static str {
        match self {
            Backing::Page4K => "4k",
            Backing::Block2M => "2m",
        }
    }
}

/// How `workload=dirtylog` learns which pages were written (`dirty=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DirtyMode {
    /// Write faults: logging write-protects the memslot and each first write relaxes one page
    /// and marks it (stage2 `dirty_write_fault`).
    Sw,
    /// Hardware dirty state (FEAT_HAFDBS, VTCR_EL2.HD): writable leaves carry DBM, the hardware
    /// sets S2AP[1] on the first write, the harvest scans and cleans the leaves.
    Hw,
}

impl DirtyMode {
    /// The option value.
    pub fn name(self) -> &'static str {
        match self {
            DirtyMode::Sw => "sw",
            DirtyMode::Hw => "hw",
        }
    }
}

/// Self-tests that prove a check can fail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Selftest {
    /// After the guests finish, flip one word in one backing page: the checksum check must fail.
    Corrupt,
    /// The last vCPU spins forever without trapping: the vCPU timeout must fail the run.
    Hang,
    /// chaos=on: the pruner's page migration skips the copy (the new page is zeroed): the guests
    /// must count lost writes and the run must fail (chaos.rs).
    NoCopy,
    /// workload=dirtylog: the harvest takes the marks but does not write-protect the pages
    /// again, so the next pass's writes do not fault and are not logged: `lost_dirty` must be
    /// non-zero and the run must fail (needs iters >= 2; dirtylog.rs). With `dirty=hw` the
    /// harvest reads the hardware dirty state but leaves the pages writable without DBM, so the
    /// next pass's writes leave no trace in the descriptors.
    NoProtect,
    /// workload=aging: the aging passes clear the access flags without the TLB invalidation
    /// (`test_clear_young` alone): a vCPU keeps using its cached AF = 1 translations, its
    /// touches set no flag, and `lost_young` must be > 0 (aging.rs). Only where the TLB still
    /// holds the re-read pages' entries: QEMU's does for tests/qemu-workloads.sh's 1 MiB regions,
    /// not for 16 MiB ones.
    NoFlush,
    /// migrate=on: every pass after pass 0 leaves out one page it should copy (one that
    /// changed): the comparison at the stop must find it and the run must fail (migrate.rs).
    MigrateSkip,
}

impl Selftest {
    /// The option value.
    pub fn name(self) -> &'static str {
        match self {
            Selftest::Corrupt => "corrupt",
            Selftest::Hang => "hang",
            Selftest::NoCopy => "nocopy",
            Selftest::NoProtect => "noprotect",
            Selftest::NoFlush => "noflush",
            Selftest::MigrateSkip => "migrate-skip",
        }
    }
}

/// The parsed options.
#[derive(Clone, Debug)]
pub struct Options {
    /// vCPUs to run (one per physical CPU).
    pub vcpus: usize,
    /// Bytes of guest memory per vCPU for the workload.
    pub mem: u64,
    /// Fault-path synchronisation.
    pub mode: Mode,
    /// Guest workload.
    pub workload: Workload,
    /// Data memslot backing and mapping size.
    pub backing: Backing,
    /// Optional self-test.
    pub selftest: Option<Selftest>,
    /// Seconds to wait for every vCPU to finish before failing (counted after `duration_s`).
    pub timeout_s: u64,
    /// A pruner CPU races the vCPUs with unmap/collapse/split/write-protect/migrate (chaos.rs).
    pub chaos: bool,
    /// Seconds the `verify` workload runs (0 = one pass).
    pub duration_s: u64,
    /// Bytes of the stage-2 table-page pool.
    pub tables: u64,
    /// Time the fault path's steps (phases.rs): costs QEMU global-lock round trips per fault.
    pub steps: bool,
    /// The host's CPU count, as run-qemu.sh saw it (None: not told). Only the report uses it.
    pub host_cpus: Option<u64>,
    /// Whether QEMU preallocated guest RAM (-mem-prealloc), as run-qemu.sh saw it (None: not
    /// told). Only the report uses it: without it a fault's first touch costs host time.
    pub host_prealloc: Option<bool>,
    /// workload=fuzz: the seed of every vCPU's stream (None: chosen at boot from CNTPCT).
    pub seed: Option<u64>,
    /// workload=fuzz: operations per fuzzing vCPU.
    pub ops: u64,
    /// workload=fuzz: the op classes to run, bit `abi::FUZZ_CLASS_*` set = on.
    pub classes: u64,
    /// workload=dirtylog: dirty passes (1..=`abi::MAX_DIRTY_ITERS`).
    pub iters: u64,
    /// workload=dirtylog: the 'evil' variant, harvests racing the writes (`evil=on`).
    pub evil: bool,
    /// workload=dirtylog: software (write faults) or hardware (DBM) dirty state (`dirty=`).
    pub dirty: DirtyMode,
    /// workload=aging: whether the ager CPU runs aging passes while the vCPUs fault and touch
    /// (`aging=on`), or only between passes (`aging=off`, the baseline for fault time).
    pub aging: bool,
    /// A guest loaded from files (`kernel=`): None runs the built-in guest.
    pub files: Option<GuestFiles>,
    /// Bytes of guest RAM for a guest from files (`ram=`).
    pub ram: u64,
    /// A spare CPU live-migrates a guest from files' RAM into a buffer (migrate.rs).
    pub migrate: bool,
    /// migrate=on: milliseconds after the VM starts that the migration begins.
    pub migrate_after_ms: u64,
    /// Why `vcpus` is below its default of every CPU when `vcpus=` was not given (chaos=on's
    /// pruner, workload=aging's ager take the last CPU), for the report header; None otherwise.
    pub vcpus_reduced: Option<SpareCpu>,
}

/// What takes the last CPU when `vcpus=` is not given, so `vcpus` defaults to CPUs - 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpareCpu {
    /// chaos=on's pruner (chaos.rs).
    Pruner,
    /// workload=aging's ager (aging.rs).
    Ager,
}

impl SpareCpu {
    /// The reason, as the report header prints it.
    pub fn why(self) -> &'static str {
        match self {
            SpareCpu::Pruner => "one CPU is the chaos pruner's",
            SpareCpu::Ager => "one CPU is the ager's",
        }
    }
}

/// Where run-qemu.sh's `-device loader` put a guest's files in host RAM, and its command line
/// (docs/guests.md: `kernel=ADDR:SIZE [initrd=ADDR:SIZE] ... -- GUEST ARGS`).
#[derive(Clone, Debug)]
pub struct GuestFiles {
    /// The kernel (arm64 Image or kvm-unit-tests .flat) as (host PA, bytes).
    pub kernel: (u64, u64),
    /// The initrd (Linux initramfs, or a .flat's environ file) as (host PA, bytes).
    pub initrd: Option<(u64, u64)>,
    /// The guest's `/chosen/bootargs`: everything after ` -- `.
    pub cmdline: String,
}

/// Default `ram=`: guest RAM for a guest from files. Demand-paged, so only what it touches
/// costs host memory.
pub const DEFAULT_RAM: u64 = 512 << 20;
/// Options that only the built-in guest understands.
const BUILTIN_ONLY: [&str; 12] = [
    "mem", "workload", "selftest", "duration", "steps", "seed", "ops", "classes", "iters", "evil",
    "dirty", "aging",
];
/// Default `iters=` (workload=dirtylog).
pub const DEFAULT_DIRTY_ITERS: u64 = 3;

/// Default size of the stage-2 table-page pool: 2048 pages, room for the tables of ~4 GiB of
/// 4 KiB mappings.
pub const DEFAULT_TABLES: u64 = 8 << 20;
/// Smallest table pool: the 40-bit root (two concatenated pages) plus a couple of tables.
const MIN_TABLES: u64 = 16 << 10;

/// Default bytes per vCPU: 4096 pages, a couple of seconds on QEMU TCG for 4 vCPUs.
pub const DEFAULT_MEM: u64 = 16 << 20;
/// Default vCPU timeout.
pub const DEFAULT_TIMEOUT_S: u64 = 60;
/// Default `ops=` (workload=fuzz): the CI form, well under a second per vCPU.
pub const DEFAULT_FUZZ_OPS: u64 = 10_000;
/// Largest `ops=`.
const MAX_FUZZ_OPS: u64 = 10_000_000_000;
/// Smallest `mem=` for workload=fuzz: a code page, an EL0 stack page and scratch pages.
const MIN_FUZZ_MEM: u64 = 64 << 10;
/// Every op class.
pub const ALL_FUZZ_CLASSES: u64 = (1 << crate::abi::FUZZ_CLASSES) - 1;

/// Default `duration=` under `chaos=on`: a few seconds, the CI form.
pub const DEFAULT_CHAOS_DURATION_S: u64 = 2;

/// Default `migrate-after=`: a 4-vCPU Linux guest reaches /init after 2-5 s under QEMU TCG
/// (docs/guests.md); its toucher then writes for several seconds.
pub const DEFAULT_MIGRATE_AFTER_MS: u64 = 3000;

/// What `parse` decided.
pub enum Parsed {
    /// Run with these options.
    Run(Options),
    /// `help` was given.
    Help,
}

/// The `help` text: every option, its values and its default.
pub fn help_text(cpus: usize) -> String {
    let classes = crate::abi::FUZZ_CLASS_NAMES.join(",");
    let max_iters = crate::abi::MAX_DIRTY_ITERS;
    let workloads: String = Workload::ALL
        .iter()
        .map(|w| w.name())
        .collect::<alloc::vec::Vec<_>>()
        .join("|");
    format!(
        "usage: cargo run [--release] -- [option ...]   (options reach the hypervisor as bootargs)\n\
         options:\n\
         \x20 vcpus=N            vCPUs to run, 1..={cpus} (CPUs in the DTB)      default: {cpus}; {} with\n\
         \x20                    chaos=on or workload=aging (the pruner/ager takes a CPU); 1 with kernel=\n\
         \x20 mem=SIZE           guest memory per vCPU, a multiple of 4K, suffix K/M/G   default: {}M\n\
         \x20 mode=parallel|locked  stage-2 fault path: lock-free, or one global lock   default: parallel\n\
         \x20 workload={workloads:<10} guest workload                                  default: demand\n\
         \x20 backing=4k|2m      data backing: 4 KiB pages, or 2 MiB chunks mapped as blocks   default: 4k\n\
         \x20 selftest=corrupt   flip one backing word after the run: the checksum check must fail   default: off\n\
         \x20 selftest=hang      the last vCPU never finishes: the timeout must fail the run (needs\n\
         \x20                    vcpus>=2)   default: off\n\
         \x20 selftest=nocopy   chaos=on: page migration loses the page's data: lost writes must fail the run   default: off\n\
         \x20 selftest=noprotect  workload=dirtylog, iters>=2: the harvest does not write-protect again: lost\n\
         \x20                    dirty pages must fail the run   default: off\n\
         \x20 selftest=noflush   workload=aging: aging passes skip their TLB invalidation: touched pages\n\
         \x20                    found old must fail the run   default: off\n\
         \x20 timeout=SECONDS    fail if a vCPU has not finished by then (after duration=)   default: {DEFAULT_TIMEOUT_S}\n\
         \x20                    (checked by a CPU whose vCPU has left the guest: a guest whose every\n\
         \x20                    vCPU runs without trapping is ended only by run-qemu.sh --timeout)\n\
         \x20 chaos=on|off       a spare CPU unmaps/collapses/splits/write-protects/migrates under the vCPUs\n\
         \x20                    (needs vcpus < CPUs; implies workload=verify)   default: off\n\
         \x20 duration=TIME      how long workload=verify runs: seconds, or 30s, 5m   default: 2s with chaos=on, else one pass\n\
         \x20 tables=SIZE        stage-2 table-page pool (16K..=64M); when it runs dry a fault waits for\n\
         \x20                    RCU to return retired tables, else stops that vCPU   default: {}M\n\
         \x20 steps=on|off       time the fault path's steps (zeroing, stage2 call); each timer reads\n\
         \x20                    CNTPCT, which QEMU serves under its global lock   default: off\n\
         \x20 seed=N             workload=fuzz: seed of the random streams (decimal or 0x hex); the report\n\
         \x20                    prints it so a run can be replayed   default: from the counter at boot\n\
         \x20 ops=N              workload=fuzz: operations per fuzzing vCPU, 1..=10^10, suffix k (10^3)\n\
         \x20                    or m (10^6)   default: {DEFAULT_FUZZ_OPS}\n\
         \x20 iters=N            workload=dirtylog: dirty passes, each followed by a get-and-clear of\n\
         \x20                    the log; workload=aging: passes, each followed by an aging pass,\n\
         \x20                    1..={max_iters}   default: {DEFAULT_DIRTY_ITERS}\n\
         \x20 evil=on|off        workload=dirtylog: vCPU 0 asks for a get-and-clear every 64 pages of its\n\
         \x20                    passes, racing the others' writes   default: off\n\
         \x20 dirty=sw|hw        workload=dirtylog: write faults, or hardware dirty state (DBM, VTCR_EL2.HD;\n\
         \x20                    needs ID_AA64MMFR1_EL1.HAFDBS >= 2)   default: sw\n\
         \x20 aging=on|off       workload=aging: a spare CPU ages the memory while the vCPUs fault and\n\
         \x20                    touch (needs vcpus < CPUs), or only between passes   default: on\n\
         \x20 classes=LIST       workload=fuzz: op classes, comma-separated from\n\
         \x20                    {classes}, or all   default: all\n\
         \x20 kernel=ADDR:SIZE   a guest from a file in host RAM instead of the built-in guest (run-qemu.sh\n\
         \x20                    --kernel FILE sets it): an arm64 Linux Image or a kvm-unit-tests .flat\n\
         \x20 initrd=ADDR:SIZE   its initramfs (Linux) or environ file (.flat)   default: none\n\
         \x20 ram=SIZE           guest RAM for kernel=, a multiple of 2M, demand-paged   default: {}M\n\
         \x20 migrate=on|off     kernel=: a spare CPU live-migrates the guest's RAM into a buffer while it\n\
         \x20                    runs (pre-copy passes, stop-and-copy, comparison); needs vcpus < CPUs and\n\
         \x20                    host memory for the copy   default: off\n\
         \x20 migrate-after=MS   migrate=on: start the migration this many ms after the VM starts   default: {DEFAULT_MIGRATE_AFTER_MS}\n\
         \x20 selftest=migrate-skip  migrate=on: each pass leaves out one changed page: the comparison\n\
         \x20                    must fail the run   default: off\n\
         \x20 -- GUEST ARGS      everything after ` -- ` is the guest's command line (kernel= only)\n\
         \x20 help               print this and exit 0\n\
         \x20 host-cpus=N        (set by run-qemu.sh) host CPUs, for the report's notes\n\
         \x20 host-prealloc=on|off  (set by run-qemu.sh) whether QEMU preallocated guest RAM\n\
         \x20                    (-mem-prealloc), for the report's notes",
        cpus.saturating_sub(1).max(1),
        DEFAULT_MEM >> 20,
        DEFAULT_TABLES >> 20,
        DEFAULT_RAM >> 20
    )
}

/// Parses `SIZE`: decimal with an optional K/M/G suffix (binary units).
fn parse_size(v: &str) -> Option<u64> {
    let (digits, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

/// Parses `seed=`: decimal, or hexadecimal with a 0x prefix.
fn parse_seed(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Parses `ops=`: decimal with an optional k (10^3) or m (10^6) suffix.
fn parse_count(v: &str) -> Option<u64> {
    let (digits, mul) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1_000),
        b'm' | b'M' => (&v[..v.len() - 1], 1_000_000),
        _ => (v, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mul)
}

/// Parses `classes=`: `all`, or names from `abi::FUZZ_CLASS_NAMES` separated by commas.
fn parse_classes(v: &str) -> Result<u64, String> {
    if v == "all" {
        return Ok(ALL_FUZZ_CLASSES);
    }
    let mut mask = 0;
    for name in v.split(',') {
        let i = crate::abi::FUZZ_CLASS_NAMES
            .iter()
            .position(|&n| n == name)
            .ok_or_else(|| {
                format!(
                    "unknown op class '{name}' (classes are {}, or all)",
                    crate::abi::FUZZ_CLASS_NAMES.join(",")
                )
            })?;
        mask |= 1 << i;
    }
    Ok(mask)
}

/// Parses `TIME`: seconds, or a number with suffix `s` or `m` (minutes, for soak runs).
fn parse_duration(v: &str) -> Option<u64> {
    let (digits, mul) = match v.as_bytes().last()? {
        b's' => (&v[..v.len() - 1], 1),
        b'm' => (&v[..v.len() - 1], 60),
        _ => (v, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mul)
}

/// Parses `ADDR:SIZE` (hexadecimal with 0x, or decimal) for `kernel=` and `initrd=`.
fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (a, s) = v.split_once(':')?;
    let (a, s) = (parse_seed(a)?, parse_seed(s)?);
    (s > 0 && a.checked_add(s).is_some()).then_some((a, s))
}

/// Refuses options this CPU cannot run. `hafdbs` is ID_AA64MMFR1_EL1.HAFDBS (Arm ARM
/// "ID_AA64MMFR1_EL1": 0b0001 hardware Access flag, 0b0010 and up Access flag and dirty state,
/// at every stage of translation that enables them).
pub fn check_cpu(o: &Options, hafdbs: u64) -> Result<(), String> {
    if o.workload == Workload::Dirtylog && o.dirty == DirtyMode::Hw && hafdbs < 2 {
        return Err(format!(
            "dirty=hw needs hardware dirty state at stage 2 (FEAT_HAFDBS, \
             ID_AA64MMFR1_EL1.HAFDBS >= 2); this CPU has HAFDBS={hafdbs}: use dirty=sw"
        ));
    }
    if o.workload == Workload::Aging && hafdbs < 1 {
        return Err(format!(
            "workload=aging needs the hardware Access flag at stage 2 (FEAT_HAFDBS, \
             ID_AA64MMFR1_EL1.HAFDBS >= 1); this CPU has HAFDBS={hafdbs}"
        ));
    }
    Ok(())
}

impl Options {
    /// Whether stage 2 runs with the hardware Access flag (VTCR_EL2.HA): `workload=aging`, and
    /// `dirty=hw`, since the hardware dirty state works only with HA set as well.
    pub fn hw_access_flag(&self) -> bool {
        self.workload == Workload::Aging || self.hw_dirty()
    }

    /// Whether stage 2 runs with hardware dirty state (VTCR_EL2.HD): `dirty=hw`.
    pub fn hw_dirty(&self) -> bool {
        self.workload == Workload::Dirtylog && self.dirty == DirtyMode::Hw
    }

    /// The report header's `options:` text: the options that apply to this guest kind. The
    /// built-in guest: vcpus, mem, mode, workload, backing, chaos (if on), selftest, timeout. A
    /// guest from files (mem=, workload= and most self-tests do not apply): vcpus, ram, mode,
    /// backing, chaos or migrate (if on), selftest (if on), timeout. A `vcpus` reduced from its
    /// default carries the reason, e.g. `vcpus=3 (default: one CPU is the chaos pruner's)`.
    pub fn summary(&self) -> String {
        let mut s = format!("vcpus={}", self.vcpus);
        if let Some(why) = self.vcpus_reduced {
            s.push_str(&format!(" (default: {})", why.why()));
        }
        if self.files.is_none() {
            s.push_str(&format!(" mem={}K", self.mem >> 10));
        } else {
            s.push_str(&format!(" ram={}M", self.ram >> 20));
        }
        s.push_str(&format!(" mode={}", self.mode.name()));
        if self.files.is_none() {
            s.push_str(&format!(" workload={}", self.workload.name()));
        }
        s.push_str(&format!(" backing={}", self.backing.name()));
        if self.chaos {
            s.push_str(" chaos=on");
        }
        if self.migrate {
            s.push_str(&format!(
                " migrate=on migrate-after={}ms",
                self.migrate_after_ms
            ));
        }
        match (self.selftest, &self.files) {
            (Some(t), _) => s.push_str(&format!(" selftest={}", t.name())),
            (None, None) => s.push_str(" selftest=off"),
            (None, Some(_)) => {}
        }
        s.push_str(&format!(" timeout={}s", self.timeout_s));
        s
    }
}

/// Parses the bootargs. `cpus` is the number of CPUs in the DTB.
pub fn parse(args: &str, cpus: usize) -> Result<Parsed, String> {
    // ` -- ` separates the hypervisor's options from a guest's command line.
    let (args, guest_args) = match args.split_once(" -- ") {
        Some((h, g)) => (h, Some(g.trim())),
        None => match args.strip_suffix(" --") {
            Some(h) => (h, Some("")),
            None => (args, None),
        },
    };
    let mut kernel = None;
    let mut initrd = None;
    let mut ram = DEFAULT_RAM;
    let mut o = Options {
        vcpus: cpus,
        mem: DEFAULT_MEM,
        mode: Mode::Parallel,
        workload: Workload::Demand,
        backing: Backing::Page4K,
        selftest: None,
        timeout_s: DEFAULT_TIMEOUT_S,
        chaos: false,
        duration_s: 0,
        tables: DEFAULT_TABLES,
        steps: false,
        host_cpus: None,
        host_prealloc: None,
        seed: None,
        ops: DEFAULT_FUZZ_OPS,
        classes: ALL_FUZZ_CLASSES,
        iters: DEFAULT_DIRTY_ITERS,
        evil: false,
        dirty: DirtyMode::Sw,
        aging: true,
        files: None,
        ram: DEFAULT_RAM,
        migrate: false,
        migrate_after_ms: DEFAULT_MIGRATE_AFTER_MS,
        vcpus_reduced: None,
    };
    let mut seen: alloc::vec::Vec<&str> = alloc::vec::Vec::new();
    let mut help = false;
    for arg in args.split_whitespace() {
        if arg == "help" || arg == "--help" {
            help = true;
            continue;
        }
        let Some((key, value)) = arg.split_once('=') else {
            return Err(format!("option '{arg}' is not key=value (try 'help')"));
        };
        if seen.contains(&key) {
            return Err(format!("option '{key}' given twice"));
        }
        seen.push(key);
        let bad = |why: &str| format!("bad value in '{arg}': {why}");
        match key {
            "vcpus" => {
                let n: usize = value.parse().map_err(|_| bad("not a number"))?;
                if n == 0 || n > cpus {
                    return Err(bad(&format!(
                        "must be 1..={cpus}, the CPUs QEMU booted (boot more with SMP=N, e.g. \
                         SMP={} cargo run -- vcpus={})",
                        n.clamp(1, 8),
                        n.clamp(1, 8)
                    )));
                }
                o.vcpus = n;
            }
            "steps" => {
                o.steps = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("must be on or off")),
                };
            }
            "tables" => {
                let t = parse_size(value).ok_or_else(|| bad("expected e.g. 64K, 8M"))?;
                if !(MIN_TABLES..=64 << 20).contains(&t) || t % crate::pool::PAGE != 0 {
                    return Err(bad("must be a multiple of 4K from 16K to 64M"));
                }
                o.tables = t;
            }
            "mem" => {
                let m = parse_size(value).ok_or_else(|| bad("expected e.g. 4M, 64M, 512K"))?;
                if m == 0 || m % crate::pool::PAGE != 0 {
                    return Err(bad("must be a non-zero multiple of 4K"));
                }
                o.mem = m;
            }
            "mode" => {
                o.mode = match value {
                    "parallel" => Mode::Parallel,
                    "locked" => Mode::Locked,
                    _ => return Err(bad("must be parallel or locked")),
                };
            }
            "workload" => {
                o.workload = *Workload::ALL
                    .iter()
                    .find(|w| w.name() == value)
                    .ok_or_else(|| bad("unknown workload (see 'help')"))?;
            }
            "backing" => {
                o.backing = match value {
                    "4k" | "4K" => Backing::Page4K,
                    "2m" | "2M" => Backing::Block2M,
                    _ => return Err(bad("must be 4k or 2m")),
                };
            }
            "selftest" => {
                o.selftest =
                    match value {
                        "corrupt" => Some(Selftest::Corrupt),
                        "hang" => Some(Selftest::Hang),
                        "nocopy" => Some(Selftest::NoCopy),
                        "noprotect" => Some(Selftest::NoProtect),
                        "noflush" => Some(Selftest::NoFlush),
                        "migrate-skip" => Some(Selftest::MigrateSkip),
                        _ => return Err(bad(
                            "self-tests are 'corrupt', 'hang', 'nocopy', 'noprotect', 'noflush' \
                             and 'migrate-skip'",
                        )),
                    };
            }
            "timeout" => {
                o.timeout_s = value.parse().map_err(|_| bad("not a number of seconds"))?;
                if o.timeout_s == 0 {
                    return Err(bad("must be at least 1"));
                }
            }
            "chaos" => {
                o.chaos = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("must be on or off")),
                };
            }
            "migrate" => {
                o.migrate = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("must be on or off")),
                };
            }
            "migrate-after" => {
                o.migrate_after_ms = value.parse().map_err(|_| bad("not a number of ms"))?;
                if o.migrate_after_ms > 600_000 {
                    return Err(bad("at most 600000 (10 minutes)"));
                }
            }
            "duration" => {
                o.duration_s =
                    parse_duration(value).ok_or_else(|| bad("expected e.g. 30, 30s, 5m"))?;
            }
            "host-cpus" => {
                let n: u64 = value.parse().map_err(|_| bad("not a number"))?;
                o.host_cpus = Some(n);
            }
            "host-prealloc" => {
                o.host_prealloc = Some(match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("must be on or off")),
                });
            }
            "seed" => {
                o.seed = Some(parse_seed(value).ok_or_else(|| bad("expected e.g. 42, 0x2a"))?);
            }
            "ops" => {
                o.ops = parse_count(value).ok_or_else(|| bad("expected e.g. 10000, 10k, 1m"))?;
                if !(1..=MAX_FUZZ_OPS).contains(&o.ops) {
                    return Err(bad("must be 1..=10^10"));
                }
            }
            "classes" => o.classes = parse_classes(value).map_err(|why| bad(&why))?,
            "evil" => {
                o.evil = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("must be on or off")),
                };
            }
            "dirty" => {
                o.dirty = match value {
                    "sw" => DirtyMode::Sw,
                    "hw" => DirtyMode::Hw,
                    _ => return Err(bad("must be sw or hw")),
                };
            }
            "aging" => {
                o.aging = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("must be on or off")),
                };
            }
            "iters" => {
                o.iters = value.parse().map_err(|_| bad("not a number"))?;
                if !(1..=crate::abi::MAX_DIRTY_ITERS).contains(&o.iters) {
                    return Err(bad(&format!("must be 1..={}", crate::abi::MAX_DIRTY_ITERS)));
                }
            }
            "kernel" => kernel = Some(parse_range(value).ok_or_else(|| bad("expected ADDR:SIZE"))?),
            "initrd" => initrd = Some(parse_range(value).ok_or_else(|| bad("expected ADDR:SIZE"))?),
            "ram" => {
                ram = parse_size(value).ok_or_else(|| bad("expected e.g. 256M, 1G"))?;
                if ram == 0 || !ram.is_multiple_of(2 << 20) {
                    return Err(bad("must be a non-zero multiple of 2M"));
                }
            }
            _ => return Err(format!("unknown option '{key}' (try 'help')")),
        }
    }
    match kernel {
        Some(k) => {
            // selftest=nocopy is the one self-test a guest from files takes: it breaks chaos
            // mode's page migration (the new page is zeroed, not copied), so the guest-side
            // check (tests/guests/linux.sh's toucher) must see lost data and the run must fail,
            // proof that the check catches a hypervisor that loses guest memory.
            // selftest=migrate-skip likewise breaks migrate=on's copy (migrate.rs).
            let nocopy = o.selftest == Some(Selftest::NoCopy);
            let skip = o.selftest == Some(Selftest::MigrateSkip);
            if let Some(key) = BUILTIN_ONLY
                .iter()
                .find(|k| seen.contains(k) && !(**k == "selftest" && (nocopy || skip)))
            {
                return Err(if *key == "selftest" {
                    String::from(
                        "selftest= applies to the built-in guest, not to kernel= (only \
                         selftest=nocopy and selftest=migrate-skip do)",
                    )
                } else {
                    format!("{key}= applies to the built-in guest, not to kernel=")
                });
            }
            if nocopy && !o.chaos {
                return Err(String::from(
                    "selftest=nocopy breaks chaos=on's page migration: it needs chaos=on",
                ));
            }
            if seen.contains(&"migrate-after") && !o.migrate {
                return Err(String::from("migrate-after= needs migrate=on"));
            }
            if skip && !o.migrate {
                return Err(String::from(
                    "selftest=migrate-skip breaks migrate=on's copy: it needs migrate=on",
                ));
            }
            if !seen.contains(&"vcpus") {
                o.vcpus = 1;
            }
            // migrate=on: the migrator runs on the CPU after the vCPUs, like the pruner; the two
            // cannot share it, and the pruner's page migrations and unmaps would change the
            // memory under the copy (and free pages the migrator reads).
            if o.migrate && o.chaos {
                return Err(String::from(
                    "migrate=on cannot run with chaos=on (both need the spare CPU, and the \
                     pruner moves and frees the pages the migration copies)",
                ));
            }
            if o.migrate && o.vcpus >= cpus {
                return Err(format!(
                    "migrate=on needs a CPU for the migrator: use vcpus<={} (or boot one more \
                     CPU, SMP={})",
                    cpus - 1,
                    o.vcpus + 1
                ));
            }
            // chaos=on: the pruner runs on the CPU after the vCPUs, which the guest never gets
            // (not in its DTB, its redistributor not mapped: passthrough.rs).
            if o.chaos && o.vcpus >= cpus {
                return Err(format!(
                    "chaos=on needs a CPU for the pruner: use vcpus<={} (or boot one more CPU, \
                     SMP={})",
                    cpus - 1,
                    o.vcpus + 1
                ));
            }
            if o.chaos && o.backing == Backing::Block2M {
                return Err(String::from(
                    "chaos=on uses 4k backing (its page migration breaks 2 MiB chunks); drop backing=2m",
                ));
            }
            o.ram = ram;
            o.files = Some(GuestFiles {
                kernel: k,
                initrd,
                cmdline: String::from(guest_args.unwrap_or("")),
            });
            return Ok(if help { Parsed::Help } else { Parsed::Run(o) });
        }
        None => {
            for key in ["initrd", "ram", "migrate", "migrate-after"] {
                if seen.contains(&key) {
                    return Err(format!("{key}= needs kernel= (run-qemu.sh --kernel FILE)"));
                }
            }
            if guest_args.is_some() {
                return Err(String::from(
                    "a guest command line (after ` -- `) needs kernel= (run-qemu.sh --kernel FILE)",
                ));
            }
        }
    }
    if o.chaos {
        if !seen.contains(&"vcpus") && cpus > 1 {
            o.vcpus = cpus - 1;
            o.vcpus_reduced = Some(SpareCpu::Pruner);
        }
        if o.vcpus >= cpus {
            return Err(format!(
                "chaos=on needs a CPU for the pruner: use vcpus<={} (or boot one more CPU, SMP={})",
                cpus - 1,
                o.vcpus + 1
            ));
        }
        if !seen.contains(&"workload") {
            o.workload = Workload::Verify;
        } else if o.workload != Workload::Verify {
            return Err(String::from(
                "chaos=on runs workload=verify (the one that counts lost writes)",
            ));
        }
        if !seen.contains(&"duration") {
            o.duration_s = DEFAULT_CHAOS_DURATION_S;
        }
        // The pruner migrates single pages out of their 2 MiB chunk; a fault under backing=2m
        // maps the whole chunk as a block, which would then map pages the memslot no longer
        // holds. chaos.rs collapses only spans whose backing is still contiguous; the fault path
        // has no such check, so the combination is refused rather than silently unsound.
        if o.backing == Backing::Block2M {
            return Err(String::from(
                "chaos=on uses 4k backing (its page migration breaks 2 MiB chunks); drop backing=2m",
            ));
        }
    }
    // Nothing is silently ignored: duration= means something only where `verify` runs.
    if seen.contains(&"duration") && !matches!(o.workload, Workload::Verify | Workload::Badguest) {
        return Err(format!(
            "duration= applies to workload=verify and workload=badguest (its verifying vCPUs); \
             workload={} runs a fixed amount of work",
            o.workload.name()
        ));
    }
    for key in ["seed", "ops", "classes"] {
        if seen.contains(&key) && o.workload != Workload::Fuzz {
            return Err(format!("{key}= applies to workload=fuzz only"));
        }
    }
    for key in ["evil", "dirty"] {
        if seen.contains(&key) && o.workload != Workload::Dirtylog {
            return Err(format!("{key}= applies to workload=dirtylog only"));
        }
    }
    if seen.contains(&"iters") && !matches!(o.workload, Workload::Dirtylog | Workload::Aging) {
        return Err(String::from(
            "iters= applies to workload=dirtylog and workload=aging only",
        ));
    }
    if seen.contains(&"aging") && o.workload != Workload::Aging {
        return Err(String::from("aging= applies to workload=aging only"));
    }
    if o.workload == Workload::Aging {
        // The ager runs on the CPU after the vCPUs (aging.rs), as chaos=on's pruner does.
        if !seen.contains(&"vcpus") && cpus > 1 {
            o.vcpus = cpus - 1;
            o.vcpus_reduced = Some(SpareCpu::Ager);
        }
        if o.aging && o.vcpus >= cpus {
            return Err(format!(
                "workload=aging needs a CPU for the ager: use vcpus<={} (or boot one more CPU, \
                 SMP={}), or aging=off",
                cpus - 1,
                o.vcpus + 1
            ));
        }
        if o.backing == Backing::Block2M {
            return Err(String::from(
                "workload=aging checks the access flag of every 4 KiB page: drop backing=2m",
            ));
        }
    }
    // The timeout is checked by a CPU whose vCPU has left the guest (the waiting loop after
    // its own vCPU stops); with one vCPU that never finishes there is none, and the run would
    // hang until QEMU is killed.
    if o.selftest == Some(Selftest::Hang) && o.vcpus < 2 {
        return Err(String::from(
            "selftest=hang needs vcpus>=2: timeout= is checked by a CPU whose vCPU has finished, \
             and with one vCPU that never finishes there is none (use vcpus>=2, or bound the run \
             with run-qemu.sh --timeout)",
        ));
    }
    if o.selftest == Some(Selftest::NoFlush) && o.workload != Workload::Aging {
        return Err(String::from("selftest=noflush needs workload=aging"));
    }
    // The harvest that skips the protect loses the marks of the pass after it.
    if o.selftest == Some(Selftest::NoProtect) && (o.workload != Workload::Dirtylog || o.iters < 2)
    {
        return Err(String::from(
            "selftest=noprotect needs workload=dirtylog and iters>=2",
        ));
    }
    if o.workload == Workload::Fuzz && o.mem < MIN_FUZZ_MEM {
        return Err(format!(
            "workload=fuzz needs mem>={}K (a code page, an EL0 stack page and scratch pages)",
            MIN_FUZZ_MEM >> 10
        ));
    }
    // 2 MiB chunks (backing=2m, and pagetable, whose adjust phase collapses them into blocks)
    // need whole chunks per region.
    if (o.backing == Backing::Block2M || o.workload == Workload::Pagetable)
        && !o.mem.is_multiple_of(2 << 20)
    {
        return Err(format!(
            "mem={}K must be a multiple of 2M with backing=2m or workload=pagetable",
            o.mem >> 10
        ));
    }
    Ok(if help { Parsed::Help } else { Parsed::Run(o) })
}
