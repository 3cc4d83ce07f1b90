//! Workload `badguest`: the bad-guest matrix (docs/robustness.md). Work in progress.

/// Runs the workload of vCPU `id`.
pub fn workload(id: u64, base: u64, size: u64) -> ! {
    crate::verify::workload(id, base, size)
}
