#!/usr/bin/env bash
# Side-by-side comparison of two hypervisor builds on one workload: interleaved boots (A, B, A,
# B, ...) so both see the same machine, then per build the median [min..max] of the RESULT
# fields that measure the fault path. Use it for before/after figures (docs/performance.md):
# the machine's speed drifts, and only figures taken side by side in one run compare.
#
#   bench/qemu/ab.sh [--reps N] [--vcpus "1 4"] ELF_A ELF_B [HYPERVISOR OPTIONS...]
#
# ELF_A/ELF_B: hypervisor ELFs (e.g. a copy of target/aarch64-unknown-none-softfloat/release/hyp
# built at the "before" commit, and the current one). Default options: mode=parallel
# workload=demand backing=4k mem=16M (bench/qemu/run.sh's demand cell); more options are
# appended. Each boot: SMP=8 MEM=512M QEMU_EXTRA=-mem-prealloc ./run-qemu.sh ELF --timeout 120
# vcpus=V OPTIONS. Prints one table per vCPU count: pages_per_s, fault_ns_median (hypervisor
# time per fault: CNTPCT after the trap's context save to before its restore), null_ns_1 (a
# null HVC round trip), zero_ns (zeroing one page) and cost_ratio (guest-side ns per page over
# null trap + page zero). Exits non-zero if any boot failed. Logs: target/bench-ab/.
set -euo pipefail
cd "$(dirname "$0")/../.."

reps=7
vcpus_list="1 4"
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps=$2; shift 2 ;;
        --vcpus) vcpus_list=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --*) echo "ab.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 2 ] || { usage >&2; exit 2; }
a=$1 b=$2
shift 2
for f in "$a" "$b"; do [ -f "$f" ] || { echo "ab.sh: no such ELF: $f" >&2; exit 2; }; done
case "$reps" in "" | *[!0-9]* | 0) echo "ab.sh: --reps must be a positive integer" >&2; exit 2 ;; esac
opts=(mode=parallel workload=demand backing=4k mem=16M "$@")
logs=target/bench-ab
mkdir -p "$logs"
rows=$logs/rows.txt
: >"$rows"
failed=0
for v in $vcpus_list; do
    for r in $(seq 1 "$reps"); do
        for side in A B; do
            elf=$a
            [ "$side" = A ] || elf=$b
            log=$logs/$side-v$v-r$r.log
            SMP=8 MEM=512M QEMU_EXTRA=-mem-prealloc ./run-qemu.sh "$elf" --timeout 120 \
                "vcpus=$v" "${opts[@]}" </dev/null >"$log" 2>&1 || true
            result=$(grep -a '^RESULT ' "$log" | tail -n 1 | tr -d '\r')
            if [ "${result#RESULT status=pass}" = "$result" ]; then
                echo "boot $side vcpus=$v rep $r failed: ${result:-no RESULT line} (log: $log)" >&2
                failed=$((failed + 1))
                continue
            fi
            echo "$side $v $result" >>"$rows"
            printf '[%s v%s r%s] %s\n' "$side" "$v" "$r" \
                "$(echo "$result" | grep -oE ' (pages_per_s|fault_ns_median)=[0-9]+' | tr -d '\n')" >&2
        done
    done
done
python3 - "$rows" "$vcpus_list" <<'EOF'
import statistics, sys
rows, vcpus = sys.argv[1], sys.argv[2].split()
fields = ["pages_per_s", "fault_ns_median", "null_ns_1", "zero_ns", "cost_ratio"]
data = {}
for line in open(rows):
    side, v, rest = line.split(" ", 2)
    kv = dict(p.split("=", 1) for p in rest.split() if "=" in p)
    for f in fields:
        if f in kv:
            data.setdefault((side, v, f), []).append(float(kv[f]))
def cell(vals):
    if not vals:
        return "n/a"
    m = statistics.median(vals)
    fmt = (lambda x: f"{x:.2f}") if max(vals) < 100 else (lambda x: f"{x:,.0f}")
    return f"{fmt(m)} [{fmt(min(vals))}..{fmt(max(vals))}] n={len(vals)}"
for v in vcpus:
    print(f"\nvcpus={v}: median [min..max] n=boots")
    print(f"| field | A | B | B / A |")
    print("|---|---|---|---|")
    for f in fields:
        va, vb = data.get(("A", v, f), []), data.get(("B", v, f), [])
        ratio = f"{statistics.median(vb) / statistics.median(va):.3f}" if va and vb and statistics.median(va) else "n/a"
        print(f"| {f} | {cell(va)} | {cell(vb)} | {ratio} |")
EOF
[ "$failed" = 0 ] || { echo "ab.sh: $failed boot(s) failed" >&2; exit 1; }
