#!/bin/sh
# Host benchmark of the stage2 crate (threads as vCPUs faulting into one stage-2 table, shared
# mode vs. the global MMU lock). Arguments go to the binary; `bench/host.sh --help` lists them.
# Results: printed table, last line `bench-host: {json}`, and bench/out/host.{csv,json}.
# Progress goes to stderr: a line per run, and one every 5 s while it waits for a quiet window.
# See docs/performance.md, "Host benchmark of the stage2 crate".
set -eu
cd "$(dirname "$0")/.."
# The workspace builds for aarch64 by default; the benchmark runs on the host.
host=$(rustc -vV | sed -n 's/^host: //p')
exec cargo run -q -p bench --release --target "$host" -- host "$@"
