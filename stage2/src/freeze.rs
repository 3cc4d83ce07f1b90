//! The write freeze of a live migration's stop-and-copy: a gate that every fault on the migrated
//! memslot passes, which the migrator can close and then wait to drain.
//!
//! A hypervisor that takes no interrupt while a guest runs (interrupts pass through) cannot kick
//! vCPUs out of the guest to stop them. It does not need to: once dirty logging is on, a guest
//! write reaches memory only through a writable leaf, and a leaf becomes writable only on the
//! fault path ([`crate::Guard::dirty_write_fault`]). So the migrator stops the *faults* instead:
//!
//! 1. [`WriteFreeze::freeze`] closes the gate; faults that arrive later do not enter (the vCPU
//!    waits outside every lock and RCU read-side section, then re-runs the access).
//! 2. [`WriteFreeze::drained`] becomes true once every fault that entered before the close has
//!    left: their relax and their dirty-bitmap mark are done and visible (Release on leave,
//!    Acquire here).
//! 3. A final get-and-clear then write-protects every page dirtied since the last pass and
//!    invalidates the TLBs. From then on every leaf of the memslot is read-only and nothing can
//!    make one writable, so no guest store, stage-1 hardware AF/DBM update or other stage-1
//!    walk write can reach the memslot's memory: the migrator copies and compares a memory
//!    that stands still while the vCPUs go on running (reads and computation) until they take
//!    any stage-2 fault on the memslot (the caller gates every fault there, not only writes).
//! 4. [`WriteFreeze::thaw`] opens the gate again.
//!
//! The race this closes: a vCPU that read "open" just before the close and relaxes a page after
//! the final harvest. Gate state and the in-flight count share one atomic word and every
//! transition is a read-modify-write of it, so the close and each entry are totally ordered
//! (the word's modification order): an entry ordered before the close is counted, and the
//! migrator waits for it; an entry ordered after it sees the gate closed. No `SeqCst` store-load
//! pairing is needed (stage2/tests/loom_migrate.rs models it). Once closed, the count can only
//! fall, so the drain cannot be starved by new faults.

use crate::sync::{AtomicU64, Ordering};

/// The gate's state word: bit 63 = closed, bits 0..62 = faults inside.
const CLOSED: u64 = 1 << 63;

/// The gate (module docs). One per migrated memslot.
#[derive(Debug, Default)]
pub struct WriteFreeze {
    state: AtomicU64,
}

impl WriteFreeze {
    /// An open gate with no fault inside.
    #[must_use]
    pub fn new() -> Self {
        WriteFreeze {
            state: AtomicU64::new(0),
        }
    }

    /// A fault tries to enter: true if it did (it must call [`WriteFreeze::leave`] once done
    /// with the stage-2 table), false if the gate is closed (wait until [`WriteFreeze::is_closed`]
    /// is false, outside any lock or section, and re-run the access). Acquire: a fault that
    /// enters after a thaw sees everything the migrator did before it (e.g. logging turned on).
    pub fn enter(&self) -> bool {
        self.state
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |s| {
                (s & CLOSED == 0).then_some(s + 1)
            })
            .is_ok()
    }

    /// The fault that entered is done. Release: its relax and dirty mark happen before the
    /// migrator's [`WriteFreeze::drained`] that sees the count fall.
    pub fn leave(&self) {
        self.state.fetch_sub(1, Ordering::Release);
    }

    /// Closes the gate. Faults inside stay inside until they leave; none enters any more.
    pub fn freeze(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Whether every fault that entered has left (meaningful after [`WriteFreeze::freeze`]:
    /// then it stays true until the thaw). Acquire, pairing with [`WriteFreeze::leave`].
    #[must_use]
    pub fn drained(&self) -> bool {
        self.state.load(Ordering::Acquire) & !CLOSED == 0
    }

    /// Faults inside now (a snapshot, for reports).
    #[must_use]
    pub fn inside(&self) -> u64 {
        self.state.load(Ordering::Relaxed) & !CLOSED
    }

    /// Whether the gate is closed (a waiting vCPU polls this). Acquire, pairing with the thaw.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Opens the gate. Release: what the migrator did while it was closed happens before every
    /// later entry.
    pub fn thaw(&self) {
        self.state.fetch_and(!CLOSED, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::WriteFreeze;

    #[test]
    fn a_closed_gate_admits_nobody_and_drains_only_when_the_last_fault_leaves() {
        let g = WriteFreeze::new();
        assert!(g.enter() && g.enter(), "an open gate admits every fault");
        assert_eq!(g.inside(), 2);
        g.freeze();
        assert!(g.is_closed());
        assert!(!g.enter(), "a closed gate admits nobody");
        assert_eq!(g.inside(), 2, "a refused entry leaves no trace");
        assert!(!g.drained());
        g.leave();
        assert!(!g.drained(), "one fault is still inside");
        g.leave();
        assert!(g.drained() && g.is_closed());
        g.thaw();
        assert!(!g.is_closed() && g.enter());
        g.leave();
        assert!(g.drained() && g.inside() == 0);
    }
}
