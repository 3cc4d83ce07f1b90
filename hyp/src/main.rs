//! An EL2 hypervisor for QEMU's virt board that runs one small guest on every CPU and serves
//! their stage-2 faults in parallel through the `stage2` crate. See docs/hypervisor.md.
//!
//! Boot: CPU0 enters at `_start` (boot.rs) -> `primary_main`: DTB RAM -> EL2 MMU on -> heap ->
//! DTB -> console -> options -> page pools -> VM (memslots, guest image, stage-2 table) ->
//! secondaries via PSCI CPU_ON -> every CPU runs its vCPU -> the first CPU whose vCPU finished
//! waits for the rest, checks, reports and exits QEMU.

#![no_std]
#![no_main]

// `cargo test` at the top level lands here (hyp is the default member): the hypervisor runs
// only under QEMU, so say what runs the tests instead of failing on a missing `test` crate.
#[cfg(test)]
compile_error!(
    "the hypervisor is a bare-metal binary with no unit tests to run here: tests/all.sh runs \
     every test (host tests: cargo test -p stage2 -p arch-decode -p psci-lifecycle --target \
     <host triple>)"
);

extern crate alloc;

#[allow(dead_code)] // Shared with the guest, which uses other parts.
#[path = "../../guest/src/abi.rs"]
mod abi;
#[path = "../../guest/src/workloads/expect.rs"]
mod expect;
#[path = "../../guest/src/pattern.rs"]
mod pattern;

mod builtin;
mod options;
mod platform;
mod vmm;

// The layers by folder; short paths (`crate::vm`, `crate::arch`) for the modules inside them.
use builtin::{
    aging, badguest, calibrate, chaos, fuzz, guest_image, layout, migrate, phases, psci_check,
    report,
};
use platform::{
    arch, boot, console, dtb, exit, firmware, idle, irq, mmu, percpu, pool, sysreg_ext, uart,
};
use vmm::{
    boot_protocol, decode, el1_reset, evict, exceptions, finish, frame, guest_dtb, harness, idregs,
    inject, lifecycle, memslot, passthrough, psci, tables, tlb, vcpu, vm, write_log,
};

use aarch64_cpu::registers::{CurrentEL, Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::boxed::Box;
use buddy_system_allocator::LockedHeap;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Once;

use crate::boot::BootRecord;
use crate::options::Parsed;
use crate::pool::Region;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Bytes for the hypervisor's own heap (per-CPU areas, memslot arrays, stacks, PageMeta).
const HEAP_SIZE: u64 = 16 << 20;
/// Each secondary CPU's stack.
const STACK_SIZE: usize = 64 << 10;
const MIB2: u64 = 2 << 20;

static TABLES: Once<Region> = Once::new();
static BACKING: Once<Region> = Once::new();
/// CNTPCT when the VM was created (the timeout and run time count from here).
static START: AtomicU64 = AtomicU64::new(0);
/// The GICv3 (distributor, redistributors) from the DTB, for the reporter's idle wait.
static GIC_V3: Once<Option<(u64, u64)>> = Once::new();
/// How often the reporter wakes to check on the vCPUs.
const POLL_HZ: u64 = 200;
/// The CPU that waits for the others and reports (`usize::MAX` = not chosen yet).
static REPORTER: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Fails before the console exists: only the exit status can say why.
fn early_fail(code: u32) -> ! {
    exit::exit(code)
}

fn fail(msg: &str, code: u32) -> ! {
    println!("FAIL: {msg}");
    println!("RESULT status=fail reason=setup");
    exit::exit(code)
}

#[unsafe(no_mangle)]
extern "C" fn primary_main() -> ! {
    if CurrentEL.read(CurrentEL::EL) != 2 {
        early_fail(10);
    }
    // MMU off: no atomics, no heap. Map RAM first.
    let mut ram = [(0, 0); dtb::MAX_RAM_RANGES];
    let Ok(n) = dtb::early_ram(&mut ram) else {
        early_fail(11)
    };
    mmu::build(&ram[..n]);
    mmu::enable();
    exceptions::install();

    // The heap, then the rest of RAM for the pools, all above the image (the DTB is below it).
    let (_, image_end) = boot::image_range();
    let heap_base = image_end.next_multiple_of(MIB2);
    // SAFETY: [heap_base, +HEAP_SIZE) is RAM above the image and the DTB that nothing else uses;
    // `ram_top` below checks it exists.
    unsafe { HEAP.lock().init(heap_base as usize, HEAP_SIZE as usize) };
    let Ok(platform) = dtb::parse() else {
        early_fail(12)
    };
    console::init(platform.uart as usize);
    firmware::init(platform.psci_smc);
    arch::detect_features();
    if arch::has_fwb() {
        log::info!(
            "coherency: FEAT_S2FWB present: HCR_EL2.FWB=1, guest RAM forced Write-Back by stage 2 \
             (MemAttr 0b0110); no cache maintenance for guest memory on the fault path"
        );
    } else {
        log::info!(
            "coherency: no FEAT_S2FWB: HCR_EL2.FWB=0; the image, zeroed and migrated guest pages \
             are cleaned to the point of coherency"
        );
    }
    let cpus = platform.mpidrs.len();
    let Some(&(ram_base, ram_size)) = platform
        .ram
        .iter()
        .find(|&&(b, s)| b <= heap_base && heap_base < b + s)
    else {
        fail("the hypervisor image is not inside a /memory range", 2)
    };
    let ram_top = ram_base + ram_size;
    log::info!(
        "hyp: EL2, {cpus} CPUs {:x?}, RAM {ram_base:#x}..{ram_top:#x}, PSCI via {}, DTB {} bytes, \
         bootargs \"{}\"",
        platform.mpidrs,
        if platform.psci_smc { "SMC" } else { "HVC" },
        platform.dtb_size,
        platform.bootargs
    );
    percpu::init(&platform.mpidrs);
    GIC_V3.call_once(|| platform.gic_v3);

    let opts = match options::parse(platform.bootargs, cpus) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            println!("{}", options::help_text(cpus));
            exit::exit(0)
        }
        Err(msg) => {
            println!("error: {msg}");
            println!("RESULT status=fail reason=bad-option");
            exit::exit(2)
        }
    };
    // Options this CPU cannot run (dirty=hw without hardware dirty state, ...).
    if let Err(msg) = options::check_cpu(&opts, arch::hafdbs()) {
        println!("error: {msg}");
        println!("RESULT status=fail reason=unsupported");
        exit::exit(2)
    }
    log::info!(
        "options: {}, {} build",
        opts.summary(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );

    // A guest's files (run-qemu.sh --kernel/--initrd) sit near the top of RAM: the pools end
    // below them, so nothing ever allocates over them before they are copied into guest RAM.
    let mut ram_top = ram_top;
    if let Some(files) = &opts.files {
        for (what, (at, size)) in [("kernel", Some(files.kernel)), ("initrd", files.initrd)]
            .into_iter()
            .filter_map(|(w, r)| Some((w, r?)))
        {
            if at < heap_base + HEAP_SIZE + opts.tables + MIB2 || at + size > ram_top {
                fail(
                    &alloc::format!(
                        "{what}={at:#x}:{size:#x} is not in free RAM above the hypervisor \
                         ({:#x}..{ram_top:#x})",
                        heap_base + HEAP_SIZE + opts.tables + MIB2
                    ),
                    2,
                );
            }
            ram_top = ram_top.min(at & !(MIB2 - 1));
        }
    }
    let tables_base = heap_base + HEAP_SIZE;
    // The stage-2 table pool: `tables=` (options.rs), 8M by default.
    let backing_base = tables_base + opts.tables;
    if backing_base + MIB2 > ram_top {
        fail("not enough RAM for the hypervisor's pools", 2);
    }
    // SAFETY: the two regions are disjoint RAM above the heap, used by nothing else.
    let tables = TABLES.call_once(|| unsafe { Region::new(tables_base, opts.tables, cpus) });
    // SAFETY: as above.
    let backing =
        BACKING.call_once(|| unsafe { Region::new(backing_base, ram_top - backing_base, cpus) });
    log::info!(
        "pools: heap {heap_base:#x}+{}M, tables {tables_base:#x}+{}K, guest memory \
         {backing_base:#x}..{ram_top:#x}",
        HEAP_SIZE >> 20,
        opts.tables >> 10
    );

    calibrate::measure_zero(backing);
    // The guest kind describes its VM to the core: a guest from files through its boot
    // protocol (vm.rs), the built-in guest through its harness (builtin/layout.rs).
    let created = if opts.files.is_some() {
        vm::create_from_files(opts, tables, backing, &platform)
    } else {
        layout::create(opts, tables, backing, &platform)
    };
    let vm = match created {
        Ok(vm) => vm,
        Err(msg) => fail(&msg, 2),
    };
    // The built-in guest's ABI starts every vCPU at once (guest/src/abi.rs): all ON for PSCI.
    // A guest from files boots on vCPU 0 and starts the others with PSCI CPU_ON (DEN0022).
    lifecycle::init(
        &platform.mpidrs[..vm.opts.vcpus],
        if vm.builtin() {
            lifecycle::Start::EveryVcpu
        } else {
            lifecycle::Start::BootVcpuOnly
        },
        GIC_V3.get().copied().flatten(),
    );
    // workload=fuzz: fix and log the seed before any vCPU asks for it.
    fuzz::init(vm);
    if vm.opts.chaos {
        if let Err(msg) = chaos::prepare(vm) {
            fail(&msg, 2);
        }
    }
    // migrate=on: the copy buffer, before any vCPU runs (migrate.rs).
    if vm.opts.migrate {
        if let Err(msg) = migrate::prepare(vm) {
            fail(&msg, 2);
        }
    }
    START.store(CNTPCT_EL0.get(), Ordering::Relaxed);
    if vm.opts.steps {
        phases::enable_step_timers();
    }
    phases::init(
        cpus,
        CNTPCT_EL0.get() + vm.opts.timeout_s * CNTFRQ_EL0.get(),
        GIC_V3.get().copied().flatten(),
    );
    vm::configure_this_cpu(vm);

    for (id, &mpidr) in platform
        .mpidrs
        .iter()
        .enumerate()
        // One more CPU for each tool that runs on the CPU after the vCPUs: chaos=on's pruner
        // (chaos.rs), workload=aging's ager (aging.rs), migrate=on's migrator (migrate.rs).
        // options.rs lets at most one of them run (chaos=on forces workload=verify, aging is the
        // built-in guest's and migrate=on a guest from files', and migrate=on refuses chaos=on).
        .take(vm.opts.vcpus + spare_cpus(vm))
        .skip(1)
    {
        start_secondary(id, mpidr);
    }
    cpu_main(0)
}

/// CPUs started beside the vCPUs for the tools that run on the CPU after them (at most one:
/// see options.rs): the chaos pruner, the ager, the migrator.
fn spare_cpus(vm: &vm::Vm) -> usize {
    [
        chaos::pruner_cpu(vm),
        aging::ager_cpu(vm),
        migrate::migrator_cpu(vm),
    ]
    .iter()
    .filter(|c| c.is_some())
    .count()
}

/// Starts CPU `id` with its own stack through PSCI CPU_ON.
fn start_secondary(id: usize, mpidr: u64) {
    let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; STACK_SIZE].into_boxed_slice());
    let stack_top = (stack.as_ptr() as u64 + STACK_SIZE as u64) & !0xF;
    let record: &'static BootRecord = Box::leak(Box::new(BootRecord {
        stack_top,
        cpu: id as u64,
    }));
    // The secondary starts with its MMU and caches off: push what we wrote to memory and drop
    // any line that could later shadow its stack.
    arch::clean_invalidate_dcache(
        record as *const BootRecord as usize,
        size_of::<BootRecord>(),
    );
    arch::clean_invalidate_dcache(stack.as_ptr() as usize, STACK_SIZE);
    let entry = boot::secondary_entry as *const () as u64;
    if let Err(e) = firmware::cpu_on(mpidr, entry, record as *const BootRecord as u64) {
        fail(
            &alloc::format!("PSCI CPU_ON for cpu{id} (MPIDR {mpidr:#x}) failed: {e:?}"),
            2,
        );
    }
}

/// A secondary CPU in Rust: its own MMU, vectors and EL2 registers, then its vCPU.
#[unsafe(no_mangle)]
extern "C" fn secondary_main() -> ! {
    mmu::enable();
    exceptions::install();
    let vm = vm::get();
    vm::configure_this_cpu(vm);
    cpu_main(percpu::index())
}

/// Runs this CPU's vCPU; afterwards one CPU reports and the rest power off.
fn cpu_main(id: usize) -> ! {
    let vm = vm::get();
    if chaos::pruner_cpu(vm) == Some(id) {
        // This CPU runs no guest: it races the vCPUs until the reporter stops it.
        chaos::pruner(vm, percpu::this_cpu());
        firmware::cpu_off();
        loop {
            core::hint::spin_loop();
        }
    }
    if aging::ager_cpu(vm) == Some(id) {
        // This CPU runs no guest either: it ages the data memslot until the reporter stops it.
        aging::ager(vm, percpu::this_cpu());
        firmware::cpu_off();
        loop {
            core::hint::spin_loop();
        }
    }
    if migrate::migrator_cpu(vm) == Some(id) {
        // Between rounds it sleeps on its EL2 timer (1 ms naps) beside the guest's GIC.
        let waiter = GIC_V3.get().copied().flatten().and_then(|(gicd, gicr)| {
            let nap = CNTFRQ_EL0.get() / 1000;
            idle::Waiter::beside_guest(gicd, gicr, percpu::this_cpu().mpidr, nap)
        });
        let start = START.load(Ordering::Relaxed);
        migrate::run(vm, percpu::this_cpu(), start, waiter.as_ref());
        firmware::cpu_off();
        loop {
            core::hint::spin_loop();
        }
    }
    vcpu::run(vm, id);
    if REPORTER
        .compare_exchange(usize::MAX, id, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let start = START.load(Ordering::Relaxed);
        // A `verify` run lasts duration= on purpose: the timeout counts after it.
        let deadline = start + (vm.opts.timeout_s + vm.opts.duration_s) * CNTFRQ_EL0.get();
        // Sleep between checks if the GIC lets the timer wake us; spin otherwise. A guest from
        // files owns the GIC (pass-through): it could disable the distributor and leave a WFI
        // here with nothing to wake it, so the reporter polls CNTPCT instead (its wait is short:
        // the run has ended and the other vCPUs are being evicted).
        let builtin = vm.builtin();
        let waiter = GIC_V3
            .get()
            .copied()
            .flatten()
            .filter(|_| builtin)
            .and_then(|(gicd, gicr)| {
                idle::Waiter::new(
                    gicd,
                    gicr,
                    percpu::this_cpu().mpidr,
                    CNTFRQ_EL0.get() / POLL_HZ,
                )
            });
        if waiter.is_none() && builtin {
            log::warn!("no GICv3 timer wake-up: the reporter spins while it waits");
        }
        // A guest from files that ended its run may still have vCPUs in the guest that never
        // trap: make them fault (evict.rs), again each second in case one mapped a page back.
        let mut running = loop {
            let evicted = evict::evict(vm);
            if evicted > 0 {
                log::info!("evict: unmapped {evicted} guest RAM leaves to end the vCPUs still in the guest");
            }
            let until = deadline.min(CNTPCT_EL0.get() + CNTFRQ_EL0.get());
            let running = finish::wait_for_vcpus(vm, until, waiter.as_ref());
            if running.is_empty() || CNTPCT_EL0.get() > deadline {
                break running;
            }
        };
        // The pruner must be out of every stage-2 section before teardown; one that does not
        // stop counts as still running, which skips teardown and fails the run.
        if !chaos::stop(vm) {
            log::error!("chaos: the pruner did not stop");
            running.extend(chaos::pruner_cpu(vm));
        }
        if !aging::stop(vm) {
            log::error!("aging: the ager did not stop");
            running.extend(aging::ager_cpu(vm));
        }
        if !migrate::stop(vm) {
            log::error!("migrate: the migrator did not stop");
            running.extend(migrate::migrator_cpu(vm));
        }
        // The chaos pruner's and the migrator's sections apply to any guest kind they run with
        // (chaos.rs, migrate.rs): tools attached to the report, not fields of a harness.
        let chaos = |vm: &vm::Vm,
                     s: &stage2::Stats,
                     failures: &mut alloc::vec::Vec<alloc::string::String>| {
            chaos::report(vm, s, failures)
        };
        let migrate =
            |vm: &vm::Vm,
             _: &stage2::Stats,
             failures: &mut alloc::vec::Vec<alloc::string::String>| {
                migrate::report(vm, failures)
            };
        finish::finish(vm, &running, start, &[&chaos, &migrate])
    }
    // Someone else reports. A powered-off CPU costs nothing and never delays a broadcast TLBI;
    // it holds no RCU read-side section, so it delays no grace period either.
    firmware::cpu_off();
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    console::write_line_forced(format_args!(
        "FAIL: panic on cpu{}: {info}",
        percpu::index()
    ));
    console::write_line_forced(format_args!("RESULT status=fail reason=panic"));
    exit::exit(101)
}
