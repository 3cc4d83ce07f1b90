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

# The plot needs matplotlib: find a python3 that has it before spending minutes on boots.
find_python() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import matplotlib' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    return 1
}
if ! PY=$(find_python); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bench/qemu: installing python3-matplotlib for the plot (apt-get, quiet)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
            --no-install-recommends python3-matplotlib >"$out/apt-matplotlib.log" 2>&1 \
            || { echo "bench/qemu: apt-get install python3-matplotlib failed, see $out/apt-matplotlib.log" >&2; exit 127; }
    fi
    PY=$(find_python) || {
        echo "bench/qemu: the plot needs matplotlib (Debian: apt-get install python3-matplotlib, as root)" >&2
        exit 127
    }
fi

echo "bench/qemu/dirtylog: building the release hypervisor" >&2
cargo build --release -p hyp >&2
ELF=${CARGO_TARGET_DIR:-target}/aarch64-unknown-none-softfloat/release/hyp
command -v qemu-system-aarch64 >/dev/null || { echo "bench/qemu: qemu-system-aarch64 missing (apt-get install qemu-system-arm)" >&2; exit 127; }

{
    echo "nproc=$(nproc)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "qemu=$(qemu-system-aarch64 --version | head -n 1)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- hyp guest stage2 || echo '+dirty')"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "reps=$reps"
    echo "run_cmd=SMP=$SMP MEM=$QMEM QEMU_EXTRA=-mem-prealloc ./run-qemu.sh $ELF --timeout $RUN_TIMEOUT OPTIONS"
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
