//! Memslots: guest-physical ranges backed by hypervisor pages allocated on first touch.
//!
//! The backing of each 4 KiB page is remembered in one `AtomicU64` per page (0 = none yet), so
//! the stage-2 table is only a cache of this mapping, as in KVM: an IPA that is unmapped and
//! faulted again gets the same page back, and the guest never loses data. Two vCPUs faulting on
//! the same new page race with compare-exchange: both may allocate a zeroed page, exactly one
//! installs it, and the loser returns its page to its CPU's cache and uses the winner's.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::percpu::{Counters, PerCpu};
use crate::pool::{self, Kind, Region, PAGE};

/// One guest-physical range.
pub struct Memslot {
    /// Human name for logs.
    pub name: &'static str,
    /// First IPA (page aligned).
    pub ipa: u64,
    /// Bytes (page multiple).
    pub size: u64,
    /// Backing PA per page, 0 until first touch.
    backing: Box<[AtomicU64]>,
}

/// The backing pool ran dry.
#[derive(Debug)]
pub struct OutOfMemory;

impl Memslot {
    /// An untouched slot.
    pub fn new(name: &'static str, ipa: u64, size: u64) -> Self {
        let pages = (size / PAGE) as usize;
        Self {
            name,
            ipa,
            size,
            backing: (0..pages).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether `ipa` is inside.
    pub fn contains(&self, ipa: u64) -> bool {
        ipa >= self.ipa && ipa - self.ipa < self.size
    }

    /// The backing page of page `index`, if it was ever touched.
    pub fn backing(&self, index: usize) -> Option<u64> {
        match self.backing.get(index)?.load(Ordering::Acquire) {
            0 => None,
            pa => Some(pa),
        }
    }

    /// The backing page of the page holding `ipa`, allocating and zeroing one on first touch.
    ///
    /// The Acquire/Release pair makes the winner's zeroing (and, for the image slot, the copy)
    /// visible to every CPU that reads the PA, before that CPU maps it for its guest.
    pub fn backing_or_alloc(
        &self,
        ipa: u64,
        cpu: &PerCpu,
        data: &Region,
    ) -> Result<u64, OutOfMemory> {
        let index = ((ipa - self.ipa) / PAGE) as usize;
        let slot = &self.backing[index];
        let current = slot.load(Ordering::Acquire);
        if current != 0 {
            return Ok(current);
        }
        let fresh = pool::take(cpu, Kind::Data, data).ok_or(OutOfMemory)?;
        pool::zero_page(fresh);
        match slot.compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                Counters::inc(&cpu.counters.pages_backed);
                Ok(fresh)
            }
            Err(winner) => {
                // Another vCPU backed this page first: use its page, keep ours for later.
                pool::put(cpu, Kind::Data, data, fresh);
                Counters::inc(&cpu.counters.backing_races_lost);
                Ok(winner)
            }
        }
    }

    /// Returns every backing page to `data` (teardown, after every vCPU stopped).
    pub fn release(&self, data: &Region) -> usize {
        let mut n = 0;
        for slot in self.backing.iter() {
            let pa = slot.swap(0, Ordering::AcqRel);
            if pa != 0 {
                data.free(pa, 1);
                n += 1;
            }
        }
        n
    }
}
