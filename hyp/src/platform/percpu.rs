//! Per-CPU state: which CPU am I (TPIDR_EL2), counters, page caches and the vCPU it runs.
//!
//! Each physical CPU runs exactly one vCPU and never migrates it, so "this CPU's" and "this
//! vCPU's" state are the same thing. Counters are written only by their own CPU (relaxed
//! atomics, no contention) and read by the reporter after the CPU finished.

use aarch64_cpu::registers::{Readable, TPIDR_EL2};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::Once;

use crate::pool::PageStack;

/// Fault times below this many CNTPCT ticks (65 µs at 62.5 MHz) get one bucket per tick.
const HIST_LINEAR: u64 = 4096;
/// Above that, each power of two is split into this many buckets (6% resolution).
const HIST_SUB: u64 = 16;
/// Fault-time histogram buckets: linear, then log-linear up to 2^64 ticks.
pub const HIST_BUCKETS: usize = (HIST_LINEAR + (64 - 12) * HIST_SUB) as usize;

/// The histogram bucket of a time in ticks.
pub fn hist_bucket(ticks: u64) -> usize {
    if ticks < HIST_LINEAR {
        return ticks as usize;
    }
    let e = u64::from(63 - ticks.leading_zeros()); // >= 12
    let sub = (ticks >> (e - 4)) & (HIST_SUB - 1);
    (HIST_LINEAR + (e - 12) * HIST_SUB + sub) as usize
}

/// The smallest time (ticks) that falls in `bucket`.
pub fn hist_bucket_floor(bucket: usize) -> u64 {
    let b = bucket as u64;
    if b < HIST_LINEAR {
        return b;
    }
    let e = (b - HIST_LINEAR) / HIST_SUB + 12;
    let sub = (b - HIST_LINEAR) % HIST_SUB;
    (1 << e) | (sub << (e - 4))
}

/// Event counters of one CPU. Names match the report's table.
#[derive(Default)]
pub struct Counters {
    /// Stage-2 aborts in a memslot handled (each one ends in a map, a retry or a spurious return).
    pub faults: AtomicU64,
    /// Of those, where `map` installed a new entry.
    pub installed: AtomicU64,
    /// Of those, where `map` said another CPU raced us: retry the instruction.
    pub retries: AtomicU64,
    /// Of those, where the entry was already valid (another CPU mapped it first).
    pub spurious: AtomicU64,
    /// Of those, permission faults answered by a permission relax of the valid leaf (a write to
    /// a write-protected page; by this fault, or by another CPU's that got there first).
    pub relaxed: AtomicU64,
    /// Backing pages this CPU allocated and zeroed on first touch.
    pub pages_backed: AtomicU64,
    /// Backing pages this CPU allocated but another CPU installed first (returned to the cache).
    pub backing_races_lost: AtomicU64,
    /// Emulated MMIO accesses.
    pub mmio: AtomicU64,
    /// HVC calls from the guest.
    pub hvc: AtomicU64,
    /// Trapped SMC calls from the guest.
    pub smc: AtomicU64,
    /// External aborts injected into the guest.
    pub injected: AtomicU64,
    /// Batch refills of the table-page cache from the shared pool.
    pub table_refills: AtomicU64,
    /// Batch refills of the data-page cache from the shared pool.
    pub data_refills: AtomicU64,
    /// Sum of hyp-side fault times in CNTPCT ticks (for the mean).
    pub fault_ticks: AtomicU64,
    /// Longest hyp-side fault time in ticks.
    pub fault_ticks_max: AtomicU64,
    /// HVC/SMC calls answered NOT_SUPPORTED (unknown function or non-zero immediate).
    pub calls_unsupported: AtomicU64,
    /// Exits by class (`Trap`), for the report's `traps_<class>` fields.
    pub traps: [AtomicU64; Trap::COUNT],
}

/// The class of a guest exit, as counted in `Counters::traps` and reported as `traps_<name>`
/// (docs/hypervisor.md, "The report").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trap {
    /// A stage-2 abort in a memslot (mapped, retried or spurious).
    AbortMemslot,
    /// An access to the emulated UART.
    AbortMmio,
    /// An abort answered with an injected synchronous external abort.
    AbortInjected,
    /// An abort re-run without a mapping: FAR_EL2 no longer translated (AT S1E1R failed), or
    /// a TLB conflict was invalidated.
    AbortRetry,
    /// A cache maintenance instruction (ESR.CM = 1) to an IPA that is not RAM: skipped.
    AbortSkipped,
    /// HVC calls (any immediate).
    Hvc,
    /// Trapped SMC calls (any immediate).
    Smc,
    /// Trapped system register accesses answered by emulation (ID registers, set/way ops).
    SysregEmulated,
    /// Trapped system register accesses answered with an UNDEF.
    SysregUndef,
    /// Trapped SME instructions/registers (EC 0x1D): UNDEF.
    SmeUndef,
    /// Trapped SVE (EC 0x19): UNDEF.
    SveUndef,
    /// Trapped FP/AdvSIMD (EC 0x07): UNDEF.
    FpUndef,
    /// Every other exception class: UNDEF.
    OtherUndef,
    /// Trapped WFI/WFE: completed as a NOP.
    Wfx,
    /// Physical IRQs taken while the guest ran.
    Irq,
    /// Physical FIQs taken while the guest ran.
    Fiq,
    /// Physical SErrors taken while the guest ran (a virtual SError is injected).
    Serror,
}

impl Trap {
    /// Every class, in report order.
    pub const ALL: [Trap; 17] = [
        Trap::AbortMemslot,
        Trap::AbortMmio,
        Trap::AbortInjected,
        Trap::AbortRetry,
        Trap::AbortSkipped,
        Trap::Hvc,
        Trap::Smc,
        Trap::SysregEmulated,
        Trap::SysregUndef,
        Trap::SmeUndef,
        Trap::SveUndef,
        Trap::FpUndef,
        Trap::OtherUndef,
        Trap::Wfx,
        Trap::Irq,
        Trap::Fiq,
        Trap::Serror,
    ];
    /// Number of classes.
    pub const COUNT: usize = Self::ALL.len();

    /// The name in `traps_<name>=N`.
    pub fn name(self) -> &'static str {
        match self {
            Trap::AbortMemslot => "abort_memslot",
            Trap::AbortMmio => "abort_mmio",
            Trap::AbortInjected => "abort_injected",
            Trap::AbortRetry => "abort_retry",
            Trap::AbortSkipped => "abort_skipped",
            Trap::Hvc => "hvc",
            Trap::Smc => "smc",
            Trap::SysregEmulated => "sysreg_emulated",
            Trap::SysregUndef => "sysreg_undef",
            Trap::SmeUndef => "sme_undef",
            Trap::SveUndef => "sve_undef",
            Trap::FpUndef => "fp_undef",
            Trap::OtherUndef => "other_undef",
            Trap::Wfx => "wfx",
            Trap::Irq => "irq",
            Trap::Fiq => "fiq",
            Trap::Serror => "serror",
        }
    }
}

impl Counters {
    /// Adds one to a counter of this CPU.
    pub fn inc(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Adds one to a counter of this CPU and returns the new value (for sampled logging).
    pub fn bump(counter: &AtomicU64) -> u64 {
        let n = counter.load(Ordering::Relaxed) + 1;
        counter.store(n, Ordering::Relaxed);
        n
    }

    /// Counts one exit of class `t`; returns the new count (for sampled logging).
    pub fn trap(&self, t: Trap) -> u64 {
        Self::bump(&self.traps[t as usize])
    }
}

/// Whether the `n`-th event of a kind should be logged: the first 4, then every power of two,
/// so a guest that traps millions of times (the fuzzer) costs ~20 log lines per class.
pub fn log_sampled(n: u64) -> bool {
    n <= 4 || n.is_power_of_two()
}

/// The vCPU's outcome, as the reporter reads it.
pub mod status {
    /// Not started or still running.
    pub const RUNNING: u32 = 0;
    /// Reported and finished with status 0.
    pub const DONE: u32 = 1;
    /// Stopped by the hypervisor or finished with a non-zero status (see `Vcpu::why`).
    pub const FAILED: u32 = 2;
}

/// What the guest reported over HVC, and how the vCPU ended.
#[derive(Default)]
pub struct VcpuResult {
    /// One of `status::*`.
    pub status: AtomicU32,
    /// A short static reason when FAILED (an index into `crate::vcpu::REASONS`).
    pub why: AtomicU32,
    /// Whether HVC_REPORT was received.
    pub reported: AtomicU32,
    /// The guest's checksum.
    pub checksum: AtomicU64,
    /// The guest's own cycle count (CNTVCT ticks) for the workload.
    pub cycles: AtomicU64,
    /// Pages the guest says it touched.
    pub pages: AtomicU64,
    /// 1 once the vCPU has left the guest for good and its CPU no longer touches the stage-2
    /// table or the page pools (vcpu::run): teardown waits for it.
    pub left: AtomicU32,
}

/// Everything one CPU owns.
pub struct PerCpu {
    /// Index of this CPU (= vCPU id), 0-based in DTB order.
    pub index: usize,
    /// Its MPIDR affinity value from the DTB.
    pub mpidr: u64,
    /// Counters.
    pub counters: Counters,
    /// Fault-time histogram in CNTPCT ticks.
    pub hist: Box<[AtomicU32]>,
    /// The vCPU's outcome.
    pub result: VcpuResult,
    /// Free table pages owned by this CPU (touched only by this CPU).
    pub table_cache: UnsafeCell<PageStack>,
    /// Free data (guest backing) pages owned by this CPU (touched only by this CPU).
    pub data_cache: UnsafeCell<PageStack>,
    /// Pages sitting in `table_cache`, mirrored for the leak check on another CPU.
    pub table_cached: AtomicUsize,
    /// The table region's drain-request count this CPU last honoured (pool.rs).
    pub table_drains_seen: AtomicU64,
    /// The backing region's drain-request count this CPU last honoured (pool.rs).
    pub data_drains_seen: AtomicU64,
    /// CNTPCT when this CPU's table cache and the table region were first found empty while
    /// other CPUs still cached table pages (0 = not dry); see `vcpu::table_pool_dry`.
    pub table_dry_since: AtomicU64,
    /// Set while this CPU runs an `AT S1E1R` for the guest (arch::at_s1e1r): a synchronous
    /// exception taken at EL2 meanwhile is the AT's own (an external abort on its walk, say),
    /// and exceptions.rs answers it by skipping the AT with PAR_EL1.F = 1 instead of stopping
    /// the hypervisor. Only this CPU reads or writes it.
    pub at_in_progress: AtomicBool,
    /// The guest's current console line (emulated UART), touched only by this CPU.
    pub uart_line: UnsafeCell<Vec<u8>>,
}

// SAFETY: the UnsafeCell fields are only accessed by the CPU that owns them (`this_cpu()`), with
// exceptions masked at EL2, so there is never concurrent access; everything else is atomic.
unsafe impl Sync for PerCpu {}

static CPUS: Once<Box<[PerCpu]>> = Once::new();

/// Creates the per-CPU areas for the CPUs in the DTB. CPU0, once, before starting secondaries.
pub fn init(mpidrs: &[u64]) {
    CPUS.call_once(|| {
        mpidrs
            .iter()
            .enumerate()
            .map(|(index, &mpidr)| PerCpu {
                index,
                mpidr,
                counters: Counters::default(),
                hist: (0..HIST_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
                result: VcpuResult::default(),
                table_cache: UnsafeCell::new(PageStack::new()),
                data_cache: UnsafeCell::new(PageStack::new()),
                table_cached: AtomicUsize::new(0),
                table_drains_seen: AtomicU64::new(0),
                data_drains_seen: AtomicU64::new(0),
                table_dry_since: AtomicU64::new(0),
                at_in_progress: AtomicBool::new(false),
                uart_line: UnsafeCell::new(Vec::with_capacity(128)),
            })
            .collect()
    });
}

/// This CPU's index (TPIDR_EL2, set by boot.rs: 0 on CPU0, the BootRecord's on a secondary).
pub fn index() -> usize {
    TPIDR_EL2.get() as usize
}

/// All CPUs (empty before `init`).
pub fn all() -> &'static [PerCpu] {
    CPUS.get().map_or(&[], |b| &b[..])
}

/// This CPU's area. Panics only if called before `init`, which is a hypervisor bug.
pub fn this_cpu() -> &'static PerCpu {
    &all()[index()]
}

/// Records one hyp-side fault time.
pub fn record_fault_time(cpu: &PerCpu, ticks: u64) {
    let h = &cpu.hist[hist_bucket(ticks)];
    h.store(h.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let c = &cpu.counters;
    c.fault_ticks.store(
        c.fault_ticks.load(Ordering::Relaxed) + ticks,
        Ordering::Relaxed,
    );
    if ticks > c.fault_ticks_max.load(Ordering::Relaxed) {
        c.fault_ticks_max.store(ticks, Ordering::Relaxed);
    }
}
