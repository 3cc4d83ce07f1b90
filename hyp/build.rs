//! Links the hypervisor with the top-level `linker.ld` and embeds the guest.
//!
//! The guest is a separate `no_std` binary (workspace member `guest`). We build it here with a
//! nested `cargo build` into a target directory under `OUT_DIR` (a separate directory, so the
//! nested cargo never waits on the lock the outer one holds) and hand its ELF path to the
//! hypervisor as `GUEST_ELF`, which `include_bytes!` embeds. The guest is always built in release
//! mode: it is the workload being measured.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("hyp/ sits in the workspace root")
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));

    println!(
        "cargo:rustc-link-arg-bins=-T{}",
        root.join("linker.ld").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("linker.ld").display()
    );
    println!("cargo:rerun-if-changed=build.rs");
    // A directory is scanned recursively: any change under guest/ rebuilds the guest.
    println!("cargo:rerun-if-changed={}", root.join("guest").display());

    let target_dir = out.join("guest-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "-p",
            "guest",
            "--release",
            "--target",
            "aarch64-unknown-none",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's wrappers (clippy-driver under `cargo clippy`) and flags are for the
    // hypervisor; the guest gets a plain build.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    // The embedded image needs no debug info (the guest ELF in the target dir keeps it).
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    let status = cmd.status().expect("failed to run cargo for the guest");
    assert!(status.success(), "building the guest failed: {status}");

    let elf = target_dir
        .join("aarch64-unknown-none")
        .join("release")
        .join("guest");
    println!("cargo:rustc-env=GUEST_ELF={}", elf.display());
}
