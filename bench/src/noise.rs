//! How much of the machine other processes used: the machine is shared, and a busy neighbour
//! takes a core from a two-thread run (and preempts lock holders). Read from `/proc/stat` (all
//! CPUs' busy time) minus `/proc/self/stat` (ours), both in USER_HZ ticks.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    /// All ticks of all CPUs (busy + idle).
    total: u64,
    /// Busy ticks of all CPUs.
    busy: u64,
    /// This process's user + system ticks.
    ours: u64,
}

impl CpuTimes {
    /// Now, or `None` where `/proc` is not available.
    pub fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4).copied().unwrap_or(0);
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after = &me[me.rfind(')')? + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ours = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(CpuTimes {
            total,
            busy: total - idle,
            ours,
        })
    }

    /// Share of the whole machine (0..1) used by other processes since `earlier`.
    pub fn foreign_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        let ours = self.ours.saturating_sub(earlier.ours);
        busy.saturating_sub(ours) as f64 / total as f64
    }
}

/// Wait (up to `max`) for a 250 ms window in which other processes used less than `limit` of the
/// machine. `busy(waited, share)` is called after every window that was not quiet, with the time
/// waited so far and the share (0..1) other processes used in that window. Returns the time waited
/// and whether a quiet window was found.
pub fn wait_quiet(
    limit: f64,
    max: Duration,
    mut busy: impl FnMut(Duration, f64),
) -> (Duration, bool) {
    let start = Instant::now();
    loop {
        let Some(a) = CpuTimes::now() else {
            return (start.elapsed(), false);
        };
        std::thread::sleep(Duration::from_millis(250));
        let Some(b) = CpuTimes::now() else {
            return (start.elapsed(), false);
        };
        let share = b.foreign_since(&a);
        if share < limit {
            return (start.elapsed(), true);
        }
        if start.elapsed() >= max {
            return (start.elapsed(), false);
        }
        busy(start.elapsed(), share);
    }
}
