//! Workload `badguest`: the bad-guest matrix (docs/robustness.md).
//!
//! The last vCPU does, one after the other, 23 things a guest should not do (or that are
//! hard to get right), and reports over `HVC_BADGUEST` what it saw for each: the ESR_EL1 of an
//! abort the hypervisor injected, an x0 answer, or a count. The hypervisor compares each with
//! the architecturally expected answer (hyp/src/builtin/badguest.rs). Every vCPU first joins a storm of
//! faults on one page (case 11); the others then run `verify`, which must still pass.

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::abi;

global_asm!(
    r#"
    // Vectors for the bad cases. "Current EL, SP_ELx, synchronous" (+0x200): x0 = ESR_EL1, and
    // the guest resumes after the faulting instruction (data aborts, UNDEF) or at the return
    // address of the `blr` that jumped somewhere bad (instruction aborts, EC 0x21).
    .section .text.vectors, "ax"
    .balign 0x800
    .global bg_vectors
bg_vectors:
    .rept 4
    .balign 0x80
    b       bg_unexpected
    .endr
    .balign 0x80
    mrs     x0, esr_el1
    lsr     x10, x0, #26
    cmp     x10, #0x21
    b.eq    1f
    mrs     x10, elr_el1
    add     x10, x10, #4
    msr     elr_el1, x10
    eret
1:  msr     elr_el1, x30
    eret
    .rept 3
    .balign 0x80
    b       bg_unexpected
    .endr
    // Lower EL (AArch64, then AArch32): only the AArch32 EL0 snippets of cases 16 to 18 come
    // from there; whichever vector it is, go back to the EL1 code that dropped to EL0
    // (guest/src/aarch32.rs) with the vector's offset in x9.
    .irp    offset, 0x400, 0x480, 0x500, 0x580, 0x600, 0x680, 0x700, 0x780
    .balign 0x80
    mov     x9, #\offset
    b       bg_lower_return
    .endr

    .text
bg_unexpected:
    movz    x0, #0x0002
    movk    x0, #0xC600, lsl #16
    mov     x1, #{unexpected}
    hvc     #0
2:  b       2b

    // Each probe returns the ESR_EL1 of the exception it took, or 0. They clobber x9..x11.
    .global bg_load
bg_load:
    mov     x9, x0
    mov     x0, #0
    ldr     x10, [x9]
    ret
    .global bg_store
bg_store:
    mov     x9, x0
    mov     x0, #0
    str     x1, [x9]
    ret
    .global bg_load_pair
bg_load_pair:
    mov     x9, x0
    mov     x0, #0
    ldp     x10, x11, [x9]
    ret
    .global bg_exec
bg_exec:
    stp     x29, x30, [sp, #-16]!
    mov     x9, x0
    mov     x0, #0
    blr     x9
    ldp     x29, x30, [sp], #16
    ret

    // Case 20: a write to ICC_SGI1R_EL1 (x0 = value) / a read of the IMPLEMENTATION DEFINED
    // encoding S3_0_C15_C0_0. Each returns the ESR_EL1 of the exception it took, or 0.
    .global bg_sysreg_write
bg_sysreg_write:
    mov     x9, x0
    mov     x0, #0
    msr     s3_0_c12_c11_5, x9
    ret
    .global bg_sysreg_read
bg_sysreg_read:
    mov     x0, #0
    mrs     x9, s3_0_c15_c0_0
    ret

    // Case 22: u64 bg_icc_pmr_read(): MRS ICC_PMR_EL1 (S3_0_C4_C6_0). Returns the ESR_EL1 of the
    // exception it took, or 0.
    .global bg_icc_pmr_read
bg_icc_pmr_read:
    mov     x0, #0
    mrs     x9, s3_0_c4_c6_0
    ret

    // Case 15: HVC #1 (a non-zero immediate) with x0 = function id, x1 = argument; returns x0.
    .global bg_hvc1
bg_hvc1:
    hvc     #1
    ret

    // Case 21: u64 bg_sme(u64 page, u64 *after): CPACR_EL1.SMEN = 0b11, `smstart sm`, then
    // store and load back x1 at `page` (not mapped yet: a stage-2 fault, taken in streaming mode
    // if smstart worked), `smstop sm`, SMEN = 0 again. Returns the ESR_EL1 the smstart took (0 if
    // none) and writes [after] = the value loaded back. Only general-purpose instructions run
    // between smstart and smstop (AdvSIMD is illegal in streaming mode).
    .global bg_sme
bg_sme:
    mov     x9, x0
    mov     x12, x1
    mrs     x10, cpacr_el1
    orr     x10, x10, #(3 << 24)
    msr     cpacr_el1, x10
    isb
    mov     x0, #0
    .inst   0xd503437f          // smstart sm (MSR SVCRSM, #1)
    mov     x11, x0
    movz    x13, #0x5e5e
    str     x13, [x9]
    ldr     x13, [x9]
    .inst   0xd503427f          // smstop sm (MSR SVCRSM, #0)
    str     x13, [x12]
    mrs     x10, cpacr_el1
    bic     x10, x10, #(3 << 24)
    msr     cpacr_el1, x10
    isb
    mov     x0, x11
    ret
"#,
    unexpected = const abi::STATUS_UNEXPECTED_EXCEPTION,
);

unsafe extern "C" {
    static bg_vectors: u8;
    fn bg_load(addr: u64) -> u64;
    fn bg_store(addr: u64, value: u64) -> u64;
    fn bg_load_pair(addr: u64) -> u64;
    fn bg_exec(addr: u64) -> u64;
    fn bg_sysreg_write(value: u64) -> u64;
    fn bg_sysreg_read() -> u64;
    fn bg_icc_pmr_read() -> u64;
    fn bg_hvc1(function: u64, arg: u64) -> u64;
    fn bg_sme(page: u64, after: *mut u64) -> u64;
}

/// PSCI CPU_ON (SMC64).
const PSCI_CPU_ON: u64 = 0xC400_0003;
/// PSCI (SMC32): PSCI_VERSION, CPU_ON_32, CPU_OFF, FEATURES.
const PSCI_VERSION: u64 = 0x8400_0000;
const PSCI_CPU_ON_32: u64 = 0x8400_0003;
const PSCI_CPU_OFF: u64 = 0x8400_0002;
const PSCI_FEATURES: u64 = 0x8400_000A;
/// Junk for the upper halves of SMC32 arguments (SMCCC: ignored by the callee).
const JUNK: u64 = 0xDEAD_BEEF_0000_0000;
/// A 2 MiB chunk (backing=2m block).
const CHUNK: u64 = 2 << 20;
/// An SMC function id nobody implements (SiP range).
const SMC_UNKNOWN: u64 = 0x8200_0123;

fn say(args: core::fmt::Arguments) {
    let _ = crate::Uart.write_fmt(args);
    let _ = crate::Uart.write_str("\n");
}

/// An SMC with three arguments; returns x0. With HCR_EL2.TSC it traps to the hypervisor.
fn smc3(function: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret;
    // SAFETY: the hypervisor serves the trapped SMC and touches only x0..x3; no memory of ours
    // is read or written.
    unsafe {
        asm!("smc #0", inlateout("x0") function => ret, in("x1") a1, in("x2") a2, in("x3") a3,
             options(nostack));
    }
    ret
}

/// Installs the bad-case vectors.
fn install_vectors() {
    // SAFETY: bg_vectors is 2 KiB-aligned code in our image; the ISB makes VBAR_EL1 take effect
    // for the exceptions the probes provoke.
    unsafe {
        asm!("msr vbar_el1, {}", "isb", in(reg) &raw const bg_vectors as u64, options(nostack));
    }
}

fn report(case: u64, obs1: u64, obs2: u64) {
    say(format_args!(
        "badguest case {case}: observed {obs1:#x} / {obs2:#x}"
    ));
    crate::hvc(abi::HVC_BADGUEST, case, obs1, obs2);
}

/// Case 11: every vCPU meets at a barrier, then all write their own word of one untouched page
/// at once. Returns the words of the page that are not what their writer wrote.
fn storm(id: u64, vcpus: u64) -> u64 {
    let sync = (abi::STORM_PAGE - abi::PAGE_SIZE) as *const AtomicU64;
    // SAFETY: the page before STORM_PAGE is in the image slot, unused by the image and the
    // stacks, and only ever accessed atomically by this function on every vCPU; it is 8-byte
    // aligned and lives for the whole run.
    let (arrive, leave) = unsafe { (&*sync, &*sync.add(1)) };
    arrive.fetch_add(1, Ordering::AcqRel);
    while arrive.load(Ordering::Acquire) < vcpus {
        core::hint::spin_loop();
    }
    let page = abi::STORM_PAGE as *mut u64;
    // SAFETY: word `id` of the storm page is this vCPU's own (id < vcpus <= 512).
    unsafe { write_volatile(page.add(id as usize), storm_value(id)) };
    leave.fetch_add(1, Ordering::AcqRel);
    while leave.load(Ordering::Acquire) < vcpus {
        core::hint::spin_loop();
    }
    (0..vcpus)
        // SAFETY: reads of the storm page, written above by every vCPU before the barrier.
        .filter(|&w| unsafe { read_volatile(page.add(w as usize)) } != storm_value(w))
        .count() as u64
}

fn storm_value(id: u64) -> u64 {
    0x5707_0000_0000_0000 | (id + 1)
}

const AF: u64 = 1 << 10;
/// A stage-1 level-1 block descriptor for Normal memory (AttrIndx 1, inner shareable) at `pa`.
fn s1_normal(pa: u64) -> u64 {
    const SH_INNER: u64 = 3 << 8;
    const BLOCK: u64 = 0b01;
    pa | SH_INNER | (1 << 2) | BLOCK
}

/// Writes the level-1 table at `table` (the first page of our own data region): `entries`, then
/// zeroes (invalid).
fn s1_table(table: u64, entries: &[u64]) {
    let t = table as *mut u64;
    for i in 0..512 {
        let e = entries.get(i).copied().unwrap_or(0);
        // SAFETY: `table` is the first page of our own data region, unused by anything else.
        unsafe { write_volatile(t.add(i), e) };
    }
}

/// Turns our stage-1 MMU on with the level-1 table at `table` (after asking the hypervisor to
/// clear HCR_EL2.DC, which forces stage 1 off). `tcr_extra` is ORed into TCR_EL1 (case 19: HA).
/// The table must map our code, stack, data and the UART at the same addresses as with the MMU
/// off (entries 0 and 1 as in case 8).
fn mmu_on(table: u64, tcr_extra: u64) {
    // MAIR: attr0 Device-nGnRnE, attr1 Normal WB RW-allocate. TCR: T0SZ 25 (39-bit VA, start at
    // level 1), inner/outer WB WA, inner shareable, 4K granule, TTBR1 walks off, IPS 48 bits.
    let mair: u64 = 0xFF << 8;
    let tcr: u64 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (0b101 << 32) | tcr_extra;
    crate::hvc(abi::HVC_STAGE1, 1, 0, 0);
    // SAFETY: the table maps our code, stack, data and the UART at the same addresses as with
    // the MMU off, so execution continues at the next instruction; no Rust object moves.
    unsafe {
        asm!(
            "dsb ish",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {tmp}, sctlr_el1",
            "orr {tmp}, {tmp}, #1",        // M
            "orr {tmp}, {tmp}, #(1 << 2)", // C
            "orr {tmp}, {tmp}, #(1 << 12)",// I
            "msr sctlr_el1, {tmp}",
            "isb",
            mair = in(reg) mair, tcr = in(reg) tcr, ttbr = in(reg) table, tmp = out(reg) _,
            options(nostack),
        );
    }
}

/// Turns our stage-1 MMU off, then has the hypervisor set HCR_EL2.DC again, with no memory
/// access in between (it would be Device memory).
fn mmu_off() {
    // SAFETY: as for `mmu_on`; the HVC touches only x0..x3.
    unsafe {
        asm!(
            "mrs {tmp}, sctlr_el1",
            "bic {tmp}, {tmp}, #1",
            "bic {tmp}, {tmp}, #(1 << 2)",
            "bic {tmp}, {tmp}, #(1 << 12)",
            "msr sctlr_el1, {tmp}",
            "isb",
            "hvc #0",
            tmp = out(reg) _,
            inlateout("x0") abi::HVC_STAGE1 => _, in("x1") 0u64, lateout("x2") _, lateout("x3") _,
            options(nostack),
        );
    }
}

/// Case 8: a stage-1 table in our own region that maps VA 0..1 GiB to devices (the UART),
/// 1..2 GiB to RAM (identity), 2 GiB to an IPA outside every memslot and 3 GiB to an IPA beyond
/// the stage-2 input range (1 << 44). Returns the ESR_EL1 of the two loads through it.
fn stage1_escape(table: u64) -> (u64, u64) {
    const XN: u64 = 3 << 53;
    s1_table(
        table,
        &[
            AF | 0b01 | XN,                 // attr 0: Device-nGnRnE
            AF | s1_normal(0x4000_0000),    // identity: image, stacks, data
            AF | s1_normal(0xFF_C000_0000), // outside every memslot
            AF | s1_normal(1 << 44),        // beyond the 40-bit stage-2 input range
        ],
    );
    mmu_on(table, 0);
    // SAFETY: the loads fault (nothing backs those IPAs) and our vector returns their ESR.
    let (outside, beyond) = unsafe { (bg_load(0x8000_0000), bg_load(0xC000_0000)) };
    mmu_off();
    (outside, beyond)
}

/// Case 19: the stage-1 walk of a load sets an access flag in a write-protected 2 MiB block.
/// The table (first page of our region) maps VA 2..3 GiB to RAM with AF = 0 and TCR_EL1.HA = 1,
/// so the walker's AF update writes the table page: a stage-2 permission fault with S1PTW = 1
/// and WnR = 0. Returns (the load read the right value and AF got set: 1, pages of the rest of
/// our region in that chunk that stage 2 maps writable afterwards).
fn s1ptw_af(base: u64, size: u64) -> (u64, u64) {
    const XN: u64 = 3 << 53;
    const HA: u64 = 1 << 39;
    const MAGIC: u64 = 0x5170_0000_0000_0019;
    let target = base + 8 * abi::PAGE_SIZE;
    s1_table(
        base,
        &[
            AF | 0b01 | XN,
            AF | s1_normal(0x4000_0000),
            s1_normal(0x4000_0000), // AF = 0: the walker sets it
        ],
    );
    // SAFETY: `target` is a word of our own region, unused by the other cases.
    unsafe { write_volatile(target as *mut u64, MAGIC) };
    let wp = crate::hvc(abi::HVC_WP_CHUNK, base, 0, 0);
    mmu_on(base, HA);
    // SAFETY: VA 0x8000_0000 + x maps IPA 0x4000_0000 + x (entry 2), i.e. `target`.
    let value = unsafe { read_volatile((target - 0x4000_0000 + 0x8000_0000) as *const u64) };
    mmu_off();
    // SAFETY: entry 2 of our table, in our own region.
    let af = unsafe { read_volatile((base + 16) as *const u64) } & AF != 0;
    // The rest of our region inside the 2 MiB chunk of the table page (the table page excepted).
    let chunk_end = (base | (CHUNK - 1)) + 1;
    let end = chunk_end.min(base + size);
    let writable = crate::hvc(
        abi::HVC_WP_COUNT,
        base + abi::PAGE_SIZE,
        end - base - abi::PAGE_SIZE,
        0,
    );
    say(format_args!(
        "case 19: write-protected {wp} leaves; load read {value:#x}, AF set {af}, {writable} other pages writable"
    ));
    (u64::from(value == MAGIC && af), writable)
}

/// Case 23: a store through the guest's own stage-1 mapping whose VA is not the IPA (VA 2..3 GiB
/// -> IPA 1..2 GiB) into a write-protected 2 MiB chunk: a stage-2 permission fault with
/// S1PTW = 0, for which HPFAR_EL2 is UNKNOWN, so the hypervisor must find the IPA by `AT S1E1R`
/// of FAR_EL2 (a VA here). Returns (the word landed at its IPA: 1, pages of the rest of our region
/// in that chunk that stage 2 maps writable afterwards: 1, the stored page alone).
fn at_translated_store(base: u64, size: u64) -> (u64, u64) {
    const XN: u64 = 3 << 53;
    const MAGIC: u64 = 0xA7A7_0000_0000_0023;
    let target = base + 9 * abi::PAGE_SIZE;
    s1_table(
        base,
        &[
            AF | 0b01 | XN,
            AF | s1_normal(0x4000_0000),
            AF | s1_normal(0x4000_0000),
        ],
    );
    let _ = crate::hvc(abi::HVC_WP_CHUNK, base, 0, 0);
    mmu_on(base, 0);
    // SAFETY: VA 0x8000_0000 + x maps IPA 0x4000_0000 + x (entry 2), i.e. `target`, a word of
    // our own region unused by the other cases.
    unsafe { write_volatile((target - 0x4000_0000 + 0x8000_0000) as *mut u64, MAGIC) };
    mmu_off();
    // SAFETY: `target`, identity-mapped with the MMU off.
    let landed = unsafe { read_volatile(target as *const u64) } == MAGIC;
    let chunk_end = (base | (CHUNK - 1)) + 1;
    let end = chunk_end.min(base + size);
    let writable = crate::hvc(
        abi::HVC_WP_COUNT,
        base + abi::PAGE_SIZE,
        end - base - abi::PAGE_SIZE,
        0,
    );
    say(format_args!(
        "case 23: store through VA {:#x} landed {landed}, {writable} other pages writable",
        target - 0x4000_0000 + 0x8000_0000
    ));
    (u64::from(landed), writable)
}

/// Case 10: LSE atomics and an exclusive pair on pages never touched: each must fault in and
/// then succeed. Returns (ldadd ok, cas + ldxr/stxr ok).
fn atomics(a: u64, b: u64) -> (u64, u64) {
    let old: u64;
    // SAFETY: `a` is an untouched, 8-byte aligned word of our own region.
    unsafe {
        asm!(".arch_extension lse", "ldaddal {v}, {old}, [{p}]", v = in(reg) 5u64,
             old = out(reg) old, p = in(reg) a, options(nostack));
    }
    // SAFETY: as above.
    let after = unsafe { read_volatile(a as *const u64) };
    let mut cmp: u64 = 0;
    // SAFETY: `b` is another untouched, aligned word of our own region.
    unsafe {
        asm!(".arch_extension lse", "casal {c}, {n}, [{p}]", c = inout(reg) cmp,
             n = in(reg) 7u64, p = in(reg) b, options(nostack));
    }
    // SAFETY: `b + 8` is in the same page; the exclusive pair retries until it succeeds.
    let word = unsafe { &*((b + 8) as *const AtomicU64) };
    word.fetch_add(3, Ordering::AcqRel);
    // SAFETY: as above.
    let cas_after = unsafe { read_volatile(b as *const u64) };
    let ok1 = u64::from(old == 0 && after == 5);
    let ok2 = u64::from(cmp == 0 && cas_after == 7 && word.load(Ordering::Acquire) == 3);
    (ok1, ok2)
}

/// The bad vCPU's cases, in order.
fn bad_cases(id: u64, base: u64, size: u64, vcpus: u64) {
    let page = abi::PAGE_SIZE;
    install_vectors();
    // SAFETY: each probe provokes at most one synchronous exception, which our vector turns
    // into its return value; none touches memory that Rust owns.
    unsafe {
        // 1. Load and store outside every memslot and device.
        report(
            1,
            bg_load(abi::UNMAPPED_PROBE),
            bg_store(abi::UNMAPPED_PROBE, 1),
        );
        // 2. A store to the UART's neighbour page: MMIO to nothing.
        report(2, bg_store(abi::UART_BASE + abi::UART_SIZE, 0x41), 0);
        // 3. A load pair from the UART: a data abort without a syndrome (ISV = 0).
        report(3, bg_load_pair(abi::UART_BASE), 0);
    }
    // 4. Unknown HVC; 5. unknown (trapped) SMC.
    report(4, crate::hvc(abi::HVC_UNKNOWN, 0, 0, 0), 0);
    report(5, smc3(SMC_UNKNOWN, 0, 0, 0), 0);
    // 6. PSCI CPU_ON: a target that is no vCPU, then a real vCPU with an entry outside RAM.
    let entry = abi::RAM_BASE;
    report(
        6,
        smc3(PSCI_CPU_ON, 0xFF_FFFF, entry, 0),
        smc3(PSCI_CPU_ON, 0, abi::UNMAPPED_PROBE, 0),
    );
    // SAFETY: as for cases 1-3.
    unsafe {
        // 7. Instruction fetch from an unmapped IPA and from the (non-executable) UART.
        report(7, bg_exec(abi::UNMAPPED_PROBE), bg_exec(abi::UART_BASE));
    }
    // 8. Own stage-1 tables that reach outside the IPA space.
    let (outside, beyond) = stage1_escape(base);
    report(8, outside, beyond);
    // 9. A store straddling into an untouched page of the memslot (must fault in and land),
    //    and one straddling off the end of guest memory (our region ends the data slot).
    let straddle = base + 2 * page - 4;
    // SAFETY: both halves are in our own region; page 1 is written first so that only the
    // second half faults.
    let landed = unsafe {
        write_volatile((base + page) as *mut u64, 1);
        let e = bg_store(straddle, 0x1122_3344_5566_7788);
        e == 0
            && read_volatile(straddle as *const u32) == 0x5566_7788
            && read_volatile((straddle + 4) as *const u32) == 0x1122_3344
    };
    // SAFETY: the first half is our last page, the second is outside every memslot.
    let off_end = unsafe {
        write_volatile((base + size - page) as *mut u64, 1);
        bg_store(base + size - 4, 0x1122_3344_5566_7788)
    };
    report(9, u64::from(landed), off_end);
    // 10. LSE atomics / exclusives on pages never touched (pages 4 and 5 of our region).
    let (ldadd, cas) = atomics(base + 4 * page, base + 5 * page);
    report(10, ldadd, cas);
    // 11. The storm was at the start (every vCPU had to be there): report it now.
    // 12. Touch the overcommit slot page by page until the hypervisor cannot back one.
    let mut touched = 0;
    let mut esr = 0;
    for i in 0..abi::OVERCOMMIT_SIZE / page {
        // SAFETY: as for cases 1-3.
        esr = unsafe { bg_store(abi::OVERCOMMIT_BASE + i * page, i + 1) };
        if esr != 0 {
            break;
        }
        touched += 1;
    }
    report(12, touched, esr);
    let _ = id;
    let _ = vcpus;
    smccc_cases();
    aarch32_cases();
    // 19. A stage-1 walk's access-flag update in a write-protected 2 MiB block.
    let (loaded, writable) = s1ptw_af(base, size);
    report(19, loaded, writable);
    // SAFETY: as for cases 1-3: each access traps (or not) and our vector returns its ESR.
    unsafe {
        // 20. A trapped system register the hypervisor does not know: a write to ICC_SGI1R_EL1
        //     (value 0: no target) and a read of an IMPLEMENTATION DEFINED encoding.
        report(20, bg_sysreg_write(0), bg_sysreg_read());
    }
    // 21. Streaming mode: SME enabled for EL1, `smstart sm`, then a stage-2 fault.
    let mut after = 0;
    // SAFETY: SME_PAGE is an unused page of the image slot; `after` is ours.
    let esr = unsafe { bg_sme(abi::SME_PAGE, &raw mut after) };
    report(21, esr, u64::from(after == 0x5e5e));
    // 22. The GIC is not offered to this guest: ID_AA64PFR0_EL1.GIC reads 0, and an ICC_*
    //     access (ICC_PMR_EL1, which with HCR_EL2.IMO = 1 would reach the virtual interface)
    //     is UNDEFINED like ICC_SGI1R_EL1's in case 20.
    let pfr0: u64;
    // SAFETY: reading an ID register (trapped and emulated) has no side effects.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
    // SAFETY: as for cases 1-3: the read traps (or not) and our vector returns its ESR.
    let pmr = unsafe { bg_icc_pmr_read() };
    report(22, (pfr0 >> 24) & 0xF, pmr);
    // 23. A permission fault whose IPA only AT S1E1R can give (non-identity stage 1, S1PTW = 0).
    let (landed, writable) = at_translated_store(base, size);
    report(23, landed, writable);
}

/// W0 of an SMC32 answer (SMCCC: a 32-bit call returns its results in W0..W3).
fn w0(x: u64) -> u64 {
    x & 0xFFFF_FFFF
}

/// Cases 13 to 15: SMCCC calling-convention corners.
fn smccc_cases() {
    // 13. SMC32 with junk in the upper halves: PSCI_VERSION (junk in x0[63:32]) and
    //     PSCI_FEATURES(CPU_OFF) (junk in x1[63:32]).
    report(
        13,
        w0(smc3(JUNK | PSCI_VERSION, 0, 0, 0)),
        w0(smc3(PSCI_FEATURES, JUNK | PSCI_CPU_OFF, 0, 0)),
    );
    // 14. CPU_ON_32 for vCPU 0 with an entry in RAM: clean, then junk in every upper half.
    let entry = abi::RAM_BASE;
    report(
        14,
        w0(smc3(PSCI_CPU_ON_32, 0, entry, 0)),
        w0(smc3(JUNK | PSCI_CPU_ON_32, JUNK, JUNK | entry, JUNK)),
    );
    // 15. HVC #1 (SMCCC: the immediate must be 0): PSCI_VERSION (SMC32: W0) and HVC_QUERY for
    //     the vCPU count (served, it would answer the count).
    // SAFETY: the hypervisor touches only x0..x3 of ours for an HVC.
    let (version, query) = unsafe {
        (
            bg_hvc1(PSCI_VERSION, 0),
            bg_hvc1(abi::HVC_QUERY, abi::QUERY_VCPUS),
        )
    };
    report(15, w0(version), query);
}

/// Cases 16 to 18: AArch32 EL0 (T32) accesses to the emulated UART and outside every memslot.
fn aarch32_cases() {
    if !crate::aarch32::el0_has_aarch32() {
        say(format_args!(
            "badguest: EL0 cannot run AArch32 (ID_AA64PFR0_EL1.EL0)"
        ));
        for case in 16..=18 {
            report(case, u64::MAX, u64::MAX);
        }
        return;
    }
    use crate::aarch32::{run, Snippet};
    // A carriage return: the hypervisor's console drops it, so the stores print nothing.
    let cr = u64::from(b'\r');
    // 16. A 16-bit STR to the UART's data register, then two ADDs: both must run (r2 = 3).
    let b = run(Snippet::Store, cr, abi::UART_BASE, 0);
    say(format_args!(
        "case 16: r2 {}, back through +{:#x} with ESR {:#x}",
        b.r[2], b.vector, b.esr
    ));
    report(16, b.r[2] & 0xFFFF_FFFF, b.esr);
    // 17. The same store (STRB) first in an ITTE EQ block: then runs, else does not (r2 = 5).
    let b = run(Snippet::ItStore, cr, abi::UART_BASE, 0);
    say(format_args!(
        "case 17: r2 {}, back through +{:#x} with ESR {:#x}",
        b.r[2], b.vector, b.esr
    ));
    report(17, b.r[2] & 0xFFFF_FFFF, b.esr);
    // 18. A 16-bit LDR from an IPA outside every memslot: the injected external abort must come
    //     through +0x600 (lower EL, AArch32) with ELR_EL1 at the load and SPSR_EL1 = User, T32.
    let entry = Snippet::Load.entry();
    let b = run(Snippet::Load, 0, abi::UNMAPPED_PROBE, 0);
    let frame_ok = b.elr == entry && b.spsr & 0x3F == 0x30;
    say(format_args!(
        "case 18: ESR {:#x} through +{:#x}, ELR {:#x} (load at {entry:#x}), SPSR {:#x}",
        b.esr, b.vector, b.elr, b.spsr
    ));
    report(18, b.esr, b.vector | u64::from(!frame_ok));
}

/// Runs the workload of vCPU `id`.
pub fn workload(id: u64, base: u64, size: u64) -> ! {
    let vcpus = crate::hvc(abi::HVC_QUERY, abi::QUERY_VCPUS, 0, 0);
    let wrong = storm(id, vcpus);
    if id + 1 != vcpus {
        crate::verify::workload(id, base, size)
    }
    report(11, wrong, vcpus);
    bad_cases(id, base, size, vcpus);
    say(format_args!("vcpu {id}: badguest: all cases done"));
    crate::finish(0)
}
