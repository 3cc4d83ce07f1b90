//! Every barrier, TLB invalidation and cache maintenance instruction the hypervisor issues.
//!
//! Each function is one documented sequence, named for what it does, with the architectural
//! requirement it meets. Nothing else in the hypervisor contains DSB, ISB, TLBI or DC: callers
//! read like prose and a reviewer checks the ordering rules in one place.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

/// Whether FEAT_TTL is implemented (ID_AA64MMFR2_EL1.TTL != 0): TLBI by address may then carry
/// a translation-table-level hint. Set once by `detect_features` on CPU0 before any TLBI.
static HAS_TTL: AtomicBool = AtomicBool::new(false);

/// Whether FEAT_S2FWB is implemented (ID_AA64MMFR2_EL1.FWB != 0) and therefore used: every CPU
/// sets HCR_EL2.FWB and the stage-2 table encodes guest RAM as forced Write-Back (vm.rs). Set
/// once by `detect_features` on CPU0 before the VM is built; read-only afterwards.
static HAS_FWB: AtomicBool = AtomicBool::new(false);

/// Whether FEAT_TLBIRANGE is implemented (ID_AA64ISAR0_EL1.TLB == 0b0010, "outer shareable and
/// TLB range maintenance instructions"): `TLBI RIPAS2E1IS` / `RIPAS2LE1IS` may then invalidate a
/// whole IPA range in one instruction. Set once by `detect_features` on CPU0 before any TLBI.
static HAS_TLBI_RANGE: AtomicBool = AtomicBool::new(false);

/// ID_AA64MMFR1_EL1.HAFDBS (Arm ARM "ID_AA64MMFR1_EL1"): 0 none, 1 hardware Access flag, 2 and
/// up Access flag and dirty state (FEAT_HAFDBS). Set once by `detect_features` on CPU0.
static HAFDBS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// ID_AA64ISAR0_EL1.TLB, bits [59:56] (Arm ARM, "ID_AA64ISAR0_EL1"). aarch64-cpu 11.2 does not
/// name this field, so it is taken from the whole register read through the typed API.
fn id_aa64isar0_tlb() -> u64 {
    use aarch64_cpu::registers::{Readable, ID_AA64ISAR0_EL1};
    (ID_AA64ISAR0_EL1.get() >> 56) & 0xf
}

/// Reads the ID registers this file depends on. Call once, on CPU0, after the MMU is on.
pub fn detect_features() {
    use aarch64_cpu::registers::{Readable, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1};
    // Read as a number: aarch64-cpu 11.2 names 0b0001 with a typo (0xb0001).
    HAFDBS.store(
        ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::HAFDBS),
        Ordering::Relaxed,
    );
    // 0b0001: outer-shareable TLBI only; 0b0010: outer-shareable and range TLBI.
    HAS_TLBI_RANGE.store(id_aa64isar0_tlb() >= 0b0010, Ordering::Relaxed);
    HAS_TTL.store(
        ID_AA64MMFR2_EL1.read(ID_AA64MMFR2_EL1::TTL) != 0,
        Ordering::Relaxed,
    );
    HAS_FWB.store(
        ID_AA64MMFR2_EL1.read(ID_AA64MMFR2_EL1::FWB) != 0,
        Ordering::Relaxed,
    );
}

/// Whether TLBI IPA operations carry a level hint (for the report).
pub fn has_ttl() -> bool {
    HAS_TTL.load(Ordering::Relaxed)
}

/// Whether range TLBI (FEAT_TLBIRANGE) is used for stage-2 range invalidations.
pub fn has_tlbi_range() -> bool {
    HAS_TLBI_RANGE.load(Ordering::Relaxed)
}

/// ID_AA64MMFR1_EL1.HAFDBS: what hardware Access flag / dirty state management the CPU has
/// (options::check_cpu refuses `dirty=hw` below 2 and `workload=aging` below 1).
pub fn hafdbs() -> u64 {
    HAFDBS.load(Ordering::Relaxed)
}

/// Whether stage 2 forces guest RAM to Write-Back (FEAT_S2FWB, HCR_EL2.FWB = 1).
pub fn has_fwb() -> bool {
    HAS_FWB.load(Ordering::Relaxed)
}

/// ISB: a system register write (VBAR, SCTLR, TTBR, HCR, ...) takes effect for the
/// instructions after it only once the pipeline is resynchronised ("context synchronization").
#[inline(always)]
pub fn isb() {
    // SAFETY: ISB only synchronises the instruction stream; it touches no memory or registers.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// WFI: sleep until an interrupt is pending (taken or not: EL2 keeps IRQs masked). Under QEMU
/// this really idles the vCPU's host thread, unlike WFE or a spin loop.
#[inline(always)]
pub fn wfi() {
    // SAFETY: WFI only pauses this CPU; it touches no memory or registers.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// WFE: sleep until an event (SEV from another CPU, or the event register already set). Used for
/// short, bounded waits on another CPU's progress (a CPU_ON caller waiting for its pending
/// target to start: lifecycle.rs); under QEMU it yields the host thread to the other vCPUs.
#[inline(always)]
pub fn wfe() {
    // SAFETY: WFE only pauses this CPU; it touches no memory or registers.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// SEV: set the event register of every CPU, waking their WFE (the store that the waiters look
/// for was made before it; the waiters re-read with Acquire after waking).
#[inline(always)]
pub fn sev() {
    // SAFETY: SEV only signals an event; it touches no memory or registers.
    unsafe { asm!("sev", options(nomem, nostack, preserves_flags)) };
}

/// DSB ISHST: earlier stores (new page-table entries) are observable to every table walker in
/// the inner-shareable domain before anything after it. Used before ERET after installing a
/// mapping (invalid -> valid needs no TLBI, only visibility), and before a broadcast TLBI.
#[inline(always)]
pub fn dsb_ishst() {
    // SAFETY: a barrier: orders memory accesses, changes no state.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// DSB SY: every earlier memory access and cache maintenance completes before anything after
/// it. Used before turning the MMU on and before powering a CPU off or exiting.
#[inline(always)]
pub fn dsb_sy() {
    // SAFETY: a barrier: orders memory accesses, changes no state.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// The operand of TLBI IPAS2E1{IS}: IPA[51:12] in bits [39:0], plus a level hint in bits
/// [47:44] (TTL: TG=0b01 for 4 KiB granules, then the level) when FEAT_TTL is present and the
/// level is one a 4 KiB-granule leaf can have (1..=3). Without FEAT_TTL the hint bits are RES0.
fn ipas2_operand(ipa: u64, level: u8) -> u64 {
    let addr = (ipa >> 12) & ((1 << 40) - 1);
    if has_ttl() && (1..=3).contains(&level) {
        addr | (0b01 << 46) | (u64::from(level) << 44)
    } else {
        addr
    }
}

/// Zeroes the 4 KiB page at `pa` with unrolled 16-byte `stp xzr, xzr` stores, 512 bytes (32
/// stores, the most an immediate offset reaches) per loop iteration. Under TCG the stores are
/// the cost and the loop around them is overhead: 128 bytes per iteration took 0.74 µs per page,
/// 512 bytes 0.66 µs, while fully straight-line code (256 stores, no loop) was slower again
/// (0.80 µs) — interleaved boots side by side, docs/performance.md "Fault-path trimming".
/// Stores also beat `core::ptr::write_bytes` and a `dc zva` loop (one QEMU helper call per
/// 64-byte block; notes/qemu-el2-facts.md). The page is zeroed on every demand fault.
///
/// # Safety
/// `pa` must be 4 KiB aligned, mapped writable at EL2, and owned by the caller (no other CPU or
/// reference may access the page while it is zeroed).
pub unsafe fn zero_page(pa: u64) {
    // SAFETY: the caller guarantees the page is ours and mapped; the loop writes exactly the 4096
    // bytes from `pa` (8 iterations of 512 bytes) and clobbers only the two scratch registers.
    unsafe {
        asm!(
            "add {end}, {p}, #4096",
            "2:",
            "stp xzr, xzr, [{p}, #0]",
            "stp xzr, xzr, [{p}, #16]",
            "stp xzr, xzr, [{p}, #32]",
            "stp xzr, xzr, [{p}, #48]",
            "stp xzr, xzr, [{p}, #64]",
            "stp xzr, xzr, [{p}, #80]",
            "stp xzr, xzr, [{p}, #96]",
            "stp xzr, xzr, [{p}, #112]",
            "stp xzr, xzr, [{p}, #128]",
            "stp xzr, xzr, [{p}, #144]",
            "stp xzr, xzr, [{p}, #160]",
            "stp xzr, xzr, [{p}, #176]",
            "stp xzr, xzr, [{p}, #192]",
            "stp xzr, xzr, [{p}, #208]",
            "stp xzr, xzr, [{p}, #224]",
            "stp xzr, xzr, [{p}, #240]",
            "stp xzr, xzr, [{p}, #256]",
            "stp xzr, xzr, [{p}, #272]",
            "stp xzr, xzr, [{p}, #288]",
            "stp xzr, xzr, [{p}, #304]",
            "stp xzr, xzr, [{p}, #320]",
            "stp xzr, xzr, [{p}, #336]",
            "stp xzr, xzr, [{p}, #352]",
            "stp xzr, xzr, [{p}, #368]",
            "stp xzr, xzr, [{p}, #384]",
            "stp xzr, xzr, [{p}, #400]",
            "stp xzr, xzr, [{p}, #416]",
            "stp xzr, xzr, [{p}, #432]",
            "stp xzr, xzr, [{p}, #448]",
            "stp xzr, xzr, [{p}, #464]",
            "stp xzr, xzr, [{p}, #480]",
            "stp xzr, xzr, [{p}, #496]",
            "add {p}, {p}, #512",
            "cmp {p}, {end}",
            "b.lo 2b",
            p = inout(reg) pa => _,
            end = out(reg) _,
            options(nostack)
        );
    }
}

/// Stage-2 invalidation of one IPA, broadcast to every CPU in the inner-shareable domain.
///
/// Break-before-make requires that after an entry is made invalid, the TLB entries for it are
/// invalidated and that invalidation completes before a different valid entry is written.
/// 1. `dsb ishst`: the invalid entry is visible to all walkers before the TLBI is issued, so no
///    walker can refill the TLB from the old entry after the invalidation.
/// 2. `tlbi ipas2e1is`: drop stage-2 entries for the IPA (by IPA, all levels unless hinted).
/// 3. `dsb ish`: the stage-2 invalidation completes on all CPUs before the stage-1 one starts.
///    The Arm ARM requires this order: combined stage 1+2 entries can only be removed by a
///    stage-1 invalidation issued after the stage-2 one completed.
/// 4. `tlbi vmalle1is`: drop combined entries cached for the current VMID (by VA, which we do
///    not know, so all of them).
/// 5. `dsb ish`: that completes everywhere.
/// 6. `isb`: later instructions on this CPU see the completed maintenance.
pub fn s2_invalidate_ipa_broadcast(ipa: u64, level: u8) {
    let op = ipas2_operand(ipa, level);
    // SAFETY: TLB maintenance for the VMID in VTTBR_EL2 plus barriers; it never changes what a
    // valid mapping translates to, only forces walks. Always safe at EL2.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi ipas2e1is, {op}",
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            op = in(reg) op,
            options(nostack, preserves_flags)
        );
    }
}

/// Stage-2 invalidation of `pages` consecutive 4 KiB IPAs from `ipa`, broadcast, with no level
/// hint (the span may have held tables). The same requirements as `s2_invalidate_ipa_broadcast`,
/// met once for the whole batch: one `dsb ishst` before the first TLBI (every invalidated entry
/// is visible first), every `tlbi ipas2e1is` completed by one `dsb ish` before the single
/// stage-1 `tlbi vmalle1is`, then `dsb ish; isb`.
pub fn s2_invalidate_ipa_range_broadcast(ipa: u64, pages: u64) {
    dsb_ishst();
    for i in 0..pages {
        let op = ipas2_operand(ipa + i * 4096, 0);
        // SAFETY: TLB maintenance for the VMID in VTTBR_EL2; it only forces walks.
        unsafe { asm!("tlbi ipas2e1is, {op}", op = in(reg) op, options(nostack, preserves_flags)) };
    }
    // SAFETY: barriers and a stage-1 invalidation for the current VMID; always safe at EL2.
    unsafe {
        asm!(
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// The largest span `s2_invalidate_range_tlbirange` takes, in 4 KiB pages. One TLBI per SCALE
/// covers bits [5 * SCALE + 5 : 5 * SCALE + 1] of the (even) page count, so SCALE = 0..=3 cover
/// every even count below 2^21 (8 GiB); larger spans go by VMID.
pub const TLBI_RANGE_MAX_PAGES: u64 = (1 << 21) - 2;

/// The operand of TLBI RIPAS2E1IS / RIPAS2LE1IS (Arm ARM, "TLBI RIPAS2E1IS, TLBI RIPAS2E1ISNXS"):
/// bits [47:46] TG = 0b01 (4 KiB granule, the unit of BaseADDR and of the range), [45:44] SCALE,
/// [43:39] NUM, [38:37] TTL = 0b00 (no level hint: the span may hold tables of any level),
/// [36:0] BaseADDR = IPA[48:12]. It covers the
/// `(NUM + 1) * 2^(5 * SCALE + 1)` pages starting at BaseADDR.
fn ripas2_operand(ipa: u64, scale: u64, num: u64) -> u64 {
    ((ipa >> 12) & ((1 << 37) - 1)) | (num << 39) | (scale << 44) | (0b01 << 46)
}

/// `TLBI RIPAS2E1IS, op`: broadcast, every stage-2 entry (leaf and walk cache) in the range.
fn tlbi_ripas2e1is(op: u64) {
    // SAFETY: TLB maintenance for the VMID in VTTBR_EL2; it only forces walks. Written as its
    // SYS encoding (op1 = 4, CRn = 8, CRm = 0, op2 = 2) so the assembler needs no TLBIRANGE
    // feature flag; only executed when ID_AA64ISAR0_EL1.TLB says it exists.
    unsafe { asm!("sys #4, c8, c0, #2, {op}", op = in(reg) op, options(nostack, preserves_flags)) };
}

/// `TLBI RIPAS2LE1IS, op`: broadcast, only the last-level (leaf) stage-2 entries in the range.
fn tlbi_ripas2le1is(op: u64) {
    // SAFETY: as `tlbi_ripas2e1is`; SYS encoding op1 = 4, CRn = 8, CRm = 0, op2 = 6.
    unsafe { asm!("sys #4, c8, c0, #6, {op}", op = in(reg) op, options(nostack, preserves_flags)) };
}

/// Stage-2 invalidation of `pages` 4 KiB IPAs from `ipa` with range TLBIs (FEAT_TLBIRANGE; the
/// caller checked `has_tlbi_range` and `pages <= TLBI_RANGE_MAX_PAGES`), broadcast. `leaf_only`
/// selects RIPAS2LE1IS (only leaves changed: walk-cache entries may stay) over RIPAS2E1IS.
///
/// The span is split like Linux's `__flush_tlb_range_op`: the smallest range is 2 pages, so an
/// odd count is rounded up by one page (invalidating more is always allowed); then for SCALE
/// = 0, 1, 2, 3 the part `NUM + 1 = (pages >> (5 * SCALE + 1)) & 31` of the remaining count is
/// invalidated by one instruction: at most 4 TLBIs for any span.
///
/// The same requirements as `s2_invalidate_ipa_broadcast`, met once for the whole range:
/// 1. `dsb ishst`: every changed entry is visible to all walkers before the first TLBI.
/// 2. The range TLBIs.
/// 3. `dsb ish`: they complete on every CPU before the stage-1 invalidation (combined stage
///    1+2 entries are removed only by a stage-1 invalidation issued after the stage-2 one
///    completed).
/// 4. `tlbi vmalle1is`, 5. `dsb ish`, 6. `isb`.
pub fn s2_invalidate_range_tlbirange(ipa: u64, pages: u64, leaf_only: bool) {
    let mut left = (pages + 1) & !1;
    let mut addr = ipa & !0xfff;
    dsb_ishst();
    let mut scale = 0;
    while left > 0 && scale <= 3 {
        let unit = 1u64 << (5 * scale + 1);
        let chunks = (left / unit) & 31;
        if chunks > 0 {
            let op = ripas2_operand(addr, scale, chunks - 1);
            if leaf_only {
                tlbi_ripas2le1is(op);
            } else {
                tlbi_ripas2e1is(op);
            }
            addr += chunks * unit * 4096;
            left -= chunks * unit;
        }
        scale += 1;
    }
    // SAFETY: barriers and a stage-1 invalidation for the current VMID; always safe at EL2.
    unsafe {
        asm!(
            "dsb ish",
            "tlbi vmalle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// The same as `s2_invalidate_ipa_broadcast`, for this CPU only (non-shareable variants). Used
/// after relaxing permissions, which needs no break-before-make: a stale, stricter entry on
/// another CPU at worst causes a spurious permission fault there, which it handles by retrying.
pub fn s2_invalidate_ipa_local(ipa: u64, level: u8) {
    let op = ipas2_operand(ipa, level);
    // SAFETY: local TLB maintenance plus barriers, as above.
    unsafe {
        asm!(
            "dsb nshst",
            "tlbi ipas2e1, {op}",
            "dsb nsh",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            op = in(reg) op,
            options(nostack, preserves_flags)
        );
    }
}

/// Invalidates every stage-1 and stage-2 entry of the current VMID on every CPU. Used when a
/// whole range or table was unlinked (the walk caches may hold any entry below it):
/// `dsb ishst` makes the unlink visible before the TLBI, the `dsb ish` completes it everywhere,
/// the `isb` makes this CPU see it.
pub fn s2_invalidate_vmid_broadcast() {
    // SAFETY: TLB maintenance for the current VMID plus barriers; always safe at EL2.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Invalidates this CPU's EL1&0 TLB entries for the current VMID (stage 1 and combined). Required
/// after changing HCR_EL2.DC for the guest (badguest.rs, `HVC_STAGE1`): entries cached while DC
/// forced stage 1 off must not be used once the guest's own stage 1 is on, and vice versa. The
/// vCPU never leaves this CPU, so a local (non-broadcast) invalidation covers every TLB that can
/// hold them; `dsb nsh` completes it and `isb` orders it before the ERET back to the guest.
pub fn guest_invalidate_tlb_local() {
    // SAFETY: invalidating the guest's TLB entries is always safe; at worst it forces walks.
    unsafe {
        asm!(
            "dsb nshst",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Cold start of this CPU for the guest, once before its first entry (vm.rs configure_this_cpu,
/// after VTTBR_EL2 and HCR_EL2 are written):
/// 1. `isb`: the VTTBR_EL2 write is in effect, so the TLBI below uses the guest's VMID (a TLBI
///    "for the current VMID" reads VTTBR_EL2 indirectly; a direct write is only guaranteed
///    visible to it after a context synchronization event).
/// 2. `tlbi vmalls12e1`: the TLB contents out of reset are UNKNOWN and may hold entries tagged
///    with the guest's VMID (stage 1, stage 2 or combined) that no break-before-make of ours
///    ever invalidated; drop them. Local: only this CPU runs this vCPU, and each CPU does it.
/// 3. `ic iallu`: likewise nothing of an earlier life of this CPU may be fetched as guest code;
///    the guest image was cleaned to the point of unification before this CPU started
///    (guest_image.rs), so a refill reads the loaded code.
/// 4. `dsb nsh`: both complete on this CPU, 5. `isb`: before any later instruction (the ERET).
pub fn guest_cold_start_local() {
    // SAFETY: invalidating this CPU's TLB entries for the current VMID and its I-cache is always
    // safe: at worst it forces walks and refetches.
    unsafe {
        asm!(
            "isb",
            "tlbi vmalls12e1",
            "ic iallu",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Invalidates every EL2 stage-1 TLB entry on this CPU. Required before turning the EL2 MMU on:
/// the TLB contents out of reset are UNKNOWN. The leading `dsb sy` completes the page-table
/// writes; the trailing `dsb sy; isb` complete the invalidation before the SCTLR write.
pub fn el2_invalidate_tlb_local() {
    // SAFETY: invalidating EL2 TLB entries is always safe; at worst it forces walks.
    unsafe {
        asm!(
            "dsb sy",
            "tlbi alle2",
            "dsb sy",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Memory the hypervisor wrote for the guest ([pa, pa + len): a zeroed backing page or 2 MiB
/// chunk, a copied page, the loaded image) must be what the guest reads, even if the guest's
/// access is not cacheable: its stage 1 is off with HCR_EL2.DC = 0, or its stage 1 says
/// Non-cacheable. Such an access goes to memory past our caches.
/// - With FEAT_S2FWB (HCR_EL2.FWB = 1, `has_fwb`): stage 2 forces every guest access to RAM to
///   Write-Back, coherent with our cacheable writes: nothing to do, and nothing is spent on the
///   fault path.
/// - Without: clean and invalidate to the point of coherency (`clean_invalidate_dcache`, which
///   ends with `dsb sy`, so the maintenance completes before the page is published to stage 2).
///   The clean puts our writes in memory; the invalidate leaves no line that a later read of ours
///   (a migration copy) would take instead of what the guest then writes uncached.
pub fn guest_memory_written(pa: u64, len: u64) {
    if !has_fwb() {
        clean_invalidate_dcache(pa as usize, len as usize);
    }
}

/// Before the hypervisor reads guest memory the guest may have written with non-cacheable
/// accesses (a migration's source page): without FEAT_S2FWB, invalidate (clean and invalidate:
/// our own lines for it are clean, as every write of ours was cleaned by
/// `guest_memory_written`, so the clean writes nothing back) to the point of coherency, so the
/// read misses and fetches what is in memory. With FWB the guest's writes went through the cache.
pub fn guest_memory_before_read(pa: u64, len: u64) {
    if !has_fwb() {
        clean_invalidate_dcache(pa as usize, len as usize);
    }
}

/// Memory the hypervisor wrote that the guest may execute ([start, start + len): the loaded
/// image, a migrated page): clean each data cache line to the point of unification (DC CVAU),
/// where instruction fetches look, then `dsb ish` so the cleans complete before the I-cache
/// invalidation (`icache_invalidate_all_broadcast`) that must follow. Instruction fetches do not
/// snoop the data cache, with or without FWB (Arm ARM, "Synchronization and coherency issues
/// between data and instruction accesses": DC CVAU, DSB, IC, DSB, ISB).
pub fn clean_dcache_to_pou(start: u64, len: u64) {
    let line = dcache_line() as u64;
    let mut addr = start & !(line - 1);
    while addr < start + len {
        // SAFETY: DC CVAU on a mapped, cacheable address writes a dirty line back to the point
        // of unification; the data stays the same, so no Rust object changes.
        unsafe { asm!("dc cvau, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    // SAFETY: a barrier: completes the cleans above, changes no state.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// After `clean_dcache_to_pou` of code the guest may run: `ic ialluis` drops every instruction
/// cache line on every CPU of the inner-shareable domain (a line may hold what the page held
/// before; by-address IC IVAU would need the guest's VA and an unaliased I-cache), `dsb ish`
/// completes that everywhere, `isb` discards anything this CPU already fetched.
pub fn icache_invalidate_all_broadcast() {
    // SAFETY: instruction cache invalidation and barriers; at worst instructions are refetched.
    unsafe {
        asm!(
            "ic ialluis",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// The smallest data cache line size in bytes, from CTR_EL0.DminLine.
fn dcache_line() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Cleans and invalidates [start, start + len) to the point of coherency, then `dsb sy`.
///
/// A secondary CPU starts with its MMU and caches off, so it reads its boot record and writes
/// its stack straight to memory. Whatever CPU0 wrote there through its cache must reach memory
/// first (clean), and no stale line may later shadow what the secondary wrote (invalidate).
/// The DSB completes the maintenance before the CPU_ON call that starts the secondary.
pub fn clean_invalidate_dcache(start: usize, len: usize) {
    let line = dcache_line();
    let mut addr = start & !(line - 1);
    while addr < start + len {
        // SAFETY: DC CIVAC on a mapped, cacheable address writes back and drops one line; the
        // data stays the same, so no Rust object changes.
        unsafe { asm!("dc civac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    dsb_sy();
}

/// Translates `va` through the guest's stage 1 as an EL1 read (`AT S1E1R`) and returns the
/// resulting PAR_EL1, leaving the guest's own PAR_EL1 as it was.
///
/// Used to find the IPA of a stage-2 permission fault, where HPFAR_EL2 is UNKNOWN
/// (arch_decode::abort::plan): the EL1&0 regime's registers are the guest's, live in the CPU, so
/// the walk is the guest's. PAR_EL1 belongs to the guest (it may be between its own AT and the
/// read of the result), so it is saved and restored. The `isb` after the AT is required before
/// reading PAR_EL1: an AT result is only guaranteed visible to a later MRS after a context
/// synchronization event.
///
/// An AT can itself take a synchronous exception at EL2 (Arm ARM: a synchronous External abort
/// on a translation table walk of an AT instruction may be reported as an exception rather than
/// in PAR_EL1; KVM, "Survive synchronous exceptions caused by AT instructions"). The guest
/// controls the walk, so this must not stop the hypervisor: while the AT runs, this CPU's
/// `at_in_progress` marker is set, and exceptions.rs answers a synchronous EL2 exception taken at
/// the AT instruction itself (`at_s1e1r_insn`) by writing PAR_EL1 := F = 1 and returning to the
/// instruction after it. The caller sees a failed translation and re-runs the guest's access.
pub fn at_s1e1r(va: u64) -> u64 {
    use aarch64_cpu::registers::{Readable, Writeable, PAR_EL1};
    let cpu = crate::percpu::this_cpu();
    let saved = PAR_EL1.get();
    cpu.at_in_progress.store(true, Ordering::Relaxed);
    // SAFETY: AT only writes PAR_EL1 (restored below) and may fill TLBs for the guest's VMID;
    // it touches no memory of the hypervisor's. A fault on the walk is reported in PAR_EL1, or
    // as an EL2 exception that exceptions.rs turns into PAR_EL1.F = 1 (see above). The function
    // clobbers only x0 (its argument and result).
    let par = unsafe { at_s1e1r_asm(va) };
    cpu.at_in_progress.store(false, Ordering::Relaxed);
    PAR_EL1.set(saved);
    par
}

core::arch::global_asm!(
    r#"
    // u64 at_s1e1r_asm(u64 va): AT S1E1R, va; ISB; return PAR_EL1. The AT is at the global
    // label at_s1e1r_insn so that the EL2 exception handler can recognise an exception taken by
    // it (exceptions.rs, `at_fixup`), which resumes at the ISB with PAR_EL1 = 1 (F = 1).
    .text
    .global at_s1e1r_asm
    .global at_s1e1r_insn
at_s1e1r_asm:
at_s1e1r_insn:
    at      s1e1r, x0
    isb
    mrs     x0, par_el1
    ret
"#
);

unsafe extern "C" {
    fn at_s1e1r_asm(va: u64) -> u64;
    static at_s1e1r_insn: u8;
}

/// Whether an EL2 exception at `elr` was taken by the AT of `at_s1e1r` while this CPU ran it.
/// If so, the fixup (exceptions.rs) makes the AT report failure: PAR_EL1 := 1 (F = 1) and
/// returns to the instruction after it, the ISB.
pub fn at_fault_fixup(elr: u64) -> Option<u64> {
    use aarch64_cpu::registers::{Writeable, PAR_EL1};
    let at = &raw const at_s1e1r_insn as u64;
    if elr != at
        || !crate::percpu::this_cpu()
            .at_in_progress
            .load(Ordering::Relaxed)
    {
        return None;
    }
    // F = 1: "the translation failed"; the other fields are the hypervisor's (the caller restores
    // the guest's PAR_EL1 anyway).
    PAR_EL1.set(1);
    Some(at + 4)
}

/// After an abort whose IPA had to come from AT S1E1R and the AT failed (PAR_EL1.F = 1), the
/// access is re-run. If this CPU's TLB still held the stale stage-1 entry that made the access
/// fault (the guest changed its tables, but the entry survives until a TLBI that the guest may
/// issue only later), the re-run could fault the same way and the AT fail again for ever. So
/// drop this CPU's EL1&0 entries of the guest's VMID first (`tlbi vmalle1`, local: only this CPU
/// runs the vCPU), complete it (`dsb nsh`) and synchronise (`isb`) before the ERET. The
/// `dsb nshst` in front orders nothing of ours but keeps the sequence the same as the other
/// local invalidations. (KVM avoids the livelock the same way on this path.)
pub fn abort_retry_invalidate_local() {
    guest_invalidate_tlb_local();
}

/// A TLB conflict abort (FSC 0x30) taken to EL2: this CPU's TLB holds overlapping entries for
/// the address (Arm ARM D8 "TLB conflict aborts": the fix is a TLB invalidation). Drop every
/// stage 1 and stage 2 entry of the guest's VMID on this CPU (`tlbi vmalls12e1`, local: the
/// conflict is in this CPU's TLB), complete it (`dsb nsh`), synchronise (`isb`), then re-run.
pub fn tlb_conflict_invalidate_local() {
    // SAFETY: invalidating this CPU's TLB entries for the current VMID is always safe; at worst
    // it forces walks.
    unsafe {
        asm!(
            "dsb nshst",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Whether instruction fetches are coherent with data without I-cache maintenance
/// (CTR_EL0.DIC, bit 29: "instruction cache invalidation to the point of unification is not
/// required for data to instruction coherence").
fn ctr_dic() -> bool {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    ctr & (1 << 29) != 0
}

/// A stage-2 fault on an instruction fetch was served (a page mapped for execution): the
/// backing page may be recycled (freed by a teardown, a migration or a collapse and reused), and
/// the I-cache may still hold lines of what it held before, which the guest never wrote and so
/// never invalidated. Invalidate the I-cache (`icache_invalidate_all_broadcast`: IC IALLUIS, DSB
/// ISH, ISB) before the fetch re-runs, unless CTR_EL0.DIC = 1 says the I-cache needs no
/// invalidation for coherence. KVM does the same on exec faults
/// (`__invalidate_icache_guest_page`).
pub fn icache_sync_for_exec_fault() {
    if !ctr_dic() {
        icache_invalidate_all_broadcast();
    }
}
