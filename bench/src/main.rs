//! Benchmarks of the hypervisor project.
//!
//! `bench host`: the host benchmark of the `stage2` crate. Threads play vCPUs that fault 4 KiB
//! pages into one stage-2 table, in shared mode (lock-free read-side section per fault) and in
//! locked mode (the exclusive MMU lock per fault: the global-lock baseline). It measures pure
//! table cost: no guest page is zeroed or touched. See `docs/performance.md`.

// The workspace builds for the hypervisor's bare-metal target by default; say what to run
// instead of failing with "can't find crate for std" in a dependency.
#![cfg_attr(target_os = "none", no_std, no_main)]
#[cfg(target_os = "none")]
compile_error!(
    "bench is a host program: run bench/host.sh (or `cargo run -p bench --release --target \
     <host triple> -- host`); tests/all.sh runs every test"
);
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_os = "none"))]
mod arch;
#[cfg(not(target_os = "none"))]
mod host;
#[cfg(not(target_os = "none"))]
mod noise;
#[cfg(not(target_os = "none"))]
mod run;

#[cfg(not(target_os = "none"))]
fn main() {
    host::main()
}
