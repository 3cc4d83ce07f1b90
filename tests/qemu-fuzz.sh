#!/usr/bin/env bash
# QEMU guest-fuzzer tests (docs/robustness.md "Guest fuzzer"): workload=fuzz in both modes with
# FUZZ_OPS (default 10^4) operations of every op class on each fuzzing vCPU, while vCPU 0 runs
# verify. A run passes when the hypervisor took no exception of its own and stopped no vCPU,
# every fuzzing vCPU did all its ops with zero oracle violations, every op class ran, the
# verifying vCPU finished with checksum=ok and no lost writes, and leaked=0. The two modes get the
# same seed, so the guests must see the same exception classes (the stream is reproducible).
# Then option errors.
#
# Prints `PASS name` or `FAIL name: why` per case and ends with `qemu-fuzz: N passed, M failed`;
# exits non-zero if any case failed. Logs go to $LOG_DIR/fuzz-*.log. FUZZ_SEED picks the seed
# (default 1; a failing run prints the seed to replay), FUZZ_OPS the ops per fuzzing vCPU.
set -u
cd "$(dirname "$0")/.."

SUITE=qemu-fuzz
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
FUZZ_SEED=${FUZZ_SEED:-1}
FUZZ_OPS=${FUZZ_OPS:-10000}
. tests/lib.sh
require_tools qemu-system-aarch64:qemu-system-arm
build_hyp

# run NAME SMP OPTIONS...: boot with SMP CPUs and a hard timeout; sets $out (the log file), $code.
run() {
    local name=$1 smp=$2; shift 2
    SMP=$smp qemu_boot "$LOG_DIR/fuzz-$name.log" "$@"
}

firstfail() { grep -a '^FAIL' "$out" | head -n 1; }

# fuzz MODE: 3 vCPUs (vCPU 0 verifies, 1 and 2 fuzz), every op class; sets $ecs for the replay check.
fuzz() {
    local mode=$1 name="fuzz-$1" why="" fuzzers=2
    run "$name" 3 vcpus=3 mem=1M workload=fuzz seed="$FUZZ_SEED" ops="$FUZZ_OPS" mode="$mode"
    local classes
    classes=$(field fuzz_classes)
    if [ "$code" -ne 0 ] || [ "$(field status)" != pass ]; then
        why="exit $code, status=$(field status), $(firstfail)"
    elif grep -aq 'hypervisor exception\|stopped:' "$out"; then
        why="$(grep -a 'hypervisor exception\|stopped:' "$out" | head -n 1)"
    elif [ "$(field fuzzers)" != "$fuzzers" ] || [ "$(field fuzz_done)" != $((fuzzers * FUZZ_OPS)) ]; then
        why="fuzzers=$(field fuzzers) fuzz_done=$(field fuzz_done), want $fuzzers x $FUZZ_OPS"
    elif [ "$(field fuzz_violations)" != 0 ]; then
        why="fuzz_violations=$(field fuzz_violations): $(grep -a 'FUZZ VIOLATION' "$out" | head -n 1)"
    elif [ "$(field checksum)" != ok ] || [ "$(field lost_writes)" != 0 ] || [ "$(field leaked)" != 0 ]; then
        why="checksum=$(field checksum) lost_writes=$(field lost_writes) leaked=$(field leaked)"
    elif [ -z "$classes" ] || echo "$classes" | tr ',' '\n' | grep -q ':0$'; then
        why="an op class never ran: fuzz_classes=$classes"
    elif [ "$(field fuzz_seed)" != "$(printf '%#x' "$FUZZ_SEED")" ]; then
        why="RESULT says fuzz_seed=$(field fuzz_seed), asked for $FUZZ_SEED"
    fi
    ecs=$(field fuzz_ecs)
    if [ -n "$why" ]; then
        fail "$name" "$why (replay: seed=$FUZZ_SEED ops=$FUZZ_OPS mode=$mode)"
    else
        pass "$name (seed=$(field fuzz_seed) fuzz_done=$(field fuzz_done) fuzz_exceptions=$(field fuzz_exceptions) verified_words=$(field verified_words) faults=$(field faults) injected=$(field injected))"
    fi
}
fuzz parallel
ecs_parallel=$ecs
fuzz locked
ecs_locked=$ecs

# The same seed drives the same operations, so the guests' exception counts must match exactly.
if [ -n "$ecs_parallel" ] && [ "$ecs_parallel" = "$ecs_locked" ]; then
    pass "fuzz-replay (fuzz_ecs identical in both modes: $ecs_parallel)"
else
    fail fuzz-replay "fuzz_ecs differ: parallel '$ecs_parallel', locked '$ecs_locked'"
fi

# Option errors: non-zero exit and an error line naming the problem.
bad_option() {
    local name=$1 expect=$2; shift 2
    run "$name" 2 "$@"
    if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && grep -aq "^error: .*$expect" "$out"; then
        pass "$name"
    else
        fail "$name" "exit $code, $(grep -a '^error' "$out" | head -n 1)"
    fi
}
bad_option fuzz-bad-seed "seed=12x" workload=fuzz seed=12x
bad_option fuzz-zero-ops "must be 1..=10^10" workload=fuzz ops=0
bad_option fuzz-bad-ops "ops=lots" workload=fuzz ops=lots
bad_option fuzz-bad-class "unknown op class 'smx'" workload=fuzz classes=sve,smx
bad_option fuzz-seed-without-fuzz "seed= applies to workload=fuzz only" workload=demand seed=3
bad_option fuzz-small-mem "workload=fuzz needs mem>=64K" workload=fuzz mem=16K

finish
