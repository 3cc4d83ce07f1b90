#!/usr/bin/env bash
# Every test the project has, in the order a failure is cheapest to find:
#   lint (fmt, clippy) -> stage2 host tests (unit, ops, proptest model, real-thread stress)
#   -> arch-decode host tests (ESR/HPFAR/SMCCC/exception-entry/ID-register decode)
#   -> psci-lifecycle host tests (vCPU power states, racing CPU_ON on real threads, PSCI answers)
#   -> loom models -> no FP/SIMD/SVE/SME instruction in the hypervisor (tests/no-fp.sh)
#   -> no module imports a layer above its own (tests/layers.sh)
#   -> QEMU runs of the hypervisor (tests/qemu.sh, incl. the gdb test)
#   -> real guests: Debian's arm64 Linux (tests/guests/linux.sh --suite) and kvm-unit-tests
#      (tests/guests/kvm-unit-tests.sh; source: ../shared/third_party/ next to the clone).
# Prints one line per step and ends with "all: N passed, M failed" (N/M count test cases).
# Exit status is non-zero if anything failed.
set -u
cd "$(dirname "$0")/.."

HOST=$(rustc -vV | sed -n 's/^host: //p')
LOG_DIR=${LOG_DIR:-target/test-logs}
mkdir -p "$LOG_DIR"
passed=0
failed=0
failed_steps=()

# run NAME CMD...: run a step, keep its log, add its test counts.
run() {
    local name=$1; shift
    local log="$LOG_DIR/$name.log"
    local start=$SECONDS
    # Say what runs now: some steps (loom) take minutes on a loaded machine.
    printf '%-8s %-28s\n' "..." "$name"
    if "$@" >"$log" 2>&1; then
        local status=ok
    else
        local status=FAILED
        failed_steps+=("$name")
    fi
    # Count cases from cargo's "test result:" lines and the closing line of tests/qemu*.sh,
    # tests/no-fp.sh, tests/layers.sh and tests/guests/*.sh.
    local p f
    p=$(grep -hoE '(test result: [a-zA-Z]+\. [0-9]+ passed|^(qemu[a-z-]*|no-fp|layers|guests-[a-z]+): [0-9]+ passed)' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
    f=$(grep -hoE '(test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed|^(qemu[a-z-]*|no-fp|layers|guests-[a-z]+): [0-9]+ passed, [0-9]+ failed)' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
    if [ "$status" = FAILED ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-8s %-28s %4ds  %s passed, %s failed  (log: %s)\n' "$status" "$name" $((SECONDS - start)) "$p" "$f" "$log"
    if [ "$status" = FAILED ]; then tail -n 30 "$log" | sed 's/^/    | /'; fi
}

run fmt cargo fmt --all -- --check
run clippy-stage2 cargo clippy -p stage2 --features testing --target "$HOST" --tests -- -D warnings
run clippy-bench cargo clippy -p bench --target "$HOST" -- -D warnings
run clippy-arch-decode cargo clippy -p arch-decode --target "$HOST" --tests -- -D warnings
run clippy-psci-lifecycle cargo clippy -p psci-lifecycle --target "$HOST" --tests -- -D warnings
run clippy-hyp cargo clippy -p hyp -- -D warnings
# The guest is built for its own (hard-float) target by hyp/build.rs: lint it there.
run clippy-guest cargo clippy -p guest --target aarch64-unknown-none -- -D warnings
run stage2-tests cargo test -p stage2 --target "$HOST"
run arch-decode-tests cargo test -p arch-decode --target "$HOST"
run psci-lifecycle-tests cargo test -p psci-lifecycle --target "$HOST"
RUSTFLAGS="--cfg loom" run stage2-loom cargo test -p stage2 --features testing --target "$HOST" \
    --target-dir target/loom --release --test loom
RUSTFLAGS="--cfg loom" run stage2-loom-migrate cargo test -p stage2 --features testing --target "$HOST" \
    --target-dir target/loom --release --test loom_migrate
run no-fp bash tests/no-fp.sh
run layers bash tests/layers.sh
run qemu bash tests/qemu.sh
run qemu-robustness bash tests/qemu-robustness.sh
run qemu-workloads bash tests/qemu-workloads.sh
run qemu-fuzz bash tests/qemu-fuzz.sh
run guests-linux bash tests/guests/linux.sh --suite
run guests-kut bash tests/guests/kvm-unit-tests.sh --release

echo
if [ ${#failed_steps[@]} -gt 0 ]; then
    echo "failed steps: ${failed_steps[*]}"
fi
echo "all: $passed passed, $failed failed"
[ ${#failed_steps[@]} -eq 0 ]
