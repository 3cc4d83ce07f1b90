//! A software model of the hardware translation-table walker for host tests and loom models
//! (feature `testing`): one access by a guest, walked through the live table, with hardware
//! management of the access flag (VTCR_EL2.HA) and of the dirty state (VTCR_EL2.HD) done as
//! the hardware does it, by compare-exchange on the descriptor (Arm ARM "Hardware management
//! of the Access flag" / "of the dirty state": the update is an atomic read-modify-write that
//! fails and re-reads if the descriptor changed). It has no TLB: every access walks.

use crate::walk::Walker;
use crate::{Guard, PagePool, Stage2, Tlb};

/// How a modelled hardware access ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwAccess {
    /// The access went through to this PA; `updated` if the walker set AF or S2AP[1] itself.
    Done { pa: u64, updated: bool },
    /// Translation fault (nothing valid maps the IPA, or an entry is LOCKED/zapped).
    Translation,
    /// Access flag fault (AF = 0 and VTCR_EL2.HA = 0).
    AccessFlag,
    /// Permission fault (a write to a leaf without S2AP[1] and without DBM, or HD = 0).
    Permission,
}

impl<P: PagePool, T: Tlb> Stage2<P, T> {
    /// Model one guest access to `ipa` by the hardware walker, with HA/HD as given. The walker
    /// takes no lock and enters no read-side section: it runs while another CPU holds the MMU
    /// lock exclusively (what makes `set`'s compare-exchange under the exclusive lock necessary;
    /// the loom model `exclusive_split_vs_hardware_dirty_update`). Only for tables nothing frees
    /// under the walk (the real walker is kept out of freed tables by break-before-make and the
    /// invalidation, which this model has no TLB to need).
    pub fn hw_access(&self, ipa: u64, write: bool, ha: bool, hd: bool) -> HwAccess {
        let mut w = Walker::new(&self.pool, self.geom, self.root, ipa, ipa + 1);
        loop {
            let old = w.walk_to_leaf();
            let level = w.level();
            if !old.is_leaf(level) {
                return HwAccess::Translation;
            }
            let mut new = old;
            if !old.young() {
                if !ha {
                    return HwAccess::AccessFlag;
                }
                new = new.with_young(true);
            }
            if write && !old.perms().write {
                if !(hd && old.dbm()) {
                    return HwAccess::Permission;
                }
                new = new.with_write(true);
            }
            if new != old && w.cmpxchg(old, new).is_err() {
                continue; // the descriptor changed under the update: re-read it
            }
            let size = crate::desc::level_size(level);
            return HwAccess::Done {
                pa: old.addr() + (ipa & (size - 1)),
                updated: new != old,
            };
        }
    }
}

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// [`Stage2::hw_access`] from inside a section (the host tests' shorthand).
    pub fn hw_access(&self, ipa: u64, write: bool, ha: bool, hd: bool) -> HwAccess {
        self.s2.hw_access(ipa, write, ha, hd)
    }
}
