//! The spare CPU: the CPU after the vCPUs, which runs no guest but one tool (the chaos pruner,
//! the ager of workload=aging, the live migrator; options.rs allows at most one), and the
//! handshake that stops it before teardown. Each tool owns one `SpareCpu`.
//!
//! The handshake: the reporter sets the stop request (Release) and waits for the tool's answer
//! (Acquire); the tool checks the request between operations and answers (Release) only once it
//! has left every stage-2 section, so whatever the tool wrote happens-before the reporter's
//! checks and teardown.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::vm::Vm;

/// One tool's flags: it started, a stop was asked, it stopped.
pub struct SpareCpu {
    started: AtomicBool,
    stop: AtomicBool,
    stopped: AtomicBool,
}

impl SpareCpu {
    pub const fn new() -> Self {
        Self {
            started: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }

    /// The CPU index a tool runs on when it is `on`: the first CPU after the vCPUs.
    pub fn cpu(vm: &Vm, on: bool) -> Option<usize> {
        on.then_some(vm.opts.vcpus)
    }

    /// The tool's loop began (the report fails a tool that never started).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Whether the reporter asked the tool to stop (Acquire: pairs with the request's Release).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits `ticks` of the counter, calling `wait` each turn (a nap or a spin hint), or less
    /// if a stop is asked meanwhile. The request is read Relaxed: the loop that follows re-reads
    /// it with `stop_requested` before acting on it.
    pub fn pause(&self, ticks: u64, mut wait: impl FnMut()) {
        let until = CNTPCT_EL0.get() + ticks;
        while CNTPCT_EL0.get() < until && !self.stop.load(Ordering::Relaxed) {
            wait();
        }
    }

    /// The tool's answer: it has left every stage-2 section and will not enter another.
    pub fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Asks the tool to stop and waits up to `seconds` for its answer. Returns false if it did
    /// not answer (then teardown must not run).
    pub fn request_stop_and_wait(&self, seconds: u64) -> bool {
        self.stop.store(true, Ordering::Release);
        let deadline = CNTPCT_EL0.get() + seconds * CNTFRQ_EL0.get();
        while !self.stopped.load(Ordering::Acquire) {
            if CNTPCT_EL0.get() > deadline {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }
}
