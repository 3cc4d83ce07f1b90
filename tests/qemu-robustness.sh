#!/usr/bin/env bash
# QEMU robustness tests (docs/robustness.md): a short chaos run in both modes (a pruner CPU races
# the vCPUs; zero lost writes, zero leaks), a broken pruner that must be caught (selftest=nocopy),
# the bad-guest matrix in both modes and with 4k and 2m backing (23 cases, every answer the
# expected one, the verifying vCPUs still pass), a table pool too small for 2 vCPUs (must stop
# cleanly), tables=256K with 4 vCPUs (must pass), the PSCI lifecycle (workload=psci) in both
# modes and at 1, 2 and 4 vCPUs, and option errors.
#
# Every QEMU run has a hard timeout. Prints `PASS name` or `FAIL name: why` per case and ends with
# `qemu-robustness: N passed, M failed`; exits non-zero if any case failed. Logs go to
# $LOG_DIR/robust-*.log. CHAOS_S sets the chaos runs' duration (default 3 seconds).
set -u
cd "$(dirname "$0")/.."

SUITE=qemu-robustness
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
CHAOS_S=${CHAOS_S:-3}
. tests/lib.sh
require_tools qemu-system-aarch64:qemu-system-arm
build_hyp

# run NAME SMP OPTIONS...: boot with SMP CPUs and a hard timeout; sets $out (the log file), $code.
run() {
    local name=$1 smp=$2; shift 2
    SMP=$smp qemu_boot "$LOG_DIR/robust-$name.log" "$@"
}

firstfail() { grep -a '^FAIL' "$out" | head -n 1; }

# chaos MODE: 4 vCPUs + the pruner CPU for CHAOS_S seconds; everything must pass and every kind
# of pruner operation must have happened.
chaos() {
    local mode=$1 name="chaos-$1"
    run "$name" 5 vcpus=4 mem=2M chaos=on duration="$CHAOS_S" mode="$mode"
    local why=""
    if [ "$code" -ne 0 ] || [ "$(field status)" != pass ]; then
        why="exit $code, status=$(field status), $(firstfail)"
    elif [ "$(field lost_writes)" != 0 ] || [ "$(field leaked)" != 0 ] || [ "$(field checksum)" != ok ]; then
        why="lost_writes=$(field lost_writes) leaked=$(field leaked) checksum=$(field checksum)"
    elif [ "$(field mode)" != "$mode" ] || [ "$(field chaos)" != on ]; then
        why="RESULT says mode=$(field mode) chaos=$(field chaos)"
    else
        for k in unmap wprotect migrate compact; do
            v=$(field $k)
            if [ -z "$v" ] || [ "$v" -eq 0 ]; then why="the pruner did no $k ($k=$v)"; break; fi
        done
        local shaped=$(( $(field collapse) + $(field split) ))
        if [ -z "$why" ] && [ "$shaped" -eq 0 ]; then why="no collapse or split happened"; fi
        if [ -z "$why" ] && [ "$(field verified_words)" -eq 0 ]; then why="no word was verified"; fi
    fi
    if [ -n "$why" ]; then
        fail "$name" "$why"
    else
        pass "$name ($(grep -a '^RESULT ' "$out" | tail -n 1 | grep -oE ' (pruner_ops|faults|retries|bbm|grace_periods|max_deferred|lost_writes)=[0-9]+' | tr -d '\n'))"
    fi
}
chaos parallel
chaos locked

# A pruner that loses data on migration must be caught as lost writes and fail the run.
run chaos-nocopy 3 vcpus=2 mem=2M chaos=on duration=2 selftest=nocopy
lost=$(field lost_writes)
if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && [ "$(field status)" = fail ] && [ -n "$lost" ] \
    && [ "$lost" -gt 0 ] && grep -aq '^FAIL: vcpu [0-9] saw [0-9]* lost writes' "$out"; then
    pass "chaos-nocopy (lost_writes=$lost caught)"
else
    fail chaos-nocopy "exit $code, status=$(field status), lost_writes=$lost"
fi

# badguest MODE BACKING: the 23 cases on the last vCPU, the others verify; all answers as
# expected. backing=2m is where case 19 (an S1PTW fault in a write-protected 2 MiB block) bites;
# it needs mem to be a multiple of 2M.
CASES=23
badguest() {
    local mode=$1 backing=$2 vcpus=${3:-4} name="badguest-$1" mem=1M
    if [ "$backing" = 2m ]; then name="badguest-2m-$1"; mem=2M; fi
    if [ "$vcpus" != 4 ]; then name="$name-$vcpus"; fi
    run "$name" "$vcpus" vcpus="$vcpus" mem=$mem backing="$backing" workload=badguest duration=1 mode="$mode"
    if [ "$code" -ne 0 ] || [ "$(field status)" != pass ]; then
        fail "$name" "exit $code, status=$(field status), $(firstfail)"
    elif [ "$(field badguest_ok)" != $CASES ] || [ "$(field badguest_cases)" != $CASES ] \
        || [ "$(field lost_writes)" != 0 ] || [ "$(field leaked)" != 0 ]; then
        fail "$name" "badguest_ok=$(field badguest_ok)/$(field badguest_cases) (want $CASES) lost_writes=$(field lost_writes) leaked=$(field leaked)"
    elif [ "$(grep -ac 'badguest case [0-9]* (.*): guest saw .*: expected' "$out")" -ne $CASES ]; then
        fail "$name" "not one 'expected' log line per case"
    elif [ "$(field oom_failed_cleanly)" -lt 1 ]; then
        fail "$name" "pool exhaustion never failed an access (oom_failed_cleanly=$(field oom_failed_cleanly))"
    else
        pass "$name (badguest_ok=$CASES/$CASES injected=$(field injected) oom_backed=$(field oom_backed) oom_failed_cleanly=$(field oom_failed_cleanly))"
    fi
}
badguest parallel 4k
badguest locked 4k
badguest parallel 2m
badguest locked 2m
# 3 vCPUs x 1M: the bad vCPU's 2 MiB chunk runs past the end of the data memslot (case 19).
badguest parallel 4k 3

# psci MODE VCPUS: the PSCI lifecycle (workload=psci, docs/robustness.md): vCPU 1 turns itself
# off, is turned on again at a new entry with a context ID, turns off again and is turned on by
# every other vCPU at once. Every check the hypervisor books must hold (psci_ok = psci_checks),
# exactly one racing CPU_ON succeeds, the lifecycle counts 2 starts and 2 CPU_OFFs (none with
# one vCPU, which runs only the self checks), and the verify pass after it must pass.
psci() {
    local mode=$1 vcpus=$2 name="psci-$1-$2"
    local want_on=2
    if [ "$vcpus" -lt 2 ]; then want_on=0; fi
    run "$name" "$vcpus" vcpus="$vcpus" mem=1M workload=psci mode="$mode" timeout=30
    if [ "$code" -ne 0 ] || [ "$(field status)" != pass ]; then
        fail "$name" "exit $code, status=$(field status), $(firstfail)"
    elif [ -z "$(field psci_checks)" ] || [ "$(field psci_ok)" != "$(field psci_checks)" ]; then
        fail "$name" "psci_ok=$(field psci_ok)/$(field psci_checks)"
    elif [ "$vcpus" -ge 2 ] && [ "$(field psci_race_success)" != 1 ]; then
        fail "$name" "psci_race_success=$(field psci_race_success) (want 1)"
    elif [ "$(field cpu_on)" != $want_on ] || [ "$(field cpu_off)" != $want_on ] \
        || [ "$(field end)" != stopped ] || [ "$(field lost_writes)" != 0 ] || [ "$(field leaked)" != 0 ]; then
        fail "$name" "cpu_on=$(field cpu_on) cpu_off=$(field cpu_off) (want $want_on) end=$(field end) lost_writes=$(field lost_writes) leaked=$(field leaked)"
    else
        pass "$name (psci_ok=$(field psci_ok)/$(field psci_checks) race: $(field psci_race_success) SUCCESS $(field psci_race_already_on) ALREADY_ON $(field psci_race_on_pending) ON_PENDING; cpu_on=$(field cpu_on) cpu_off=$(field cpu_off))"
    fi
}
psci parallel 4
psci locked 4
psci parallel 2
psci parallel 1

# A stage-2 table pool too small for the run (tables=32K: the root and a few tables): faults that
# find it dry wait for RCU, then stop their vCPU cleanly. The run must fail with that reason, with
# no panic and no leaked table page.
run table-pool-dry 4 vcpus=2 tables=32K
if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && [ "$(field status)" = fail ] && [ "$(field leaked)" = 0 ] \
    && grep -aq "stage-2 table pool dry" "$out" && grep -aq "table pool ran dry" "$out" \
    && ! grep -aqi "panic" "$out"; then
    pass table-pool-dry
else
    fail table-pool-dry "exit $code status=$(field status) leaked=$(field leaked) $(firstfail)"
fi

# tables= with 4 vCPUs (issue 9): a 256K pool is plenty for the demand workload's tables, so no
# vCPU may stop as "pool dry" just because another CPU's page cache holds the free pages. Every
# vCPU must finish (status=pass). timeout= makes a stuck run fail in seconds, not minutes.
run table-pool-4vcpus 4 vcpus=4 tables=256K timeout=30
if [ "$code" -eq 0 ] && [ "$(field status)" = pass ] && [ "$(field leaked)" = 0 ] \
    && ! grep -aq "table pool dry" "$out" && ! grep -aqi "panic" "$out"; then
    pass "table-pool-4vcpus (faults=$(field faults) tables_alloc=$(field tables_alloc))"
else
    fail table-pool-4vcpus "exit $code status=$(field status) leaked=$(field leaked) $(grep -a 'table pool dry' "$out" | head -n 1) $(firstfail)"
fi

# Option errors: non-zero exit and an error line naming the problem.
bad_option() {
    local name=$1 smp=$2 expect=$3; shift 3
    run "$name" "$smp" "$@"
    if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && grep -aq "^error: .*$expect" "$out"; then
        pass "$name"
    else
        fail "$name" "exit $code, $(grep -a '^error' "$out" | head -n 1)"
    fi
}
bad_option chaos-no-spare-cpu 4 "needs a CPU for the pruner" vcpus=4 chaos=on
bad_option bad-duration 4 "duration=abc" duration=abc
bad_option chaos-bad-workload 4 "chaos=on runs workload=verify" vcpus=2 chaos=on workload=demand
bad_option chaos-2m-backing 4 "chaos=on uses 4k backing" vcpus=2 chaos=on backing=2m
# One vCPU that never finishes leaves no CPU to check timeout=: refused, not a hang.
bad_option hang-one-vcpu 4 "selftest=hang needs vcpus>=2" selftest=hang vcpus=1 mem=1M timeout=2

# chaos=on without vcpus=: one CPU fewer, and the header says why.
run chaos-default-vcpus 3 mem=1M chaos=on duration=1
if [ "$code" -eq 0 ] && [ "$(field vcpus)" = 2 ] \
    && grep -aq "options: vcpus=2 (default: one CPU is the chaos pruner's)" "$out"; then
    pass chaos-default-vcpus
else
    fail chaos-default-vcpus "exit $code vcpus=$(field vcpus), $(grep -a 'options:' "$out" | head -n 1) $(firstfail)"
fi

finish
