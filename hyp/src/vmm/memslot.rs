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

/// How a fresh backing page is zeroed on the fault path: `zero` does it; a guest kind's harness
/// may wrap it (the built-in guest times it; vmm/harness.rs `Harness` extends this trait).
pub trait ZeroPage {
    /// Zeroes a fresh backing page on CPU `cpu` by running `zero`.
    fn zero_page(&self, _cpu: usize, zero: &mut dyn FnMut()) {
        zero()
    }
}

/// Zeroes pages with no hook (loading images before any vCPU runs).
pub struct ZeroNow;

impl ZeroPage for ZeroNow {}

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
    /// With 2 MiB backing: the PA of each 2 MiB chunk's contiguous allocation (0 = none yet,
    /// `CLAIMED` = a CPU is zeroing it). Empty for 4 KiB backing.
    chunks: Box<[AtomicU64]>,
}

/// Bytes in a chunk of 2 MiB backing.
pub const CHUNK: u64 = 2 << 20;
const PAGES_PER_CHUNK: usize = (CHUNK / PAGE) as usize;
/// A chunk slot whose allocation another CPU is zeroing right now.
const CLAIMED: u64 = 1;

/// Why no backing page could be had.
#[derive(Debug)]
pub enum NoBacking {
    /// The backing pool ran dry.
    OutOfMemory,
    /// Another CPU is zeroing the 2 MiB chunk: re-run the access.
    Busy,
}

impl Memslot {
    /// An untouched slot.
    pub fn new(name: &'static str, ipa: u64, size: u64) -> Self {
        let pages = (size / PAGE) as usize;
        Self {
            name,
            ipa,
            size,
            backing: (0..pages).map(|_| AtomicU64::new(0)).collect(),
            chunks: Box::new([]),
        }
    }

    /// An untouched slot backed by contiguous 2 MiB chunks (`ipa` and `size` 2 MiB multiples).
    pub fn new_chunked(name: &'static str, ipa: u64, size: u64) -> Self {
        let mut s = Self::new(name, ipa, size);
        s.chunks = (0..size.div_ceil(CHUNK))
            .map(|_| AtomicU64::new(0))
            .collect();
        s
    }

    /// Whether the slot is backed by 2 MiB chunks.
    pub fn chunked(&self) -> bool {
        !self.chunks.is_empty()
    }

    /// The PA of the 2 MiB chunk holding `ipa`, if it was ever touched (chunked slots only).
    pub fn chunk(&self, ipa: u64) -> Option<u64> {
        let pa = self
            .chunks
            .get(((ipa - self.ipa) / CHUNK) as usize)?
            .load(Ordering::Acquire);
        (pa > CLAIMED).then_some(pa)
    }

    /// The chunk holding `ipa`, allocating and zeroing all of it on first touch. The first CPU
    /// claims the chunk before zeroing it (zeroing 2 MiB is long); the others re-run their access
    /// meanwhile instead of zeroing a chunk they would throw away. One allocation from the shared
    /// region per 2 MiB: the only lock such a fault takes (counted as a data refill).
    fn chunk_or_alloc(&self, ipa: u64, cpu: &PerCpu, data: &Region) -> Result<u64, NoBacking> {
        let slot = &self.chunks[((ipa - self.ipa) / CHUNK) as usize];
        match slot.load(Ordering::Acquire) {
            0 => {}
            CLAIMED => return Err(NoBacking::Busy),
            pa => return Ok(pa),
        }
        if slot
            .compare_exchange(0, CLAIMED, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            return Err(NoBacking::Busy);
        }
        let Some(pa) = data.alloc(PAGES_PER_CHUNK) else {
            slot.store(0, Ordering::Release);
            return Err(NoBacking::OutOfMemory);
        };
        Counters::inc(&cpu.counters.data_refills);
        for i in 0..PAGES_PER_CHUNK as u64 {
            pool::zero_guest_page(pa + i * PAGE);
        }
        let backed = &cpu.counters.pages_backed;
        backed.store(
            backed.load(Ordering::Relaxed) + PAGES_PER_CHUNK as u64,
            Ordering::Relaxed,
        );
        // Release: the zeroing is visible to every CPU that reads the PA.
        slot.store(pa, Ordering::Release);
        Ok(pa)
    }

    /// Whether `ipa` is inside.
    pub fn contains(&self, ipa: u64) -> bool {
        ipa >= self.ipa && ipa - self.ipa < self.size
    }

    /// The backing page of page `index`, if it was ever touched.
    pub fn backing(&self, index: usize) -> Option<u64> {
        if self.chunked() {
            // A 2 MiB-backed page lives at its fixed place in its chunk.
            let chunk = self
                .chunks
                .get(index / PAGES_PER_CHUNK)?
                .load(Ordering::Acquire);
            return (chunk > CLAIMED).then(|| chunk + (index % PAGES_PER_CHUNK) as u64 * PAGE);
        }
        match self.backing.get(index)?.load(Ordering::Acquire) {
            0 => None,
            pa => Some(pa),
        }
    }

    /// The backing page of the page holding `ipa`, allocating and zeroing one on first touch
    /// (through `zero.zero_page`, a harness's timing hook).
    ///
    /// The Acquire/Release pair makes the winner's zeroing (and, for the image slot, the copy)
    /// visible to every CPU that reads the PA, before that CPU maps it for its guest.
    pub fn backing_or_alloc<Z: ZeroPage + ?Sized>(
        &self,
        ipa: u64,
        cpu: &PerCpu,
        data: &Region,
        zero: &Z,
    ) -> Result<u64, NoBacking> {
        let index = ((ipa - self.ipa) / PAGE) as usize;
        let slot = &self.backing[index];
        let current = slot.load(Ordering::Acquire);
        if current != 0 {
            return Ok(current);
        }
        if self.chunked() {
            // Every page of a chunk has a fixed place in it: no race to settle per page, and
            // no per-page record (pages mapped by a block never fault on their own).
            return Ok(self.chunk_or_alloc(ipa, cpu, data)? + (ipa - self.ipa) % CHUNK);
        }
        let fresh = pool::take(cpu, Kind::Data, data).ok_or(NoBacking::OutOfMemory)?;
        zero.zero_page(cpu.index, &mut || pool::zero_guest_page(fresh));
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

    /// Pages in the slot.
    pub fn pages(&self) -> usize {
        self.backing.len()
    }

    /// Repoints page `index` from backing `old` to `new` (0 = none): chaos mode's pre-backing
    /// and page migration (chaos.rs), which call it under the stage-2 exclusive guard or before
    /// any vCPU runs. Returns the current value if it was not `old`.
    pub fn swap_backing(&self, index: usize, old: u64, new: u64) -> Result<(), u64> {
        self.backing[index]
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }

    /// Calls `f` with the PA of every 4 KiB page of this memslot that has backing now.
    pub fn for_each_backed(&self, mut f: impl FnMut(u64)) {
        for index in 0..self.pages() {
            if let Some(pa) = self.backing(index) {
                f(pa);
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
        for slot in self.chunks.iter() {
            let pa = slot.swap(0, Ordering::AcqRel);
            if pa > CLAIMED {
                data.free(pa, PAGES_PER_CHUNK);
                n += PAGES_PER_CHUNK;
            }
        }
        n
    }
}
