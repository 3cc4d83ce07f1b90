//! Per-vCPU power state, OFF -> ON_PENDING -> ON -> OFF (DEN0022 5.1.4 "CPU_ON", 5.1.3
//! "CPU_OFF", 5.1.5 "AFFINITY_INFO"; 6.5 "Affinity info: state coordination"), lock-free.
//!
//! Internally ON_PENDING has two steps, so the target never reads a half-written request:
//! `CLAIMED` (a CPU_ON won the compare-exchange from OFF and is writing the entry point and
//! context ID) and `PENDING` (the request is published). Both read as ON_PENDING to the guest.
//!
//! Who moves what:
//! - OFF -> CLAIMED -> PENDING: the one CPU_ON caller whose compare-exchange wins. Every other
//!   caller sees ON (ALREADY_ON) or a pending state (ON_PENDING; see [`Vcpus::cpu_on`]).
//! - PENDING -> ON: only the target, when it takes the request and is about to run the entry
//!   point ([`Vcpus::start`]). So AFFINITY_INFO says ON_PENDING until the vCPU really runs.
//! - ON -> OFF: only the vCPU itself (CPU_OFF is "power down the calling core").
//!
//! "Live" vCPUs are the ones that are ON or ON_PENDING and have not left the guest for good
//! ([`Vcpus::leave`], e.g. the built-in guest's HVC_FINISH or SYSTEM_OFF). Only a live vCPU can
//! call CPU_ON, and a CPU_ON that wins counts its target live before its caller can stop being
//! live, so once the count reaches 0 it stays 0: nothing can turn a vCPU on again and the VM
//! can no longer run ([`Vcpus::can_run`]).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use smccc::psci::error::{ALREADY_ON, INVALID_ADDRESS, INVALID_PARAMETERS, ON_PENDING};

use crate::affinity;

const OFF: u8 = 0;
const CLAIMED: u8 = 1;
const PENDING: u8 = 2;
const ON: u8 = 3;

/// A vCPU's power state as AFFINITY_INFO returns it (DEN0022 5.1.5: ON 0, OFF 1, ON_PENDING 2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u64)]
pub enum PowerState {
    /// Running (or, for an affinity instance, at least one of its cores is).
    On = 0,
    /// Powered off.
    Off = 1,
    /// A CPU_ON for it was accepted and it has not started running yet.
    OnPending = 2,
}

impl PowerState {
    fn of(raw: u8) -> Self {
        match raw {
            OFF => PowerState::Off,
            ON => PowerState::On,
            _ => PowerState::OnPending,
        }
    }
}

/// What a vCPU turned on by CPU_ON starts with (DEN0022 6.4.3 "CPU_ON" entry state).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Start {
    /// The entry point (an IPA; the target's MMU is off).
    pub entry: u64,
    /// The context ID, delivered in x0.
    pub context: u64,
    /// The caller's EL1 data endianness (SCTLR_EL1.EE) at the time of the call: the target
    /// starts with the same (DEN0022 6.4.3: "the endianness of the caller").
    pub big_endian: bool,
}

/// One vCPU's slot.
struct Slot {
    /// Its MPIDR affinity value (affinity::MASK bits only).
    affinity: u64,
    state: AtomicU8,
    entry: AtomicU64,
    context: AtomicU64,
    big_endian: AtomicBool,
    /// Whether it left the guest for good while ON (it counts as not live).
    left: AtomicBool,
    /// Times it was started by a CPU_ON (taken the request and run the entry point).
    ons: AtomicU64,
    /// Times it called CPU_OFF.
    offs: AtomicU64,
}

/// Every vCPU of one VM.
pub struct Vcpus {
    slots: Box<[Slot]>,
    live: AtomicUsize,
}

impl Vcpus {
    /// The vCPUs of a VM: vCPU `i` has MPIDR `mpidrs[i]` (what the guest reads in MPIDR_EL1;
    /// only the affinity fields count) and starts ON if `on_at_start(i)`, else OFF. A guest
    /// kind that boots one CPU and brings the others up with CPU_ON (Linux, kvm-unit-tests)
    /// starts only vCPU 0 ON; one whose ABI starts every vCPU at once starts all of them ON.
    pub fn new(mpidrs: &[u64], on_at_start: impl Fn(usize) -> bool) -> Self {
        let slots: Vec<Slot> = mpidrs
            .iter()
            .enumerate()
            .map(|(i, &m)| Slot {
                affinity: affinity::of_mpidr(m),
                state: AtomicU8::new(if on_at_start(i) { ON } else { OFF }),
                entry: AtomicU64::new(0),
                context: AtomicU64::new(0),
                big_endian: AtomicBool::new(false),
                left: AtomicBool::new(false),
                ons: AtomicU64::new(0),
                offs: AtomicU64::new(0),
            })
            .collect();
        let live = slots
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) == ON)
            .count();
        Self {
            slots: slots.into_boxed_slice(),
            live: AtomicUsize::new(live),
        }
    }

    /// Number of vCPUs.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the VM has no vCPU.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The vCPU whose MPIDR affinity is exactly `target` (a `target_cpu`), if any.
    pub fn find(&self, target: u64) -> Option<usize> {
        let target = affinity::parse(target)?;
        self.slots.iter().position(|s| s.affinity == target)
    }

    /// vCPU `id`'s state as AFFINITY_INFO would report it.
    pub fn state(&self, id: usize) -> PowerState {
        PowerState::of(self.slots[id].state.load(Ordering::Acquire))
    }

    /// (times started by CPU_ON, times it called CPU_OFF) of vCPU `id`.
    pub fn counts(&self, id: usize) -> (u64, u64) {
        let s = &self.slots[id];
        (
            s.ons.load(Ordering::Relaxed),
            s.offs.load(Ordering::Relaxed),
        )
    }

    /// PSCI CPU_ON (DEN0022 5.1.4) for `target`, checked in the order the specification lists
    /// the errors: INVALID_PARAMETERS if `target` is no vCPU of this VM (bits outside the
    /// affinity fields, Aff3 included, must match too); INVALID_ADDRESS if `entry` is not
    /// 4-byte aligned (EL1 is AArch64, whose instructions are 4-byte aligned) or `entry_ok`
    /// says the guest cannot execute there (outside its RAM); then the target's state.
    ///
    /// Exactly one of any number of racing callers for an OFF target gets Ok (SUCCESS): its
    /// compare-exchange OFF -> CLAIMED wins. A caller that finds the target ON gets ALREADY_ON.
    /// One that finds it pending calls `wait` until the target has started (then ALREADY_ON,
    /// which the target is by then) or `wait` returns false (then ON_PENDING, which it still
    /// is). Both answers are DEN0022's for a core "already on" / "with a CPU_ON pending"; the
    /// wait makes the first the common one, which is what Linux KVM answers and what
    /// kvm-unit-tests' psci cpu-on race test accepts. `wait` must not block for long: it
    /// should wait for an event (the target's start) with a bounded timeout.
    ///
    /// Returns the target's vCPU id on success.
    pub fn cpu_on(
        &self,
        target: u64,
        start: Start,
        entry_ok: impl FnOnce(u64) -> bool,
        mut wait: impl FnMut() -> bool,
    ) -> Result<usize, crate::Error> {
        let id = self.find(target).ok_or(INVALID_PARAMETERS)?;
        if start.entry & 3 != 0 || !entry_ok(start.entry) {
            return Err(INVALID_ADDRESS);
        }
        let s = &self.slots[id];
        match s
            .state
            .compare_exchange(OFF, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // The caller is live while it runs this, so `live` cannot have reached 0.
                self.live.fetch_add(1, Ordering::SeqCst);
                s.entry.store(start.entry, Ordering::Relaxed);
                s.context.store(start.context, Ordering::Relaxed);
                s.big_endian.store(start.big_endian, Ordering::Relaxed);
                s.left.store(false, Ordering::Relaxed);
                // Publishes the request: the target's Acquire load in `start` sees it whole.
                s.state.store(PENDING, Ordering::Release);
                Ok(id)
            }
            Err(ON) => Err(ALREADY_ON),
            Err(_) => loop {
                // Pending: once it leaves CLAIMED/PENDING it has been ON (only the target moves
                // it on, and only to ON), even if it is OFF again by now.
                match s.state.load(Ordering::Acquire) {
                    CLAIMED | PENDING => {
                        if !wait() {
                            return Err(ON_PENDING);
                        }
                    }
                    _ => return Err(ALREADY_ON),
                }
            },
        }
    }

    /// The target side of CPU_ON: if a request for vCPU `id` is published, takes it, moves the
    /// vCPU to ON and returns what it starts with. Only vCPU `id`'s own CPU calls this.
    pub fn start(&self, id: usize) -> Option<Start> {
        let s = &self.slots[id];
        if s.state.load(Ordering::Acquire) != PENDING {
            return None;
        }
        let start = Start {
            entry: s.entry.load(Ordering::Relaxed),
            context: s.context.load(Ordering::Relaxed),
            big_endian: s.big_endian.load(Ordering::Relaxed),
        };
        s.ons.fetch_add(1, Ordering::Relaxed);
        s.state.store(ON, Ordering::Release);
        Some(start)
    }

    /// PSCI CPU_OFF (DEN0022 5.1.3) by vCPU `id` itself: ON -> OFF. Returns false if it was not
    /// ON (a hypervisor bug: only a running vCPU calls, and it is ON while it runs).
    ///
    /// DEN0022 lets CPU_OFF fail only with DENIED, "if the calling core is a Trusted OS core that
    /// cannot migrate" (MIGRATE_INFO_TYPE 0 or 1); this VM has no Trusted OS (MIGRATE_INFO_TYPE
    /// 2), so CPU_OFF always powers the vCPU off, the last ON one too (the OS must not do that,
    /// 5.1.3; if it does, the VM can no longer run: see `can_run`).
    pub fn cpu_off(&self, id: usize) -> bool {
        let s = &self.slots[id];
        if s.state
            .compare_exchange(ON, OFF, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        s.offs.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_sub(1, Ordering::SeqCst);
        true
    }

    /// vCPU `id` (ON) left the guest for good without CPU_OFF (e.g. it finished, or the guest
    /// called SYSTEM_OFF): it stays ON as PSCI sees it but no longer counts as live. Once per
    /// start; a second call does nothing.
    pub fn leave(&self, id: usize) {
        let s = &self.slots[id];
        if s.state.load(Ordering::Acquire) == ON && !s.left.swap(true, Ordering::AcqRel) {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether any vCPU can still run: one is ON (and has not left) or ON_PENDING. False is
    /// final (see the module docs).
    pub fn can_run(&self) -> bool {
        self.live.load(Ordering::SeqCst) != 0
    }

    /// PSCI AFFINITY_INFO (DEN0022 5.1.5) for `target` at `lowest_affinity_level` `level`: the
    /// vCPUs whose affinity fields of that level and above equal `target`'s (the lower fields
    /// are ignored) make one affinity instance; ON if any of them is ON, else ON_PENDING if any
    /// is pending, else OFF. INVALID_PARAMETERS for a level above 3, a `target` with bits
    /// outside the affinity fields, or an instance with no vCPU. Every level is supported (PSCI
    /// 1.0 requires only level 0).
    pub fn affinity_info(&self, target: u64, level: u32) -> Result<PowerState, crate::Error> {
        let mask = affinity::level_mask(level).ok_or(INVALID_PARAMETERS)?;
        let target = affinity::parse(target).ok_or(INVALID_PARAMETERS)?;
        let mut found = None;
        for s in self
            .slots
            .iter()
            .filter(|s| s.affinity & mask == target & mask)
        {
            let st = PowerState::of(s.state.load(Ordering::Acquire));
            found = Some(match (found, st) {
                (_, PowerState::On) | (Some(PowerState::On), _) => PowerState::On,
                (_, PowerState::OnPending) | (Some(PowerState::OnPending), _) => {
                    PowerState::OnPending
                }
                _ => PowerState::Off,
            });
        }
        found.ok_or(INVALID_PARAMETERS)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread;
    use std::vec::Vec;

    const MPIDRS: [u64; 4] = [0x8000_0000, 0x8000_0001, 0x8000_0100, 0x1_0000_0000];

    fn start(entry: u64) -> Start {
        Start {
            entry,
            context: 0xC0FFEE,
            big_endian: false,
        }
    }

    fn only_boot() -> Vcpus {
        Vcpus::new(&MPIDRS, |i| i == 0)
    }

    #[test]
    fn initial_states_and_find() {
        let v = only_boot();
        assert_eq!(v.len(), 4);
        assert_eq!(v.state(0), PowerState::On);
        assert_eq!(v.state(1), PowerState::Off);
        assert_eq!(v.find(0x100), Some(2));
        assert_eq!(v.find(0x1_0000_0000), Some(3));
        assert_eq!(v.find(0x8000_0001), None); // bit 31 set: not an affinity value
        assert_eq!(v.find(4), None);
        assert!(v.can_run());
        let all = Vcpus::new(&MPIDRS, |_| true);
        assert!((0..4).all(|i| all.state(i) == PowerState::On));
    }

    #[test]
    fn cpu_on_errors_in_order() {
        let v = only_boot();
        let never = || -> bool { panic!("no wait expected") };
        // No such vCPU, even with a bad entry point: INVALID_PARAMETERS first.
        assert_eq!(
            v.cpu_on(7, start(3), |_| false, never),
            Err(INVALID_PARAMETERS)
        );
        // Aff3 is compared too: 1 << 32 | 1 is not vCPU 1.
        assert_eq!(
            v.cpu_on(1 << 32 | 1, start(0x4000_0000), |_| true, never),
            Err(INVALID_PARAMETERS)
        );
        // Misaligned or outside RAM: INVALID_ADDRESS, and the target stays OFF.
        assert_eq!(
            v.cpu_on(1, start(0x4000_0002), |_| true, never),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(
            v.cpu_on(1, start(0x1000), |a| a >= 0x4000_0000, never),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(v.state(1), PowerState::Off);
        // A bad entry point for an ON target is still INVALID_ADDRESS (checked before state).
        assert_eq!(
            v.cpu_on(0, start(0x1000), |_| false, never),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(
            v.cpu_on(0, start(0x4000_0000), |_| true, never),
            Err(ALREADY_ON)
        );
    }

    #[test]
    fn on_pending_on_off_on() {
        let v = only_boot();
        assert_eq!(v.start(1), None);
        assert_eq!(v.cpu_on(1, start(0x4000_0000), |_| true, || true), Ok(1));
        assert_eq!(v.state(1), PowerState::OnPending);
        assert_eq!(v.affinity_info(1, 0), Ok(PowerState::OnPending));
        // A second caller while pending: waits, gives up -> ON_PENDING.
        let mut waits = 0;
        assert_eq!(
            v.cpu_on(
                1,
                start(0x4000_0000),
                |_| true,
                || {
                    waits += 1;
                    waits < 3
                }
            ),
            Err(ON_PENDING)
        );
        assert_eq!(waits, 3);
        assert_eq!(v.start(1), Some(start(0x4000_0000)));
        assert_eq!(v.state(1), PowerState::On);
        assert_eq!(v.start(1), None);
        assert!(v.cpu_off(1));
        assert!(!v.cpu_off(1));
        assert_eq!(v.affinity_info(1, 0), Ok(PowerState::Off));
        let again = Start {
            entry: 0x4000_1000,
            context: 42,
            big_endian: true,
        };
        assert_eq!(v.cpu_on(1, again, |_| true, || true), Ok(1));
        assert_eq!(v.start(1), Some(again));
        assert_eq!(v.counts(1), (2, 1));
        assert_eq!(v.counts(0), (0, 0));
    }

    #[test]
    fn affinity_levels() {
        let v = only_boot();
        // Level 0: exact.
        assert_eq!(v.affinity_info(0, 0), Ok(PowerState::On));
        assert_eq!(v.affinity_info(1, 0), Ok(PowerState::Off));
        assert_eq!(v.affinity_info(2, 0), Err(INVALID_PARAMETERS));
        // Level 1: Aff0 ignored, cluster 0 holds vCPUs 0 and 1 (one ON).
        assert_eq!(v.affinity_info(0x5, 1), Ok(PowerState::On));
        // Cluster 1 (Aff1 = 1) holds only vCPU 2 (OFF).
        assert_eq!(v.affinity_info(0x1FF, 1), Ok(PowerState::Off));
        // Level 2 with Aff3 = 0: vCPUs 0..=2; level 3 with Aff3 = 1: vCPU 3 only.
        assert_eq!(v.affinity_info(0xFFFF, 2), Ok(PowerState::On));
        assert_eq!(v.affinity_info(1 << 32 | 0xFF_FFFF, 3), Ok(PowerState::Off));
        assert_eq!(v.affinity_info(2 << 32, 3), Err(INVALID_PARAMETERS));
        assert_eq!(v.affinity_info(0, 4), Err(INVALID_PARAMETERS));
        assert_eq!(v.affinity_info(1 << 31, 0), Err(INVALID_PARAMETERS));
        // ON_PENDING beats OFF, ON beats both.
        assert_eq!(
            v.cpu_on(0x100, start(0x4000_0000), |_| true, || true),
            Ok(2)
        );
        assert_eq!(v.affinity_info(0x100, 1), Ok(PowerState::OnPending));
        assert_eq!(v.affinity_info(0, 2), Ok(PowerState::On));
    }

    #[test]
    fn can_run_counts_live_vcpus() {
        let v = Vcpus::new(&MPIDRS[..2], |_| true);
        v.leave(0);
        v.leave(0);
        assert!(v.can_run());
        assert!(v.cpu_off(1));
        assert!(!v.can_run());
        let v = only_boot();
        assert_eq!(v.cpu_on(1, start(0x4000_0000), |_| true, || true), Ok(1));
        assert!(v.cpu_off(0));
        assert!(v.can_run(), "vCPU 1 is pending: the VM can still run");
        assert!(v.start(1).is_some());
        v.leave(1);
        assert!(!v.can_run());
    }

    /// Racing CPU_ON callers on real threads: for every round exactly one SUCCESS, every other
    /// caller ALREADY_ON or ON_PENDING, and the target starts exactly once per round with the
    /// winner's context ID.
    #[test]
    fn racing_callers_one_success() {
        const CALLERS: usize = 6;
        const ROUNDS: u64 = 300;
        let mpidrs: Vec<u64> = (0..=CALLERS as u64).collect();
        // vCPU CALLERS is the target; the callers are ON.
        let v = Arc::new(Vcpus::new(&mpidrs, |i| i < CALLERS));
        let target = CALLERS as u64;
        let barrier = Arc::new(Barrier::new(CALLERS + 1));
        let mut handles = Vec::new();
        for c in 0..CALLERS {
            let (v, barrier) = (Arc::clone(&v), Arc::clone(&barrier));
            handles.push(thread::spawn(move || {
                let mut answers = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    let s = Start {
                        entry: 0x4000_0000,
                        context: round << 8 | c as u64,
                        big_endian: false,
                    };
                    // Give up waiting now and then, so both error answers happen.
                    let mut spins = 0;
                    let r = v.cpu_on(
                        target,
                        s,
                        |_| true,
                        || {
                            spins += 1;
                            thread::yield_now();
                            spins < 1 + (round as usize % 3) * 50
                        },
                    );
                    answers.push(r);
                    barrier.wait();
                }
                answers
            }));
        }
        let mut started = Vec::new();
        for _ in 0..ROUNDS {
            barrier.wait();
            // The target: wait for a request, start, then power off for the next round.
            let s = loop {
                if let Some(s) = v.start(CALLERS) {
                    break s;
                }
                thread::yield_now();
            };
            started.push(s.context);
            barrier.wait();
            assert!(v.cpu_off(CALLERS));
        }
        let answers: Vec<Vec<_>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for round in 0..ROUNDS as usize {
            let winners: Vec<usize> = (0..CALLERS)
                .filter(|&c| answers[c][round] == Ok(CALLERS))
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert_eq!(
                started[round],
                (round as u64) << 8 | winners[0] as u64,
                "round {round}: the target started with the winner's context"
            );
            for (c, caller) in answers.iter().enumerate() {
                let a = caller[round];
                assert!(
                    a == Ok(CALLERS) || a == Err(ALREADY_ON) || a == Err(ON_PENDING),
                    "round {round} caller {c}: {a:?}"
                );
            }
        }
        assert_eq!(v.counts(CALLERS), (ROUNDS, ROUNDS));
        assert!(v.can_run());
    }
}
