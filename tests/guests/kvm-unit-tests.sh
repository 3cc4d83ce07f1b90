#!/usr/bin/env bash
# Builds kvm-unit-tests for arm64 and runs its tests as guests of the hypervisor at 1, 2 and 4 vCPUs.
#
#   tests/guests/kvm-unit-tests.sh [--source TREE|TARBALL] [--vcpus "1 2 4"] [--tests "NAME ..."]
#                                  [--release] [--timeout S] [--cache DIR] [--bare] [--list]
#                                  [-- HYPERVISOR OPTIONS...]
#
# Source: a kvm-unit-tests tree (an upstream clone: git clone https://gitlab.com/kvm-unit-tests/
# kvm-unit-tests) or a tarball of one; default: the newest ../shared/third_party/
# kvm-unit-tests-*.tar.gz next to the project's root. A tarball is unpacked into the cache
# directory (--cache, else $S2PAR_GUEST_CACHE, else $XDG_CACHE_HOME/s2par/guests, else
# target/guests); either is built out of tree there with Debian's cross compiler:
# `SOURCE/configure --arch=arm64 --cross-prefix=aarch64-linux-gnu- && make -j2`
# (gcc-aarch64-linux-gnu, installed with apt-get when root). A tree is rebuilt by make as it changes.
#
# Tests (arm/unittests.cfg of the source gives each one's .flat file and arguments; spinlock and
# sieve are not in it and are defined below): selftest-setup, selftest-vectors-kernel,
# selftest-vectors-user, selftest-smp, psci, timer, gicv3-ipi, gicv3-active, cache, every pmu-*
# test, debug-bp, debug-wp, debug-sstep, fpu-context, spinlock, sieve, micro-bench. Each runs at
# every vCPU count of --vcpus that it allows (psci, gicv3-ipi, fpu-context and micro-bench need 2;
# micro-bench runs at 2 only):
#   SMP=N ./run-qemu.sh HYP --timeout S --kernel BUILD/arm/X.flat --initrd ENVIRON --cmdline "ARGS"
#         vcpus=N ram=KUT_MEM_MB"M"
# where ENVIRON holds ERRATA_6c7a5dce22b3=y (it enables psci's cpu-on race test) and ARGS are the
# test's arguments with smp= and mem= set to this run's vCPUs and guest RAM (KUT_MEM_MB, 256).
#
# A run passes when the test printed `EXIT: STATUS=1`, run-qemu.sh exited 0 and its RESULT line
# says status=pass and leaked=0 (no stage-2 table page leaked at teardown); STATUS=77 (the
# test skipped everything itself) is a skip when run-qemu.sh exited 77 (kvm-unit-tests' own
# scripts/runtime.bash: 77 = SKIP) and the RESULT line says status=skip and leaked=0; any other
# status, a missing EXIT line or a timeout
# fails; RETRY_ONCE below names the tests with a wall-clock bound that get a second try.
# EXPECTED_SKIP below lists tests not run at all, each with its reason. Prints a table
# test x vCPUs and ends with `guests-kut: N passed, M failed, K skipped`; exits non-zero if any
# run failed. Logs: $LOG_DIR/guests-kut-TEST-N.log.
#
# --bare runs the same .flat files directly on QEMU at EL1 (no hypervisor; -M virt,gic-version=3
# -cpu max -smp N -m KUT_MEM_MB): the baseline. --list prints the tests with their file and
# arguments and exits.
set -u
cd "$(dirname "$0")/../.." || exit 2

SUITE=guests-kut
RUN_TIMEOUT=60
KUT_MEM_MB=${KUT_MEM_MB:-256}
source=""
vcpu_list="1 2 4"
only=""
release=0
bare=0
list=0
cache=""
hyp_opts=()

# Tests not run unless named in --tests, each with the reason (measured on this project's
# 2-core machine with QEMU 7.2, bare QEMU at EL1: tests/guests/kvm-unit-tests.sh --bare).
declare -A EXPECTED_SKIP=(
    [pmu-event-introspection]="QEMU 7.2's TCG PMU does not implement events 0x8 (INST_RETIRED) and 0x1b (INST_SPEC) that it requires: it fails on bare QEMU too"
    [sieve]="three sieves of 100 MB take 4-5 minutes under TCG (288 s at 2 vCPUs on bare QEMU, 261 s at 1 vCPU on the hypervisor: pass, 25,000 stage-2 faults), more than the CI budget of all guest tests; run it with --tests sieve"
)

# Tests that need at least this many vCPUs (read from their sources: below it they abort or skip).
declare -A MIN_VCPUS=(
    [psci]=2        # psci.c: "At least 2 cpus required" (report_skip)
    [gicv3-ipi]=2   # gic.c ipi: nr_cpu_check(2) (report_abort)
    [fpu-context]=2 # fpu.c: nr_cpu_check(2) (report_abort)
    [micro-bench]=2 # micro-bench.c: "At least two cpus required, skipping tests"
)

# Tests whose checks include a wall-clock bound that a loaded host can miss under TCG: a failure is
# run once more, and the table shows a pass on the second try as "pass(2)".
declare -A RETRY_ONCE=(
    [timer]="its busy-loop checks want the timer interrupt within 10 ms of the deadline"
)

# Tests run only up to this many vCPUs.
declare -A MAX_VCPUS=(
    [micro-bench]=2 # unittests.cfg: smp = 2; its IPI benchmark uses CPUs 0 and 1 and takes a minute under TCG
)

# The tests outside arm/unittests.cfg: file and arguments. spinlock-test takes any argument but
# "bad" to use a real (GCC atomic builtin) lock; without one it runs unlocked and must fail on SMP.
declare -A EXTRA_FILE=([spinlock]=spinlock-test.flat [sieve]=sieve.flat)
declare -A EXTRA_ARGS=([spinlock]=atomic [sieve]="")

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die() { echo "kvm-unit-tests.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --source) [ $# -ge 2 ] || die "--source needs a tree or tarball"; source=$2; shift ;;
        --vcpus) [ $# -ge 2 ] || die "--vcpus needs a list, e.g. \"1 2 4\""; vcpu_list=$2; shift ;;
        --tests) [ $# -ge 2 ] || die "--tests needs test names"; only=$2; shift ;;
        --release) release=1 ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; RUN_TIMEOUT=$2; shift ;;
        --cache) [ $# -ge 2 ] || die "--cache needs a directory"; cache=$2; shift ;;
        --bare) bare=1 ;;
        --list) list=1 ;;
        --help | -h) usage; exit 0 ;;
        --) shift; hyp_opts=("$@"); break ;;
        *) die "unknown option '$1' (--help lists them)" ;;
    esac
    shift
done
for n in $vcpu_list; do
    case "$n" in '' | *[!0-9]* | 0) die "--vcpus '$vcpu_list': numbers from 1" ;; esac
done
case "$RUN_TIMEOUT$KUT_MEM_MB" in *[!0-9]*) die "--timeout and KUT_MEM_MB take whole numbers" ;; esac

. tests/guests/paths.sh
if [ -n "$source" ]; then
    source=$(abs "$source")
else
    source=$(ls -t "$PWD"/../shared/third_party/kvm-unit-tests-*.tar.gz 2>/dev/null | head -n 1)
    [ -n "$source" ] || die "no kvm-unit-tests source: pass --source TREE|TARBALL (git clone https://gitlab.com/kvm-unit-tests/kvm-unit-tests), or put a kvm-unit-tests-*.tar.gz in ../shared/third_party/"
fi
[ -e "$source" ] || die "no such tree or tarball: $source"

guest_cache_dir "$cache"

. tests/lib.sh
require_tools aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu make:make tar:tar gzip:gzip \
    qemu-system-aarch64:qemu-system-arm

# prepare_source: sets SRC (a kvm-unit-tests tree) and BUILD (its build directory in the cache).
prepare_source() {
    local base key
    if [ -d "$source" ]; then
        SRC=$source
        key=tree-$(echo "$SRC" | sha256sum | cut -c1-12)
    else
        base=$(basename "$source")
        key=${base%.tar.gz}
        key=${key%.tgz}
        SRC=$GUEST_CACHE/kvm-unit-tests/$key/src
        if [ ! -f "$SRC/configure" ]; then
            rm -rf "$SRC"
            mkdir -p "$SRC"
            if ! tar -xzf "$source" -C "$SRC" --strip-components=1; then
                fail build "cannot unpack $source"
                finish
            fi
        fi
    fi
    if [ ! -x "$SRC/configure" ] || [ ! -f "$SRC/arm/unittests.cfg" ]; then
        fail build "$SRC is not a kvm-unit-tests tree (no configure or arm/unittests.cfg)"
        finish
    fi
    BUILD=$GUEST_CACHE/kvm-unit-tests/$key/build
}

# build_tests: configure (once) and make in $BUILD.
build_tests() {
    local log=$GUEST_CACHE/kvm-unit-tests/build.log
    mkdir -p "$BUILD"
    echo "kvm-unit-tests: building $SRC in $BUILD"
    if ! { [ -f "$BUILD/config.mak" ] \
        || (cd "$BUILD" && "$SRC/configure" --arch=arm64 --cross-prefix=aarch64-linux-gnu-); } >"$log" 2>&1 \
        || ! (cd "$BUILD" && make -j2) >>"$log" 2>&1; then
        tail -n 20 "$log"
        fail build "configure/make of kvm-unit-tests failed (log: $log)"
        finish
    fi
}

# cfg_sections: the section names of arm/unittests.cfg, one a line.
cfg_sections() { sed -n 's/^\[\(.*\)\]$/\1/p' "$SRC/arm/unittests.cfg"; }

# cfg_get SECTION KEY: the value of KEY in SECTION of arm/unittests.cfg (quotes kept).
cfg_get() {
    awk -v sec="[$1]" -v key="$2" '
        /^\[/ { in_sec = ($0 == sec); next }
        in_sec && $0 ~ "^" key "[ \t]*=" { sub("^" key "[ \t]*=[ \t]*", ""); print; exit }
    ' "$SRC/arm/unittests.cfg"
}

# test_names: the tests this script runs, in order (--tests narrows them).
test_names() {
    local names=(selftest-setup selftest-vectors-kernel selftest-vectors-user selftest-smp psci timer
        gicv3-ipi gicv3-active cache) s groups
    for s in $(cfg_sections); do
        case "$s" in
            pmu-* | debug-*)
                groups=$(cfg_get "$s" groups)
                case " $groups " in *" migration "*) continue ;; esac
                names+=("$s") ;;
        esac
    done
    names+=(fpu-context spinlock sieve micro-bench)
    if [ -n "$only" ]; then
        local keep=() t
        for t in $only; do
            case " ${names[*]} " in *" $t "*) ;; *) echo "unknown:$t"; return ;; esac
        done
        for t in "${names[@]}"; do
            case " $only " in *" $t "*) keep+=("$t") ;; esac
        done
        names=(${keep[@]+"${keep[@]}"})
    fi
    echo "${names[@]}"
}

# test_file NAME / test_args NAME: the .flat file and the arguments (test_args, or the -append of an
# older cfg's extra_params), unquoted.
test_file() {
    if [ -n "${EXTRA_FILE[$1]+x}" ]; then echo "${EXTRA_FILE[$1]}"; else cfg_get "$1" file; fi
}
test_args() {
    local a
    if [ -n "${EXTRA_FILE[$1]+x}" ]; then echo "${EXTRA_ARGS[$1]}"; return; fi
    a=$(cfg_get "$1" test_args)
    [ -n "$a" ] || a=$(cfg_get "$1" extra_params | sed -n "s/.*-append[ ]*//p")
    a=${a#[\'\"]}
    a=${a%[\'\"]}
    echo "$a"
}

# run_test NAME N: one run; sets cell (pass, skip, FAIL:...), out (the log), code (exit status)
# and status (the EXIT: STATUS= value, or empty).
run_test() {
    local name=$1 n=$2 file args
    file=$(test_file "$name")
    args=$(test_args "$name" | sed -E "s/(^| )smp=[0-9]+/\1smp=$n/; s/(^| )mem=[0-9]+/\1mem=$KUT_MEM_MB/")
    out=$LOG_DIR/guests-kut-$name-$n.log
    if [ ! -f "$BUILD/arm/$file" ]; then
        cell="FAIL:nofile"
        return
    fi
    if [ "$bare" = 1 ]; then
        timeout --foreground -k 5 "$RUN_TIMEOUT" qemu-system-aarch64 -M virt,gic-version=3 -cpu max \
            -smp "$n" -m "$KUT_MEM_MB" -nographic -no-reboot -kernel "$BUILD/arm/$file" \
            -initrd "$ENVIRON" -append "$args" </dev/null >"$out" 2>&1
    else
        # One vCPU per CPU: QEMU gets exactly the guest's CPUs.
        SMP=$n ./run-qemu.sh "$ELF" --timeout "$RUN_TIMEOUT" --kernel "$BUILD/arm/$file" \
            --initrd "$ENVIRON" --cmdline "$args" "vcpus=$n" "ram=${KUT_MEM_MB}M" \
            ${hyp_opts[@]+"${hyp_opts[@]}"} </dev/null >"$out" 2>&1
    fi
    code=$?
    status=$(grep -aoE 'EXIT: STATUS=[0-9]+' "$out" | tail -n 1 | cut -d= -f2)
    if [ "$code" = 124 ]; then
        cell="FAIL:timeout"
    elif [ "$status" = 1 ] && [ "$code" = 0 ] && [ "$bare" = 0 ] \
        && { [ "$(field status)" != pass ] || [ "$(field leaked)" != 0 ]; }; then
        cell="FAIL:RESULT"
    elif [ "$status" = 1 ] && [ "$code" = 0 ]; then
        cell=pass
    elif [ "$status" = 1 ]; then
        cell="FAIL:S=1/x$code"
    elif [ "$status" = 77 ] && [ "$bare" = 0 ] \
        && { [ "$code" != 77 ] || [ "$(field status)" != skip ] || [ "$(field leaked)" != 0 ]; }; then
        # The hypervisor reports a skip as kvm-unit-tests' scripts do: exit 77, RESULT status=skip.
        cell="FAIL:skip/x$code"
    elif [ "$status" = 77 ]; then
        cell=skip
    elif [ -n "$status" ]; then
        cell="FAIL:S=$status"
    else
        cell="FAIL:exit$code"
    fi
}

prepare_source
read -r -a TESTS <<<"$(test_names)"
case "${TESTS[0]:-}" in unknown:*) die "--tests: no test named '${TESTS[0]#unknown:}' (--list shows the names)" ;; esac
[ ${#TESTS[@]} -gt 0 ] || die "no test selected (--tests '$only'; --list shows the names)"
if [ "$list" = 1 ]; then
    for t in "${TESTS[@]}"; do
        printf '%-28s %-20s vcpus=%s..%s args="%s"%s\n' "$t" "$(test_file "$t")" "${MIN_VCPUS[$t]:-1}" "${MAX_VCPUS[$t]:-}" \
            "$(test_args "$t")" "${EXPECTED_SKIP[$t]+ expected skip: ${EXPECTED_SKIP[$t]}}"
    done
    exit 0
fi
build_tests
ENVIRON=$GUEST_CACHE/kvm-unit-tests/environ
# psci's cpu-on test races CPU_ON calls; Linux KVM before 4.12 (commit 6c7a5dce22b3) got it wrong,
# so kvm-unit-tests runs it only when the environ says the erratum is fixed.
echo "ERRATA_6c7a5dce22b3=y" >"$ENVIRON"

if [ "$bare" = 0 ]; then
    if [ "$release" = 1 ]; then
        build_hyp
    else
        log="$LOG_DIR/$SUITE-build.log"
        cargo build -p hyp >"$log" 2>&1 || { tail -n 20 "$log"; fail build "cargo build -p hyp failed (see $log)"; finish; }
        ELF=target/aarch64-unknown-none-softfloat/debug/hyp
    fi
fi

skipped=0
declare -A CELL=()
start=$SECONDS
for t in "${TESTS[@]}"; do
    for n in $vcpu_list; do
        if [ -n "${EXPECTED_SKIP[$t]+x}" ] && [[ " $only " != *" $t "* ]]; then
            cell="xskip"
        elif [ "$n" -lt "${MIN_VCPUS[$t]:-1}" ] || [ "$n" -gt "${MAX_VCPUS[$t]:-$n}" ]; then
            cell="n/a"
        else
            t0=$SECONDS
            run_test "$t" "$n"
            if [ "${cell#FAIL}" != "$cell" ] && [ -n "${RETRY_ONCE[$t]+x}" ]; then
                echo "RETRY $t vcpus=$n: $cell (${RETRY_ONCE[$t]}); first log kept as $out.1"
                mv "$out" "$out.1"
                run_test "$t" "$n"
                [ "$cell" != pass ] || cell="pass(2)"
            fi
            case "$cell" in
                pass*) pass "$t vcpus=$n ($((SECONDS - t0))s)" ;;
                skip) echo "SKIP $t vcpus=$n: the test skipped all its checks (STATUS=77) (log: $out)"; skipped=$((skipped + 1)) ;;
                *)
                    if [ -n "$status" ]; then printed="EXIT: STATUS=$status"; else printed="no EXIT line"; fi
                    fail "$t vcpus=$n" "$cell (exit $code, $printed): $(grep -aE '(FAIL:|ABORT|error)' "$out" | head -n 1) (log: $out)" ;;
            esac
        fi
        CELL[$t:$n]=$cell
    done
done

echo
printf '%-28s' "test \\ vCPUs"
for n in $vcpu_list; do printf ' %-14s' "$n"; done
echo
for t in "${TESTS[@]}"; do
    printf '%-28s' "$t"
    for n in $vcpu_list; do printf ' %-14s' "${CELL[$t:$n]}"; done
    echo
done
echo "(pass: EXIT: STATUS=1 and exit 0; pass(2): on the second try; skip: STATUS=77, exit 77 and RESULT"
echo " status=skip (FAIL:skip/xN if not); n/a: outside the test's"
echo " vCPU range; xskip: expected skip, not run; FAIL:S=n: EXIT: STATUS=n; FAIL:exitN: no EXIT line, exit N;"
echo " FAIL:S=1/xN: STATUS=1 but run-qemu.sh exited N; FAIL:RESULT: the hypervisor's RESULT line says"
echo " status other than pass or leaked other than 0)"
for t in "${TESTS[@]}"; do
    [ "${CELL[$t:${vcpu_list%% *}]}" != xskip ] || echo "expected skip $t: ${EXPECTED_SKIP[$t]}"
done
echo "time: $((SECONDS - start))s for ${#TESTS[@]} tests at vCPUs $vcpu_list$([ "$bare" = 1 ] && echo ' (bare QEMU)')"
echo "$SUITE: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
