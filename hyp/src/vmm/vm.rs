//! The one VM: its options, memslots, stage-2 table and the EL2 register values every CPU
//! programs. Built once by CPU0 before any secondary starts; read-only afterwards except for the
//! stage-2 table itself, which the reporter takes back at teardown.

use aarch64_cpu::registers::{
    ReadWriteable, Readable, Writeable, CNTFRQ_EL0, CNTHCTL_EL2, CNTVOFF_EL2, CPACR_EL1, HCR_EL2,
    HDFGRTR_EL2, HDFGWTR_EL2, HFGITR_EL2, HFGRTR_EL2, HFGWTR_EL2, ICC_SRE_EL2, ICH_HCR_EL2,
    ID_AA64DFR0_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64PFR0_EL1, MDCR_EL2, MIDR_EL1,
    MPIDR_EL1, VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2,
};
use alloc::format;
use alloc::string::String;
use arch_decode::idregs::IdPolicy;
use core::cell::UnsafeCell;
use spin::Once;
use stage2::{Config, MemAttrEncoding, Stage2};

use crate::boot_protocol::{self, Format};
use crate::dtb::Platform;
use crate::guest_dtb::{self, GuestDtb};
use crate::harness::{Harness, Plain};
use crate::memslot::Memslot;
use crate::options::{Backing, Options};
use crate::passthrough::Passthrough;
use crate::pool::Region;
use crate::sysreg_ext::{self, CPTR_EL2_NVHE, HCRX_EL2, ICH_HCR_EL2_TRAPS};
use crate::tables::HypPool;
use crate::tlb::HypTlb;
use crate::write_log::WriteLog;
use crate::{arch, mmu, percpu};
use alloc::vec::Vec;
use tock_registers::fields::FieldValue;
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

/// A window of guest-physical addresses: `[base, base + size)`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// First IPA.
    pub base: u64,
    /// Bytes.
    pub size: u64,
}

impl Window {
    /// Whether `ipa` lies in the window.
    pub fn contains(&self, ipa: u64) -> bool {
        ipa >= self.base && ipa - self.base < self.size
    }

    /// Whether the `len` bytes from `ipa` lie wholly in the window.
    pub fn holds(&self, ipa: u64, len: u64) -> bool {
        self.contains(ipa) && len <= self.size - (ipa - self.base)
    }
}

/// What a guest kind tells the VM core about its guest's memory and devices (`create`): the
/// core has no layout of its own. The built-in guest's harness describes its image and data
/// slots and its UART (builtin/layout.rs); a guest from files gets one RAM slot from its boot
/// protocol (`create_from_files`, boot_protocol.rs).
pub struct Description {
    /// Guest RAM, demand-paged through the stage-2 fault path (vcpu.rs); disjoint, each inside
    /// the IPA space.
    pub slots: Vec<Memslot>,
    /// The emulated PL011's window (vcpu.rs `emulate_uart`), if the guest has one.
    pub uart: Option<Window>,
    /// Entry IPA of the vCPUs that are ON at VM start.
    pub entry: u64,
}

/// The VM.
pub struct Vm {
    /// What runs in it.
    pub guest: Guest,
    /// Run options.
    pub opts: Options,
    /// Guest RAM, as the guest kind described it (`Description::slots`, same order).
    pub slots: Vec<Memslot>,
    /// The emulated PL011's window, if any.
    pub uart: Option<Window>,
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
    /// A memslot's write log (write freeze and dirty logging), armed before any vCPU runs by a
    /// tool that copies guest memory while the guest runs (migrate=on); the fault path reads it
    /// (write_log.rs).
    pub write_log: Once<WriteLog>,
}

static VM: Once<Vm> = Once::new();

/// The VM (after `create`).
pub fn get() -> &'static Vm {
    VM.get().expect("VM not created")
}

/// Builds the VM from a guest kind's description: checks it against the CPU and the IPA space,
/// creates the stage-2 table and maps a guest from files' pass-through devices. CPU0, before
/// starting secondaries. The guest kind has already put its images into `desc.slots`; `harness`
/// is its harness (`Plain` for a guest from files).
pub fn create(
    opts: Options,
    tables: &'static Region,
    backing: &'static Region,
    platform: &Platform,
    guest: Guest,
    desc: Description,
    harness: &'static dyn Harness,
) -> Result<&'static Vm, String> {
    let cpus = platform.mpidrs.len();
    // The stage-2 input size may not exceed the physical address size the CPU implements, and
    // the guest is told PARange = IPA_BITS (idregs): refuse to start on a smaller CPU rather than
    // run with an IPA size the hardware does not support (Arm ARM VTCR_EL2; KVM caps the IPA
    // size at PARange the same way).
    let parange = aarch64_cpu::registers::ID_AA64MMFR0_EL1
        .read(aarch64_cpu::registers::ID_AA64MMFR0_EL1::PARange) as u8;
    if !arch_decode::idregs::ipa_size_supported(parange, IPA_BITS) {
        return Err(format!(
            "this CPU's physical address range (ID_AA64MMFR0_EL1.PARange = {parange:#06b}, {} \
             bits) is smaller than the {IPA_BITS}-bit IPA space the guest is given",
            arch_decode::idregs::parange_bits(parange).unwrap_or(0)
        ));
    }
    if let Some(s) = desc.slots.iter().find(|s| s.ipa + s.size > 1 << IPA_BITS) {
        return Err(format!(
            "guest memory (memslot {} at {:#x}+{:#x}) ends above the {IPA_BITS}-bit IPA space",
            s.name, s.ipa, s.size
        ));
    }
    let (s2, table_pages_before) = new_stage2(tables, cpus)?;
    if let Guest::Files { devices, .. } = &guest {
        let pages = devices
            .map(&s2, percpu::this_cpu().index)
            .map_err(|e| format!("mapping the pass-through devices: {e:?}"))?;
        log::info!("guest: {pages} device pages passed through");
    }
    Ok(VM.call_once(|| Vm {
        guest,
        opts,
        slots: desc.slots,
        uart: desc.uart,
        tables,
        backing,
        s2: Owned::new(s2),
        entry: desc.entry,
        harness,
        table_pages_before,
        write_log: Once::new(),
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

/// Builds the VM for a guest from files: the RAM memslot (demand-paged, 2 MiB chunks with
/// backing=2m), the kernel, initrd and guest DTB copied into it (boot_protocol.rs,
/// guest_dtb.rs), and the pass-through devices mapped (passthrough.rs, in `create`).
pub fn create_from_files(
    opts: Options,
    tables: &'static Region,
    backing: &'static Region,
    platform: &Platform,
) -> Result<&'static Vm, String> {
    let files = opts.files.clone().ok_or("no guest files")?;
    // vCPU i runs on CPU i (one vCPU per physical CPU) and reads its MPIDR.
    let mpidrs: Vec<u64> = platform.mpidrs[..opts.vcpus].to_vec();
    // SAFETY: main.rs ended the pools below both files; nothing writes them.
    let kernel = unsafe { boot_protocol::host_file(files.kernel.0, files.kernel.1) };
    // SAFETY: as above.
    let initrd = files
        .initrd
        .map(|(a, s)| unsafe { boot_protocol::host_file(a, s) });
    let format = boot_protocol::detect(kernel)?;
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

    let initrd_at = layout.initrd.map_or_else(
        || String::from("none"),
        |(ipa, size)| format!("{ipa:#x}+{size} bytes"),
    );
    log::info!(
        "guest: {} kernel {} bytes at {:#x}, DTB {} bytes at {:#x}, initrd {initrd_at}, RAM \
         {:#x}+{}M ({} backing); removed from its DTB: {}",
        format.name(),
        kernel.len(),
        layout.entry,
        dtb.len(),
        layout.dtb,
        boot_protocol::RAM_BASE,
        opts.ram >> 20,
        opts.backing.name(),
        removed.join(" ")
    );
    let desc = Description {
        slots: alloc::vec![ram],
        // A .flat's console is the emulated PL011, at the board's PL011 address (its DTB keeps
        // that node); Linux gets the real one passed through.
        uart: match format {
            Format::Linux { .. } => None,
            Format::Flat => Some(Window {
                base: platform.uart,
                size: crate::pool::PAGE,
            }),
        },
        entry: layout.entry,
    };
    let guest = Guest::Files {
        format,
        layout,
        devices,
        mpidrs,
    };
    create(opts, tables, backing, platform, guest, desc, &Plain)
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
        self.slots.iter().find(|s| s.contains(ipa))
    }

    /// Cleans and invalidates to the point of coherency every page of guest RAM that has backing
    /// (every memslot, and the harness's own memory such as the bad-guest overcommit slot,
    /// through `Harness::for_each_backed`, so the core names no harness): after it, what the guest wrote
    /// through a cache is in memory and no line shadows memory (arch::clean_invalidate_dcache,
    /// which ends with DSB SY). Used for trapped set/way maintenance without FEAT_S2FWB.
    pub fn clean_invalidate_backed_memory(&self) {
        let mut clean =
            |pa: u64| arch::clean_invalidate_dcache(pa as usize, crate::pool::PAGE as usize);
        for slot in &self.slots {
            slot.for_each_backed(&mut clean);
        }
        self.harness.for_each_backed(&mut clean);
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
    // SPE, the trace buffer and TRFCR_EL1 are trapped through MDCR_EL2, written whole by
    // `init_el2_state`.
}

/// EL2 state only a guest from files needs, on the CPU that runs its vCPU (this one). (HCRX_EL2,
/// VPIDR_EL2 and VMPIDR_EL2 are written for every guest by `init_el2_state`: vCPU i runs on CPU
/// i, so VMPIDR = this CPU's MPIDR, and its GICR frame and the affinities the guest programs into
/// GICD_IROUTER are the real ones under GICv3 pass-through.)
fn configure_files_guest(mpidrs: &[u64]) {
    // (A CPU that runs no vCPU, the chaos pruner, is configured too: it issues the VM's TLB
    // maintenance, which needs its VMID, but never enters the guest.)
    debug_assert!(
        mpidrs.contains(&(MPIDR_EL1.get() & 0xFF_00FF_FFFF))
            || percpu::this_cpu().index >= mpidrs.len()
    );
    // EL1 may use the GICv3 CPU interface's system registers (ICC_*_EL1) itself: SRE = 1 at
    // EL2 and Enable = 1, so EL1 accesses to ICC_SRE_EL1 do not trap to EL2 (Arm GICv3 spec,
    // 12.7.x "ICC_SRE_EL2").
    ICC_SRE_EL2.write(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
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
            + VTCR_EL2::VS::Bits8
            // FEAT_HAFDBS, only for the workloads that measure it (options.rs): the hardware
            // sets AF on access (HA) and S2AP[1] on the first write to a DBM leaf (HD). HD
            // takes effect only with HA set too (Arm ARM VTCR_EL2.HD: "enabled, only if the
            // VTCR_EL2.HA bit is also set"), so HD implies HA.
            + if vm.opts.hw_access_flag() {
                VTCR_EL2::HA::Enabled
            } else {
                VTCR_EL2::HA::Disabled
            }
            + if vm.opts.hw_dirty() {
                VTCR_EL2::HD::Enabled
            } else {
                VTCR_EL2::HD::Disabled
            },
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
    // The event stream (EVNTEN, EVNTI) sets this CPU's event register about every half
    // millisecond, so every WFE at EL2 is bounded even when the SEV it waits for never comes (a
    // CPU_ON caller whose target never starts: lifecycle.rs). A guest's WFE may see these extra
    // wake-ups, which a WFE may have at any time (Arm ARM D1.6.1); Linux runs its own anyway.
    CNTHCTL_EL2.write(
        CNTHCTL_EL2::EL1PCTEN::SET
            + CNTHCTL_EL2::EL1PCEN::SET
            + cnthctl_evnten()
            + cnthctl_evnti(CNTFRQ_EL0.get()),
    );
    // FP/SIMD is the guest's to use (the compiler emits it for plain struct copies): CPACR_EL1
    // resets to trapping it at EL1, which a guest without a vector for it cannot survive. The
    // hypervisor is soft-float and never touches FP/SIMD state, so the guest's stays in the
    // registers across every trap (exceptions.rs).
    CPACR_EL1.write(CPACR_EL1::FPEN::TrapNothing);
    // Every other EL2 control and the guest's SCTLR_EL1, written whole (UNKNOWN out of reset).
    init_el2_state(vm);
    // The guest's vectors are its own business: an exception the hypervisor injects before the
    // guest sets VBAR_EL1 goes to the reset value's offsets (inject.rs), as it would on hardware.
    VBAR_EL1.set(0);
    arch::isb();
}

/// The CPU features `init_el2_state` depends on, from this CPU's ID registers (all fields are
/// 4 bits; Arm ARM D24.2 "ID_AA64*").
struct El2Features {
    /// FEAT_RAS (ID_AA64PFR0_EL1.RAS != 0): TERR/TEA, VSESR_EL2 exist.
    ras: bool,
    /// A GICv3 CPU interface with System registers (ID_AA64PFR0_EL1.GIC != 0): ICH_* exist.
    gic: bool,
    /// FEAT_HCX (ID_AA64MMFR1_EL1.HCX, bits [43:40]): HCRX_EL2 exists.
    hcx: bool,
    /// FEAT_MOPS (ID_AA64ISAR2_EL1.MOPS, bits [19:16]).
    mops: bool,
    /// FEAT_FGT (ID_AA64MMFR0_EL1.FGT, bits [59:56]): HFG*_EL2, HDFG*_EL2 exist.
    fgt: bool,
    /// ID_AA64DFR0_EL1.PMUVer (bits [11:8]): 0 none, 0xF IMPLEMENTATION DEFINED, else PMUv3
    /// (4 = v3p1: MDCR_EL2.HPMD; 6 = v3p5: MDCR_EL2.HCCD).
    pmuver: u64,
    /// FEAT_SPE (PMSVer, bits [35:32]).
    spe: bool,
    /// FEAT_TRF (TraceFilt, bits [43:40]): TRFCR_EL1, MDCR_EL2.TTRF.
    trf: bool,
    /// FEAT_TRBE (TraceBuffer, bits [47:44]): MDCR_EL2.E2TB.
    trbe: bool,
}

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xF
}

impl El2Features {
    fn read() -> Self {
        let pfr0 = ID_AA64PFR0_EL1.get();
        let dfr0 = ID_AA64DFR0_EL1.get();
        Self {
            ras: field(pfr0, 28) != 0,
            gic: field(pfr0, 24) != 0,
            hcx: field(ID_AA64MMFR1_EL1.get(), 40) != 0,
            mops: field(crate::idregs::hardware(6, 2), 16) != 0,
            fgt: field(ID_AA64MMFR0_EL1.get(), 56) != 0,
            pmuver: field(dfr0, 8),
            spe: field(dfr0, 32) != 0,
            trf: field(dfr0, 40) != 0,
            trbe: field(dfr0, 44) != 0,
        }
    }

    fn pmuv3(&self) -> bool {
        self.pmuver != 0 && self.pmuver != 0xF
    }
}

/// Whether this CPU has FEAT_RAS (inject.rs writes VSESR_EL2 only then).
pub fn has_ras() -> bool {
    El2Features::read().ras
}

/// Whether this CPU has FEAT_FGT (the fuzzer's must-UNDEF oracle for SMPRI_EL1/TPIDR2_EL0
/// depends on it: only fine-grained traps, `init_el2_state`, reach those at EL1).
pub fn has_fgt() -> bool {
    El2Features::read().fgt
}

impl Vm {
    /// What this VM's guest is told by the ID registers beyond the fixed policy (idregs.rs):
    /// the built-in guest gets no GIC (the hypervisor does not virtualise its interrupts, and
    /// every ICC_* access of its is UNDEFINED, see `init_el2_state`); MOPS as HCRX_EL2.MSCEn
    /// enables it; AArch32 ID registers only if some EL implements AArch32.
    pub fn id_policy(&self) -> IdPolicy {
        let f = El2Features::read();
        IdPolicy {
            // Guests from files get the GICv3 CPU interface passed through (passthrough.rs).
            gic: !self.builtin(),
            aarch32: arch_decode::idregs::aarch32_implemented(ID_AA64PFR0_EL1.get()),
            mops: f.hcx && f.mops,
            // Pointer authentication as configure_this_cpu sets HCR_EL2.API/APK: a guest from
            // files gets it (API = APK = 1), the built-in guest does not (its PAC instructions
            // and key registers trap), so only the former is told it exists.
            ptrauth: !self.builtin(),
        }
    }
}

/// Writes every EL2 control and EL1 register the guest's world depends on that is UNKNOWN out
/// of reset on real hardware (QEMU zeroes most of them, so nothing here shows under QEMU: each
/// line names the rule it meets). Every CPU, before its vCPU, after HCR_EL2 is written.
fn init_el2_state(vm: &Vm) {
    let f = El2Features::read();
    let policy = vm.id_policy();

    // HCR_EL2 additions (on top of configure_this_cpu's value):
    // - TIDCP: EL1 accesses to the IMPLEMENTATION DEFINED System register space (op0 3, CRn 11
    //   and 15) trap to EL2 (EC 0x18) and get an UNDEF there: an IMPLEMENTATION DEFINED
    //   register can control anything about the physical CPU (prefetchers, errata workarounds,
    //   power), so the guest is shown none.
    // - TACR: ACTLR_EL1 (IMPLEMENTATION DEFINED auxiliary control) traps; it reads as zero and
    //   ignores writes (vcpu.rs, arch_decode::razwi), as KVM answers it.
    // - TERR, TEA with FEAT_RAS: the error record registers (ERRIDR_EL1, ERRSELR_EL1, ERX*_EL1)
    //   trap and read as "no records" (RAZ/WI, as KVM answers them), so the guest cannot read or
    //   clear the physical CPU's error records; synchronous external aborts are routed to EL2
    //   (EC 0x24/0x20, FSC 0x10/0x14..), where the abort path forwards them to the guest.
    let ras = if f.ras {
        HCR_EL2::TERR::SET + HCR_EL2::TEA::SET
    } else {
        HCR_EL2::TERR::CLEAR + HCR_EL2::TEA::CLEAR
    };
    HCR_EL2.modify(HCR_EL2::TIDCP::SET + HCR_EL2::TACR::SET + ras);

    // VPIDR_EL2 / VMPIDR_EL2: what the guest's MIDR_EL1 / MPIDR_EL1 reads return (UNKNOWN out
    // of reset). The physical values: vCPU n runs on CPU n for its whole life, so this CPU's
    // MPIDR is the vCPU's, and the guest's CPU identification is the real one's.
    sysreg_ext::write_vpidr_el2(MIDR_EL1.get());
    VMPIDR_EL2.set(MPIDR_EL1.get());
    // HSTR_EL2: no trap of AArch32 CP15 accesses by CRn (EL1 is AArch64; EL0 AArch32 accesses
    // are the guest's). UNKNOWN out of reset.
    sysreg_ext::write_hstr_el2(0);

    // MDCR_EL2, written whole. Policy (docs/robustness.md): the guest owns self-hosted debug and
    // the PMU: each physical CPU runs one vCPU, so nothing needs to be multiplexed, and the
    // ID registers show them (DebugVer, PMUVer, BRPs, WRPs pass).
    // - HPMN = PMCR_EL0.N: every event counter belongs to EL1/EL0 (a smaller value hands the
    //   rest to EL2); HPME = 0 (EL2 has no counters).
    // - HPMD = 1 (FEAT_PMUv3p1), HCCD = 1 (FEAT_PMUv3p5): nothing the hypervisor does is counted
    //   in the guest's event counters or cycle counter.
    // - TPM = TPMCR = 0: PMU registers are the guest's, not trapped.
    // - TDE = 0: debug exceptions go to EL1 and are never generated at EL2 (the debug target EL
    //   is EL1, below EL2, so EL2 is not debuggable by the guest's breakpoints/watchpoints).
    //   TDA = TDOSA = TDRA = 0: the guest's debug, OS lock and ROM registers are its own.
    // - SPE (FEAT_SPE): TPMS = 1 (sampling controls PMS*_EL1 trap), E2PB = 0b00 (the profiling
    //   buffer PMB*_EL1 is EL2's: EL1 accesses trap): a guest must not aim the profiler at
    //   memory. Trapped accesses get UNDEF; ID_AA64DFR0_EL1.PMSVer = 0.
    // - Trace buffer (FEAT_TRBE): E2TB = 0b00 (owned by EL2, EL1 accesses to TRB*_EL1 trap ->
    //   UNDEF); trace filter (FEAT_TRF): TTRF = 1 (TRFCR_EL1 traps -> UNDEF). Trace is trapped by
    //   policy (CPTR_EL2.TTA); TraceBuffer and TraceFilt read 0.
    let hpmn = if f.pmuv3() {
        (sysreg_ext::read_pmcr_el0() >> 11) & 0x1F
    } else {
        0
    };
    MDCR_EL2.write(
        MDCR_EL2::HPMN.val(hpmn)
            + MDCR_EL2::HPME::CLEAR
            + if f.pmuver >= 4 && f.pmuv3() {
                MDCR_EL2::HPMD::SET
            } else {
                MDCR_EL2::HPMD::CLEAR
            }
            + if f.pmuver >= 6 && f.pmuv3() {
                MDCR_EL2::HCCD::SET
            } else {
                MDCR_EL2::HCCD::CLEAR
            }
            + MDCR_EL2::TPM::CLEAR
            + MDCR_EL2::TPMCR::CLEAR
            + MDCR_EL2::TDE::CLEAR
            + MDCR_EL2::TDA::CLEAR
            + MDCR_EL2::TDOSA::CLEAR
            + MDCR_EL2::TDRA::CLEAR
            + if f.spe {
                MDCR_EL2::TPMS::SET + MDCR_EL2::E2PB::OwnedByEL2OrEL1
            } else {
                MDCR_EL2::TPMS::CLEAR
            }
            + if f.trf {
                MDCR_EL2::TTRF::SET
            } else {
                MDCR_EL2::TTRF::CLEAR
            },
        // E2TB = 0b00 (the write's zero) with FEAT_TRBE; RES0 without it.
    );
    let _ = f.trbe;

    if f.gic {
        // GIC (issue 9 B3): the built-in guest is shown no GIC (id_policy), so every ICC_*
        // access of its must be UNDEFINED, consistently: ICH_HCR_EL2.TALL0/TALL1/TC/TDIR trap
        // all of its EL1 accesses to the CPU interface (which with HCR_EL2.IMO/FMO = 1 would go
        // to the virtual interface, ICV_*; ICC_SGI*R trap anyway), and ICC_SRE_EL2.Enable = 0
        // traps its ICC_SRE_EL1 accesses; vcpu.rs answers each with an UNDEF. En = 0: no virtual
        // interrupt is delivered. (idle.rs's EL2 use of the GIC needs only ICC_SRE_EL2.SRE.) A
        // guest kind with GIC pass-through would write ICH_HCR_EL2 = 0 and Enable = 1 instead.
        // ICH_HCR_EL2 is UNKNOWN out of reset, so it is written either way.
        let ich: InMemoryRegister<u64, ICH_HCR_EL2_TRAPS::Register> = InMemoryRegister::new(0);
        if policy.gic {
            ich.write(ICH_HCR_EL2_TRAPS::EN::CLEAR);
        } else {
            ich.write(
                ICH_HCR_EL2_TRAPS::TALL0::SET
                    + ICH_HCR_EL2_TRAPS::TALL1::SET
                    + ICH_HCR_EL2_TRAPS::TC::SET
                    + ICH_HCR_EL2_TRAPS::TDIR::SET
                    + ICH_HCR_EL2_TRAPS::EN::CLEAR,
            );
        }
        ICH_HCR_EL2.set(ich.get());
        ICC_SRE_EL2.modify(if policy.gic {
            ICC_SRE_EL2::ENABLE::SET
        } else {
            ICC_SRE_EL2::ENABLE::CLEAR
        });
    }

    if f.hcx {
        // HCRX_EL2 (FEAT_HCX, UNKNOWN out of reset): no extra traps or enables, except MSCEn
        // with FEAT_MOPS (the memory copy/set instructions are UNDEFINED at EL1/EL0 without it;
        // ID_AA64ISAR2_EL1.MOPS says so to the guest, id_policy).
        let hcrx: InMemoryRegister<u64, HCRX_EL2::Register> = InMemoryRegister::new(0);
        hcrx.write(if f.mops {
            HCRX_EL2::MSCEN::SET
        } else {
            HCRX_EL2::MSCEN::CLEAR
        });
        sysreg_ext::write_hcrx_el2(&hcrx);
    }

    if f.fgt {
        // Fine-grained traps (FEAT_FGT, UNKNOWN out of reset): all 0. A plain bit at 0 does not
        // trap; an "n" bit (nSMPRI_EL1, nTPIDR2_EL0, nPIR_EL1, nPOR_EL1, nGCS*, ...) at 0 does.
        // So SMPRI_EL1 and TPIDR2_EL0 (SME registers, which CPTR_EL2.TSM cannot trap) reach EL2
        // and get an UNDEF, as on a CPU without SME; the other n-bit registers belong to
        // features the ID registers hide (S1PIE, S1POE, GCS, THE, LS64), so trapping them is
        // consistent, and where a feature is absent the bit is RES0 and 0 is right.
        HFGRTR_EL2.set(0);
        HFGWTR_EL2.set(0);
        HFGITR_EL2.set(0);
        HDFGRTR_EL2.set(0);
        HDFGWTR_EL2.set(0);
    }

    if f.ras {
        // VSESR_EL2 (FEAT_RAS): the syndrome of a virtual SError (inject.rs); UNKNOWN out of
        // reset. 0: an IMPLEMENTATION DEFINED error with no further information.
        sysreg_ext::write_vsesr_el2(0);
    }

    // SCTLR_EL1 (most fields UNKNOWN out of reset), the EL1 timers' controls and MDSCR_EL1: the
    // same EL1 reset state a vCPU gets when PSCI CPU_ON restarts it (el1_reset.rs, one
    // definition): MMU, caches and alignment checks off, little-endian, the Armv8.0 RES1 bits set.
    crate::el1_reset::reset(false);
}

/// CNTHCTL_EL2.EVNTEN (bit 2): generate the event stream from the physical counter (Arm ARM
/// D11.2.3, "Event streams"). aarch64-cpu 11 has no field for it.
fn cnthctl_evnten() -> FieldValue<u64, CNTHCTL_EL2::Register> {
    FieldValue::<u64, CNTHCTL_EL2::Register>::new(1, 2, 1)
}

/// CNTHCTL_EL2.EVNTI (bits [7:4]) for an event about every half millisecond at counter
/// frequency `freq` Hz: with EVNTDIR = 0 an event fires when counter bit EVNTI goes 0 to 1,
/// every 2^(EVNTI + 1) ticks, so EVNTI = floor(log2(freq / 1000)) - 1, clamped to 0..=15.
fn cnthctl_evnti(freq: u64) -> FieldValue<u64, CNTHCTL_EL2::Register> {
    let per_ms = (freq / 1000).max(1);
    let evnti = u64::from((63 - per_ms.leading_zeros()).saturating_sub(1)).min(15);
    FieldValue::<u64, CNTHCTL_EL2::Register>::new(0xf, 4, evnti)
}
