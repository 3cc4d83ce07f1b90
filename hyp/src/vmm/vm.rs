//! The one VM: its options, memslots, stage-2 table and the EL2 register values every CPU
//! programs. Built once by CPU0 before any secondary starts; read-only afterwards except for the
//! stage-2 table itself, which the reporter takes back at teardown.

use aarch64_cpu::registers::{
    ReadWriteable, Readable, Writeable, CNTHCTL_EL2, CNTVOFF_EL2, CPACR_EL1, HCR_EL2, ICC_SRE_EL2,
    ID_AA64DFR0_EL1, ID_AA64PFR0_EL1, MDCR_EL2, MIDR_EL1, MPIDR_EL1, SCTLR_EL1, VBAR_EL1,
    VMPIDR_EL2, VTCR_EL2, VTTBR_EL2,
};
use alloc::format;
use alloc::string::String;
use core::cell::UnsafeCell;
use spin::Once;
use stage2::{Config, MemAttrEncoding, Stage2};

use crate::abi;
use crate::boot_protocol::{self, Format};
use crate::dtb::Platform;
use crate::guest_dtb::{self, GuestDtb};
use crate::harness::{Harness, Plain};
use crate::memslot::Memslot;
use crate::options::{Backing, Options, Workload};
use crate::passthrough::Passthrough;
use crate::pool::Region;
use crate::sysreg_ext::{self, CPTR_EL2_NVHE};
use crate::tables::HypPool;
use crate::tlb::HypTlb;
use crate::{arch, mmu, percpu};
use alloc::vec::Vec;
use tock_registers::registers::InMemoryRegister;

/// The stage-2 table type of this hypervisor.
pub type S2 = Stage2<HypPool, HypTlb>;

/// IPA bits for the guest: 40 (1 TiB) starting at level 1 with two concatenated root tables.
pub const IPA_BITS: u32 = 40;
/// VMID of the one guest.
const VMID: u64 = 1;

/// A value that is shared read-only while the VM runs and taken back by one CPU at teardown.
pub struct Owned<T>(UnsafeCell<Option<T>>);

// SAFETY: `get` hands out shared references to a `Sync` value; `take` is unsafe and its caller
// guarantees no reference from `get` is alive on any CPU.
unsafe impl<T: Sync> Sync for Owned<T> {}

impl<T> Owned<T> {
    fn new(v: T) -> Self {
        Self(UnsafeCell::new(Some(v)))
    }

    /// The value. Panics after `take` (a hypervisor bug: nothing runs guests after teardown).
    pub fn get(&self) -> &T {
        // SAFETY: only `take` writes the cell, and its contract excludes concurrent `get`s.
        unsafe { (*self.0.get()).as_ref().expect("VM used after teardown") }
    }

    /// Moves the value out.
    ///
    /// # Safety
    /// No reference returned by `get` may be alive or created concurrently (every vCPU has
    /// stopped and no CPU is in a trap handler).
    pub unsafe fn take(&self) -> Option<T> {
        // SAFETY: the caller guarantees exclusive access.
        unsafe { (*self.0.get()).take() }
    }
}

/// What runs in the VM.
pub enum Guest {
    /// The built-in test guest (guest/, embedded by hyp/build.rs) and its harness (builtin/).
    Builtin,
    /// A guest from files (`kernel=`): an arm64 Linux Image or a kvm-unit-tests `.flat`.
    Files {
        /// Linux or `.flat`.
        format: boot_protocol::Format,
        /// Where its kernel, DTB and initrd are in guest RAM.
        layout: boot_protocol::Layout,
        /// The devices it reaches directly (GICv3, PL011 for Linux).
        devices: Passthrough,
        /// MPIDR of the CPU that runs each vCPU (= the vCPU's VMPIDR_EL2).
        mpidrs: Vec<u64>,
    },
}

/// The VM.
pub struct Vm {
    /// What runs in it.
    pub guest: Guest,
    /// Run options.
    pub opts: Options,
    /// Memslot 0: the guest image and the vCPU stacks.
    pub image: Memslot,
    /// Memslot 1: the vCPUs' data regions.
    pub data: Memslot,
    /// Table pages.
    pub tables: &'static Region,
    /// Guest backing pages.
    pub backing: &'static Region,
    /// The stage-2 table.
    pub s2: Owned<S2>,
    /// Guest entry IPA.
    pub entry: u64,
    /// The guest kind's harness (harness.rs): the built-in guest's, or `Plain`.
    pub harness: &'static dyn Harness,
    /// Table pages in use before `Stage2::new` (the leak check's baseline).
    pub table_pages_before: usize,
}

static VM: Once<Vm> = Once::new();

/// The VM (after `create`).
pub fn get() -> &'static Vm {
    VM.get().expect("VM not created")
}

/// Builds the VM: memslots, stage-2 table, guest image. CPU0, before starting secondaries.
/// Without `kernel=` the VM runs the built-in guest: `builtin` is its harness and `load_builtin`
/// copies its image into the image memslot given the lowest vCPU stack's IPA, returning the
/// entry IPA (builtin/guest_image.rs; main.rs passes both, so the core names no harness).
pub fn create(
    opts: Options,
    tables: &'static Region,
    backing: &'static Region,
    platform: &Platform,
    builtin: &'static dyn Harness,
    load_builtin: impl FnOnce(&Memslot, u64) -> Result<u64, String>,
) -> Result<&'static Vm, String> {
    let cpus = platform.mpidrs.len();
    if opts.files.is_some() {
        return create_from_files(opts, tables, backing, platform);
    }
    // One region per vCPU, or one region for all (overlap, pagetable).
    let data_size = if shared_region(&opts) {
        opts.mem
    } else {
        opts.mem * opts.vcpus as u64
    };
    let needed = (data_size + abi::IMAGE_SLOT_SIZE) / crate::pool::PAGE;
    if needed > backing.pages as u64 {
        return Err(format!(
            "mem={}K x vcpus={} needs {} MiB of guest memory; only {} MiB are free \
             (use a smaller mem= or fewer vcpus=, or give QEMU more RAM: MEM=2G cargo run -- ...)",
            opts.mem >> 10,
            opts.vcpus,
            (needed * 4096) >> 20,
            (backing.pages * 4096) >> 20
        ));
    }
    if abi::DATA_BASE + data_size > 1 << IPA_BITS {
        return Err(format!(
            "guest memory ends above the {IPA_BITS}-bit IPA space"
        ));
    }
    let image = Memslot::new("image", abi::RAM_BASE, abi::IMAGE_SLOT_SIZE);
    let data = if opts.backing == Backing::Block2M || opts.workload == Workload::Pagetable {
        Memslot::new_chunked("data", abi::DATA_BASE, data_size)
    } else {
        Memslot::new("data", abi::DATA_BASE, data_size)
    };
    let lowest_stack = abi::DATA_BASE - opts.vcpus as u64 * abi::STACK_SIZE;
    let entry = load_builtin(&image, lowest_stack)?;

    let (s2, table_pages_before) = new_stage2(tables, cpus)?;
    Ok(VM.call_once(|| Vm {
        guest: Guest::Builtin,
        opts,
        image,
        data,
        tables,
        backing,
        s2: Owned::new(s2),
        entry,
        harness: builtin,
        table_pages_before,
    }))
}

/// An empty stage-2 table over the 40-bit IPA space, and the table pages in use before it.
fn new_stage2(tables: &'static Region, cpus: usize) -> Result<(S2, usize), String> {
    let pool = HypPool::new(tables);
    let table_pages_before = pool.pages_in_use();
    let mut cfg = Config::new(IPA_BITS, cpus);
    // The leaves' MemAttr must be encoded for the HCR_EL2.FWB value configure_this_cpu writes.
    cfg.memattr = if arch::has_fwb() {
        MemAttrEncoding::ForcedWriteBack
    } else {
        MemAttrEncoding::Combined
    };
    let s2 =
        Stage2::new(cfg, pool, HypTlb).map_err(|e| format!("stage2::Stage2::new failed: {e:?}"))?;
    Ok((s2, table_pages_before))
}

/// Builds the VM for a guest from files: the RAM memslot (demand-paged like the built-in guest's
/// data, 2 MiB chunks with backing=2m), the kernel, initrd and guest DTB copied into it
/// (boot_protocol.rs, guest_dtb.rs), and the pass-through devices mapped (passthrough.rs).
fn create_from_files(
    opts: Options,
    tables: &'static Region,
    backing: &'static Region,
    platform: &Platform,
) -> Result<&'static Vm, String> {
    let files = opts.files.clone().ok_or("no guest files")?;
    let cpus = platform.mpidrs.len();
    // vCPU i runs on CPU i (one vCPU per physical CPU) and reads its MPIDR.
    let mpidrs: Vec<u64> = platform.mpidrs[..opts.vcpus].to_vec();
    // SAFETY: main.rs ended the pools below both files; nothing writes them.
    let kernel = unsafe { boot_protocol::host_file(files.kernel.0, files.kernel.1) };
    // SAFETY: as above.
    let initrd = files
        .initrd
        .map(|(a, s)| unsafe { boot_protocol::host_file(a, s) });
    let format = boot_protocol::detect(kernel);
    let layout = boot_protocol::layout(
        format,
        kernel.len() as u64,
        initrd.map(|i| i.len() as u64),
        opts.ram,
    )?;
    if opts.ram / crate::pool::PAGE > backing.pages as u64 {
        log::warn!(
            "ram={}M is more than the {} MiB of host memory for guest pages: the guest fails \
             if it touches more than that",
            opts.ram >> 20,
            (backing.pages as u64 * crate::pool::PAGE) >> 20
        );
    }
    let host = crate::dtb::host().map_err(|e| format!("QEMU's DTB: {e:?}"))?;
    let (dtb, removed) = guest_dtb::build(
        &host,
        &GuestDtb {
            ram: (boot_protocol::RAM_BASE, opts.ram),
            cpus: &mpidrs,
            bootargs: &files.cmdline,
            initrd: layout.initrd,
        },
    )?;
    if dtb.len() as u64 > boot_protocol::dtb_room() {
        return Err(format!("the guest DTB ({} bytes) does not fit", dtb.len()));
    }
    let (gicd, gicr) = platform
        .gic_v3
        .ok_or("a guest from files needs a GICv3 (QEMU -M virt,gic-version=3)")?;
    // A .flat's console stays emulated: the hypervisor reads its "EXIT: STATUS=" line.
    let uart = match format {
        Format::Linux { .. } => Some(platform.uart),
        Format::Flat => None,
    };
    let devices = Passthrough::new(gicd, gicr, &mpidrs, uart, guest_dtb::virtio_windows(&host))
        .map_err(String::from)?;

    let ram = if opts.backing == Backing::Block2M {
        Memslot::new_chunked("ram", boot_protocol::RAM_BASE, opts.ram)
    } else {
        Memslot::new("ram", boot_protocol::RAM_BASE, opts.ram)
    };
    let cpu = percpu::this_cpu();
    boot_protocol::copy_in(&ram, layout.dtb, &dtb, cpu, backing)?;
    boot_protocol::copy_in(&ram, layout.entry, kernel, cpu, backing)?;
    if let (Some(bytes), Some((ipa, _))) = (initrd, layout.initrd) {
        boot_protocol::copy_in(&ram, ipa, bytes, cpu, backing)?;
    }
    // No CPU may fetch a stale line for the pages just written (see guest_image::load).
    arch::icache_invalidate_all_broadcast();

    let (s2, table_pages_before) = new_stage2(tables, cpus)?;
    let pages = devices
        .map(&s2, cpu.index)
        .map_err(|e| format!("mapping the pass-through devices: {e:?}"))?;
    log::info!(
        "guest: {} kernel {} bytes at {:#x}, DTB {} bytes at {:#x}, initrd {:?}, RAM {:#x}+{}M \
         ({} backing), {pages} device pages passed through; removed from its DTB: {}",
        format.name(),
        kernel.len(),
        layout.entry,
        dtb.len(),
        layout.dtb,
        layout.initrd,
        boot_protocol::RAM_BASE,
        opts.ram >> 20,
        opts.backing.name(),
        removed.join(" ")
    );
    let entry = layout.entry;
    Ok(VM.call_once(|| Vm {
        guest: Guest::Files {
            format,
            layout,
            devices,
            mpidrs,
        },
        opts,
        image: ram,
        // No second memslot: an empty one above RAM that contains no IPA.
        data: Memslot::new("none", boot_protocol::RAM_BASE, 0),
        tables,
        backing,
        s2: Owned::new(s2),
        entry,
        harness: &Plain,
        table_pages_before,
    }))
}

impl Vm {
    /// The guest kind's name for logs: "built-in", or the file format ("linux", "flat").
    pub fn guest_name(&self) -> &'static str {
        match &self.guest {
            Guest::Builtin => "built-in",
            Guest::Files { format, .. } => format.name(),
        }
    }

    /// Whether the guest is the built-in one (its harness in builtin/ applies).
    pub fn builtin(&self) -> bool {
        matches!(self.guest, Guest::Builtin)
    }

    /// The memslot holding `ipa`.
    pub fn slot(&self, ipa: u64) -> Option<&Memslot> {
        [&self.image, &self.data]
            .into_iter()
            .find(|s| s.contains(ipa))
    }

    /// Data region of vCPU `id` as (IPA, size).
    pub fn region(&self, id: usize) -> (u64, u64) {
        if shared_region(&self.opts) {
            return (abi::DATA_BASE, self.opts.mem);
        }
        (abi::DATA_BASE + id as u64 * self.opts.mem, self.opts.mem)
    }
}

/// What the guest may use of the CPU's optional features (the policy of issue 9, also in
/// docs/robustness.md): CPTR_EL2 (HCR_EL2.E2H = 0 layout), ZCR_EL2 and MDCR_EL2. Each trapped
/// feature reaches vcpu.rs as its own exception class and is answered with an UNDEF; the ID
/// registers the guest reads (HCR_EL2.TID3, idregs.rs) hide what is trapped here.
fn set_feature_traps() {
    let sve = ID_AA64PFR0_EL1.read(ID_AA64PFR0_EL1::SVE) != 0;
    let amu = ID_AA64PFR0_EL1.read(ID_AA64PFR0_EL1::AMU) != 0;
    let trace_sysregs = ID_AA64DFR0_EL1.read(ID_AA64DFR0_EL1::TraceVer) != 0;
    let spe = ID_AA64DFR0_EL1.read(ID_AA64DFR0_EL1::PMSVer) != 0;

    let cptr: InMemoryRegister<u64, CPTR_EL2_NVHE::Register> = InMemoryRegister::new(0);
    cptr.write(
        // RES1 in every implementation (bits 13, 9 and 7:0).
        CPTR_EL2_NVHE::RES1_13::SET
            + CPTR_EL2_NVHE::RES1_9::SET
            + CPTR_EL2_NVHE::RES1_7_0.val(0xFF)
            // FP/AdvSIMD: the guest's, never trapped. Its registers stay live across traps
            // because the hypervisor is soft-float (exceptions.rs); TFP = 0 also lets
            // exceptions.rs reset FPCR/FPSR before the first entry.
            + CPTR_EL2_NVHE::TFP::CLEAR
            // SME: trapped (EC 0x1D -> UNDEF). Streaming mode and ZA are not state the trap path
            // could keep safe: in streaming mode most AdvSIMD instructions are illegal, so one
            // generated by any EL2 code would fault, and ZA can be large. Without FEAT_SME this
            // bit is RES1, so it is 1 either way.
            + CPTR_EL2_NVHE::TSM::SET
            // SVE: the guest's (ZCR_EL2.LEN below). Its Z/P/FFR registers stay live like the FP
            // ones. Without FEAT_SVE the bit is RES1 and must stay 1.
            + if sve {
                CPTR_EL2_NVHE::TZ::CLEAR
            } else {
                CPTR_EL2_NVHE::TZ::SET
            }
            // Activity monitors: trapped (EC 0x18 -> UNDEF); they would expose the host's
            // counters. RES0 without FEAT_AMUv1, so only set when there is something to trap.
            + if amu {
                CPTR_EL2_NVHE::TAM::SET
            } else {
                CPTR_EL2_NVHE::TAM::CLEAR
            }
            // Trace: trapped (EC 0x18 -> UNDEF); a guest must not program the host's trace unit.
            // RES0 when the trace unit has no System-register interface.
            + if trace_sysregs {
                CPTR_EL2_NVHE::TTA::SET
            } else {
                CPTR_EL2_NVHE::TTA::CLEAR
            }
            // CPACR_EL1 is the guest's own EL1/EL0 enable for FP/SVE: not trapped.
            + CPTR_EL2_NVHE::TCPAC::CLEAR,
    );
    sysreg_ext::write_cptr_el2(&cptr);
    // The ZCR_EL2 write below is itself trapped by CPTR_EL2.TZ: the new TZ must be in effect.
    arch::isb();
    if sve {
        // The largest vector length the CPU implements (the request is clamped to it). The
        // guest narrows it for itself with ZCR_EL1; the hypervisor never uses SVE, so any
        // length is fine for it.
        sysreg_ext::write_zcr_el2(sysreg_ext::ZCR_LEN_MAX);
    }
    if spe {
        // SPE: trapped (TPMS: the sampling controls PMS*_EL1; E2PB = 0b00: the profiling buffer
        // controls PMB*_EL1, which would otherwise let the guest aim the profiler at memory).
        // modify, not write: every other field stays as firmware left it, in particular HPMN,
        // which must stay PMCR_EL0.N (a smaller value hands counters to EL2).
        MDCR_EL2.modify(MDCR_EL2::TPMS::SET + MDCR_EL2::E2PB::OwnedByEL2OrEL1);
    }
}

/// EL2 state only a guest from files needs, on the CPU that runs its vCPU (this one).
fn configure_files_guest(mpidrs: &[u64]) {
    // FEAT_HCX: HCRX_EL2 resets to an UNKNOWN value; MSCEn enables the FEAT_MOPS memcpy/memset
    // instructions at EL1/EL0 when the CPU has them (the ID registers show them to the guest).
    if sysreg_ext::has_hcx() {
        let hcrx: InMemoryRegister<u64, sysreg_ext::HCRX_EL2::Register> = InMemoryRegister::new(0);
        if sysreg_ext::has_mops() {
            hcrx.write(sysreg_ext::HCRX_EL2::MSCEn::SET);
        }
        sysreg_ext::write_hcrx_el2(&hcrx);
    }
    // The guest reads this CPU's identity: MIDR_EL1 (VPIDR_EL2) and MPIDR_EL1 (VMPIDR_EL2).
    // vCPU i runs on CPU i, so VMPIDR = this CPU's MPIDR: its GICR frame and the affinities the
    // guest programs into GICD_IROUTER are the real ones (GICv3 pass-through).
    sysreg_ext::write_vpidr_el2(MIDR_EL1.get());
    let mpidr = MPIDR_EL1.get();
    // (A CPU that runs no vCPU, the chaos pruner, is configured too: it issues the VM's TLB
    // maintenance, which needs its VMID, but never enters the guest.)
    debug_assert!(
        mpidrs.contains(&(mpidr & 0xFF_00FF_FFFF)) || percpu::this_cpu().index >= mpidrs.len()
    );
    VMPIDR_EL2.set(mpidr);
    // EL1 may use the GICv3 CPU interface's system registers (ICC_*_EL1) itself: SRE = 1 at
    // EL2 and Enable = 1, so EL1 accesses to ICC_SRE_EL1 do not trap to EL2 (Arm GICv3 spec,
    // 12.7.x "ICC_SRE_EL2").
    ICC_SRE_EL2.write(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
}

/// Whether every vCPU works on the same region (the data slot is one region of `mem=`).
pub fn shared_region(opts: &Options) -> bool {
    crate::expect::shared(opts.workload.guest_number())
}

/// Programs this CPU's EL2 virtualization registers for the VM. Every CPU, before its vCPU.
pub fn configure_this_cpu(vm: &Vm) {
    set_feature_traps();
    let s2 = vm.s2.get();
    let geom = s2.geometry();
    // The controls that differ between the built-in guest (no MMU of its own) and a guest from
    // files (its own MMU, interrupts and devices).
    let guest_fields = match vm.guest {
        Guest::Builtin => {
            // The guest runs with its stage-1 MMU off; DC makes its accesses Normal write-back
            // instead of Device, so they are coherent with the hypervisor's cached view of the
            // backing pages (which it zeroes, copies and checksums).
            HCR_EL2::DC::SET
                // Physical IRQ/FIQ taken to EL2 while the guest runs (none are enabled).
                + HCR_EL2::IMO::EnableVirtualIRQ
                + HCR_EL2::FMO::EnableVirtualFIQ
        }
        Guest::Files { format, .. } => {
            // DC off: it would force the guest's stage 1 off (Arm ARM D8.2.11, "The effects of
            // disabling an address translation stage"); Linux turns its MMU on.
            HCR_EL2::DC::CLEAR
                // Physical IRQ/FIQ go straight to the guest's EL1 (GICv3 pass-through,
                // passthrough.rs): the hypervisor takes no interrupt while the guest runs.
                + HCR_EL2::IMO::DisableVirtualIRQ
                + HCR_EL2::FMO::DisableVirtualFIQ
                // Pointer authentication: PAC instructions and the key registers are the
                // guest's (Linux writes APIAKeyHi_EL1 early; a trap would be an UNDEF).
                + HCR_EL2::API::DisableTrapPointerAuthInstToEl2
                + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2
                // WFI traps: a CPU the guest parked in a WFI loop with interrupts masked (Linux's
                // power-off) leaves the guest when the run ends; the WFI waits at EL2 for the
                // guest's interrupts meanwhile (lifecycle::guest_wfx).
                + HCR_EL2::TWI::SET
                // WFE traps for a .flat: kvm-unit-tests' idle secondaries wait in WFE. Not for
                // Linux, whose spinlocks wait in WFE and which parks CPUs with WFI.
                + if format == Format::Flat {
                    HCR_EL2::TWE::SET
                } else {
                    HCR_EL2::TWE::CLEAR
                }
            // ATA stays 0: MTE is not offered to any guest (policy.md; ID_AA64PFR1_EL1.MTE
            // reads 0 through idregs.rs), so tag instructions and registers keep trapping.
        }
    };
    HCR_EL2.write(
        guest_fields
        // EL1 is AArch64.
            + HCR_EL2::RW::EL1IsAarch64
            // Stage-2 translation on.
            + HCR_EL2::VM::Enable
            // Guest SMC traps to us (EC 0x17) instead of reaching the firmware's PSCI.
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            // SError taken to EL2 while the guest runs: answered with a virtual SError.
            + HCR_EL2::AMO::SET
            // Guest TLB maintenance and barriers are broadcast / inner shareable, so a vCPU
            // moved between CPUs (not done yet) would stay coherent.
            + HCR_EL2::FB::SET
            + HCR_EL2::BSU::InnerShareable
            // Set/way cache maintenance traps (meaningless for a guest).
            + HCR_EL2::TSW::SET
            // ID registers trap (EC 0x18) and read as sanitised values (idregs.rs): PARange =
            // the 40-bit IPA space, no feature the hypervisor traps (docs/robustness.md).
            + HCR_EL2::TID3::SET
            // The "ID group 1" registers trap too: REVIDR_EL1 and AIDR_EL1 read the hardware's
            // values (idregs.rs), and SMIDR_EL1 gets an UNDEF as on a CPU without SME, which is
            // what the sanitised ID registers say (CPTR_EL2.TSM cannot trap SMIDR_EL1).
            + HCR_EL2::TID1::SET
            // FEAT_S2FWB: stage 2 forces guest RAM to Normal Write-Back whatever the guest's
            // stage 1 says (the table is encoded for it, see `create`), so a guest with caches
            // off or a Non-cacheable mapping still sees what the hypervisor wrote through its
            // cache. Without it, arch::guest_memory_written cleans such memory to PoC instead.
            + if arch::has_fwb() {
                HCR_EL2::FWB::Enabled
            } else {
                HCR_EL2::FWB::Disabled
            },
    );
    if let Guest::Files { mpidrs, .. } = &vm.guest {
        configure_files_guest(mpidrs);
    }
    VTCR_EL2.write(
        // Bit 31 is RES1.
        VTCR_EL2::RES1::SET
            // Output (physical) size: what the CPU has, capped at 48 bits.
            + VTCR_EL2::PS.val(mmu::pa_range())
            // 4 KiB granule.
            + VTCR_EL2::TG0::Granule4KB
            // Table walks: inner shareable, write-back read/write-allocate (the hypervisor
            // writes tables through the same cacheable mapping).
            + VTCR_EL2::SH0::Inner
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::IRGN0::NormalWBRAWA
            // Start level and IPA size from the stage2 crate's geometry.
            + VTCR_EL2::SL0.val(geom.sl0())
            + VTCR_EL2::T0SZ.val(geom.t0sz())
            // 8-bit VMID.
            + VTCR_EL2::VS::Bits8,
    );
    VTTBR_EL2.write(VTTBR_EL2::VMID.val(VMID) + VTTBR_EL2::BADDR.val(s2.root() >> 1));
    // Out of reset this CPU's TLB and I-cache hold UNKNOWN entries: drop any for the guest's VMID
    // and any instruction line before the guest's first entry (after the VTTBR_EL2 write, whose
    // VMID the TLBI uses).
    arch::guest_cold_start_local();
    // The guest reads CNTVCT = CNTPCT (no offset: one vCPU per CPU, never descheduled, so its
    // virtual time is real time) and may use the physical counter and timer itself
    // (EL1PCTEN/EL1PCEN: no trap), as Linux and kvm-unit-tests' timer test do.
    CNTVOFF_EL2.set(0);
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::SET);
    // FP/SIMD is the guest's to use (the compiler emits it for plain struct copies): CPACR_EL1
    // resets to trapping it at EL1, which a guest without a vector for it cannot survive. The
    // hypervisor is soft-float and never touches FP/SIMD state, so the guest's stays in the
    // registers across every trap (exceptions.rs).
    CPACR_EL1.write(CPACR_EL1::FPEN::TrapNothing);
    // The guest's EL1 starts with its MMU and caches off, little-endian, no alignment checks.
    SCTLR_EL1.modify(
        SCTLR_EL1::M::Disable
            + SCTLR_EL1::C::NonCacheable
            + SCTLR_EL1::I::NonCacheable
            + SCTLR_EL1::A::Disable
            + SCTLR_EL1::EE::LittleEndian
            + SCTLR_EL1::E0E::LittleEndian,
    );
    // The guest's vectors are its own business: an exception the hypervisor injects before the
    // guest sets VBAR_EL1 goes to the reset value's offsets (inject.rs), as it would on hardware.
    VBAR_EL1.set(0);
    arch::isb();
}
