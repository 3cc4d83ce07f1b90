//! A memslot's write log: the VM core's side of copying guest memory while the guest runs. A
//! tool outside the core (migrate=on's migrator, builtin/migrate.rs) arms it on the VM before
//! any vCPU runs and then drives it; the stage-2 fault path (vcpu.rs) only reads it, so the
//! core names no tool and the fault path stays a straight line (docs/hypervisor.md "Layers").
//!
//! It holds, for one memslot:
//! - the write freeze (`stage2::WriteFreeze`): every fault on the memslot passes its gate before
//!   its stage-2 section and leaves it after; the tool closes it and waits for it to drain so that
//!   no fault can make a page writable behind its final harvest (docs/protocol.md 15);
//! - the dirty-logging policy switch, read by a fault inside the gate, and the dirty bitmap the
//!   policy marks and the tool harvests (`Guard::dirty_log_clear`);
//! - counts of the faults that waited for a thaw, for the tool's report.
//!
//! The map policy while logging is on is KVM's for a memslot with KVM_MEM_LOG_DIRTY_PAGES
//! (user_mem_abort): a permission fault relaxes one 4 KiB page and marks it; a write (or stage-1
//! walk) translation fault maps its page writable and marks it; any other fault maps a read-only
//! 4 KiB page.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use stage2::{Attrs, DirtyBitmap, DirtyFault, Error, Mapped, Size, WriteFreeze};

use crate::arch;
use crate::decode::{Abort, FaultType};
use crate::harness::{map_plain, Guard};
use crate::memslot::Memslot;
use crate::pool::PAGE;
use crate::vm::Vm;

/// How long a vCPU waits for a thaw before it gives up and re-runs the access anyway (a broken
/// tool must not hang the guest for ever; the tool's report fails the run on any give-up).
const THAW_WAIT_MS: u64 = 30_000;

/// One memslot's write log (module docs). Lives in `Vm::write_log` once armed.
pub struct WriteLog {
    /// The memslot's first IPA (memslots never overlap: it names the memslot).
    ipa: u64,
    /// The write freeze every fault on the memslot passes.
    pub freeze: WriteFreeze,
    /// The dirty bitmap, one bit per 4 KiB page of the memslot.
    pub log: DirtyBitmap,
    /// Whether faults on the memslot take the logging policy (read inside the gate).
    logging: AtomicBool,
    /// Faults that found the gate closed and waited, and waits that gave up.
    waits: AtomicU64,
    wait_timeouts: AtomicU64,
}

/// A fault inside the gate; leaves it when dropped (after its stage-2 section).
pub struct Entered<'a>(&'a WriteFreeze);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl WriteLog {
    /// A log of `slot` with the gate open and logging off.
    pub fn new(slot: &Memslot) -> Self {
        WriteLog {
            ipa: slot.ipa,
            freeze: WriteFreeze::new(),
            log: DirtyBitmap::new(slot.ipa, slot.pages() as u64),
            logging: AtomicBool::new(false),
            waits: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
        }
    }

    /// Whether this log covers `slot`.
    pub fn covers(&self, slot: &Memslot) -> bool {
        slot.ipa == self.ipa
    }

    /// A fault tries to pass the gate: Some while it is inside (hold it until the stage-2
    /// section ended), None if the gate is closed (`wait_for_thaw`, then re-run the access).
    pub fn enter(&self) -> Option<Entered<'_>> {
        // Not `then_some`: it would build the guard even when the gate refused the fault, and
        // dropping it would `leave` a gate this fault never entered.
        if self.freeze.enter() {
            Some(Entered(&self.freeze))
        } else {
            None
        }
    }

    /// Waits until the gate opens, `ended()` says the run is over, or `THAW_WAIT_MS` passed:
    /// WFE, woken by the thaw's SEV or this CPU's event stream. The caller holds no lock and is
    /// in no stage-2 section (the drain it waits for must not wait for it).
    pub fn wait_for_thaw(&self, ended: fn() -> bool) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let deadline = CNTPCT_EL0.get() + THAW_WAIT_MS * CNTFRQ_EL0.get() / 1000;
        while self.freeze.is_closed() && !ended() {
            if CNTPCT_EL0.get() > deadline {
                self.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                break;
            }
            arch::wfe();
        }
    }

    /// Turns the logging policy on or off. The tool switches it while the gate is closed and
    /// drained (on) or before the thaw (off), so no fault inside decides on a stale value.
    pub fn set_logging(&self, on: bool) {
        self.logging.store(on, Ordering::Release);
    }

    /// Whether faults take the logging policy. Read inside the gate (Acquire, pairing with
    /// `set_logging` through the gate's thaw).
    pub fn logging(&self) -> bool {
        self.logging.load(Ordering::Acquire)
    }

    /// The logging map policy (module docs) for the fault `a` on `pa`, inside the gate and the
    /// stage-2 section `g`. A stage-1 walk counts as a write (harness.rs `map_plain`).
    pub fn map_fault(
        &self,
        vm: &Vm,
        g: &Guard<'_>,
        slot: &Memslot,
        a: &Abort,
        pa: u64,
    ) -> Result<Mapped, Error> {
        let ipa = a.ipa & !(PAGE - 1);
        match a.fault {
            // A write (or a stage-1 walk, which may write AF/dirty bits) to a logged read-only
            // page. Any other permission fault (an instruction fetch without execute permission)
            // is not a write: it must neither mark the page nor make it writable.
            FaultType::Permission if a.write || a.s1ptw => {
                match g.dirty_write_fault(ipa, &self.log) {
                    Ok(DirtyFault::Relaxed | DirtyFault::Spurious) => Ok(Mapped::Spurious),
                    // Unmapped since the fault was taken: re-run the access (a translation fault).
                    Ok(DirtyFault::NotMapped) => Err(Error::Retry),
                    Err(e) => Err(e),
                }
            }
            _ if a.write || a.s1ptw => {
                let r = g.map(ipa, pa, Size::Page4K, Attrs::normal_rwx());
                // After the map, as after a relax (stage2/src/dirty.rs: no write is lost).
                if r.is_ok() {
                    self.log.mark(ipa);
                }
                r
            }
            _ => map_plain(vm, g, slot, a, pa, true),
        }
    }

    /// Faults that waited for a thaw, and waits that gave up (for the tool's report).
    pub fn waits(&self) -> (u64, u64) {
        (
            self.waits.load(Ordering::Relaxed),
            self.wait_timeouts.load(Ordering::Relaxed),
        )
    }
}
