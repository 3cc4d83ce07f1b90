//! Workload `fuzz`: a seeded random stream of what a guest can do to reach the hypervisor, on
//! every vCPU but vCPU 0, which runs `verify` for as long as they fuzz (docs/robustness.md
//! "Guest fuzzer"). With one vCPU, it fuzzes.
//!
//! Each fuzzing vCPU draws `ops=` operations from its own PRNG (seed `seed=` and its id), each
//! from one op class (abi.rs `FUZZ_CLASS_*`): generated MRS/MSR, HVC, SMC, data accesses to
//! random IPAs, drops to AArch64/A32/T32 EL0, SVE, SME, and an FP/SVE register survival check.
//! The instructions are written into page 0 of its own region (the code buffer) and made
//! executable before each call. Its own vectors (vectors.rs) count every exception by
//! ESR_EL1.EC and skip or end what caused it. Oracles, checked here, count violations: an EL0
//! excursion's return by SVC from the wrong place or with wrong marker registers, an exception
//! from AArch32 at the AArch64 vector (or the reverse), an SME instruction that did not UNDEF,
//! an SVE instruction that UNDEFed although SVE is offered, and a V/Z register that changed
//! across exits. The counts go to the hypervisor (`HVC_FUZZ`), which checks and reports them.

mod deny;
mod gen;
mod rng;
mod target;
mod vectors;

use core::arch::asm;
use core::fmt::Write;

use crate::abi;
use gen::Code;
use rng::Rng;
use target::Layout;
use vectors::{Recorder, State};

macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(crate::Uart, $($arg)*);
    }};
}

/// `HVC_FUZZ` with sub-call `sub` and x2..x4; returns x0..x3.
fn fuzz_call(sub: u64, a2: u64, a3: u64, a4: u64) -> [u64; 4] {
    let (r0, r1, r2, r3);
    // SAFETY: HVC traps to our hypervisor, which serves HVC_FUZZ (abi.rs) and writes only
    // x0..x3; no memory of ours is read or written.
    unsafe {
        asm!("hvc #0",
             inlateout("x0") abi::HVC_FUZZ => r0, inlateout("x1") sub => r1,
             inlateout("x2") a2 => r2, inlateout("x3") a3 => r3, in("x4") a4,
             options(nostack));
    }
    [r0, r1, r2, r3]
}

/// The whole `fuzz` workload of one vCPU: verify or fuzz, report, finish.
pub fn workload(id: u64, base: u64, size: u64, vcpus: u64) -> ! {
    let [seed, ops, role, classes] = fuzz_call(abi::FUZZ_PARAMS, 0, 0, 0);
    if role == abi::FUZZ_ROLE_VERIFY {
        verifier(id, base, size)
    }
    if size < 4 * abi::PAGE_SIZE + 8192 {
        say!("vcpu {id}: fuzz needs a region of at least 24K");
        crate::finish(abi::STATUS_BAD_WORKLOAD)
    }
    let mut f = Fuzzer::new(id, base, size, vcpus, seed);
    say!(
        "vcpu {id}: fuzz: seed {seed:#x}, {ops} ops, classes {classes:#x}, SVE {}, AArch32 EL0 \
         {} (replay: seed={seed:#x})",
        f.sve,
        f.aarch32
    );
    let enabled: heapless_classes::List = heapless_classes::List::from_mask(classes);
    let mut state = State::new();
    let rec = vectors::install(&raw mut state);
    let mut counts = [0u64; abi::FUZZ_CLASSES];
    let progress = if ops >= 100_000 { ops / 10 } else { u64::MAX };
    for i in 0..ops {
        let class = enabled.pick(&mut f.rng);
        f.op(rec, i, class);
        counts[class as usize] += 1;
        if (i + 1) % progress == 0 {
            say!("vcpu {id}: fuzz: {} of {ops} ops", i + 1);
        }
    }
    let state = rec.snapshot();
    for (ec, &n) in state.ec.iter().enumerate() {
        if n != 0 {
            fuzz_call(abi::FUZZ_COUNT, abi::FUZZ_TABLE_EC, ec as u64, n);
        }
    }
    for (c, &n) in counts.iter().enumerate() {
        fuzz_call(abi::FUZZ_COUNT, abi::FUZZ_TABLE_CLASS, c as u64, n);
    }
    for (v, &n) in f.violations.iter().enumerate() {
        fuzz_call(abi::FUZZ_COUNT, abi::FUZZ_TABLE_VIOLATION, v as u64, n);
    }
    let violations: u64 = f.violations.iter().sum();
    say!(
        "vcpu {id}: fuzz done: {ops} ops, {} exceptions, {violations} violations",
        state.exceptions
    );
    fuzz_call(abi::FUZZ_DONE, ops, violations, 0);
    crate::finish(0)
}

/// The enabled op classes, without a heap.
mod heapless_classes {
    use super::Rng;
    use crate::abi;

    /// Up to `FUZZ_CLASSES` class numbers.
    pub struct List {
        items: [u64; abi::FUZZ_CLASSES],
        len: usize,
    }

    impl List {
        /// The classes whose bit is set in `mask` (all of them if none is).
        pub fn from_mask(mask: u64) -> Self {
            let mut l = Self {
                items: [0; abi::FUZZ_CLASSES],
                len: 0,
            };
            for c in 0..abi::FUZZ_CLASSES as u64 {
                if mask & 1 << c != 0 || mask == 0 {
                    l.items[l.len] = c;
                    l.len += 1;
                }
            }
            l
        }

        /// A random enabled class.
        pub fn pick(&self, rng: &mut Rng) -> u64 {
            rng.pick(&self.items[..self.len])
        }
    }
}

/// `verify` passes over the own region until every fuzzing vCPU is done, then the reports
/// `verify` makes (HVC_VERIFY, HVC_REPORT): its checksum proves the fuzzers did not disturb it.
fn verifier(id: u64, base: u64, size: u64) -> ! {
    let freq: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack)) };
    let (mut passes, mut lost, mut words, mut ticks) = (0, 0, 0, 0);
    let checksum = loop {
        // 10 ms of salted passes, then the final pattern: a lost write shows as the other one.
        let o = crate::verify::run(id, base, size, freq / 100);
        passes += o.passes;
        lost += o.mismatches;
        words += o.words;
        ticks += o.ticks;
        if fuzz_call(abi::FUZZ_RUNNING, 0, 0, 0)[0] == 0 {
            break o.checksum;
        }
    };
    say!(
        "vcpu {id}: verify under fuzzing done: {passes} passes, {words} words checked, {lost} \
         lost writes, checksum {checksum:#018x}"
    );
    crate::hvc(abi::HVC_VERIFY, passes, lost, words);
    crate::hvc(abi::HVC_REPORT, checksum, ticks, size / abi::PAGE_SIZE);
    crate::finish(0)
}

/// ESR_EL1.EC values the oracles look at.
const EC_UNKNOWN: u64 = 0x00;
const EC_SVE: u64 = 0x19;
const EC_SVC32: u64 = 0x11;
const EC_SVC64: u64 = 0x15;

/// PSTATE bits for the EL0 excursions (SPSR_EL1 layouts, Arm ARM C5.2.18): A, I, F masked
/// (and D for AArch64), M = EL0t / User, T = Thumb.
const SPSR_A64_EL0: u64 = 0x3C0;
const SPSR_A32_USR: u64 = 0x1C0 | 0x10;
const SPSR_T: u64 = 0x20;
/// SPSR.M[4]: the exception came from AArch32.
const SPSR_NRW: u64 = 0x10;

/// One fuzzing vCPU's generator state.
struct Fuzzer {
    id: u64,
    rng: Rng,
    layout: Layout,
    /// The code buffer (page 0 of the region) and the EL0 stack top (end of page 1).
    code: u64,
    el0_sp: u64,
    sve: bool,
    aarch32: bool,
    /// The CPU has FEAT_FGT (asked with HVC_QUERY/QUERY_FGT): SMPRI_EL1 and TPIDR2_EL0 must
    /// UNDEF.
    fgt: bool,
    violations: [u64; abi::FUZZ_VIOLATIONS],
}

impl Fuzzer {
    fn new(id: u64, base: u64, size: u64, vcpus: u64, seed: u64) -> Self {
        let pfr0: u64;
        // SAFETY: reading an ID register has no side effects (the hypervisor may trap it and
        // answer with its sanitised value).
        unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
        enable_fp_sve_sme();
        Self {
            id,
            rng: Rng::new(seed, id),
            layout: Layout {
                scratch: base + 2 * abi::PAGE_SIZE,
                region_end: base + size,
                slot_end: abi::DATA_BASE + vcpus * size,
                last: id + 1 == vcpus,
            },
            code: base,
            el0_sp: base + 2 * abi::PAGE_SIZE,
            sve: (pfr0 >> 32) & 0xF != 0,
            aarch32: pfr0 & 0xF == 2,
            fgt: crate::hvc(abi::HVC_QUERY, abi::QUERY_FGT, 0, 0) == 1,
            violations: [0; abi::FUZZ_VIOLATIONS],
        }
    }

    /// Writes `code` into the code buffer and makes it executable; returns its address.
    fn load(&self, code: &Code) -> u64 {
        for (i, pair) in code.bytes[..code.len].chunks(2).enumerate() {
            let h = u16::from_le_bytes([pair[0], pair[1]]);
            // SAFETY: the code buffer is page 0 of this vCPU's own region, used by nothing
            // else; `len` <= CODE_MAX < 4096.
            unsafe { core::ptr::write_volatile((self.code as *mut u16).add(i), h) };
        }
        vectors::sync_code(self.code, code.len as u64);
        self.code
    }

    fn violation(&mut self, kind: u64, op: u64, class: u64, detail: core::fmt::Arguments) {
        let n = &mut self.violations[kind as usize];
        *n += 1;
        if *n <= 4 {
            say!(
                "vcpu {}: FUZZ VIOLATION {} at op {op} (class {}): {detail}",
                self.id,
                abi::FUZZ_VIOLATION_NAMES[kind as usize],
                abi::FUZZ_CLASS_NAMES[class as usize]
            );
        }
    }

    /// Runs operation number `i` of class `class`.
    fn op(&mut self, rec: Recorder, i: u64, class: u64) {
        let mut code = Code::new();
        let mut regs = [0u64; 8];
        for r in regs.iter_mut().take(6) {
            *r = self.rng.next();
        }
        match class {
            abi::FUZZ_CLASS_SYSREG => {
                gen::sysreg_el1(&mut self.rng, &mut code);
                code.word(gen::RET);
                vectors::call_el1(self.load(&code), &regs);
            }
            abi::FUZZ_CLASS_HVC | abi::FUZZ_CLASS_SMC => {
                gen::call(
                    &mut self.rng,
                    class == abi::FUZZ_CLASS_HVC,
                    &mut code,
                    &mut regs,
                );
                code.word(gen::RET);
                vectors::call_el1(self.load(&code), &regs);
            }
            abi::FUZZ_CLASS_MEM => {
                let t = self.target(false);
                regs[0] = t.addr;
                gen::a64_mem(&mut self.rng, t, &mut code);
                code.word(gen::RET);
                vectors::call_el1(self.load(&code), &regs);
            }
            abi::FUZZ_CLASS_SVE | abi::FUZZ_CLASS_SME => {
                let t = self.target(false);
                regs[0] = t.addr;
                let n = if class == abi::FUZZ_CLASS_SVE {
                    gen::sve(&mut self.rng, t, &mut code)
                } else {
                    gen::sme(&mut self.rng, &mut code, self.fgt)
                };
                code.word(gen::RET);
                let undef = rec.ec(EC_UNKNOWN) + rec.ec(EC_SVE);
                vectors::call_el1(self.load(&code), &regs);
                let undef = rec.ec(EC_UNKNOWN) + rec.ec(EC_SVE) - undef;
                if class == abi::FUZZ_CLASS_SME && undef != n {
                    let d = format_args!(
                        "{undef} of {n} SME instructions UNDEFed, code {:08x?}",
                        &words(&code)[..code.len / 4]
                    );
                    self.violation(abi::FUZZ_VIOLATION_SME, i, class, d);
                } else if class == abi::FUZZ_CLASS_SVE && undef != if self.sve { 0 } else { n } {
                    let sve = self.sve;
                    let d = format_args!(
                        "{undef} of {n} UNDEFed, SVE offered: {sve}, code {:08x?}",
                        &words(&code)[..code.len / 4]
                    );
                    self.violation(abi::FUZZ_VIOLATION_SVE, i, class, d);
                }
            }
            abi::FUZZ_CLASS_FPSTATE => {
                let lost = vectors::fp_survives(regs[1], regs[2], self.sve);
                if lost != 0 {
                    let d = format_args!("registers changed across exits (mask {lost:#x})");
                    self.violation(abi::FUZZ_VIOLATION_FPSTATE, i, class, d);
                }
            }
            _ => self.el0(rec, i, class, &mut code, &mut regs),
        }
    }

    fn target(&mut self, aarch32: bool) -> target::Target {
        let mut t = self.layout.pick(&mut self.rng, aarch32);
        if self.rng.chance(7, 10) {
            // Naturally aligned for everything (exclusives and atomics fault otherwise).
            t.addr &= !15;
        }
        t
    }

    /// An excursion to EL0 (class el0a64 / el0a32 / el0t32) and its oracles.
    fn el0(&mut self, rec: Recorder, i: u64, class: u64, code: &mut Code, regs: &mut [u64; 8]) {
        let aarch32 = class != abi::FUZZ_CLASS_EL0_A64;
        let t = self.target(aarch32);
        regs[0] = t.addr;
        regs[6] = 0;
        regs[7] = 0;
        let nzcv = (self.rng.next() & 0xF) as u32;
        let (spsr, want_x6, want_x7, want_ec) = match class {
            abi::FUZZ_CLASS_EL0_A64 => {
                gen::a64_el0(&mut self.rng, t, code);
                gen::el0_tail(code);
                (SPSR_A64_EL0, 1, gen::A64_MARK, EC_SVC64)
            }
            abi::FUZZ_CLASS_EL0_A32 => {
                gen::a32(&mut self.rng, t, code);
                for w in gen::A32_TAIL {
                    code.word(w);
                }
                (SPSR_A32_USR, 1, gen::A32_MARK, EC_SVC32)
            }
            _ => {
                let x6 = gen::t32(&mut self.rng, t, code, nzcv);
                (SPSR_A32_USR | SPSR_T, x6, gen::A32_MARK, EC_SVC32)
            }
        };
        if aarch32 && !self.aarch32 {
            // The CPU has no AArch32 EL0: the op is drawn (the stream stays the same) but not run.
            return;
        }
        let pc = self.load(code);
        vectors::enter_el0(pc, spsr | u64::from(nzcv) << 28, regs, self.el0_sp);
        let st = rec.snapshot();
        let from_a32 = st.spsr & SPSR_NRW != 0;
        let vector_ok = match st.vector {
            vectors::VEC_LOWER_A64 => !from_a32,
            vectors::VEC_LOWER_A32 => from_a32,
            _ => true,
        };
        if !vector_ok || (st.vector != vectors::VEC_CURRENT && from_a32 != aarch32) {
            let d = format_args!(
                "vector {} for an exception with SPSR_EL1 {:#x} (ESR {:#x}), ran {}",
                st.vector,
                st.spsr,
                st.esr,
                if aarch32 { "AArch32" } else { "AArch64" }
            );
            self.violation(abi::FUZZ_VIOLATION_VECTOR, i, class, d);
        }
        let mask = if aarch32 { 0xFFFF_FFFF } else { u64::MAX };
        let end = pc + code.len as u64;
        if st.esr >> 26 == want_ec
            && (st.elr != end || st.x6 & mask != want_x6 || st.x7 & mask != want_x7)
        {
            let d = format_args!(
                "SVC from ELR {:#x} (want {end:#x}), x6 {:#x} (want {want_x6}), x7 {:#x} \
                 (want {want_x7:#x}), SPSR {:#x}, code {:02x?}",
                st.elr,
                st.x6 & mask,
                st.x7 & mask,
                st.spsr,
                &code.bytes[..code.len]
            );
            self.violation(abi::FUZZ_VIOLATION_EL0_RETURN, i, class, d);
        }
    }
}

/// A snippet's A64 instruction words (for violation reports).
fn words(code: &Code) -> [u32; gen::CODE_MAX / 4] {
    let mut w = [0; gen::CODE_MAX / 4];
    for (i, c) in code.bytes[..code.len].chunks(4).enumerate() {
        w[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

/// CPACR_EL1: FP/SIMD, SVE and SME not trapped at EL1 or EL0 (Arm ARM D19 "CPACR_EL1": FPEN,
/// ZEN, SMEN = 0b11), so every SVE/SME instruction reaches whatever the hypervisor decided
/// (docs: SVE allowed, SME trapped at EL2 and answered with UNDEF).
fn enable_fp_sve_sme() {
    const FPEN: u64 = 3 << 20;
    const ZEN: u64 = 3 << 16;
    const SMEN: u64 = 3 << 24;
    // SAFETY: only the trap controls of FP/SVE/SME change; nothing the Rust code relies on.
    unsafe {
        asm!("mrs {t}, cpacr_el1", "orr {t}, {t}, {m}", "msr cpacr_el1, {t}", "isb",
             t = out(reg) _, m = in(reg) FPEN | ZEN | SMEN, options(nostack));
    }
}
