//! `stage2::PagePool` for the real machine: table pages come from the table region through this
//! CPU's page cache; metadata lives in a dense array indexed by page number in that region.

use alloc::boxed::Box;
use stage2::{PageMeta, PagePool, Table};

use crate::percpu;
use crate::pool::{self, Kind, Region, PAGE};

/// The table-page pool handed to `stage2::Stage2`.
pub struct HypPool {
    region: &'static Region,
    meta: Box<[PageMeta]>,
}

impl HypPool {
    /// A pool over `region` (the table region).
    pub fn new(region: &'static Region) -> Self {
        let meta = (0..region.pages).map(|_| PageMeta::new()).collect();
        Self { region, meta }
    }

    /// Table pages in use (see `pages_in_use`).
    pub fn pages_in_use(&self) -> usize {
        pages_in_use(self.region)
    }
}

/// Table pages currently out of `region` (held by a table or a root), not counting pages that
/// sit free in per-CPU caches: the number the leak check compares before and after.
pub fn pages_in_use(region: &Region) -> usize {
    let cached: usize = percpu::all()
        .iter()
        .map(|c| c.table_cached.load(core::sync::atomic::Ordering::Relaxed))
        .sum();
    region.allocated_pages() - cached
}

impl PagePool for HypPool {
    fn alloc_table(&self, cpu: usize) -> Option<u64> {
        let pa = if cpu == percpu::index() {
            pool::take(percpu::this_cpu(), Kind::Table, self.region)?
        } else {
            // Only this CPU may touch its cache; a request on behalf of another CPU (teardown)
            // goes to the region directly.
            self.region.alloc(1)?
        };
        pool::zero_page(pa);
        Some(pa)
    }

    fn free_table(&self, cpu: usize, pa: u64) {
        if cpu == percpu::index() {
            pool::put(percpu::this_cpu(), Kind::Table, self.region, pa);
        } else {
            self.region.free(pa, 1);
        }
    }

    fn alloc_root(&self, pages: usize) -> Option<u64> {
        let pa = self.region.alloc(pages)?;
        for i in 0..pages as u64 {
            pool::zero_page(pa + i * PAGE);
        }
        Some(pa)
    }

    fn free_root(&self, pa: u64, pages: usize) {
        self.region.free(pa, pages);
    }

    fn table(&self, pa: u64) -> &Table {
        debug_assert!(self.region.contains(pa) && pa.is_multiple_of(PAGE));
        // SAFETY: `pa` is a page of the table region that the stage2 crate got from this pool
        // and has not freed (the trait's contract). The hypervisor identity-maps RAM, so the PA
        // is a valid, 4 KiB-aligned address of 512 u64s, and every access to table memory goes
        // through these atomics (the hardware walker only reads).
        unsafe { &*(pa as *const Table) }
    }

    fn meta(&self, pa: u64) -> &PageMeta {
        &self.meta[((pa - self.region.base) / PAGE) as usize]
    }
}
