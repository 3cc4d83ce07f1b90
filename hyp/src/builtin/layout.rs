//! The built-in guest's memory map (guest/src/abi.rs, shared with the guest) as the VM core sees
//! it: this file describes it to the core (`create` -> vm::Description: the image and data
//! memslots, the emulated UART, the entry) and finds its parts in the VM again (the core knows
//! memslots only by position). The core has no layout of its own.
//!
//! | IPA | what |
//! |---|---|
//! | `abi::UART_BASE` + `UART_SIZE` | the emulated PL011 |
//! | `abi::RAM_BASE` + `IMAGE_SLOT_SIZE` | memslot `image`: the guest ELF, then one stack per vCPU at the top |
//! | `abi::DATA_BASE` + vcpus * mem | memslot `data`: vCPU i's region at DATA_BASE + i * mem, or one shared region |

use alloc::format;
use alloc::string::String;

use crate::dtb::Platform;
use crate::memslot::Memslot;
use crate::options::{Backing, Options, Workload};
use crate::pool::{Region, PAGE};
use crate::vm::{self, Description, Guest, Vm, Window};
use crate::{abi, guest_image, percpu};

/// Position of the data memslot in `Vm::slots` (the image memslot is at 0).
const DATA: usize = 1;

/// Builds the VM for the built-in guest: its two memslots, its image copied in
/// (guest_image.rs), its UART window, with `harness::BUILTIN` attached.
pub fn create(
    opts: Options,
    tables: &'static Region,
    backing: &'static Region,
    platform: &Platform,
) -> Result<&'static Vm, String> {
    // One region per vCPU, or one region for all (overlap, pagetable).
    let data_size = if shared_region(&opts) {
        opts.mem
    } else {
        opts.mem * opts.vcpus as u64
    };
    let needed = (data_size + abi::IMAGE_SLOT_SIZE) / PAGE;
    if needed > backing.pages as u64 {
        return Err(format!(
            "mem={}K x vcpus={} needs {} MiB of guest memory; only {} MiB are free \
             (use a smaller mem= or fewer vcpus=, or give QEMU more RAM: MEM=2G cargo run -- ...)",
            opts.mem >> 10,
            opts.vcpus,
            (needed * PAGE) >> 20,
            (backing.pages as u64 * PAGE) >> 20
        ));
    }
    let image = Memslot::new("image", abi::RAM_BASE, abi::IMAGE_SLOT_SIZE);
    // pagetable's adjust phase collapses chunks into blocks: its slot is chunked in either mode.
    let data = if opts.backing == Backing::Block2M || opts.workload == Workload::Pagetable {
        Memslot::new_chunked("data", abi::DATA_BASE, data_size)
    } else {
        Memslot::new("data", abi::DATA_BASE, data_size)
    };
    let entry = guest_image::load(
        &image,
        stack_top(opts.vcpus - 1) - abi::STACK_SIZE,
        percpu::this_cpu(),
        backing,
    )?;
    let desc = Description {
        // The order `DATA` names.
        slots: alloc::vec![image, data],
        uart: Some(Window {
            base: abi::UART_BASE,
            size: abi::UART_SIZE,
        }),
        entry,
    };
    vm::create(
        opts,
        tables,
        backing,
        platform,
        Guest::Builtin,
        desc,
        &super::harness::BUILTIN,
    )
}

/// The data memslot (the vCPUs' regions).
pub fn data(vm: &Vm) -> &Memslot {
    &vm.slots[DATA]
}

/// Whether every vCPU works on the same region (the data slot is one region of `mem=`).
pub fn shared_region(opts: &Options) -> bool {
    crate::expect::shared(opts.workload.guest_number())
}

/// Data region of vCPU `id` as (IPA, size).
pub fn region(vm: &Vm, id: usize) -> (u64, u64) {
    if shared_region(&vm.opts) {
        return (abi::DATA_BASE, vm.opts.mem);
    }
    (abi::DATA_BASE + id as u64 * vm.opts.mem, vm.opts.mem)
}

/// The top of vCPU `id`'s stack (its SP_EL1 at entry): stacks grow down from the end of the
/// image slot, one `abi::STACK_SIZE` each.
pub fn stack_top(id: usize) -> u64 {
    abi::DATA_BASE - id as u64 * abi::STACK_SIZE
}
