//! Physical page pools: buddy allocators over RAM the hypervisor does not otherwise use, and the
//! per-CPU page caches in front of them.
//!
//! Two regions, each its own buddy allocator: one for stage-2 table pages (so every table page
//! has a slot in a dense `PageMeta` array, and so the leak check counts only tables), one for
//! guest backing pages. The fault path takes pages from its CPU's cache only; a cache is refilled
//! in batches (one lock acquisition per batch) at trap entry, before the stage-2 read-side
//! section starts, as KVM tops up its memcache before taking the MMU lock.
//!
//! A small region (`tables=`) must not vanish into one CPU's cache while the others run dry, so
//! each region caps what one CPU may hold (`Region::cache_limit`, sized from the region and the
//! CPU count), and a CPU whose cache and region are both empty can ask the others to hand their
//! cached pages back (`request_drain`): they do at their next trap entry (`top_up`) and when their
//! vCPU ends (`drain`).

use buddy_system_allocator::Heap;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

use crate::percpu::{Counters, PerCpu};

/// Bytes in a page.
pub const PAGE: u64 = 4096;
/// Pages a per-CPU cache can hold.
const CACHE_CAP: usize = 128;
/// Pages moved per refill.
const BATCH: usize = 64;
/// A cache holding fewer pages than this is refilled at trap entry. One stage-2 fault needs at
/// most one page per table level plus one backing page.
const LOW_WATER: usize = 8;
/// The fewest pages a CPU's cache may be limited to: one stage-2 fault installs at most three
/// table pages (levels 1..=3 below a level-0 root; two with the 40-bit level-1 root), so a cache
/// of three never makes a fault fail that the region as a whole could have served.
const MIN_CACHE: usize = 3;

/// A fixed-capacity stack of free page addresses.
pub struct PageStack {
    pages: [u64; CACHE_CAP],
    len: usize,
}

impl PageStack {
    /// An empty stack.
    pub const fn new() -> Self {
        Self {
            pages: [0; CACHE_CAP],
            len: 0,
        }
    }

    fn pop(&mut self) -> Option<u64> {
        self.len = self.len.checked_sub(1)?;
        Some(self.pages[self.len])
    }

    fn push(&mut self, pa: u64) -> Result<(), u64> {
        if self.len == CACHE_CAP {
            return Err(pa);
        }
        self.pages[self.len] = pa;
        self.len += 1;
        Ok(())
    }

    /// Pages held.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// A contiguous physical range managed by a buddy allocator.
pub struct Region {
    heap: Mutex<Heap<32>>,
    /// First byte.
    pub base: u64,
    /// Pages in the region.
    pub pages: usize,
    /// The most pages one CPU's cache may hold from this region (`MIN_CACHE..=CACHE_CAP`).
    pub cache_limit: usize,
    /// Bumped by a CPU that found this region and its own cache empty: every CPU that sees a new
    /// value gives its cached pages back (`top_up`).
    drain_requests: AtomicU64,
}

impl Region {
    /// A region over `[base, base + size)` shared by `cpus` CPUs. Each CPU may cache at most a
    /// quarter of its fair share (`pages / (4 * cpus)`, clamped to `MIN_CACHE..=CACHE_CAP`), so
    /// the caches together strand at most a quarter of a small region.
    ///
    /// # Safety
    /// `[base, base + size)` must be identity-mapped RAM that nothing else uses, ever.
    pub unsafe fn new(base: u64, size: u64, cpus: usize) -> Self {
        let mut heap = Heap::new();
        // SAFETY: the caller hands us exclusive use of this RAM.
        unsafe { heap.add_to_heap(base as usize, (base + size) as usize) };
        let pages = (size / PAGE) as usize;
        Self {
            heap: Mutex::new(heap),
            base,
            pages,
            cache_limit: (pages / (4 * cpus.max(1))).clamp(MIN_CACHE, CACHE_CAP),
            drain_requests: AtomicU64::new(0),
        }
    }

    /// Asks every CPU to hand its cached pages of this region back at its next trap entry.
    pub fn request_drain(&self) {
        self.drain_requests.fetch_add(1, Ordering::Release);
    }

    fn layout(pages: usize) -> Layout {
        let bytes = pages * PAGE as usize;
        // A power-of-two page count is aligned to its own size, as concatenated roots need.
        Layout::from_size_align(bytes, bytes.next_power_of_two()).expect("valid page layout")
    }

    /// `pages` contiguous pages aligned to their size, not zeroed; None when exhausted.
    pub fn alloc(&self, pages: usize) -> Option<u64> {
        self.heap
            .lock()
            .alloc(Self::layout(pages))
            .ok()
            .map(|p| p.as_ptr() as u64)
    }

    /// Returns pages from `alloc`.
    pub fn free(&self, pa: u64, pages: usize) {
        let Some(ptr) = NonNull::new(pa as *mut u8) else {
            return;
        };
        // SAFETY: `pa` came from `alloc(pages)` on this region (callers' contract).
        unsafe { self.heap.lock().dealloc(ptr, Self::layout(pages)) };
    }

    /// Pages handed out and not returned (per-CPU caches count as handed out).
    pub fn allocated_pages(&self) -> usize {
        self.heap.lock().stats_alloc_actual() / PAGE as usize
    }

    /// Whether `pa` lies in this region.
    pub fn contains(&self, pa: u64) -> bool {
        pa >= self.base && pa < self.base + self.pages as u64 * PAGE
    }

    /// Takes up to `BATCH` single pages in one lock acquisition, pushing them onto `stack` until
    /// it holds `cache_limit`.
    fn refill(&self, stack: &mut PageStack) {
        let n = BATCH.min(self.cache_limit.saturating_sub(stack.len()));
        let mut heap = self.heap.lock();
        for _ in 0..n {
            let Ok(p) = heap.alloc(Self::layout(1)) else {
                break;
            };
            if let Err(pa) = stack.push(p.as_ptr() as u64) {
                // SAFETY: just allocated from this heap with the same layout.
                unsafe {
                    heap.dealloc(
                        NonNull::new(pa as *mut u8).expect("non-null"),
                        Self::layout(1),
                    )
                };
                break;
            }
        }
    }
}

/// Zeroes one identity-mapped page.
pub fn zero_page(pa: u64) {
    debug_assert_eq!(pa % PAGE, 0);
    // SAFETY: `pa` is a whole, page-aligned page of pool RAM (identity-mapped writable at EL2)
    // that the caller exclusively owns right now.
    unsafe { crate::arch::zero_page(pa) };
}

/// Zeroes one identity-mapped page that will back guest memory, and makes the zeroes what a
/// non-cacheable guest access reads (`arch::guest_memory_written`: nothing with FEAT_S2FWB, a
/// clean to the point of coherency without). Table pages use `zero_page`: stage-2 walks are
/// cacheable (VTCR_EL2.IRGN0/ORGN0), coherent with our writes.
pub fn zero_guest_page(pa: u64) {
    zero_page(pa);
    crate::arch::guest_memory_written(pa, PAGE);
}

/// Which of a CPU's two caches.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Stage-2 table pages.
    Table,
    /// Guest backing pages.
    Data,
}

/// Runs `f` on one of this CPU's caches.
fn with_cache<R>(cpu: &PerCpu, kind: Kind, f: impl FnOnce(&mut PageStack) -> R) -> R {
    let cell = match kind {
        Kind::Table => &cpu.table_cache,
        Kind::Data => &cpu.data_cache,
    };
    debug_assert_eq!(cpu.index, crate::percpu::index());
    // SAFETY: a CPU's caches are only touched by that CPU (every caller passes `this_cpu()` or
    // checks it), with exceptions masked, and `f` cannot reach this function again for the same
    // cache, so this is the only reference while it lives.
    let stack = unsafe { &mut *cell.get() };
    let r = f(stack);
    if let Kind::Table = kind {
        cpu.table_cached.store(stack.len(), Ordering::Relaxed);
    }
    r
}

/// Makes sure this CPU's caches can serve one whole fault without touching a shared lock, after
/// handing everything back if another CPU asked for it (`Region::request_drain`).
pub fn top_up(cpu: &PerCpu, tables: &Region, data: &Region) {
    honour_drain_requests(cpu, tables, data);
    for (kind, region) in [(Kind::Table, tables), (Kind::Data, data)] {
        let refilled = with_cache(cpu, kind, |stack| {
            let low = stack.len() < LOW_WATER.min(region.cache_limit);
            if low {
                region.refill(stack);
                if let (Kind::Table, true) = (kind, stack.len() > 0) {
                    // The region served us again: any dry spell of this CPU is over.
                    cpu.table_dry_since.store(0, Ordering::Relaxed);
                }
            }
            low
        });
        if refilled {
            let counter = match kind {
                Kind::Table => &cpu.counters.table_refills,
                Kind::Data => &cpu.counters.data_refills,
            };
            Counters::inc(counter);
        }
    }
}

/// A page from this CPU's cache (refilled on the spot if it ran dry), not zeroed.
pub fn take(cpu: &PerCpu, kind: Kind, region: &Region) -> Option<u64> {
    with_cache(cpu, kind, |stack| {
        stack.pop().or_else(|| {
            region.refill(stack);
            stack.pop()
        })
    })
}

/// Gives a page back to this CPU's cache (or the region when the cache is at its limit).
pub fn put(cpu: &PerCpu, kind: Kind, region: &Region, pa: u64) {
    with_cache(cpu, kind, |stack| {
        if stack.len() >= region.cache_limit || stack.push(pa).is_err() {
            region.free(pa, 1);
        }
    });
}

/// Hands this CPU's cached pages of a region back if another CPU asked since the last look
/// (`Region::request_drain`). Called at every stage-2 fault and while a vCPU waits at EL2.
pub fn honour_drain_requests(cpu: &PerCpu, tables: &Region, data: &Region) {
    for (kind, region) in [(Kind::Table, tables), (Kind::Data, data)] {
        let seen = match kind {
            Kind::Table => &cpu.table_drains_seen,
            Kind::Data => &cpu.data_drains_seen,
        };
        let requested = region.drain_requests.load(Ordering::Acquire);
        if seen.load(Ordering::Relaxed) != requested {
            seen.store(requested, Ordering::Relaxed);
            drain_one(cpu, kind, region);
        }
    }
}

/// Returns every page of one of this CPU's caches to its region.
fn drain_one(cpu: &PerCpu, kind: Kind, region: &Region) {
    with_cache(cpu, kind, |stack| {
        while let Some(pa) = stack.pop() {
            region.free(pa, 1);
        }
    });
}

/// Returns both of this CPU's caches to their regions: its vCPU has ended, and pages left in
/// its cache would be out of reach of the vCPUs still running.
pub fn drain(cpu: &PerCpu, tables: &Region, data: &Region) {
    drain_one(cpu, Kind::Table, tables);
    drain_one(cpu, Kind::Data, data);
}

/// Table pages held in the caches of CPUs other than `cpu` (a racy snapshot).
pub fn tables_cached_elsewhere(cpu: &PerCpu) -> usize {
    crate::percpu::all()
        .iter()
        .filter(|c| c.index != cpu.index)
        .map(|c| c.table_cached.load(Ordering::Relaxed))
        .sum()
}
