//! What the hypervisor learns from the device tree QEMU leaves at the start of RAM: RAM ranges,
//! CPUs (MPIDRs, in DTB order), the PSCI conduit, the console UART and the run options
//! (`/chosen/bootargs`). Nothing about the board is hard-coded except where the DTB is.

use alloc::vec::Vec;
use flat_device_tree::Fdt;

/// QEMU's virt board puts the DTB at the start of RAM for an ELF kernel linked above it
/// (it passes no pointer in x0).
pub const DTB_ADDR: usize = 0x4000_0000;

/// The most RAM ranges we track (a capacity for the MMU-off phase, not a board table).
pub const MAX_RAM_RANGES: usize = 8;

/// Why the DTB is unusable.
#[derive(Debug, Clone, Copy)]
pub enum DtbError {
    /// No valid FDT header at `DTB_ADDR`.
    NotFound,
    /// No /memory ranges.
    NoMemory,
    /// No /cpus/cpu@* with a usable `reg`.
    NoCpus,
    /// No `arm,pl011` node.
    NoUart,
    /// No /psci node, or its method is neither "smc" nor "hvc".
    NoPsci,
}

/// The parsed platform.
pub struct Platform {
    /// RAM as (base, size), in DTB order.
    pub ram: Vec<(u64, u64)>,
    /// Each CPU's MPIDR affinity (`reg` of /cpus/cpu@*), in DTB order: index = CPU number.
    pub mpidrs: Vec<u64>,
    /// PSCI is reached with SMC (true) or HVC (false).
    pub psci_smc: bool,
    /// The console PL011's MMIO base.
    pub uart: u64,
    /// The GICv3 distributor and redistributor bases, if there is a GICv3.
    pub gic_v3: Option<(u64, u64)>,
    /// `/chosen/bootargs` (QEMU's `-append`), empty if absent.
    pub bootargs: &'static str,
    /// Bytes the DTB occupies from `DTB_ADDR`.
    pub dtb_size: u64,
}

fn open() -> Result<Fdt<'static>, DtbError> {
    // SAFETY: QEMU wrote a DTB at DTB_ADDR (RAM, identity-mapped or MMU off) and nothing ever
    // writes there: the allocator regions start after the hypervisor image, above the DTB.
    // `from_ptr` checks the magic and reads only `totalsize` bytes.
    unsafe { Fdt::from_ptr(DTB_ADDR as *const u8) }.map_err(|_| DtbError::NotFound)
}

/// RAM ranges, without allocating: for building the MMU tables while the MMU is still off.
pub fn early_ram(out: &mut [(u64, u64); MAX_RAM_RANGES]) -> Result<usize, DtbError> {
    let fdt = open()?;
    let mut n = 0;
    for node in fdt
        .all_nodes()
        .filter(|n| n.name.split('@').next() == Some("memory"))
    {
        for r in node.reg() {
            if n < out.len() {
                out[n] = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(DtbError::NoMemory);
    }
    Ok(n)
}

/// Everything else. Needs the heap.
pub fn parse() -> Result<Platform, DtbError> {
    let fdt = open()?;
    let mut ram = [(0, 0); MAX_RAM_RANGES];
    let n = early_ram(&mut ram)?;
    let mpidrs: Vec<u64> = fdt
        .cpus()
        .filter_map(|c| c.ids().ok()?.first().ok())
        .map(|id| id as u64)
        .collect();
    if mpidrs.is_empty() {
        return Err(DtbError::NoCpus);
    }
    let uart = fdt
        .find_compatible(&["arm,pl011"])
        .and_then(|n| n.reg().next())
        .map(|r| r.starting_address as u64)
        .ok_or(DtbError::NoUart)?;
    let psci_smc = match fdt
        .find_node("/psci")
        .and_then(|n| n.property("method")?.as_str())
    {
        Some("smc") => true,
        Some("hvc") => false,
        _ => return Err(DtbError::NoPsci),
    };
    let gic_v3 = fdt.find_compatible(&["arm,gic-v3"]).and_then(|n| {
        let mut regs = n.reg();
        let gicd = regs.next()?.starting_address as u64;
        let gicr = regs.next()?.starting_address as u64;
        Some((gicd, gicr))
    });
    let bootargs = fdt.chosen().ok().and_then(|c| c.bootargs()).unwrap_or("");
    Ok(Platform {
        ram: ram[..n].to_vec(),
        mpidrs,
        psci_smc,
        uart,
        gic_v3,
        bootargs,
        dtb_size: fdt.total_size() as u64,
    })
}
