//! The atomics this crate uses, swapped for loom's model-checked ones under `--cfg loom`.
//!
//! Everything shared between CPUs (PTEs, page metadata, RCU state, counters) goes through these
//! names, so the same code runs on the target, in host threads, and inside loom's model.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64};

pub(crate) use core::sync::atomic::Ordering;

/// Called in every busy-wait loop. Under loom, a spin must yield or the model never ends.
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    {
        // A host test that runs its CPUs one at a time must switch to another one here.
        #[cfg(feature = "testing")]
        crate::testing::spin_hook();
        core::hint::spin_loop();
    }
}
