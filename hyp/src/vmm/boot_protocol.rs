//! Boot protocols of guests loaded from files: where an arm64 Linux `Image` or a kvm-unit-tests
//! `.flat` goes in guest RAM, where its DTB and initrd go, and copying them into the RAM
//! memslot's backing pages before any vCPU runs.
//!
//! Guest RAM layout (IPA), RAM from `RAM_BASE`, `ram=` bytes:
//! - the guest DTB at `RAM_BASE` for Linux (at most `DTB_MAX` bytes); for a `.flat` in the top
//!   2 MiB of RAM, because kvm-unit-tests asserts that its DTB lies above its stack (lib/arm/
//!   setup.c) and the file's size does not include its BSS and stack;
//! - a Linux Image at the first 2 MiB boundary above it plus the header's `text_offset`
//!   (Documentation/arch/arm64/booting.rst: "2MB aligned base ... text_offset bytes from it");
//!   a `.flat` at `RAM_BASE + FLAT_OFFSET`, where QEMU puts one (kvm-unit-tests' arm/flat.lds);
//! - the initrd (Linux initramfs, or a `.flat`'s environ file) at the top of RAM (below a
//!   `.flat`'s DTB), 2 MiB aligned down, above the image's `image_size` (so the kernel's BSS and
//!   early tables never reach it).
//!
//! Entry (both): x0 = DTB IPA, x1..x3 = 0, EL1h with D/A/I/F masked, MMU and caches off.

use alloc::format;
use alloc::string::String;

use crate::arch;
use crate::memslot::Memslot;
use crate::percpu::PerCpu;
use crate::pool::{Region, PAGE};

/// Guest RAM base (IPA): where QEMU's virt board has RAM (hw/arm/virt.c, `VIRT_MEM`). A guest
/// from files sees the board's memory map: its DTB is derived from QEMU's and keeps every device
/// where the board has it, so RAM is where the board has it too.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Room for the guest DTB at the start of RAM.
pub const DTB_MAX: u64 = 2 << 20;
/// Where a `.flat` is loaded, from RAM_BASE (QEMU's offset for a raw AArch64 kernel).
pub const FLAT_OFFSET: u64 = 0x8_0000;
const MIB2: u64 = 2 << 20;

pub use arch_decode::image::Format;

/// Recognises the kernel (arch_decode::image::detect: an arm64 Image by its header, a `.flat`
/// otherwise); a big-endian Image or a compressed kernel is refused with a message for the user.
pub fn detect(kernel: &[u8]) -> Result<Format, String> {
    arch_decode::image::detect(kernel).map_err(|e| String::from(e.message()))
}

/// Where everything goes in guest RAM (IPAs).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// The kernel's load address = entry point.
    pub entry: u64,
    /// The DTB.
    pub dtb: u64,
    /// The initrd as (IPA, bytes).
    pub initrd: Option<(u64, u64)>,
}

/// The most bytes the guest DTB may take.
pub const fn dtb_room() -> u64 {
    DTB_MAX
}

/// Plans the layout for a kernel of `format` and `kernel_size` bytes, an initrd of
/// `initrd_size` bytes, in `ram` bytes of RAM from RAM_BASE.
pub fn layout(
    format: Format,
    kernel_size: u64,
    initrd_size: Option<u64>,
    ram: u64,
) -> Result<Layout, String> {
    let (entry, end) = match format {
        Format::Linux {
            text_offset,
            image_size,
        } => {
            let base = (RAM_BASE + DTB_MAX).next_multiple_of(MIB2) + text_offset;
            (base, base + image_size)
        }
        Format::Flat => {
            let base = RAM_BASE + FLAT_OFFSET;
            (base, base + kernel_size)
        }
    };
    let (dtb, top) = match format {
        Format::Linux { .. } => (RAM_BASE, RAM_BASE + ram),
        Format::Flat => {
            let at = RAM_BASE + ram - DTB_MAX;
            (at, at)
        }
    };
    let initrd = match initrd_size {
        None => None,
        Some(size) => {
            let at = top.checked_sub(size).map(|a| a & !(MIB2 - 1));
            match at {
                Some(a) if a >= end.next_multiple_of(MIB2) => Some((a, size)),
                _ => {
                    return Err(format!(
                        "ram={}M is too small for the kernel ({} bytes from {entry:#x}) and an \
                         initrd of {size} bytes above it",
                        ram >> 20,
                        end - entry
                    ))
                }
            }
        }
    };
    if end > top {
        return Err(format!(
            "ram={}M is too small for the kernel ({} bytes from {entry:#x})",
            ram >> 20,
            end - entry
        ));
    }
    Ok(Layout { entry, dtb, initrd })
}

/// Copies `bytes` to guest RAM at `ipa` in `slot`, backing each page on the way (zeroed first,
/// so a partial page is zero beyond the copy), and makes the copy what the guest's first data
/// accesses and instruction fetches see: cleaned to the point of coherency unless FEAT_S2FWB
/// forces its accesses cacheable (`arch::guest_memory_written`), and to the point of
/// unification for fetches. The caller invalidates the instruction caches once afterwards.
/// Runs before any vCPU does.
pub fn copy_in(
    slot: &Memslot,
    ipa: u64,
    bytes: &[u8],
    cpu: &PerCpu,
    backing: &Region,
) -> Result<(), String> {
    let end = ipa + bytes.len() as u64;
    if !slot.contains(ipa) || (end > ipa && !slot.contains(end - 1)) {
        return Err(format!(
            "{} bytes at {ipa:#x} do not fit in guest RAM",
            bytes.len()
        ));
    }
    let mut page = ipa & !(PAGE - 1);
    while page < end {
        let pa = slot
            .backing_or_alloc(page, cpu, backing, &crate::memslot::ZeroNow)
            .map_err(|e| format!("no backing for guest RAM at {page:#x}: {e:?}"))?;
        let lo = ipa.max(page);
        let hi = end.min(page + PAGE);
        let src = &bytes[(lo - ipa) as usize..(hi - ipa) as usize];
        // SAFETY: `pa` is the backing page of `page`, identity-mapped RAM no vCPU runs on yet;
        // [lo - page, hi - page) lies inside it.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), (pa + (lo - page)) as *mut u8, src.len());
        }
        arch::guest_memory_written(pa, PAGE);
        arch::clean_dcache_to_pou(pa, PAGE);
        page += PAGE;
    }
    Ok(())
}

/// The bytes `run-qemu.sh` loaded at host PA `at` (`-device loader`), `size` long.
///
/// # Safety
/// [at, at + size) must be identity-mapped RAM the hypervisor's pools do not contain (main.rs
/// ends the backing region below it) and that nothing writes while the slice is used.
pub unsafe fn host_file(at: u64, size: u64) -> &'static [u8] {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts(at as *const u8, size as usize) }
}
