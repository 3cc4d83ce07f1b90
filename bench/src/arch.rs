//! Host implementations of the stage2 arch traits made for measuring, not for checking.
//!
//! - [`NopTlb`]: does no maintenance and keeps only a *thread-local* count of the calls, so the
//!   TLB adds no shared cache line to the fault path. (`stage2::testing::RecordingTlb::counting`
//!   bumps one shared atomic per broadcast invalidation; on the pure demand-map path there are
//!   none, but `publish` still goes through its log check. This keeps the TLB out of the
//!   picture entirely.)
//! - [`SlabPool`]: table pages come from a per-CPU slab (a bump cursor plus a private free
//!   list), and each page's [`PageMeta`] sits on its own 64-byte line. `CountingPool` takes a
//!   global `Mutex` plus several `SeqCst` read-modify-writes of shared counters on every
//!   allocation, and packs the 24-byte metas two or three to a cache line, so the refcounts of
//!   two CPUs' level-3 tables (allocated at adjacent indices) can share a line.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use stage2::{PageMeta, PagePool, Table, Tlb};

thread_local! {
    static TLB_CALLS: Cell<TlbCounts> = const { Cell::new(TlbCounts::ZERO) };
}

/// TLB calls made by one thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlbCounts {
    /// Broadcast invalidations (by IPA, range or VMID).
    pub broadcast: u64,
    /// Local invalidations.
    pub local: u64,
    /// `publish` (the `DSB ISHST` after a walk that installed something).
    pub publish: u64,
}

impl TlbCounts {
    const ZERO: TlbCounts = TlbCounts {
        broadcast: 0,
        local: 0,
        publish: 0,
    };

    /// Field-wise sum.
    pub fn add(self, o: TlbCounts) -> TlbCounts {
        TlbCounts {
            broadcast: self.broadcast + o.broadcast,
            local: self.local + o.local,
            publish: self.publish + o.publish,
        }
    }
}

/// A TLB that does nothing but count, per thread.
#[derive(Debug, Default)]
pub struct NopTlb;

impl NopTlb {
    /// The calling thread's counts since its last `take`; resets them.
    pub fn take_thread_counts() -> TlbCounts {
        TLB_CALLS.with(|c| c.replace(TlbCounts::ZERO))
    }

    fn bump(f: impl FnOnce(&mut TlbCounts)) {
        TLB_CALLS.with(|c| {
            let mut v = c.get();
            f(&mut v);
            c.set(v);
        });
    }
}

impl Tlb for NopTlb {
    fn invalidate_ipa(&self, _ipa: u64, _level: u8) {
        NopTlb::bump(|c| c.broadcast += 1);
    }
    fn invalidate_range(&self, _ipa: u64, _size: u64) {
        NopTlb::bump(|c| c.broadcast += 1);
    }
    fn invalidate_vmid(&self) {
        NopTlb::bump(|c| c.broadcast += 1);
    }
    fn invalidate_ipa_local(&self, _ipa: u64, _level: u8) {
        NopTlb::bump(|c| c.local += 1);
    }
    fn publish(&self) {
        NopTlb::bump(|c| c.publish += 1);
    }
}

/// Fake physical address of the slab pool's first page (not zero: PA 0 ends RCU lists).
const SLAB_BASE: u64 = 0x100_0000_0000;
const PAGE: u64 = 4096;

/// A page's metadata alone on its cache line.
#[repr(align(64))]
struct PaddedMeta(PageMeta);

/// One CPU's slab: `[next, end)` are fresh (already zero) pages; `free` holds returned pages.
#[repr(align(64))]
struct Slab {
    next: AtomicUsize,
    end: usize,
    /// Only its own CPU touches it on the fault path (teardown frees through CPU 0's), so the
    /// lock is never contended while measuring.
    free: Mutex<Vec<usize>>,
    allocs: AtomicU64,
    frees: AtomicU64,
}

/// A page pool with a private slab per CPU and one cache line of metadata per page.
pub struct SlabPool {
    pages: Box<[Table]>,
    metas: Box<[PaddedMeta]>,
    slabs: Box<[Slab]>,
    /// Pages `[0, root_pages)` are reserved for the root.
    root_pages: usize,
    root_taken: AtomicBool,
}

impl SlabPool {
    /// `per_cpu` table pages for each of `cpus` CPUs, plus `root_pages` for the root.
    pub fn new(cpus: usize, per_cpu: usize, root_pages: usize) -> SlabPool {
        let total = root_pages + cpus * per_cpu;
        SlabPool {
            // Built (and so zeroed and touched) here, outside the timed region.
            pages: (0..total)
                .map(|_| core::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            metas: (0..total).map(|_| PaddedMeta(PageMeta::new())).collect(),
            slabs: (0..cpus)
                .map(|c| Slab {
                    next: AtomicUsize::new(root_pages + c * per_cpu),
                    end: root_pages + (c + 1) * per_cpu,
                    free: Mutex::new(Vec::new()),
                    allocs: AtomicU64::new(0),
                    frees: AtomicU64::new(0),
                })
                .collect(),
            root_pages,
            root_taken: AtomicBool::new(false),
        }
    }

    /// Table pages handed out and returned, summed over CPUs.
    pub fn allocs_frees(&self) -> (u64, u64) {
        self.slabs.iter().fold((0, 0), |(a, f), s| {
            (
                a + s.allocs.load(Ordering::Relaxed),
                f + s.frees.load(Ordering::Relaxed),
            )
        })
    }

    fn index(&self, pa: u64) -> usize {
        assert!(
            pa >= SLAB_BASE && pa.is_multiple_of(PAGE),
            "PA {pa:#x} is not a slab page"
        );
        let i = ((pa - SLAB_BASE) / PAGE) as usize;
        assert!(i < self.pages.len(), "PA {pa:#x} is outside the slab pool");
        i
    }

    fn pa(i: usize) -> u64 {
        SLAB_BASE + i as u64 * PAGE
    }
}

impl PagePool for SlabPool {
    fn alloc_table(&self, cpu: usize) -> Option<u64> {
        let slab = &self.slabs[cpu];
        let reused = slab.free.lock().ok()?.pop();
        let i = match reused {
            Some(i) => {
                // Returned pages may be dirty: zero before handing out.
                for e in &self.pages[i] {
                    e.store(0, Ordering::Relaxed);
                }
                i
            }
            None => {
                // Only this CPU bumps its own cursor; Relaxed is enough (the page is zero since
                // construction, and publication to other CPUs is the core's release).
                let i = slab.next.load(Ordering::Relaxed);
                if i >= slab.end {
                    return None;
                }
                slab.next.store(i + 1, Ordering::Relaxed);
                i
            }
        };
        slab.allocs.fetch_add(1, Ordering::Relaxed);
        Some(SlabPool::pa(i))
    }

    fn free_table(&self, cpu: usize, pa: u64) {
        let i = self.index(pa);
        assert!(i >= self.root_pages, "freeing a root page as a table");
        let slab = &self.slabs[cpu];
        slab.free.lock().expect("slab free list").push(i);
        slab.frees.fetch_add(1, Ordering::Relaxed);
    }

    fn alloc_root(&self, pages: usize) -> Option<u64> {
        // The root sits at index 0, which is aligned to any power-of-two number of pages.
        if pages > self.root_pages || self.root_taken.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(SlabPool::pa(0))
    }

    fn free_root(&self, pa: u64, _pages: usize) {
        assert_eq!(pa, SlabPool::pa(0), "not the root");
        assert!(
            self.root_taken.swap(false, Ordering::Relaxed),
            "root freed twice"
        );
    }

    fn table(&self, pa: u64) -> &Table {
        &self.pages[self.index(pa)]
    }

    fn meta(&self, pa: u64) -> &PageMeta {
        &self.metas[self.index(pa)].0
    }
}
