//! The one interface between the VM core and a guest kind's harness: what the core asks the
//! harness, and nothing else. The core (vcpu.rs, vm.rs, finish.rs) calls these hooks and never
//! names a harness; the built-in guest's harness (builtin/harness.rs) implements them, and a
//! guest from files gets `Plain`: no calls of its own, the plain map policy, no timing.
//!
//! The hooks:
//! - `boot_frame`: the registers a vCPU that is ON at VM start enters with (None: the boot
//!   protocol of a guest from files, vcpu.rs).
//! - `call`: an HVC/SMC with immediate 0 that the harness serves itself (its ABI); None passes
//!   it on to PSCI and the SMCCC architecture calls, which the core serves for every guest kind.
//! - `finished_ok`: whether a vCPU that ends by SYSTEM_OFF, or is OFF at the end, finished its
//!   work (the built-in guest must have reported its result first).
//! - `unclaimed_abort`: an abort outside every memslot and device, before the core answers it
//!   with an external abort.
//! - `map_fault`: maps a stage-2 fault to its backing page (4 KiB page, 2 MiB block, relax).
//! - `zero_page` (memslot.rs `ZeroPage`, a supertrait): zeroes a fresh backing page on the
//!   fault path (a timing hook).
//! - `check`, `report`: the harness's end-of-run checks and RESULT fields (vmm/finish.rs prints
//!   the core's: status, reason, leaked, faults per vCPU, ...).
//! - `for_each_backed`: the backing pages of the harness's own memory (outside the VM's
//!   memslots), for the core's whole-RAM cache maintenance.

use alloc::string::String;
use alloc::vec::Vec;
use arch_decode::smccc::Call;
use stage2::{Attrs, Error, Mapped, Perms, Size, Stats};

use crate::decode::{Abort, FaultType};
use crate::frame::{Action, Frame};
use crate::memslot::{Memslot, ZeroPage, CHUNK};
use crate::options::Backing;
use crate::percpu::PerCpu;
use crate::vm::Vm;

/// A stage-2 guard of this hypervisor's table.
pub type Guard<'a> = stage2::Guard<'a, crate::tables::HypPool, crate::tlb::HypTlb>;

/// What a guest kind's harness adds to the VM core (module docs). Every hook has the default a
/// guest from files gets.
pub trait Harness: ZeroPage + Sync {
    /// Registers of vCPU `id` at its boot entry, or None for the core's boot protocol.
    fn boot_frame(&self, _vm: &Vm, _id: usize) -> Option<Frame> {
        None
    }

    /// Serves an HVC/SMC call of the harness's own ABI; None if it is not one.
    fn call(&self, _vm: &Vm, _cpu: &PerCpu, _frame: &mut Frame, _call: &Call) -> Option<Action> {
        None
    }

    /// Whether vCPU `cpu` finished its work when it ends by SYSTEM_OFF or is OFF at the end.
    fn finished_ok(&self, _cpu: &PerCpu) -> bool {
        true
    }

    /// Answers an abort outside every memslot and device; None lets the core inject an
    /// external abort.
    fn unclaimed_abort(
        &self,
        _vm: &Vm,
        _cpu: &PerCpu,
        _frame: &mut Frame,
        _a: &Abort,
        _data: bool,
    ) -> Option<Action> {
        None
    }

    /// Maps the stage-2 fault `a` in `slot` to `pa`, inside the section `g`.
    fn map_fault(
        &self,
        vm: &Vm,
        g: &Guard<'_>,
        slot: &Memslot,
        a: &Abort,
        pa: u64,
    ) -> Result<Mapped, Error> {
        map_plain(vm, g, slot, a, pa, false)
    }

    /// Before teardown, guest memory still backed: checks the guest's work (`all_stopped`: every
    /// vCPU stopped, nothing writes guest memory), pushes what failed onto `failures`, returns
    /// its RESULT fields (" key=value" each). Nothing by default (finish.rs).
    fn check(&self, _vm: &Vm, _all_stopped: bool, _failures: &mut Vec<String>) -> String {
        String::new()
    }

    /// After teardown, with the stage-2 counters `s`: prints the harness's report sections,
    /// pushes what failed, returns its RESULT fields. Nothing by default (finish.rs).
    fn report(&self, _vm: &Vm, _s: &Stats, _failures: &mut Vec<String>) -> String {
        String::new()
    }

    /// Calls `f` with the PA of every backing page of memory the harness holds outside the VM's
    /// memslots (the built-in guest's overcommit slot), so that trapped set/way maintenance
    /// (Vm::clean_invalidate_backed_memory) reaches all guest memory. None by default.
    fn for_each_backed(&self, _f: &mut dyn FnMut(u64)) {}
}

/// The harness of a guest from files: every default.
pub struct Plain;

impl Harness for Plain {}

impl ZeroPage for Plain {}

/// The plain map policy: a permission fault relaxes the entry to RWX; a 2 MiB-chunked slot maps
/// blocks under backing=2m; otherwise a 4 KiB page. `logging` (dirty logging, a harness's
/// choice) maps new pages read-only, and a write into a write-protected block maps that one
/// page writable (splitting the block) instead of relaxing all 512. Inlined into the harness's
/// `map_fault`: it runs on every stage-2 fault.
#[inline]
pub fn map_plain(
    vm: &Vm,
    g: &Guard<'_>,
    slot: &Memslot,
    a: &Abort,
    pa: u64,
    logging: bool,
) -> Result<Mapped, Error> {
    let ipa = a.ipa & !(crate::pool::PAGE - 1);
    // A fault on the guest's own stage-1 table walk counts as a write whatever WnR says: the
    // walker may be setting an access flag or dirty state in the descriptor (Arm ARM D8.4,
    // hardware updates of stage-1 descriptors; KVM's kvm_is_write_fault treats S1PTW the same).
    // Relaxing a whole write-protected block for it would stop tracking its other 511 pages.
    let write = a.write || a.s1ptw;
    match a.fault {
        FaultType::Permission => {
            if logging && write && g.translate(ipa).is_some_and(|t| t.level < 3) {
                return g.map(ipa, pa, Size::Page4K, Attrs::normal_rwx());
            }
            g.relax_perms(ipa, Perms::RWX).map(|()| Mapped::Spurious)
        }
        // A memslot backed by 2 MiB chunks maps them as blocks (the built-in guest's data slot,
        // a real guest's RAM) under backing=2m.
        _ if slot.chunked() && !logging && vm.opts.backing == Backing::Block2M => {
            let block = pa & !(CHUNK - 1);
            g.map(
                ipa & !(CHUNK - 1),
                block,
                Size::Block2M,
                Attrs::normal_rwx(),
            )
        }
        // Logging: every new page is mapped read-only and its first write takes a permission
        // fault (relax), where a real VMM would mark the page dirty.
        _ if logging => g.map(ipa, pa, Size::Page4K, Attrs::normal(Perms::RX)),
        _ => g.map(ipa, pa, Size::Page4K, Attrs::normal_rwx()),
    }
}
