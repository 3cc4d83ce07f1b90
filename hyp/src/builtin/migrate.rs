//! `migrate=on`: pre-copy live migration of a running guest from files (Linux) into a second
//! buffer, by a CPU outside the guest, with the shared-mode dirty log; the copy is compared with
//! the guest's memory at the stop. docs/protocol.md 15 has the protocol, docs/guests.md how to
//! run it and what it reports.
//!
//! The migrator is one CPU that runs no guest (the first after the vCPUs, like chaos.rs's
//! pruner). It migrates in rounds, the first `migrate-after=` ms after the VM starts, the next
//! `PAUSE_MS` after each one ends, until the guest's run ends (so rounds overlap whatever the
//! guest is doing then, however long its boot took); each round migrates into the same buffer
//! from scratch:
//!
//! 1. **Logging on.** It closes the memslot's write freeze (`stage2::WriteFreeze`) and waits
//!    for the faults inside to leave, turns the logging policy on, opens the freeze, then
//!    write-protects every leaf of the RAM memslot (one range invalidation). A fault decides its
//!    policy inside the freeze's gate, so none that saw logging off can map a page writable
//!    after the write-protect passed it (KVM sets KVM_MEM_LOG_DIRTY_PAGES before it
//!    write-protects for the same reason).
//! 2. **Pass 0** copies every backed page into the buffer; an unbacked page is zeros (not
//!    copied: its buffer page is marked "zero" and the comparison checks the guest page is
//!    unbacked or all zero).
//! 3. **Passes 1..** get-and-clear the dirty log (`Guard::dirty_log_clear`: take the bits,
//!    write-protect exactly those pages, one invalidation) and copy the pages it reported, until
//!    a pass reports at most `STOP_PAGES` pages or `MAX_PASSES` passes ran.
//! 4. **Stop-and-copy.** Close the freeze, wait for it to drain, a final get-and-clear (every
//!    page written since the last pass is read-only again once its invalidation completed), copy
//!    what it reported. Memory now stands still: compare the whole memslot with the buffer page
//!    by page (the run fails on any difference), open the freeze, SEV.
//!
//! The freeze, the logging switch, the dirty bitmap and the logging map policy are the VM core's
//! (vmm/write_log.rs, armed on the VM by `prepare`): the fault path reads them and never names
//! this module; the migrator drives them. The guest's vCPUs never leave the guest for it: they
//! run on, and a vCPU whose write faults while the freeze is closed waits at EL2 (WFE, bounded)
//! and re-runs the access after the thaw. Logging is off between rounds (faults map pages writable again). A round the guest's
//! end cuts short is not a failure; no completed round is.
//!
//! `selftest=migrate-skip`: every pass after pass 0 (the stop's included) leaves out one page it
//! should copy, one whose content differs from the buffer: the comparison must find it and fail
//! the run (proof that the checker works).

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::{Mutex, Once};

use super::spare_cpu::SpareCpu;
use crate::arch;
use crate::harness::Guard;
use crate::memslot::Memslot;
use crate::options::{Mode, Selftest};
use crate::percpu::PerCpu;
use crate::pool::PAGE;
use crate::vm::Vm;
use crate::write_log::WriteLog;

/// Pre-copy passes after pass 0 at most, before the stop-and-copy whatever the dirty set.
pub const MAX_PASSES: usize = 8;
/// A pass that reports at most this many dirty pages ends the pre-copy phase (the stop then
/// copies about as many: 256 KiB).
pub const STOP_PAGES: u64 = 64;
/// Migration rounds at most, and the pause between two.
pub const MAX_ROUNDS: usize = 64;
const PAUSE_MS: u64 = 2000;
/// How long the migrator waits for the faults inside the freeze to drain (a vCPU's wait for the
/// thaw is bounded by vmm/write_log.rs).
const DRAIN_MS: u64 = 1000;
/// The buffer is allocated in chunks of this many pages (2 MiB).
const CHUNK_PAGES: usize = 512;

/// One migration round, for the report (pushed by the migrator when the round ends).
#[derive(Clone, Default)]
struct Round {
    /// Ticks from the VM's start to logging on and to the freeze of the stop (when in the
    /// guest's life the round ran: its uptime counts from about the VM's start).
    began_at: u64,
    froze_at: u64,
    /// Ticks of logging-on (freeze + drain + write-protect of the memslot) and leaves protected.
    enable_ticks: u64,
    enable_leaves: u64,
    /// Pages copied in pass 0 (backed pages) and its ticks.
    pass0_pages: u64,
    pass0_ticks: u64,
    /// Per pre-copy pass after pass 0: pages reported dirty, ticks (harvest + copy).
    passes: Vec<(u64, u64)>,
    /// The stop: pages the final harvest reported; ticks from the freeze to the end of the last
    /// copy (what a real migration's guest would be stopped for), to the end of the
    /// comparison, and to the thaw.
    stop_pages: u64,
    downtime_ticks: u64,
    compare_ticks: u64,
    stop_ticks: u64,
    /// Faults inside the freeze when the stop closed it, and the ticks the drain waited for
    /// them (part of the downtime).
    drained: u64,
    drain_ticks: u64,
    /// Pages compared (backed guest pages) and pages that differ (must be 0).
    compared: u64,
    diff: u64,
    /// `selftest=migrate-skip`: copies left out.
    skipped: u64,
}

/// What the migrator did.
#[derive(Default)]
struct Record {
    /// Completed rounds.
    rounds: Mutex<Vec<Round>>,
    /// A round the guest's end cut short (not a failure: the guest may power off at any time).
    cut_short: AtomicBool,
}

static RECORD: Once<Record> = Once::new();
/// Why the migration failed, if it did.
static ERROR: Mutex<Option<String>> = Mutex::new(None);
/// The migrator's start, its stop request and its answer (main.rs waits for it before teardown).
static MIGRATOR: SpareCpu = SpareCpu::new();

/// The migration's shared state, made by `prepare` (CPU0, before any vCPU runs).
struct State {
    /// The memslot's write log on the VM (vmm/write_log.rs): its freeze, logging switch and
    /// dirty bitmap, which the fault path reads and this module drives.
    wl: &'static WriteLog,
    /// The buffer: 2 MiB chunks of host memory (PAs), page `i` of the memslot at
    /// `chunks[i / 512] + (i % 512) * 4 KiB`.
    chunks: Vec<u64>,
}

static STATE: Once<State> = Once::new();

fn record() -> &'static Record {
    RECORD.call_once(Record::default)
}

fn fail(why: String) {
    log::error!("migrate: {why}");
    ERROR.lock().get_or_insert(why);
}

/// The migrator's CPU index when `migrate=on`: the first CPU after the vCPUs.
pub fn migrator_cpu(vm: &Vm) -> Option<usize> {
    SpareCpu::cpu(vm, vm.opts.migrate)
}

/// The memslot migrated: a guest from files' RAM.
fn target(vm: &Vm) -> &Memslot {
    &vm.slots[0]
}

/// Allocates the buffer (one page of host memory per page of the RAM memslot) and the dirty
/// bitmap. CPU0, before any vCPU runs. Errors say how much memory is missing.
pub fn prepare(vm: &'static Vm) -> Result<(), String> {
    let slot = target(vm);
    let pages = slot.pages();
    let chunks_needed = pages.div_ceil(CHUNK_PAGES);
    // The copy and, in the worst case, every page of the guest's RAM backed: both must fit, or
    // the guest could run out of memory in the middle of the run instead of failing here.
    let free = vm
        .backing
        .pages
        .saturating_sub(vm.backing.allocated_pages());
    let need = chunks_needed * CHUNK_PAGES + pages;
    if free < need {
        return Err(format!(
            "migrate=on needs {} MiB of host memory ({} MiB for the copy of the {} MiB guest \
             RAM, as much again for the RAM itself) and the hypervisor's guest-memory pool has \
             {} MiB free: boot QEMU with more memory (MEM=2G ./run-qemu.sh ...) or give the \
             guest less (ram=256M)",
            (need as u64 * PAGE) >> 20,
            chunks_needed * 2,
            slot.size >> 20,
            (free as u64 * PAGE) >> 20
        ));
    }
    let mut chunks = Vec::with_capacity(chunks_needed);
    for _ in 0..chunks_needed {
        match vm.backing.alloc(CHUNK_PAGES) {
            Some(pa) => chunks.push(pa),
            None => {
                for pa in chunks {
                    vm.backing.free(pa, CHUNK_PAGES);
                }
                // Enough pages, but not in 2 MiB-aligned runs (fragmented by the files' copy).
                return Err(format!(
                    "migrate=on: no 2 MiB run left for the copy of the {} MiB guest RAM (the \
                     pool is fragmented): boot QEMU with more memory (MEM=2G)",
                    slot.size >> 20
                ));
            }
        }
    }
    log::info!(
        "migrate: {} MiB copy buffer for the {} memslot ({pages} pages) in {} chunks",
        chunks_needed * 2,
        slot.name,
        chunks.len()
    );
    let wl = vm.write_log.call_once(|| WriteLog::new(slot));
    STATE.call_once(|| State { wl, chunks });
    record();
    Ok(())
}

fn ticks_to_ns(t: u64) -> u64 {
    (u128::from(t) * 1_000_000_000 / u128::from(CNTFRQ_EL0.get().max(1))) as u64
}

/// The guard for the migrator's stage-2 work: shared in parallel mode, exclusive in locked mode
/// (the baseline, as KVM arm64 does dirty logging today).
fn guard<'a>(vm: &'a Vm, cpu: &PerCpu) -> Guard<'a> {
    let s2 = vm.s2.get();
    match vm.opts.mode {
        Mode::Parallel => s2.shared(cpu.index),
        Mode::Locked => s2.exclusive(cpu.index),
    }
}

/// Whether the migration must stop: the guest's run ended (it powered off before the stop) or
/// the reporter asked.
fn must_stop() -> bool {
    MIGRATOR.stop_requested() || crate::lifecycle::ended()
}

/// The buffer page of memslot page `i`.
fn buffer_page(state: &State, i: usize) -> u64 {
    state.chunks[i / CHUNK_PAGES] + (i % CHUNK_PAGES) as u64 * PAGE
}

/// Copies guest page `from` into buffer page `to`. The source may hold what the guest wrote
/// uncached (`guest_memory_before_read`); the buffer is the hypervisor's own cacheable memory
/// and is only ever read by this CPU, so it needs no maintenance.
fn copy_page(from: u64, to: u64) {
    arch::guest_memory_before_read(from, PAGE);
    // SAFETY: both are whole identity-mapped pages of the guest-memory pool: `from` a backing
    // page of the migrated memslot (never freed while the migrator runs: chaos=on, the only
    // other freer, is refused with migrate=on, and teardown waits for `stop`), `to` a page of
    // the buffer only this CPU touches. They never overlap. The guest may write `from` during
    // the copy (a torn copy): such a page is dirty and is copied again by a later pass or the
    // stop, after its write-protect's invalidation completed.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, PAGE as usize) };
}

/// Whether guest page `from` and buffer page `to` hold the same bytes.
fn same_page(from: u64, to: u64) -> bool {
    arch::guest_memory_before_read(from, PAGE);
    // SAFETY: as in `copy_page`; read only.
    let (a, b) = unsafe {
        (
            core::slice::from_raw_parts(from as *const u64, (PAGE / 8) as usize),
            core::slice::from_raw_parts(to as *const u64, (PAGE / 8) as usize),
        )
    };
    // A fold of XORs, not `a == b`: the slice comparison becomes a call to memcmp, which in
    // this no_std build is compiler_builtins' byte loop (8x the iterations, ~10x slower under
    // TCG), and the stop-time comparison reads every backed page.
    a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether guest page `pa` is all zero.
fn zero_page(pa: u64) -> bool {
    arch::guest_memory_before_read(pa, PAGE);
    // SAFETY: as in `copy_page`; read only.
    unsafe { core::slice::from_raw_parts(pa as *const u64, (PAGE / 8) as usize) }
        .iter()
        .fold(0, |acc, &w| acc | w)
        == 0
}

/// The migrator's copy of the memslot: which buffer pages hold a copy (a clear bit: the page
/// was unbacked when last looked at, its copy is zeros).
struct Copy<'a> {
    vm: &'a Vm,
    state: &'a State,
    held: Vec<u64>,
    skip: bool,
    /// Copies `skip` left out in this round.
    skipped: u64,
}

impl Copy<'_> {
    /// Copies memslot page `i` (zeros if unbacked). Returns whether it was backed.
    fn page(&mut self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        match target(self.vm).backing(i) {
            Some(pa) => {
                copy_page(pa, buffer_page(self.state, i));
                self.held[w] |= bit;
                true
            }
            None => {
                self.held[w] &= !bit;
                false
            }
        }
    }

    /// Whether memslot page `i` matches its copy now.
    fn matches(&self, i: usize) -> bool {
        let held = self.held[i / 64] & (1 << (i % 64)) != 0;
        match (target(self.vm).backing(i), held) {
            (Some(pa), true) => same_page(pa, buffer_page(self.state, i)),
            (Some(pa), false) => zero_page(pa),
            (None, true) => false,
            (None, false) => true,
        }
    }

    /// Copies the pages in `taken` (one bit per memslot page); `selftest=migrate-skip` leaves
    /// out the first one whose content differs from the buffer. Returns pages copied.
    fn pages(&mut self, taken: &[u64]) -> u64 {
        let mut skip = self.skip;
        let mut n = 0;
        for (w, &bits) in taken.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                let i = w * 64 + b.trailing_zeros() as usize;
                b &= b - 1;
                if skip && !self.matches(i) {
                    skip = false;
                    self.skipped += 1;
                    continue;
                }
                self.page(i);
                n += 1;
            }
        }
        n
    }
}

/// One get-and-clear of the whole memslot into `taken` (cleared first); returns the pages it
/// reported. The report comes after the write-protect's invalidation completed
/// (`dirty_log_clear`), so copying them then copies every write that did not fault again.
fn harvest(vm: &Vm, cpu: &PerCpu, state: &State, taken: &mut [u64]) -> u64 {
    taken.iter_mut().for_each(|t| *t = 0);
    let g = guard(vm, cpu);
    let done = g.dirty_log_clear(
        &state.wl.log,
        state.wl.log.base(),
        state.wl.log.end(),
        |w, bits| {
            taken[w] |= bits;
        },
    );
    drop(g);
    vm.s2.get().reclaim(cpu.index);
    done.pages
}

/// Closes the freeze and waits (up to `DRAIN_MS`) for the faults inside to leave. Returns how
/// many were inside when it closed, or None (after opening it again) if they did not leave.
fn freeze(state: &State) -> Option<u64> {
    state.wl.freeze.freeze();
    let inside = state.wl.freeze.inside();
    let deadline = CNTPCT_EL0.get() + DRAIN_MS * CNTFRQ_EL0.get() / 1000;
    while !state.wl.freeze.drained() {
        if CNTPCT_EL0.get() > deadline {
            thaw(state);
            return None;
        }
        core::hint::spin_loop();
    }
    Some(inside)
}

fn thaw(state: &State) {
    state.wl.freeze.thaw();
    // Wake the vCPUs waiting for the thaw (write_log.rs, their WFE): the thaw's store is observable first, so a
    // woken vCPU reads it (a stale read would only make it wait for its event stream, ~1 ms).
    arch::dsb_ishst();
    arch::sev();
}

/// The migrator: runs on its own CPU from the VM's start: migration rounds, `PAUSE_MS` apart,
/// until the guest's run ends or the reporter stops it. Failures are recorded for the report
/// (the run then fails).
///
/// `waiter` (this CPU's EL2 timer wake-up, idle.rs) lets it sleep in WFI between rounds instead
/// of spinning: under QEMU TCG a spinning CPU takes a host core from the vCPUs.
pub fn run(vm: &Vm, cpu: &PerCpu, start_ticks: u64, waiter: Option<&crate::idle::Waiter>) {
    MIGRATOR.mark_started();
    if let Err(why) = rounds(vm, cpu, start_ticks, waiter) {
        fail(why);
    }
    MIGRATOR.mark_stopped();
}

/// How a round ended early.
enum Early {
    /// The guest's run ended (or the reporter asked): not a failure by itself.
    Ended,
    /// The protocol failed.
    Failed(String),
}

fn rounds(
    vm: &Vm,
    cpu: &PerCpu,
    start_ticks: u64,
    waiter: Option<&crate::idle::Waiter>,
) -> Result<(), String> {
    let Some(state) = STATE.get() else {
        return Err(String::from("no copy buffer (prepare did not run)"));
    };
    let freq = CNTFRQ_EL0.get();
    let slot = target(vm);
    let mut copy = Copy {
        vm,
        state,
        held: vec![0; slot.pages().div_ceil(64)],
        skip: vm.opts.selftest == Some(Selftest::MigrateSkip),
        skipped: 0,
    };
    let mut taken = vec![0u64; state.wl.log.words()];
    let mut next = start_ticks + vm.opts.migrate_after_ms * freq / 1000;
    for n in 1..=MAX_ROUNDS {
        while CNTPCT_EL0.get() < next {
            if must_stop() {
                return Ok(());
            }
            match waiter {
                Some(w) => w.nap(),
                None => core::hint::spin_loop(),
            }
        }
        log::info!(
            "migrate: cpu{} round {n}: migrating {} ({} MiB) in {} mode",
            cpu.index,
            slot.name,
            slot.size >> 20,
            vm.opts.mode.name()
        );
        match round(vm, cpu, state, &mut copy, &mut taken, start_ticks) {
            Ok(r) => {
                log::info!(
                    "migrate: round {n} done: pass 0 {} pages, {} passes, stop {} pages in {} us, \
                     {} pages differ",
                    r.pass0_pages,
                    r.passes.len(),
                    r.stop_pages,
                    ticks_to_ns(r.stop_ticks) / 1000,
                    r.diff
                );
                record().rounds.lock().push(r);
            }
            Err(Early::Ended) => {
                record().cut_short.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Err(Early::Failed(why)) => return Err(why),
        }
        next = CNTPCT_EL0.get() + PAUSE_MS * freq / 1000;
    }
    Ok(())
}

/// One migration round (module docs, steps 1 to 4).
fn round(
    vm: &Vm,
    cpu: &PerCpu,
    state: &State,
    copy: &mut Copy<'_>,
    taken: &mut [u64],
    start_ticks: u64,
) -> Result<Round, Early> {
    let slot = target(vm);
    let mut r = Round::default();
    // 1. Logging on: the policy switches while no fault is inside the gate, then the protect.
    let t0 = CNTPCT_EL0.get();
    r.began_at = t0 - start_ticks;
    if freeze(state).is_none() {
        return Err(Early::Failed(String::from(
            "faults did not drain from the write freeze (logging on)",
        )));
    }
    state.wl.set_logging(true);
    thaw(state);
    let g = guard(vm, cpu);
    let wp = g.write_protect(slot.ipa, slot.ipa + slot.size);
    drop(g);
    match wp {
        Ok(done) => r.enable_leaves = done.leaves,
        Err(e) => {
            return Err(Early::Failed(format!(
                "write-protect of the memslot failed: {e:?}"
            )))
        }
    }
    r.enable_ticks = CNTPCT_EL0.get() - t0;
    let result = logged(vm, cpu, state, copy, taken, start_ticks, &mut r);
    // Logging off (if not already, at the stop): an early end leaves it off too.
    state.wl.set_logging(false);
    result.map(|()| r)
}

/// Steps 2 to 4 of a round, with logging on.
fn logged(
    vm: &Vm,
    cpu: &PerCpu,
    state: &State,
    copy: &mut Copy<'_>,
    taken: &mut [u64],
    start_ticks: u64,
    r: &mut Round,
) -> Result<(), Early> {
    let slot = target(vm);
    let pages = slot.pages();
    // 2. Pass 0: every backed page.
    let t0 = CNTPCT_EL0.get();
    for i in 0..pages {
        r.pass0_pages += u64::from(copy.page(i));
        if i % 4096 == 0 && must_stop() {
            return Err(Early::Ended);
        }
    }
    r.pass0_ticks = CNTPCT_EL0.get() - t0;

    // 3. Pre-copy passes.
    copy.skipped = 0;
    for _ in 0..MAX_PASSES {
        if must_stop() {
            return Err(Early::Ended);
        }
        let t0 = CNTPCT_EL0.get();
        let dirty = harvest(vm, cpu, state, taken);
        copy.pages(taken);
        r.passes.push((dirty, CNTPCT_EL0.get() - t0));
        if dirty <= STOP_PAGES {
            break;
        }
    }
    if must_stop() {
        return Err(Early::Ended);
    }

    // 4. Stop-and-copy, then the comparison while memory stands still.
    let t0 = CNTPCT_EL0.get();
    r.froze_at = t0 - start_ticks;
    let Some(inside) = freeze(state) else {
        return Err(Early::Failed(String::from(
            "faults did not drain from the write freeze (stop)",
        )));
    };
    r.drained = inside;
    r.drain_ticks = CNTPCT_EL0.get() - t0;
    r.stop_pages = harvest(vm, cpu, state, taken);
    copy.pages(taken);
    let t_copied = CNTPCT_EL0.get();
    for i in 0..pages {
        r.compared += u64::from(slot.backing(i).is_some());
        if !copy.matches(i) {
            if r.diff < 8 {
                log::error!(
                    "migrate: page {i} (IPA {:#x}) differs from its copy at the stop",
                    slot.ipa + i as u64 * PAGE
                );
            }
            r.diff += 1;
        }
    }
    let t_compared = CNTPCT_EL0.get();
    // Logging off before the thaw: faults after it map writable again (nothing is logged).
    state.wl.set_logging(false);
    thaw(state);
    let t_thawed = CNTPCT_EL0.get();
    r.downtime_ticks = t_copied - t0;
    r.compare_ticks = t_compared - t_copied;
    r.stop_ticks = t_thawed - t0;
    r.skipped = copy.skipped;
    Ok(())
}

/// Asks the migrator to stop and waits (up to two seconds) until it left every stage-2 section.
/// Returns false if it did not (then teardown must not run).
pub fn stop(vm: &Vm) -> bool {
    migrator_cpu(vm).is_none() || MIGRATOR.request_stop_and_wait(2)
}

/// The median of `v` (sorted here); 0 if empty.
fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Prints the migration's lines and returns its RESULT fields (empty without migrate=on).
/// The run fails on any difference in any round, on a failed protocol step, when no round
/// completed (the guest ended first: a later `migrate-after=` cannot help, an earlier one or a
/// longer-running guest can), and when a vCPU gave up waiting for a thaw.
pub fn report(vm: &Vm, failures: &mut Vec<String>) -> String {
    if !vm.opts.migrate {
        return String::new();
    }
    let rec = record();
    let rounds = rec.rounds.lock().clone();
    if !MIGRATOR.started() {
        failures.push(String::from("migrate: the migrator never started"));
    }
    if let Some(why) = ERROR.lock().clone() {
        failures.push(format!("migrate: {why}"));
    } else if rounds.is_empty() {
        failures.push(format!(
            "migrate: no migration round completed before the guest's run ended (the first \
             began {} ms after the VM started: migrate-after=)",
            vm.opts.migrate_after_ms
        ));
    }
    let diff: u64 = rounds.iter().map(|r| r.diff).sum();
    if diff != 0 {
        failures.push(format!(
            "migrate: {diff} pages differ from their copy at the stop"
        ));
    }
    // vCPU faults that waited for a thaw (vmm/write_log.rs), and waits that gave up.
    let (waits, timeouts) = vm.write_log.get().map_or((0, 0), WriteLog::waits);
    if timeouts != 0 {
        failures.push(format!(
            "migrate: {timeouts} vCPU faults gave up waiting for the thaw"
        ));
    }
    let us = |t: u64| ticks_to_ns(t) / 1000;
    crate::println!(
        "migrate ({} mode, {} MiB): {} rounds completed{}; vCPU faults that waited for a thaw {}",
        vm.opts.mode.name(),
        target(vm).size >> 20,
        rounds.len(),
        if rec.cut_short.load(Ordering::Relaxed) {
            ", the last one cut short by the guest's end"
        } else {
            ""
        },
        waits
    );
    crate::println!(
        "  {:>5} {:>8} {:>9} {:>8} {:>9} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7} {:>5}  dirty pages per pass",
        "round",
        "start_ms",
        "enable_us",
        "pass0_pg",
        "pass0_us",
        "passes",
        "stop_pg",
        "drain_us",
        "downtm_us",
        "cmp_us",
        "stop_us",
        "drained",
        "diff"
    );
    for (n, r) in rounds.iter().enumerate() {
        let per: Vec<String> = r.passes.iter().map(|p| format!("{}", p.0)).collect();
        crate::println!(
            "  {:>5} {:>8} {:>9} {:>8} {:>9} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7} {:>5}  {}{}",
            n + 1,
            us(r.began_at) / 1000,
            us(r.enable_ticks),
            r.pass0_pages,
            us(r.pass0_ticks),
            r.passes.len(),
            r.stop_pages,
            us(r.drain_ticks),
            us(r.downtime_ticks),
            us(r.compare_ticks),
            us(r.stop_ticks),
            r.drained,
            r.diff,
            per.join(","),
            if r.skipped != 0 {
                format!(" (selftest=migrate-skip left out {})", r.skipped)
            } else {
                String::new()
            }
        );
    }
    let list = |f: &dyn Fn(&Round) -> String| {
        if rounds.is_empty() {
            String::from("none")
        } else {
            rounds.iter().map(f).collect::<Vec<_>>().join(",")
        }
    };
    let pass_pages: Vec<u64> = rounds
        .iter()
        .flat_map(|r| r.passes.iter().map(|p| p.0))
        .collect();
    format!(
        " migrate=on migrate_rounds={} migrate_cut_short={} migrate_diff={diff} \
         migrate_passes={} migrate_pass_pages={} migrate_pass0_pages={} migrate_stop_pages={} \
         migrate_stop_ns={} migrate_downtime_ns={} migrate_drain_ns={} migrate_compare_ns={} \
         migrate_enable_ns={} \
         migrate_began_ms={} migrate_froze_ms={} migrate_skipped={} migrate_waits={} \
         migrate_median_passes={} migrate_median_pass_pages={} migrate_median_stop_pages={} \
         migrate_median_stop_ns={} migrate_median_downtime_ns={} migrate_median_drain_ns={}",
        rounds.len(),
        u8::from(rec.cut_short.load(Ordering::Relaxed)),
        list(&|r| format!("{}", r.passes.len())),
        list(&|r| r
            .passes
            .iter()
            .map(|p| format!("{}", p.0))
            .collect::<Vec<_>>()
            .join("/")),
        list(&|r| format!("{}", r.pass0_pages)),
        list(&|r| format!("{}", r.stop_pages)),
        list(&|r| format!("{}", ticks_to_ns(r.stop_ticks))),
        list(&|r| format!("{}", ticks_to_ns(r.downtime_ticks))),
        list(&|r| format!("{}", ticks_to_ns(r.drain_ticks))),
        list(&|r| format!("{}", ticks_to_ns(r.compare_ticks))),
        list(&|r| format!("{}", ticks_to_ns(r.enable_ticks))),
        list(&|r| format!("{}", ticks_to_ns(r.began_at) / 1_000_000)),
        list(&|r| format!("{}", ticks_to_ns(r.froze_at) / 1_000_000)),
        list(&|r| format!("{}", r.skipped)),
        waits,
        median(rounds.iter().map(|r| r.passes.len() as u64).collect()),
        median(pass_pages),
        median(rounds.iter().map(|r| r.stop_pages).collect()),
        median(rounds.iter().map(|r| ticks_to_ns(r.stop_ticks)).collect()),
        median(
            rounds
                .iter()
                .map(|r| ticks_to_ns(r.downtime_ticks))
                .collect()
        ),
        median(rounds.iter().map(|r| ticks_to_ns(r.drain_ticks)).collect()),
    )
}
