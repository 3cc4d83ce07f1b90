#!/usr/bin/env bash
# QEMU benchmark of dirty logging and aging (issue 11), shaped like KVM's dirty_log_perf_test.
#
#   bench/qemu/dirtylog.sh [--reps N] [--vcpus "1 2 4 8"] [--no-aging] [--no-dirtylog]
#                          [--quick] [--plot PATH]
#
# workload=dirtylog for dirty=sw|hw x mode=parallel|locked x vCPUs (mem=16M a vCPU, iters=3),
# and workload=aging for mode=parallel|locked x aging=on|off x the vCPU counts below the CPU
# count (the ager takes one more CPU; mem=16M, iters=8), N repetitions each (default 5),
# interleaved so host noise spreads over every cell; release build, every boot with the same QEMU
# settings (-smp 8, -m 1G, -mem-prealloc). --quick: 1 repetition at 1 and 4 vCPUs.
# Writes bench/out/dirtylog-runs.txt (one line per boot: its parameters and RESULT fields),
# bench/out/dirtylog.json (medians, min, max), bench/out/dirtylog-report.md (the tables and the
# goal checks) and the plot (docs/dirtylog.svg, or --plot PATH; .svg or .png), and prints the
# tables. The plot needs matplotlib (Debian: python3-matplotlib, installed with apt-get when run
# as root). Exit status: 0 when every boot passed; 1 when some failed (listed, left out of the
# medians); 2 on a bad argument.
set -euo pipefail
cd "$(dirname "$0")/../.."

reps=5
vcpus_list="1 2 4 8"
do_dirtylog=1
do_aging=1
plot=docs/dirtylog.svg
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps=$2; shift ;;
        --vcpus) vcpus_list=$2; shift ;;
        --no-aging) do_aging=0 ;;
        --no-dirtylog) do_dirtylog=0 ;;
        --plot) plot=$2; shift ;;
        --quick) reps=1; vcpus_list="1 4"; plot=bench/out/dirtylog-quick.svg ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/qemu/dirtylog.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if ! [ "$reps" -ge 1 ] 2>/dev/null; then echo "bench/qemu/dirtylog.sh: --reps must be >= 1" >&2; exit 2; fi

SMP=8
QMEM=1G
RUN_TIMEOUT=300
export SMP MEM=$QMEM QEMU_EXTRA="-mem-prealloc"
out=bench/out
logs=$out/dirtylog-logs
mkdir -p "$logs"

# shellcheck source=bench/qemu/common.sh
. bench/qemu/common.sh
# The plot needs matplotlib: find it before spending minutes on boots.
need_plot_python
build_release bench/qemu/dirtylog

{
    machine_lines
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "reps=$reps"
} >"$out/dirtylog-machine.txt"

# The boots of one repetition, as "kind options..." lines.
cells() {
    local v mode dirty aging
    for v in $vcpus_list; do
        for mode in parallel locked; do
            if [ $do_dirtylog = 1 ]; then
                for dirty in sw hw; do
                    echo "dirtylog vcpus=$v mode=$mode workload=dirtylog dirty=$dirty mem=16M iters=3"
                done
            fi
            if [ $do_aging = 1 ] && [ "$v" -lt $SMP ]; then
                for aging in on off; do
                    echo "aging vcpus=$v mode=$mode workload=aging aging=$aging mem=16M iters=8"
                done
            fi
        done
    done
}
total=$(( $(cells | wc -l) * reps ))
runs=$out/dirtylog-runs.txt
: >"$runs"
n=0
start=$SECONDS
for rep in $(seq 1 "$reps"); do
    while read -r kind opts; do
        n=$((n + 1))
        log="$logs/$(echo "$opts" | tr ' =' '_-')-r$rep.log"
        t0=$SECONDS
        set +e
        # shellcheck disable=SC2086
        ./run-qemu.sh "$ELF" --timeout "$RUN_TIMEOUT" $opts timeout=$((RUN_TIMEOUT - 20)) </dev/null >"$log" 2>&1
        code=$?
        set -e
        result=$(grep -a '^RESULT ' "$log" | tail -n 1 | sed 's/^RESULT //' | tr -d '\r')
        echo "kind=$kind rep=$rep exit=$code secs=$((SECONDS - t0)) log=$log $result" >>"$runs"
        printf 'bench/qemu/dirtylog: %d/%d %s rep %d: exit %d, %ds (%ds so far)\n' \
            "$n" "$total" "$opts" "$rep" "$code" $((SECONDS - t0)) $((SECONDS - start)) >&2
    done < <(cells)
done
echo "matrix_secs=$((SECONDS - start))" >>"$out/dirtylog-machine.txt"
"$PY" bench/qemu/dirtylog.py "$runs" "$out/dirtylog-machine.txt" "$out" "$plot"
