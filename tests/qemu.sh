#!/usr/bin/env bash
# QEMU tests of the hypervisor: boots with 1, 2 and 4 vCPUs in both modes, a self-test that must
# fail (selftest=corrupt), a vCPU that never finishes (selftest=hang), bad options, help, and a
# gdb batch session that breaks on the stage-2 fault handler.
#
# Every QEMU run has a hard timeout. Prints `PASS name` or `FAIL name: why` per case and ends with
# `qemu: N passed, M failed`; exits non-zero if any case failed. Logs go to $LOG_DIR/qemu-*.log.
set -u
cd "$(dirname "$0")/.."

SUITE=qemu
MEM_PER_VCPU=${MEM_PER_VCPU:-4M}
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
. tests/lib.sh
require_tools qemu-system-aarch64:qemu-system-arm gdb-multiarch:gdb-multiarch
build_hyp

# run NAME OPTIONS...: boot with a hard timeout; sets $out (the log file) and $code.
run() {
    local name=$1; shift
    qemu_boot "$LOG_DIR/qemu-$name.log" "$@"
}

# boot NAME VCPUS MODE: a normal run must exit 0 with a passing, consistent RESULT line.
boot() {
    local name=$1 vcpus=$2 mode=$3
    run "$name" "vcpus=$vcpus" "mode=$mode" "mem=$MEM_PER_VCPU"
    local status checksum leaked faults pages
    status=$(field status); checksum=$(field checksum); leaked=$(field leaked)
    faults=$(field faults); pages=$(field pages)
    if [ "$code" -ne 0 ]; then
        fail "$name" "exit status $code, $(grep -a '^FAIL' "$out" | head -n 1)"
    elif [ "$status" != pass ] || [ "$checksum" != ok ] || [ "$leaked" != 0 ]; then
        fail "$name" "RESULT status=$status checksum=$checksum leaked=$leaked"
    elif [ "$(field vcpus)" != "$vcpus" ] || [ "$(field mode)" != "$mode" ]; then
        fail "$name" "RESULT says vcpus=$(field vcpus) mode=$(field mode)"
    elif [ -z "$pages" ] || [ "$pages" -eq 0 ] || [ "$faults" -lt "$pages" ]; then
        fail "$name" "faults=$faults < pages=$pages touched"
    else
        pass "$name ($(grep -a '^RESULT ' "$out" | tail -n 1 | grep -oE 'faults=[0-9]+|fault_ns_median=[0-9]+' | tr '\n' ' '))"
    fi
}

for mode in parallel locked; do
    for vcpus in 1 2 4; do
        boot "boot-$mode-$vcpus" "$vcpus" "$mode"
    done
done

# A run whose data is corrupted behind the guest's back must fail its checksum check.
run selftest-corrupt vcpus=2 mem=1M selftest=corrupt
if [ "$code" -ne 0 ] && [ "$(field status)" = fail ] && [ "$(field checksum)" = bad ] \
    && grep -aq '^FAIL: vcpu 0 checksum mismatch' "$out"; then
    pass selftest-corrupt
else
    fail selftest-corrupt "exit $code, status=$(field status) checksum=$(field checksum)"
fi

# A vCPU that never finishes must be reported by the hypervisor's own timeout; the report says
# why there is no throughput and leaves out the unmeasured cycles=.
run selftest-hang vcpus=2 mem=1M selftest=hang timeout=2
if [ "$code" -ne 0 ] && [ "$(field status)" = fail ] && [ "$(field reason)" = timeout ] \
    && grep -aq '^FAIL: vcpu 1 did not finish within timeout=2s' "$out" \
    && grep -aq '^throughput and calibration: n/a (the run failed)' "$out" \
    && [ -z "$(field cycles)" ]; then
    pass selftest-hang
else
    fail selftest-hang "exit $code, status=$(field status) reason=$(field reason) cycles=$(field cycles), $(grep -a '^FAIL\|^throughput and' "$out" | head -n 2 | tr '\n' ' ')"
fi

# run-qemu.sh's own flags: an unknown --flag and a non-numeric --timeout are refused (exit 2)
# before QEMU starts; `--` before the hypervisor options is dropped.
script_case() {
    local name=$1 expect_code=$2 expect=$3; shift 3
    local log="$LOG_DIR/qemu-$name.log"
    ./run-qemu.sh "$@" </dev/null >"$log" 2>&1
    local c=$?
    if [ "$c" -eq "$expect_code" ] && grep -aq -- "$expect" "$log"; then
        pass "$name"
    else
        fail "$name" "exit $c (expected $expect_code), $(grep -a 'run-qemu.sh\|^RESULT' "$log" | tail -n 1)"
    fi
}
script_case script-unknown-flag 2 "run-qemu.sh: unknown option --bogus (see --help)" "$ELF" --bogus
script_case script-bad-timeout 2 "run-qemu.sh: --timeout abc: expected a number" "$ELF" --timeout abc
script_case script-dashdash 0 "^RESULT status=pass .*vcpus=2" "$ELF" --timeout "$RUN_TIMEOUT" -- vcpus=2 mem=1M
script_case script-cpu 0 "^RESULT status=pass .*vcpus=2" "$ELF" --timeout "$RUN_TIMEOUT" --cpu max vcpus=2 mem=1M

# Bad options: non-zero exit and an error line naming the problem.
bad_option() {
    local name=$1 opt=$2 expect=$3
    run "$name" "$opt"
    if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && grep -aq "^error: .*$expect" "$out"; then
        pass "$name"
    else
        fail "$name" "exit $code, $(grep -a '^error' "$out" | head -n 1)"
    fi
}
bad_option bad-vcpus vcpus=99 "vcpus=99.*boot more with SMP=N"
bad_option bad-mode mode=bogus "mode=bogus"
bad_option bad-unknown frobnicate=1 "unknown option 'frobnicate'"
# duration= with a workload that does not use it is an error, not silently ignored.
bad_option duration-ignored duration=5 "duration= applies to workload=verify"

# help: exit 0 and every option listed.
run help help
missing=""
for opt in vcpus= mem= mode= workload= selftest= timeout= help; do
    grep -aq "^  $opt" "$out" || missing="$missing $opt"
done
if [ "$code" -eq 0 ] && [ -z "$missing" ]; then
    pass help
else
    fail help "exit $code, options missing from help:$missing"
fi

# gdb: attach to a halted QEMU, break on the stage-2 fault handler, read the syndrome registers
# and list the CPUs as threads.
gdb_case() {
    local name=gdb port=$((20000 + $$ % 20000))
    local qlog="$LOG_DIR/qemu-gdb-qemu.log" glog="$LOG_DIR/qemu-gdb.log"
    GDB_PORT=$port ./run-qemu.sh "$ELF" --gdb --timeout 60 mem=1M </dev/null >"$qlog" 2>&1 &
    local qpid=$!
    # Wait for the stub to listen.
    for _ in $(seq 50); do
        grep -q "target remote :$port" "$qlog" 2>/dev/null && break
        sleep 0.1
    done
    sleep 0.5
    timeout 60 gdb-multiarch -batch -nx "$ELF" \
        -ex "target remote :$port" \
        -ex 'break hyp::vmm::vcpu::handle_stage2_fault' \
        -ex 'continue' \
        -ex 'p/x $ESR_EL2' \
        -ex 'p/x $HPFAR_EL2' \
        -ex 'info threads' \
        -ex 'kill' >"$glog" 2>&1
    kill "$qpid" 2>/dev/null
    wait "$qpid" 2>/dev/null
    local esr hpfar ec threads
    esr=$(sed -n 's/^\$1 = \(0x[0-9a-f]*\)$/\1/p' "$glog")
    hpfar=$(sed -n 's/^\$2 = \(0x[0-9a-f]*\)$/\1/p' "$glog")
    threads=$(grep -cE '^\*? +[0-9]+ +Thread ' "$glog")
    if [ -z "$esr" ] || [ -z "$hpfar" ]; then
        fail $name "no ESR_EL2/HPFAR_EL2 printed (see $glog)"
        return
    fi
    ec=$(( (esr >> 26) & 0x3f ))
    if [ "$ec" -ne $((0x24)) ] && [ "$ec" -ne $((0x20)) ]; then
        fail $name "ESR_EL2=$esr has EC $(printf '%#x' $ec), not 0x24/0x20"
    elif [ "$threads" -ne 4 ]; then
        fail $name "info threads listed $threads threads, not 4"
    else
        pass "$name (ESR_EL2=$esr EC=$(printf '%#x' $ec) HPFAR_EL2=$hpfar, $threads threads)"
    fi
}
gdb_case

finish
