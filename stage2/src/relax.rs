//! Permission relax: the write fault on a write-protected page, done without a break.

use crate::desc::Perms;
use crate::stats::CpuStats;
use crate::{Error, Guard, PagePool, Tlb};

impl<P: PagePool, T: Tlb> Guard<'_, P, T> {
    /// Add `perms` to the valid leaf that maps `ipa`.
    ///
    /// Only the permission bits of a *valid* entry change (Arm ARM: a permission-only change of a
    /// valid entry needs no break-before-make); an empty or LOCKED entry means someone else is
    /// mid-update, so back off. Whatever happens, this CPU's TLB entry for `ipa` is invalidated:
    /// the TLB may cache the translation that caused the permission fault, and skipping the
    /// invalidation when another vCPU already relaxed the entry made KVM livelock ("Always
    /// invalidate TLB for stage-2 permission faults").
    ///
    /// # Errors
    /// [`Error::Retry`] if the entry is not a valid leaf or another CPU changed it first (under
    /// the exclusive guard: the hardware, setting AF or S2AP[1]; re-run the access).
    pub fn relax_perms(&self, ipa: u64, perms: Perms) -> Result<(), Error> {
        if ipa >= self.s2.geom.ipa_limit() {
            return Err(Error::BadAddress);
        }
        let mut w = self.walker(ipa, ipa + 1);
        let result = 'relax: {
            let old = w.walk_to_leaf();
            if old.is_busy() {
                break 'relax Err(self.locked_seen());
            }
            if !old.is_valid() {
                break 'relax Err(Error::Retry);
            }
            // The faulting access happened: the page is young too.
            let new = old.with_perms(old.perms().union(perms)).with_young(true);
            if new == old {
                break 'relax Ok(()); // another vCPU relaxed it already
            }
            match self.set(&w, old, new) {
                Ok(()) => {
                    CpuStats::bump(&self.stats().relaxes);
                    break 'relax Ok(());
                }
                Err(_) => break 'relax Err(self.lost_race()),
            }
        };
        let (base, _) = w.span();
        self.s2.tlb.invalidate_ipa_local(base, w.level());
        CpuStats::bump(&self.stats().tlbi_local);
        result
    }
}
