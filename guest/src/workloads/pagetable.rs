//! `pagetable` (KVM's kvm_page_table_test): all vCPUs share one region; even vCPUs write their
//! slot of every page, odd vCPUs read theirs. Three timed phases, each verified:
//! - create: concurrent first faults on the same pages (and 2 MiB blocks with backing=2m);
//! - update: at the start barrier the hypervisor write-protects the region ("dirty logging" on):
//!   writes take permission faults (relax; with blocks, a 4 KiB page is mapped inside the block,
//!   which splits it), pages of split blocks refault;
//! - adjust: logging off; each vCPU asks the hypervisor (HVC_COLLAPSE) to collapse its share of
//!   the 2 MiB chunks back into blocks while every vCPU keeps touching the region.

use super::{expect, load, store, timed, Ctx, Outcome};
use crate::{abi, hvc};

const CHUNK: u64 = 2 << 20;

/// Touches every page of chunk `chunk` for `phase`: even vCPUs write, odd vCPUs read.
fn touch_chunk(c: &Ctx, chunk: u64, phase: u64) -> u64 {
    let per_chunk = CHUNK / abi::PAGE_SIZE;
    let write = expect::writes(c.workload, c.id);
    let mut sink = 0u64;
    for i in 0..per_chunk {
        let page = chunk * per_chunk + i;
        let ipa = c.slot + page * abi::PAGE_SIZE + c.id * 8;
        if write {
            store(ipa, expect::value(c.id, page, phase));
        } else {
            sink = sink.wrapping_add(load(ipa));
        }
    }
    core::hint::black_box(sink);
    per_chunk
}

/// Runs the three phases.
pub fn run(c: &Ctx, out: &mut Outcome) {
    let chunks = c.pages * abi::PAGE_SIZE / CHUNK;
    for phase in [abi::PHASE_CREATE, abi::PHASE_UPDATE] {
        timed(c, phase, out, || {
            // Start at a different chunk on each vCPU only by one: neighbours race on the same
            // chunks most of the time.
            (0..chunks)
                .map(|k| touch_chunk(c, (k + c.id) % chunks, phase))
                .sum()
        });
    }
    timed(c, abi::PHASE_ADJUST, out, || {
        let mut pages = 0;
        for k in 0..chunks {
            if k % c.vcpus == c.id {
                hvc(abi::HVC_COLLAPSE, c.slot + k * CHUNK, 0, 0);
            }
            pages += touch_chunk(c, (k + c.id) % chunks, abi::PHASE_ADJUST);
        }
        pages
    });
}
