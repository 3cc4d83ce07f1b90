//! The embedded guest ELF (built by hyp/build.rs) and a minimal ELF64 loader that copies its
//! PT_LOAD segments into the image memslot's backing pages before any vCPU runs, then makes them
//! what the guest's first data and instruction fetches see (arch.rs cache maintenance).

use alloc::format;
use alloc::string::String;

use crate::arch;
use crate::memslot::Memslot;
use crate::percpu::PerCpu;
use crate::pool::{Region, PAGE};

/// The guest, as built by `cargo build -p guest --release` (see hyp/build.rs).
static GUEST_ELF: &[u8] = include_bytes!(env!("GUEST_ELF"));

const PT_LOAD: u32 = 1;
const EM_AARCH64: u16 = 183;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// One loadable segment.
struct Segment {
    addr: u64,
    file: core::ops::Range<usize>,
    mem_size: u64,
}

fn segments(elf: &[u8]) -> Option<(u64, impl Iterator<Item = Option<Segment>> + '_)> {
    // ELF64 (class 2), little-endian (data 1), AArch64.
    if elf.get(0..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    if u16_at(elf, 18)? != EM_AARCH64 {
        return None;
    }
    let entry = u64_at(elf, 24)?;
    let phoff = u64_at(elf, 32)? as usize;
    let phentsize = usize::from(u16_at(elf, 54)?);
    let phnum = usize::from(u16_at(elf, 56)?);
    let it = (0..phnum).filter_map(move |i| {
        let ph = phoff + i * phentsize;
        let parse = || {
            if u32_at(elf, ph)? != PT_LOAD {
                return Some(None);
            }
            let offset = u64_at(elf, ph + 8)? as usize;
            let addr = u64_at(elf, ph + 16)?;
            let file_size = u64_at(elf, ph + 32)? as usize;
            let mem_size = u64_at(elf, ph + 40)?;
            elf.get(offset..offset + file_size)?;
            Some(Some(Segment {
                addr,
                file: offset..offset + file_size,
                mem_size,
            }))
        };
        match parse() {
            Some(Some(seg)) => Some(Some(seg)),
            Some(None) => None,
            None => Some(None),
        }
    });
    Some((entry, it))
}

/// Copies the guest into `slot` (which must not be running) and returns its entry IPA.
/// `limit` is the first IPA the image must stay below (the stacks start there).
pub fn load(slot: &Memslot, limit: u64, cpu: &PerCpu, data: &Region) -> Result<u64, String> {
    let (entry, segs) = segments(GUEST_ELF).ok_or("guest image is not an AArch64 ELF64")?;
    let mut loaded = 0;
    for seg in segs {
        let seg = seg.ok_or("guest image has a malformed program header")?;
        if seg.addr < slot.ipa || seg.addr + seg.mem_size > limit {
            return Err(format!(
                "guest segment {:#x}+{:#x} outside the image area {:#x}..{limit:#x}",
                seg.addr, seg.mem_size, slot.ipa
            ));
        }
        let bytes = &GUEST_ELF[seg.file.clone()];
        let mut ipa = seg.addr & !(PAGE - 1);
        while ipa < seg.addr + seg.mem_size {
            // Zeroed on first touch, so the .bss part of the segment needs nothing more.
            let pa = slot
                .backing_or_alloc(ipa, cpu, data, &crate::memslot::ZeroNow)
                .map_err(|_| "out of memory")?;
            let lo = seg.addr.max(ipa);
            let hi = (seg.addr + bytes.len() as u64).min(ipa + PAGE);
            if lo < hi {
                let src = &bytes[(lo - seg.addr) as usize..(hi - seg.addr) as usize];
                // SAFETY: `pa` is a backing page no vCPU runs on yet, identity-mapped RAM;
                // [lo - ipa, hi - ipa) is inside the page.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        (pa + (lo - ipa)) as *mut u8,
                        src.len(),
                    );
                }
                // The guest starts with its MMU and caches off: without FWB its fetches and
                // loads read memory, so the copy must be there (clean to the point of
                // coherency). Its instruction fetches never look in the data cache: clean to
                // the point of unification in any case.
                arch::guest_memory_written(pa, PAGE);
                arch::clean_dcache_to_pou(pa, PAGE);
            }
            ipa += PAGE;
        }
        loaded += 1;
    }
    if loaded == 0 {
        return Err("guest image has no PT_LOAD segment".into());
    }
    // No CPU may run a stale instruction-cache line for the image's pages (they may have held
    // other code or data before): invalidate every I-cache after the cleans above completed.
    // CPUs not started yet also invalidate their own before their first entry
    // (arch::guest_cold_start_local).
    arch::icache_invalidate_all_broadcast();
    Ok(entry)
}
