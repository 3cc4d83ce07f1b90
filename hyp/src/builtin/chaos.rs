//! `chaos=on`: a pruner CPU that races the faulting vCPUs, and the `verify` workload's books.
//!
//! The pruner is one CPU that runs no guest (docs/robustness.md says why: continuous pressure
//! that does not depend on the guests' trap rate, fault-time statistics of the vCPUs that are not
//! inflated by pruner work, and it is how KVM's own adversaries run: MMU notifiers, khugepaged
//! and migration run on host threads, not inside vCPU exits). It loops, choosing at random:
//!
//! - **collapse** a 2 MiB span into one block, in the same mode as the fault path (shared in
//!   parallel mode: lock-free, racing the vCPUs' own faults into that span). Only valid if the
//!   memslot's backing of the span is 2 MiB-contiguous: chaos runs pre-back the data slot with
//!   one 2 MiB chunk per span (`prepare`), and a span whose backing a migration made
//!   non-contiguous is skipped (counted) until a compaction makes it contiguous again. Mapping a
//!   block over a non-contiguous backing would show the guest pages the memslot does not hold.
//! - **split**: map one 4 KiB page inside a block (the same `map` the fault path uses), which
//!   breaks the block and publishes a table with that page; the rest refaults lazily.
//! - **unmap** a random range, in the same mode as the fault path: shared in parallel mode
//!   (compare-exchange per leaf, empty tables unlinked and freed through RCU, one range
//!   invalidation: docs/protocol.md 9), the exclusive guard (KVM's `mmu_lock` for write) in
//!   locked mode, the baseline.
//! - **write-protect** a random range (shared in parallel mode, exclusive in locked mode;
//!   protocol 10), and later **re-enable** it page by page with `relax_perms`, the same call the
//!   vCPUs' write faults make in between.
//! - **migrate** a page (exclusive): unmap the IPA, copy the old page to a fresh one, repoint
//!   the memslot, then free the old page. The fault path looks the backing up inside its
//!   stage-2 section (vcpu.rs), so no faulter can hold the old PA across the migration.
//! - **compact** a span (exclusive): migrate all 512 pages of a span to one fresh 2 MiB chunk
//!   (khugepaged's copy-collapse), which makes the span collapsible again.
//!
//! The guests run `verify`, which counts every word that reads back wrong ("lost writes");
//! `check` recomputes the final pattern from the backing pages as well.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Once;
use stage2::{Attrs, Error, Mapped, Perms, Size, Stats};

use super::spare_cpu::SpareCpu;
use crate::arch;
use crate::memslot::Memslot;
use crate::options::{Mode, Selftest, Workload};
use crate::percpu::{self, PerCpu};
use crate::pool::{self, Kind, PAGE};
use crate::vm::{Vm, S2};

/// Bytes in a block span.
const SPAN: u64 = 2 << 20;
/// Pages in a block span.
const SPAN_PAGES: usize = (SPAN / PAGE) as usize;
/// Pause between two pruner operations, in microseconds. Every exclusive operation stops every
/// vCPU for a broadcast TLBI (up to a millisecond under TCG with busy peers), so a pruner that
/// never paused would leave the vCPUs little time to fault; this keeps both sides busy.
const PAUSE_US: u64 = 100;
/// Longest range `unmap` and `write_protect` pick, in pages (4 MiB).
const MAX_RANGE_PAGES: u64 = 1024;

/// Pruner operation counters (written by the pruner CPU only).
#[derive(Default)]
pub struct Ops {
    collapse: AtomicU64,
    collapse_skipped: AtomicU64,
    split: AtomicU64,
    unmap: AtomicU64,
    unmapped_leaves: AtomicU64,
    wprotect: AtomicU64,
    wprotected_leaves: AtomicU64,
    reenabled_leaves: AtomicU64,
    migrate: AtomicU64,
    compact: AtomicU64,
    retry: AtomicU64,
    no_memory: AtomicU64,
    errors: AtomicU64,
}

fn inc(c: &AtomicU64) {
    add(c, 1);
}

fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

static OPS: Once<Ops> = Once::new();
/// The pruner's start, its stop request and its answer (main.rs waits for it before teardown).
static PRUNER: SpareCpu = SpareCpu::new();

fn ops() -> &'static Ops {
    OPS.call_once(Ops::default)
}

/// What a vCPU's `verify` run reported (HVC_VERIFY).
#[derive(Default)]
pub struct VerifyResult {
    /// Whether HVC_VERIFY arrived.
    pub reported: AtomicBool,
    /// Passes over the region.
    pub passes: AtomicU64,
    /// Words that read back wrong.
    pub lost: AtomicU64,
    /// Words compared.
    pub words: AtomicU64,
}

static VERIFY: Once<Box<[VerifyResult]>> = Once::new();

/// Every CPU's `verify` result.
pub fn verify_results() -> &'static [VerifyResult] {
    VERIFY.call_once(|| {
        (0..percpu::all().len())
            .map(|_| VerifyResult::default())
            .collect()
    })
}

/// The pruner's CPU index when `chaos=on`: the first CPU after the vCPUs.
pub fn pruner_cpu(vm: &Vm) -> Option<usize> {
    SpareCpu::cpu(vm, vm.opts.chaos)
}

/// The memslot the pruner works on: the built-in guest's data slot, or a guest from files' RAM
/// (Linux's memory, its kernel and page tables included: the pruner does to it what a host's
/// MMU notifiers, khugepaged and migration do to a KVM guest's).
fn target(vm: &Vm) -> &Memslot {
    if vm.builtin() {
        crate::layout::data(vm)
    } else {
        &vm.slots[0]
    }
}

/// Pre-backs every whole 2 MiB span of the target slot with one 2 MiB-aligned contiguous chunk,
/// so that the pruner may collapse it into a block. Spans that already hold pages (a guest from
/// files: its kernel, DTB and initrd were copied in) stay as they are: the pruner's `compact`
/// makes them contiguous later. CPU0, before any vCPU runs.
pub fn prepare(vm: &Vm) -> Result<(), String> {
    let data = target(vm);
    if !data.ipa.is_multiple_of(SPAN) {
        return Err(format!(
            "chaos: data slot at {:#x} is not 2 MiB aligned",
            data.ipa
        ));
    }
    let spans = data.pages() / SPAN_PAGES;
    let mut skipped = 0;
    for s in 0..spans {
        if (0..SPAN_PAGES).any(|i| data.backing(s * SPAN_PAGES + i).is_some()) {
            skipped += 1;
            continue;
        }
        let Some(chunk) = vm.backing.alloc(SPAN_PAGES) else {
            return Err(String::from(
                "chaos: out of memory pre-backing the data slot",
            ));
        };
        for i in 0..SPAN_PAGES {
            let pa = chunk + i as u64 * PAGE;
            pool::zero_guest_page(pa);
            data.swap_backing(s * SPAN_PAGES + i, 0, pa)
                .map_err(|_| String::from("chaos: data slot already backed"))?;
        }
    }
    log::info!(
        "chaos: {} slot pre-backed with {} contiguous 2 MiB chunks ({skipped} spans already held \
         pages; {} tail pages on demand)",
        data.name,
        spans - skipped,
        data.pages() % SPAN_PAGES
    );
    Ok(())
}

/// A xorshift64* generator: reproducible enough, no state shared with anyone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Copies one 4 KiB guest page for a migration, with the cache maintenance a real CPU needs
/// (arch.rs): the source may hold what the guest wrote uncached (`guest_memory_before_read`), the
/// copy must reach memory for an uncached guest read (`guest_memory_written`), and it may be code
/// the guest runs (`clean_dcache_to_pou`; the caller invalidates the I-cache once per operation).
fn copy_page(from: u64, to: u64) {
    arch::guest_memory_before_read(from, PAGE);
    // SAFETY: both are whole pages of the backing region (identity-mapped RAM). `to` is a fresh
    // page only the caller owns; `from` is a backing page that no guest can write any more (its
    // stage-2 entry was removed and the invalidation completed, under the exclusive guard the
    // caller holds) and that no other hypervisor path frees. They never overlap.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, PAGE as usize) };
    arch::guest_memory_written(to, PAGE);
    arch::clean_dcache_to_pou(to, PAGE);
}

/// The pruner: runs on its own CPU until `stop`. Never returns an error to anyone: a failed
/// operation is counted and the loop goes on.
pub fn pruner(vm: &Vm, cpu: &PerCpu) {
    PRUNER.mark_started();
    let s2 = vm.s2.get();
    let ops = ops();
    let freq = CNTFRQ_EL0.get();
    let pause = freq * PAUSE_US / 1_000_000;
    let mut rng = Rng(CNTPCT_EL0.get() | 1);
    let data = target(vm);
    let spans = (data.pages() / SPAN_PAGES) as u64;
    let mut protected: Option<(u64, u64)> = None;
    log::info!(
        "chaos: pruner on cpu{} over {} ({} spans), mode {}",
        cpu.index,
        data.name,
        spans,
        vm.opts.mode.name()
    );
    while !PRUNER.stop_requested() {
        pool::top_up(cpu, vm.tables, vm.backing);
        let roll = rng.below(100);
        let span = rng.below(spans.max(1));
        let page = rng.below(data.pages() as u64);
        match roll {
            0..=19 if spans > 0 => collapse(vm, s2, cpu, ops, span),
            20..=39 => split(vm, s2, cpu, ops, page),
            40..=54 => {
                let (start, end) = random_range(data, &mut rng);
                unmap(vm, s2, cpu, ops, start, end);
            }
            55..=69 => match protected.take() {
                Some((start, end)) => reenable(vm, s2, cpu, ops, start, end),
                None => {
                    let r = random_range(data, &mut rng);
                    write_protect(vm, s2, cpu, ops, r.0, r.1);
                    protected = Some(r);
                }
            },
            70..=89 => migrate(vm, s2, cpu, ops, page as usize),
            90..=99 if spans > 0 => compact(vm, s2, cpu, ops, span as usize),
            _ => {}
        }
        // Free what this CPU retired once its grace period ended (never inside a section).
        s2.reclaim(cpu.index);
        PRUNER.pause(pause, core::hint::spin_loop);
    }
    if let Some((start, end)) = protected {
        reenable(vm, s2, cpu, ops, start, end);
    }
    s2.reclaim(cpu.index);
    PRUNER.mark_stopped();
}

/// Asks the pruner to stop and waits (up to a second) until it has left every stage-2 section.
/// Returns false if it did not stop (then teardown must not run).
pub fn stop(vm: &Vm) -> bool {
    pruner_cpu(vm).is_none() || PRUNER.request_stop_and_wait(1)
}

/// A random range of `data`, 1..=MAX_RANGE_PAGES pages.
fn random_range(data: &Memslot, rng: &mut Rng) -> (u64, u64) {
    let pages = data.pages() as u64;
    let first = rng.below(pages);
    let len = 1 + rng.below(MAX_RANGE_PAGES.min(pages - first));
    (data.ipa + first * PAGE, data.ipa + (first + len) * PAGE)
}

/// The guard the fault path would use for a non-exclusive operation in this mode (also the
/// pruner's unmap and write-protect: shared in parallel mode, exclusive in locked mode).
fn fault_guard<'a>(
    vm: &Vm,
    s2: &'a S2,
    cpu: &PerCpu,
) -> stage2::Guard<'a, crate::tables::HypPool, crate::tlb::HypTlb> {
    match vm.opts.mode {
        Mode::Parallel => s2.shared(cpu.index),
        Mode::Locked => s2.exclusive(cpu.index),
    }
}

fn count_map(ops: &Ops, r: Result<Mapped, Error>, done: &AtomicU64) {
    match r {
        Ok(Mapped::Installed | Mapped::Replaced) => inc(done),
        Ok(Mapped::Spurious) => {}
        Err(Error::Retry) => inc(&ops.retry),
        Err(Error::NoMemory) => inc(&ops.no_memory),
        Err(e) => {
            inc(&ops.errors);
            log::error!("chaos: stage-2 operation failed: {e:?}");
        }
    }
}

fn collapse(vm: &Vm, s2: &S2, cpu: &PerCpu, ops: &Ops, span: u64) {
    let data = target(vm);
    let first = span as usize * SPAN_PAGES;
    let g = fault_guard(vm, s2, cpu);
    // The backing is read inside the section: a migration (exclusive) cannot change it until we
    // leave, so the block we map is exactly what the memslot holds.
    let base = data.backing(first).unwrap_or(0);
    let contiguous = base != 0
        && base.is_multiple_of(SPAN)
        && (1..SPAN_PAGES).all(|i| data.backing(first + i) == Some(base + i as u64 * PAGE));
    if !contiguous {
        drop(g);
        inc(&ops.collapse_skipped);
        return;
    }
    let r = g.collapse(
        data.ipa + span * SPAN,
        base,
        Size::Block2M,
        Attrs::normal_rwx(),
    );
    drop(g);
    count_map(ops, r, &ops.collapse);
}

fn split(vm: &Vm, s2: &S2, cpu: &PerCpu, ops: &Ops, page: u64) {
    let data = target(vm);
    let ipa = data.ipa + page * PAGE;
    let g = fault_guard(vm, s2, cpu);
    let in_block = g.translate(ipa).is_some_and(|t| t.level < 3);
    let Some(pa) = data.backing(page as usize) else {
        return;
    };
    if !in_block {
        return;
    }
    let r = g.map(ipa, pa, Size::Page4K, Attrs::normal_rwx());
    drop(g);
    count_map(ops, r, &ops.split);
}

fn unmap(vm: &Vm, s2: &S2, cpu: &PerCpu, ops: &Ops, start: u64, end: u64) {
    // The guard's mode selects the operation: `unmap` under a shared guard is the lock-free one.
    let g = fault_guard(vm, s2, cpu);
    let r = g.unmap(start, end);
    drop(g);
    match r {
        Ok(done) => {
            inc(&ops.unmap);
            add(&ops.unmapped_leaves, done.leaves);
        }
        Err(e) => {
            inc(&ops.errors);
            log::error!("chaos: unmap {start:#x}..{end:#x} failed: {e:?}");
        }
    }
}

fn write_protect(vm: &Vm, s2: &S2, cpu: &PerCpu, ops: &Ops, start: u64, end: u64) {
    let g = fault_guard(vm, s2, cpu);
    let r = g.write_protect(start, end);
    drop(g);
    match r {
        Ok(done) => {
            inc(&ops.wprotect);
            add(&ops.wprotected_leaves, done.leaves);
        }
        Err(e) => {
            inc(&ops.errors);
            log::error!("chaos: write_protect {start:#x}..{end:#x} failed: {e:?}");
        }
    }
}

/// Gives write permission back to every still read-only leaf in `[start, end)` with the same
/// `relax_perms` the vCPUs' permission faults use.
fn reenable(vm: &Vm, s2: &S2, cpu: &PerCpu, ops: &Ops, start: u64, end: u64) {
    let mut ipa = start;
    while ipa < end {
        let g = fault_guard(vm, s2, cpu);
        let step = match g.translate(ipa) {
            Some(t) => {
                let size = 1u64 << (12 + 9 * (3 - u32::from(t.level)));
                if !t.attrs.perms.write {
                    match g.relax_perms(ipa, Perms::RWX) {
                        Ok(()) => inc(&ops.reenabled_leaves),
                        Err(Error::Retry) => inc(&ops.retry),
                        Err(e) => {
                            inc(&ops.errors);
                            log::error!("chaos: relax_perms {ipa:#x} failed: {e:?}");
                        }
                    }
                }
                size - (ipa & (size - 1))
            }
            None => PAGE,
        };
        drop(g);
        ipa += step;
    }
}

fn migrate(vm: &Vm, s2: &S2, cpu: &PerCpu, ops: &Ops, page: usize) {
    let data = target(vm);
    let ipa = data.ipa + page as u64 * PAGE;
    // The fresh page comes from this CPU's cache before the MMU lock is taken.
    let Some(fresh) = pool::take(cpu, Kind::Data, vm.backing) else {
        inc(&ops.no_memory);
        return;
    };
    let g = s2.exclusive(cpu.index);
    let Some(old) = data.backing(page) else {
        drop(g);
        pool::put(cpu, Kind::Data, vm.backing, fresh);
        return;
    };
    // 1. No guest can reach the old page any more once the unmap's invalidation completed.
    if let Err(e) = g.unmap(ipa, ipa + PAGE) {
        drop(g);
        pool::put(cpu, Kind::Data, vm.backing, fresh);
        inc(&ops.errors);
        log::error!("chaos: migrate: unmap {ipa:#x} failed: {e:?}");
        return;
    }
    // 2. Copy, 3. repoint the memslot: the next fault on the IPA maps the new page.
    if vm.opts.selftest == Some(Selftest::NoCopy) {
        // selftest=nocopy: a broken migration that must be caught as lost writes.
        pool::zero_guest_page(fresh);
    } else {
        copy_page(old, fresh);
        // No CPU may fetch instructions of what `fresh` held before (it is not mapped yet: the
        // next fault maps it, after this completed).
        arch::icache_invalidate_all_broadcast();
    }
    let swapped = data.swap_backing(page, old, fresh);
    drop(g);
    match swapped {
        // 4. Free the old page: nothing maps it, and every faulter that could have read its PA
        //    did so inside a section that ended before our exclusive guard was granted.
        Ok(()) => {
            pool::put(cpu, Kind::Data, vm.backing, old);
            inc(&ops.migrate);
        }
        Err(now) => {
            pool::put(cpu, Kind::Data, vm.backing, fresh);
            inc(&ops.errors);
            log::error!("chaos: migrate {ipa:#x}: backing changed under the MMU lock ({old:#x} -> {now:#x})");
        }
    }
}

fn compact(vm: &Vm, s2: &S2, cpu: &PerCpu, ops: &Ops, span: usize) {
    let data = target(vm);
    let Some(chunk) = vm.backing.alloc(SPAN_PAGES) else {
        inc(&ops.no_memory);
        return;
    };
    let first = span * SPAN_PAGES;
    let ipa = data.ipa + (first as u64) * PAGE;
    let mut old = [0u64; SPAN_PAGES];
    let g = s2.exclusive(cpu.index);
    if let Err(e) = g.unmap(ipa, ipa + SPAN) {
        drop(g);
        vm.backing.free(chunk, SPAN_PAGES);
        inc(&ops.errors);
        log::error!("chaos: compact: unmap {ipa:#x} failed: {e:?}");
        return;
    }
    let mut ok = true;
    for (i, slot_old) in old.iter_mut().enumerate() {
        let new = chunk + i as u64 * PAGE;
        let cur = data.backing(first + i).unwrap_or(0);
        if cur == 0 {
            pool::zero_guest_page(new);
        } else {
            copy_page(cur, new);
        }
        ok &= data.swap_backing(first + i, cur, new).is_ok();
        *slot_old = cur;
    }
    // As in `migrate`: nothing stale of the chunk may be fetched as guest code.
    arch::icache_invalidate_all_broadcast();
    drop(g);
    for pa in old.into_iter().filter(|&pa| pa != 0) {
        vm.backing.free(pa, 1);
    }
    if ok {
        inc(&ops.compact);
    } else {
        inc(&ops.errors);
        log::error!("chaos: compact {ipa:#x}: backing changed under the MMU lock");
    }
}

/// Whether this run's guest results are checked here (`verify`, `badguest`, `fuzz`, `psci`) instead of by the
/// generic per-workload checksum in report.rs.
pub fn checks_itself(vm: &Vm) -> bool {
    matches!(
        vm.opts.workload,
        Workload::Verify | Workload::Badguest | Workload::Fuzz | Workload::Psci
    )
}

/// Whether vCPU `id` runs `verify` in this run.
pub fn verifies(vm: &Vm, id: usize) -> bool {
    match vm.opts.workload {
        Workload::Verify | Workload::Psci => true,
        Workload::Badguest => !crate::badguest::is_bad_vcpu(vm, id),
        Workload::Fuzz => !crate::fuzz::fuzzes(vm, id),
        _ => false,
    }
}

/// Recomputes the final `verify` pattern of vCPU `id` from the backing pages: (checksum, every
/// word right, pages never backed). The last pass of `verify` writes the `demand` pattern.
fn check_backing(vm: &Vm, id: usize) -> (u64, bool, u64) {
    crate::report::check_demand_pattern(vm, id)
}

/// Checks the `verify` vCPUs once everything stopped: each reported, zero lost writes, and its
/// checksum equals the backing pages'. Pushes failures; returns (checksum ok, pages reported).
pub fn check_guests(vm: &Vm, failures: &mut Vec<String>) -> (bool, u64) {
    crate::badguest::release(vm);
    let mut ok = true;
    let mut pages = 0;
    let results = verify_results();
    for c in &percpu::all()[..vm.opts.vcpus] {
        let id = c.index;
        if !verifies(vm, id) {
            continue;
        }
        let v = &results[id];
        if !v.reported.load(Ordering::Acquire) || c.result.reported.load(Ordering::Acquire) == 0 {
            ok = false;
            failures.push(format!("vcpu {id} never reported its verify result"));
            continue;
        }
        let lost = get(&v.lost);
        if lost != 0 {
            ok = false;
            failures.push(format!("vcpu {id} saw {lost} lost writes"));
        }
        pages += c.result.pages.load(Ordering::Relaxed);
        let guest_sum = c.result.checksum.load(Ordering::Relaxed);
        let (hyp_sum, pattern_ok, missing) = check_backing(vm, id);
        if guest_sum != hyp_sum || !pattern_ok || missing != 0 {
            ok = false;
            failures.push(format!(
                "vcpu {id} checksum mismatch: guest {guest_sum:#018x}, backing pages \
                 {hyp_sum:#018x}, pattern {}, {missing} pages never backed",
                if pattern_ok { "ok" } else { "wrong" }
            ));
        }
    }
    (ok, pages)
}

/// Prints the chaos/verify section of the report and returns the RESULT fields it adds.
pub fn report(vm: &Vm, s: &Stats, failures: &mut Vec<String>) -> String {
    if !checks_itself(vm) && !vm.opts.chaos {
        return String::new();
    }
    if !vm.builtin() {
        // A guest from files checks its own memory (Linux: tests/guests' toucher); the pruner's
        // operations and their failures are reported here.
        return pruner_report(vm, s, failures);
    }
    let results = verify_results();
    let (mut passes, mut lost, mut words) = (0, 0, 0);
    for (id, r) in results.iter().enumerate().take(vm.opts.vcpus) {
        if verifies(vm, id) {
            passes += get(&r.passes);
            lost += get(&r.lost);
            words += get(&r.words);
        }
    }
    let mut fields = format!(" lost_writes={lost} verified_words={words} verify_passes={passes}");
    fields.push_str(&crate::badguest::report(vm, failures));
    fields.push_str(&pruner_report(vm, s, failures));
    crate::println!(
        "verify: {passes} passes, {words} words checked, {lost} lost writes (must be 0)"
    );
    fields
}

/// The pruner's lines and RESULT fields (empty without chaos=on); its failed operations fail
/// the run.
fn pruner_report(vm: &Vm, s: &Stats, failures: &mut Vec<String>) -> String {
    let mut fields = String::new();
    if vm.opts.chaos {
        let o = ops();
        if !PRUNER.started() {
            failures.push(String::from("chaos: the pruner never started"));
        }
        if get(&o.errors) != 0 {
            failures.push(format!(
                "chaos: {} pruner operations failed",
                get(&o.errors)
            ));
        }
        let total = get(&o.collapse)
            + get(&o.split)
            + get(&o.unmap)
            + get(&o.wprotect)
            + get(&o.migrate)
            + get(&o.compact);
        crate::println!(
            "chaos pruner (cpu{}): collapse {} (skipped, backing not contiguous: {}), split {}, \
             unmap {} ({} leaves), write-protect {} ({} leaves), re-enabled {} leaves, migrate {}, \
             compact {}, retries {}, no memory {}, errors {}",
            vm.opts.vcpus,
            get(&o.collapse),
            get(&o.collapse_skipped),
            get(&o.split),
            get(&o.unmap),
            get(&o.unmapped_leaves),
            get(&o.wprotect),
            get(&o.wprotected_leaves),
            get(&o.reenabled_leaves),
            get(&o.migrate),
            get(&o.compact),
            get(&o.retry),
            get(&o.no_memory),
            get(&o.errors)
        );
        crate::println!(
            "stage2 under chaos: bbm {}, splits {}, prunes {}, relaxes {}, grace periods {}, \
             max table pages waiting for a grace period {}, tables retired {} / reclaimed {}",
            s.bbm,
            s.splits,
            s.prunes,
            s.relaxes,
            s.grace_periods,
            s.max_deferred,
            s.tables_retired,
            s.tables_reclaimed
        );
        fields.push_str(&format!(
            " chaos=on duration={}s pruner_ops={total} collapse={} collapse_skipped={} split={} \
             unmap={} wprotect={} reenable={} migrate={} compact={} pruner_retries={} \
             pruner_nomem={} grace_periods={} max_deferred={}",
            vm.opts.duration_s,
            get(&o.collapse),
            get(&o.collapse_skipped),
            get(&o.split),
            get(&o.unmap),
            get(&o.wprotect),
            get(&o.reenabled_leaves),
            get(&o.migrate),
            get(&o.compact),
            get(&o.retry),
            get(&o.no_memory),
            s.grace_periods,
            s.max_deferred,
        ));
    }
    fields
}
