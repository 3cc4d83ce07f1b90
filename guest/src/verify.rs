//! Workload `verify`: the guest side of "zero lost writes".
//!
//! Each vCPU repeatedly writes a pattern over every word of its own region and reads it all back,
//! counting every word that does not hold what this vCPU last wrote there. The pattern changes
//! every pass (a per-pass salt), so a write lost to a stale mapping, a page migrated without its
//! latest contents, or a page swapped for another would read back the previous pass's value or
//! another page's and be counted. It runs for as long as the hypervisor says (`HVC_QUERY`), which
//! is how a chaos run lasts `duration=`; the last pass writes the `demand` pattern (salt 0) so
//! that the hypervisor can also recompute the checksum from the backing pages after the run.

use core::fmt::Write;
use core::ptr::{read_volatile, write_volatile};

use crate::{abi, pattern};

/// The salt of pass `n` (pass 0, the final one, uses 0: the `demand` pattern).
fn salt(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        pattern::page_seed(0xFFFF, n)
    }
}

/// What one vCPU saw.
pub struct Outcome {
    /// Order-sensitive checksum of the final pass's read-back (as `demand` computes it).
    pub checksum: u64,
    /// Passes done (the final one included).
    pub passes: u64,
    /// Words that read back different from what was written (lost writes).
    pub mismatches: u64,
    /// Words read back and compared.
    pub words: u64,
    /// CNTVCT ticks for the whole workload.
    pub ticks: u64,
}

/// Writes pass `n`'s pattern over `[base, base + size)`.
fn write_pass(id: u64, base: u64, size: u64, n: u64) {
    let s = salt(n);
    for page in 0..size / abi::PAGE_SIZE {
        let seed = pattern::page_seed(id, page) ^ s;
        let p = (base + page * abi::PAGE_SIZE) as *mut u64;
        for w in 0..pattern::WORDS_PER_PAGE {
            // SAFETY: [base, base + size) is this vCPU's own region, given to it at entry and used
            // by nobody else; w < 512 keeps the store inside the page.
            unsafe { write_volatile(p.add(w as usize), pattern::word(seed, w)) };
        }
    }
}

/// Reads pass `n`'s pattern back; returns (checksum, mismatches, words). Prints the first
/// mismatch of the pass.
fn check_pass(id: u64, base: u64, size: u64, n: u64) -> (u64, u64, u64) {
    let s = salt(n);
    let mut sum = pattern::CHECKSUM_INIT;
    let mut bad = 0;
    let mut words = 0;
    for page in 0..size / abi::PAGE_SIZE {
        let seed = pattern::page_seed(id, page) ^ s;
        let p = (base + page * abi::PAGE_SIZE) as *const u64;
        for w in 0..pattern::WORDS_PER_PAGE {
            // SAFETY: as in `write_pass`.
            let got = unsafe { read_volatile(p.add(w as usize)) };
            let want = pattern::word(seed, w);
            if got != want {
                if bad == 0 {
                    let _ = writeln!(
                        crate::Uart,
                        "vcpu {id}: LOST WRITE pass {n} page {page} word {w}: read {got:#x}, \
                         wrote {want:#x}"
                    );
                }
                bad += 1;
            }
            words += 1;
            sum = pattern::checksum_step(sum, got);
        }
    }
    (sum, bad, words)
}

/// Runs the workload for `ticks` CNTVCT ticks (at least one pass plus the final one).
pub fn run(id: u64, base: u64, size: u64, ticks: u64) -> Outcome {
    let start = crate::cntvct();
    let mut passes = 0;
    let mut mismatches = 0;
    let mut words = 0;
    let mut n = 1;
    while crate::cntvct().wrapping_sub(start) < ticks {
        write_pass(id, base, size, n);
        let (_, bad, w) = check_pass(id, base, size, n);
        mismatches += bad;
        words += w;
        passes += 1;
        n += 1;
    }
    write_pass(id, base, size, 0);
    let (checksum, bad, w) = check_pass(id, base, size, 0);
    Outcome {
        checksum,
        passes: passes + 1,
        mismatches: mismatches + bad,
        words: words + w,
        ticks: crate::cntvct().wrapping_sub(start),
    }
}

/// The whole `verify` workload of one vCPU: run, report, finish.
pub fn workload(id: u64, base: u64, size: u64) -> ! {
    let ticks = crate::hvc(abi::HVC_QUERY, abi::QUERY_VERIFY_TICKS, 0, 0);
    let o = run(id, base, size, ticks);
    let pages = size / abi::PAGE_SIZE;
    let _ = writeln!(
        crate::Uart,
        "vcpu {id}: verify done: {} passes over {pages} pages, {} words checked, {} lost writes, \
         checksum {:#018x}, {} ticks",
        o.passes,
        o.words,
        o.mismatches,
        o.checksum,
        o.ticks
    );
    crate::hvc(abi::HVC_VERIFY, o.passes, o.mismatches, o.words);
    crate::hvc(abi::HVC_REPORT, o.checksum, o.ticks, pages);
    crate::finish(0)
}
