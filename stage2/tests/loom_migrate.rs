//! loom models of the live-migration write freeze (`WriteFreeze`, stage2/src/freeze.rs) working
//! with the shared-mode dirty log: what hyp/src/builtin/migrate.rs does around a running guest.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p stage2 --features testing --target x86_64-unknown-linux-gnu --target-dir target/loom --release --test loom_migrate`
//!
//! The race lives in this crate's API (the gate, `dirty_write_fault`, `dirty_log_clear`), so its
//! model lives here, where loom can swap every descriptor and bitmap word for a model-checked
//! atomic; the hypervisor adds only the waiting (WFE) and the copying.
//!
//! Two CPUs: a vCPU writing one word of a page, and the migrator doing one pre-copy pass and the
//! stop-and-copy. The guest's store is modelled as the hardware does it: a walk of the live table
//! (`hw_access`), then the store to memory, with a permission fault taking the fault path
//! (`enter` the gate, `dirty_write_fault`, `leave`; a closed gate makes the vCPU wait and re-run).
//! A TLB invalidation's completion (the DSB after a TLBI) waits for every access that used the
//! old translation (Arm ARM D8.13, "TLB maintenance instructions": completion includes the
//! memory accesses that used the invalidated entries); the model has no TLB, so the walk and the
//! store of one access hold a lock (`access`) and the migrator takes and drops it after each
//! get-and-clear: an access either completed before (its store is visible to the copy) or walks
//! after (it sees the protection). A plain flag would not do: the walk's descriptor load and the
//! migrator's flag load could each miss the other's store (store buffering).

#![cfg(loom)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use loom::sync::atomic::AtomicU64;
use loom::sync::atomic::Ordering::Relaxed;
use loom::sync::Mutex as LoomMutex;
use loom::thread;
use stage2::testing::{CountingPool, RecordingTlb};
use stage2::{Attrs, Config, DirtyBitmap, HwAccess, Perms, Size, Stage2, WriteFreeze};

type S2 = Stage2<Arc<CountingPool>, Arc<RecordingTlb>>;

const RAM: u64 = 0x4000_0000;
const PAGE_IPA: u64 = 0x1000;

/// Runs `f` under loom, printing executions and time, then checks each expected outcome was
/// reached (a model that stopped exercising its race fails instead of passing vacuously).
fn model<F>(name: &str, expect: &[&str], f: F)
where
    F: Fn(&Mutex<BTreeSet<String>>) + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut b = loom::model::Builder::new();
    b.max_branches = 50_000;
    let n = Arc::new(AtomicUsize::new(0));
    let (n2, s, f2) = (n.clone(), seen.clone(), f.clone());
    let start = Instant::now();
    b.check(move || {
        n2.fetch_add(1, SeqCst);
        f2(&s);
    });
    eprintln!(
        "loom model {name}: {} executions in {:.2?}",
        n.load(SeqCst),
        start.elapsed()
    );
    let seen = seen.lock().unwrap();
    eprintln!("loom model {name}: outcomes {seen:?}");
    for e in expect {
        assert!(seen.contains(*e), "{name}: no execution reached {e:?}");
    }
}

/// The shared state of one model run.
struct Vm {
    s2: S2,
    log: DirtyBitmap,
    gate: WriteFreeze,
    /// The guest word at `PAGE_IPA` (its backing page's memory).
    mem: AtomicU64,
    /// Held by the vCPU from its walk to its store (see the module docs).
    access: LoomMutex<()>,
}

/// A table with the page mapped read-only, as after dirty logging was turned on and pass 0
/// copied it (its copy holds the initial 0).
fn setup() -> Arc<Vm> {
    let pool = Arc::new(CountingPool::new(3));
    let tlb = Arc::new(RecordingTlb::counting(pool.clone()));
    let mut cfg = Config::new(32, 2);
    cfg.start_level = Some(1);
    let s2 = Stage2::new(cfg, pool, tlb.clone()).unwrap();
    tlb.attach(s2.root(), s2.geometry());
    s2.shared(0)
        .map(PAGE_IPA, RAM, Size::Page4K, Attrs::normal(Perms::RX))
        .expect("premap");
    Arc::new(Vm {
        s2,
        log: DirtyBitmap::new(0, 512),
        gate: WriteFreeze::new(),
        mem: AtomicU64::new(0),
        access: LoomMutex::new(()),
    })
}

/// The vCPU stores `value` to the guest word: walk, store if writable, else the fault path.
fn guest_store(vm: &Vm, value: u64) {
    loop {
        let access = vm.access.lock().unwrap();
        if let HwAccess::Done { .. } = vm.s2.shared(1).hw_access(PAGE_IPA, true, true, false) {
            vm.mem.store(value, Relaxed);
            return;
        }
        drop(access);
        // Permission fault: the hypervisor's fault path on the migrated memslot.
        if !vm.gate.enter() {
            while vm.gate.is_closed() {
                thread::yield_now();
            }
            continue;
        }
        vm.s2
            .shared(1)
            .dirty_write_fault(PAGE_IPA, &vm.log)
            .expect("relax");
        vm.gate.leave();
    }
}

/// One get-and-clear of the page; after its invalidation completed (the in-flight access done),
/// copies the guest word into `copy` if the page was reported dirty. Returns whether it was.
fn harvest_and_copy(vm: &Vm, copy: &mut u64) -> bool {
    let mut dirty = false;
    vm.s2
        .shared(0)
        .dirty_log_clear(&vm.log, 0, 2 << 20, |_, bits| dirty |= bits != 0);
    // The invalidation's completion: every access that walked before it is done.
    drop(vm.access.lock().unwrap());
    if dirty {
        *copy = vm.mem.load(Relaxed);
    }
    dirty
}

/// The migrator: one pre-copy pass, then the stop (freeze, drain if `drain`, final harvest and
/// copy), the comparison at the stop, and the check that memory did not change while frozen.
/// Returns (copied in the pre-copy pass, copied in the stop, the copy).
fn migrate(vm: &Vm, drain: bool) -> (bool, bool, u64) {
    let mut copy = 0;
    let pass = harvest_and_copy(vm, &mut copy);
    vm.gate.freeze();
    while drain && !vm.gate.drained() {
        thread::yield_now();
    }
    let stop = harvest_and_copy(vm, &mut copy);
    assert_eq!(
        copy,
        vm.mem.load(Relaxed),
        "the copy differs from the guest's memory at the stop"
    );
    // Still frozen: nothing may have reached memory since the comparison.
    let at_resume = vm.mem.load(Relaxed);
    assert_eq!(
        copy, at_resume,
        "a guest write reached memory during the stop"
    );
    vm.gate.thaw();
    (pass, stop, copy)
}

fn run(seen: &Mutex<BTreeSet<String>>, drain: bool) {
    let vm = setup();
    let vcpu = {
        let vm = vm.clone();
        thread::spawn(move || guest_store(&vm, 7))
    };
    let (pass, stop, copy) = migrate(&vm, drain);
    vcpu.join().unwrap();
    let outcome = match (copy, pass, stop) {
        (7, true, false) => "copied by the pre-copy pass",
        (7, _, true) => "copied in the stop",
        (0, _, _) => "written after the resume",
        other => panic!("unexpected outcome {other:?}"),
    };
    seen.lock().unwrap().insert(String::from(outcome));
    // A write after the resume is in the log for the next migration round.
    if copy == 0 {
        assert!(
            vm.log.is_dirty(PAGE_IPA),
            "a write after the resume was not logged: pass {pass} stop {stop} mem {}",
            vm.mem.load(Relaxed)
        );
    }
}

/// The stop protocol: the copy equals the guest's memory at the stop and no write reaches memory
/// while frozen, whichever way the store races the pre-copy pass and the freeze.
#[test]
fn freeze_drain_harvest_vs_guest_store() {
    model(
        "freeze_drain_harvest_vs_guest_store",
        &[
            "copied by the pre-copy pass",
            "copied in the stop",
            "written after the resume",
        ],
        |seen| run(seen, true),
    );
}

/// Without waiting for the faults inside the gate to drain, a fault that entered just before the
/// freeze relaxes the page after the final harvest and the store lands during the stop: the
/// model must find that execution (proof the drain is what closes the race).
#[test]
#[should_panic(expected = "during the stop")]
fn without_the_drain_a_write_lands_during_the_stop() {
    model("without_the_drain", &[], |seen| run(seen, false));
}
