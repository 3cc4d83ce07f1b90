#!/usr/bin/env bash
# QEMU benchmark of the hypervisor: parallel vs. locked stage-2 fault handling.
#
#   bench/qemu/run.sh [--reps N] [--vcpus "1 2 4 8"] [--workloads "demand overlap pagetable"]
#                     [--backings "4k 2m"] [--no-host] [--quick] [--steps] [--plot PATH]
#
# Runs the matrix vCPUs x mode (parallel, locked) x workload x backing, N repetitions each
# (default 7; the repetitions are interleaved, so host noise spreads over every cell), on a
# release build, every boot with the same QEMU settings (-smp 8, -m 512M, -mem-prealloc).
# Then it runs the host benchmark of the stage2 crate (bench/host.sh) unless --no-host.
# --steps boots with steps=on (the fault path's step timers, for the breakdown in
# docs/performance.md); not for the matrix: each timer is a CNTPCT read, which QEMU serves under
# its global lock, and inside the MMU lock that makes locked mode convoy.
# Writes bench/out/qemu.csv (one row per run, every RESULT field), bench/out/qemu.json (medians,
# min, max, parallel/locked ratios, calibration, machine), bench/out/qemu-report.md (the tables
# and the goal checks) and the plot (docs/perf.svg, or --plot PATH for a partial matrix; the
# format follows the extension, .svg or .png); prints the tables. The plot needs matplotlib
# (Debian: python3-matplotlib, installed with apt-get when run as root).
# --quick is a smoke run: 1 repetition, 1 and 4 vCPUs, no host benchmark, its files under
# bench/out/quick/ (qemu.csv, qemu.json, qemu-report.md, logs), so a full run's stay, and the
# plot at bench/out/perf-quick.svg (not docs/perf.svg).
# Exit status: 0 when every boot passed; 1 when some failed (listed, left out of the medians;
# no plot at all when every boot failed) or the host benchmark failed; 2 on a bad argument.
#
# Sizes: demand mem=16M per vCPU (4096 pages each, 128 MiB at 8 vCPUs), overlap and pagetable
# one shared region of mem=64M (16384 pages, 32 chunks of 2 MiB): tens of thousands of faults
# per boot. Duration on 2 host cores: see docs/performance.md ("QEMU benchmark").
set -euo pipefail
cd "$(dirname "$0")/../.."
start0=$SECONDS

reps=7
vcpus_list="1 2 4 8"
workloads="demand overlap pagetable"
backings="4k 2m"
host_bench=1
plot=docs/perf.svg
steps=off
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps=$2; shift ;;
        --vcpus) vcpus_list=$2; shift ;;
        --workloads) workloads=$2; shift ;;
        --backings) backings=$2; shift ;;
        --no-host) host_bench=0 ;;
        --steps) steps=on ;;
        --plot) plot=$2; shift ;;
        --quick) reps=1; vcpus_list="1 4"; host_bench=0; plot=bench/out/perf-quick.svg; out=bench/out/quick ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/qemu/run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$reps" -lt 1 ]; then echo "bench/qemu/run.sh: --reps must be >= 1" >&2; exit 2; fi

SMP=8
QMEM=512M
RUN_TIMEOUT=240
export SMP MEM=$QMEM QEMU_EXTRA="-mem-prealloc"
out=${out:-bench/out}
logs=$out/qemu-logs
mkdir -p "$logs"

mem_for() { case "$1" in demand|random) echo 16M ;; *) echo 64M ;; esac; }
# Seconds since the $EPOCHREALTIME value $1, to the millisecond.
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

# shellcheck source=bench/qemu/common.sh
. bench/qemu/common.sh
# The report's plot needs matplotlib: find it before spending minutes on boots.
need_plot_python
build_release bench/qemu

# The machine, for the report.
{
    machine_lines
    echo "rustc=$(rustc -V)"
    echo "qemu_cmd=qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max -smp $SMP -m $QMEM -nographic -no-reboot -semihosting -kernel $ELF -append \"OPTIONS\" -mem-prealloc"
} >"$out/qemu-machine.txt"

csv=$out/qemu.csv
: >"$csv.tmp"
cells=0
for _ in $vcpus_list; do for _ in $workloads; do for _ in $backings; do cells=$((cells + 2)); done; done; done
total=$((cells * reps))
n=0
start=$SECONDS
t_matrix=$EPOCHREALTIME
for rep in $(seq 1 "$reps"); do
    for vcpus in $vcpus_list; do
        for workload in $workloads; do
            for backing in $backings; do
                for mode in parallel locked; do
                    n=$((n + 1))
                    mem=$(mem_for "$workload")
                    opts="vcpus=$vcpus mode=$mode workload=$workload backing=$backing mem=$mem timeout=$((RUN_TIMEOUT - 20)) steps=$steps"
                    log="$logs/$workload-$backing-$mode-$vcpus-r$rep.log"
                    t0=$EPOCHREALTIME
                    set +e
                    # shellcheck disable=SC2086
                    ./run-qemu.sh "$ELF" --timeout "$RUN_TIMEOUT" $opts </dev/null >"$log" 2>&1
                    code=$?
                    set -e
                    result=$(grep -a '^RESULT ' "$log" | tail -n 1 | tr -d '\r')
                    [ -n "$result" ] || result="RESULT status=fail reason=no-result-line"
                    # The cell's own fields first: a failed boot's RESULT line may lack them.
                    printf 'rep=%s exit=%s secs=%s log=%s workload=%s backing=%s mode=%s vcpus=%s %s\n' \
                        "$rep" "$code" "$(elapsed "$t0")" "$log" "$workload" "$backing" "$mode" "$vcpus" \
                        "${result#RESULT }" >>"$csv.tmp"
                    printf '[%3d/%d %4ds] %-9s %-2s %-8s vcpus=%s rep %s: %s\n' "$n" "$total" \
                        $((SECONDS - start)) "$workload" "$backing" "$mode" "$vcpus" "$rep" \
                        "$(echo "$result" | grep -oE 'status=[a-z]+|pages_per_s=[0-9]+|fault_ns_median=[0-9]+' | tr '\n' ' ')" >&2
                done
            done
        done
    done
    if [ "$rep" = 1 ] && ! grep -q ' status=pass' "$csv.tmp"; then
        echo "bench/qemu: every boot of repetition 1 failed: not running the other repetitions" >&2
        break
    fi
done
mv "$csv.tmp" "$out/qemu-runs.txt"
echo "matrix_secs=$(elapsed "$t_matrix")" >>"$out/qemu-machine.txt"

host_json=""
host_failed=0
if [ "$host_bench" = 1 ] && ! grep -q ' status=pass' "$out/qemu-runs.txt"; then
    echo "bench/qemu: no boot passed: host benchmark skipped" >&2
elif [ "$host_bench" = 1 ]; then
    echo "bench/qemu: host benchmark of the stage2 crate (bench/host.sh)" >&2
    if [ -x bench/host.sh ] || [ -f bench/host.sh ]; then
        set +e
        timeout 900 sh bench/host.sh --reps 5 --quiet-wait 5 >"$out/host-run.log" 2>&1
        hc=$?
        set -e
        if [ "$hc" -eq 0 ]; then
            host_json=$out/host.json
        else
            echo "bench/qemu: host benchmark failed or timed out (exit $hc, see $out/host-run.log): skipped" >&2
            host_failed=1
        fi
    else
        echo "bench/qemu: bench/host.sh not present: host benchmark skipped" >&2
    fi
fi

set +e
"$PY" bench/qemu/report.py "$out/qemu-runs.txt" "$out/qemu-machine.txt" "$out" "$plot" ${host_json:+"$host_json"}
rc=$?
set -e
echo "bench/qemu: done in $((SECONDS - start0)) s (build, $n of $total boots${host_json:+, host benchmark}, report)" >&2
if [ "$rc" -eq 0 ] && [ "$host_failed" = 1 ]; then rc=1; fi
exit "$rc"
