//! Physical page pools: buddy allocators over RAM the hypervisor does not otherwise use, and the
//! per-CPU page caches in front of them.
//!
//! Two regions, each its own buddy allocator: one for stage-2 table pages (so every table page
//! has a slot in a dense `PageMeta` array, and so the leak check counts only tables), one for
//! guest backing pages. The fault path takes pages from its CPU's cache only; a cache is refilled
//! in batches (one lock acquisition per batch) at trap entry, before the stage-2 read-side
//! section starts, as KVM tops up its memcache before taking the MMU lock.

use buddy_system_allocator::Heap;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
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
}

impl Region {
    /// # Safety
    /// `[base, base + size)` must be identity-mapped RAM that nothing else uses, ever.
    pub unsafe fn new(base: u64, size: u64) -> Self {
        let mut heap = Heap::new();
        // SAFETY: the caller hands us exclusive use of this RAM.
        unsafe { heap.add_to_heap(base as usize, (base + size) as usize) };
        Self {
            heap: Mutex::new(heap),
            base,
            pages: (size / PAGE) as usize,
        }
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

    /// Takes up to `n` single pages in one lock acquisition, pushing them onto `stack`.
    fn refill(&self, stack: &mut PageStack, n: usize) {
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

/// Makes sure this CPU's caches can serve one whole fault without touching a shared lock.
pub fn top_up(cpu: &PerCpu, tables: &Region, data: &Region) {
    for (kind, region) in [(Kind::Table, tables), (Kind::Data, data)] {
        let refilled = with_cache(cpu, kind, |stack| {
            let low = stack.len() < LOW_WATER;
            if low {
                region.refill(stack, BATCH);
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
            region.refill(stack, BATCH);
            stack.pop()
        })
    })
}

/// Gives a page back to this CPU's cache (or the region when the cache is full).
pub fn put(cpu: &PerCpu, kind: Kind, region: &Region, pa: u64) {
    with_cache(cpu, kind, |stack| {
        if let Err(pa) = stack.push(pa) {
            region.free(pa, 1);
        }
    });
}
