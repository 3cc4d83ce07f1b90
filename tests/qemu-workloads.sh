#!/usr/bin/env bash
# QEMU smoke tests of the guest workloads (issues 6, 11): every workload (demand, overlap, random,
# pagetable) with both backings (4k, 2m) in both modes at small sizes, 4 vCPUs.
#
# Each run must pass (exit 0, status=pass, checksum=ok, leaked=0) and produce the counts its
# workload exists to produce; parallel and locked runs of the same workload must leave the same
# data (data_sum); random must leave what demand leaves. pagetable must report bbm, splits (2m),
# prunes, collapses, deferred frees (tables_retired) and relaxes > 0. dirtylog (both modes,
# iters=2, dirty=sw and dirty=hw, with and without evil=on) must harvest exactly the pages written
# in each pass and lose none; dirty=hw must take no write fault. aging (both modes, and without
# the concurrent ager) must find young every page the guests touched in each pass. A corrupted overlap
# run, dirtylog runs whose harvest does not re-protect (selftest=noprotect, sw and hw), an aging run
# without its invalidations (selftest=noflush) and bad options must fail. Every QEMU run has a hard timeout.
#
# Prints `PASS name` or `FAIL name: why` per case, ends with `qemu-workloads: N passed, M failed`
# and exits non-zero if any case failed. Logs go to $LOG_DIR/qemu-wl-*.log.
set -u
cd "$(dirname "$0")/.."

SUITE=qemu-workloads
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
VCPUS=4
. tests/lib.sh
require_tools qemu-system-aarch64:qemu-system-arm
build_hyp

# run NAME OPTIONS...: boot with a hard timeout; sets $out (the log file) and $code.
run() {
    local name=$1; shift
    qemu_boot "$LOG_DIR/qemu-wl-$name.log" "$@"
}

# positive KEY...: fails the current case unless every KEY is a number > 0; echoes the first
# offender.
positive() {
    local k v
    for k in "$@"; do
        v=$(field "$k")
        if [ -z "$v" ] || ! [ "$v" -gt 0 ] 2>/dev/null; then
            echo "$k=$v"
            return 1
        fi
    done
}

mem_for() { case "$1" in demand|random) echo 2M ;; *) echo 4M ;; esac; }

for workload in demand random overlap pagetable; do
    for backing in 4k 2m; do
        for mode in parallel locked; do
            name="$workload-$backing-$mode"
            run "$name" vcpus=$VCPUS mode=$mode workload=$workload backing=$backing mem="$(mem_for $workload)"
            if [ "$code" -ne 0 ]; then
                fail "$name" "exit status $code, $(grep -a '^FAIL' "$out" | head -n 1)"
                continue
            fi
            if [ "$(field status)" != pass ] || [ "$(field checksum)" != ok ] || [ "$(field leaked)" != 0 ]; then
                fail "$name" "RESULT status=$(field status) checksum=$(field checksum) leaked=$(field leaked)"
                continue
            fi
            if [ "$(field workload)" != "$workload" ] || [ "$(field backing)" != "$backing" ] \
                || [ "$(field mode)" != "$mode" ] || [ "$(field vcpus)" != "$VCPUS" ]; then
                fail "$name" "RESULT is for workload=$(field workload) backing=$(field backing) mode=$(field mode) vcpus=$(field vcpus)"
                continue
            fi
            why=""
            # Timing and calibration must be there.
            why=$(positive pages faults pages_per_s wall_ns null_ns_1 null_ns_all zero_ns) || true
            case "$workload-$backing" in
                pagetable-2m) [ -z "$why" ] && { why=$(positive bbm splits prunes collapses tables_retired relaxes write_protected) || true; } ;;&
                pagetable-4k) [ -z "$why" ] && { why=$(positive prunes collapses tables_retired relaxes write_protected) || true; } ;;&
                pagetable-*)
                    # The update phase's dirty log: the even vCPUs wrote every page of the
                    # region (mem=4M: 1024 pages), so the get-and-clear must report each one.
                    if [ -z "$why" ] && { [ "$(field lost_dirty)" != 0 ] || [ "$(field dirty_harvested)" != 1024 ]; }; then
                        why="lost_dirty=$(field lost_dirty) dirty_harvested=$(field dirty_harvested) (expected 0 and 1024)"
                    fi ;;
                *)
                    # Demand faulting only turns invalid entries valid: no TLBI but teardown's.
                    if [ -z "$why" ] && { [ "$(field tlbi_ipa)" != 0 ] || [ "$(field tlbi_range)" != 0 ] || [ "$(field bbm)" != 0 ]; }; then
                        why="tlbi_ipa=$(field tlbi_ipa) tlbi_range=$(field tlbi_range) bbm=$(field bbm) (expected 0)"
                    fi ;;
            esac
            # Faults that installed something (not the retries of vCPUs waiting while another
            # zeroes a chunk, not spurious ones: their number depends on timing, not the
            # permission relaxes of dirty logging) must be far fewer than the pages: one block
            # maps 512 of them.
            if [ "$backing" = 2m ] && [ "$workload" != pagetable ] && [ -z "$why" ] \
                && [ $(( $(field faults) - $(field retries) - $(field spurious) - $(field relaxed) )) -ge "$(field pages)" ]; then
                why="faults=$(field faults) - retries=$(field retries) - spurious=$(field spurious) - relaxed=$(field relaxed) >= pages=$(field pages): 2 MiB blocks did not map whole chunks"
            fi
            if [ -n "$why" ]; then
                fail "$name" "$why"
            else
                pass "$name ($(grep -a '^RESULT ' "$out" | tail -n 1 | grep -oE ' (faults|pages_per_s|fault_ns_median|bbm|splits|prunes|relaxes|tables_retired)=[0-9]+' | tr -d '\n'))"
            fi
        done
        # Same workload, same size: the same data whatever the mode.
        a=$(field data_sum "$LOG_DIR/qemu-wl-$workload-$backing-parallel.log")
        b=$(field data_sum "$LOG_DIR/qemu-wl-$workload-$backing-locked.log")
        if [ -n "$a" ] && [ "$a" = "$b" ]; then
            pass "same-data-$workload-$backing ($a)"
        else
            fail "same-data-$workload-$backing" "data_sum parallel=$a locked=$b"
        fi
    done
done

# random writes what demand writes, in another order.
a=$(field data_sum "$LOG_DIR/qemu-wl-demand-4k-parallel.log")
b=$(field data_sum "$LOG_DIR/qemu-wl-random-4k-parallel.log")
if [ -n "$a" ] && [ "$a" = "$b" ]; then
    pass "random-equals-demand"
else
    fail "random-equals-demand" "data_sum demand=$a random=$b"
fi

# The shared-region check can fail: one flipped bit in an overlap run.
run overlap-corrupt vcpus=$VCPUS workload=overlap mem=4M selftest=corrupt
if [ "$code" -ne 0 ] && [ "$(field status)" = fail ] && [ "$(field checksum)" = bad ] \
    && grep -aq '^FAIL: vcpu [0-9]* checksum mismatch' "$out"; then
    pass overlap-corrupt
else
    fail overlap-corrupt "exit $code, status=$(field status) checksum=$(field checksum)"
fi

# dirtylog (KVM's dirty_log_perf_test) in both modes, iters=2, mem=1M (256 pages a vCPU): every
# pass must harvest exactly the pages the vCPUs wrote (written_i = dirtied_i = 4 x 256), lose
# none, and issue at least one invalidation per get-and-clear. evil=on: vCPU 0 also harvests
# every 64 of its pages while the others write (racing_i = 256 / 64 = 4), and the final harvest
# plus the racing ones must still cover every written page. dirty=sw logs through write faults
# (write_faults > 0); dirty=hw through the hardware's DBM updates, so it must take none.
for dl in parallel locked parallel-evil locked-evil parallel-hw locked-hw parallel-hw-evil locked-hw-evil; do
    name="dirtylog-$dl"
    mode=${dl%%-*}
    evil=off
    case "$dl" in *-evil) evil=on ;; esac
    dirty=sw
    case "$dl" in *-hw*) dirty=hw ;; esac
    run "$name" vcpus=$VCPUS mode=$mode workload=dirtylog mem=1M iters=2 evil="$evil" dirty="$dirty"
    if [ "$code" -ne 0 ] || [ "$(field status)" != pass ] || [ "$(field checksum)" != ok ] \
        || [ "$(field leaked)" != 0 ] || [ "$(field workload)" != dirtylog ] || [ "$(field mode)" != "$mode" ]; then
        fail "$name" "exit $code, status=$(field status) checksum=$(field checksum) leaked=$(field leaked) $(grep -a '^FAIL' "$out" | head -n 1)"
        continue
    fi
    why=""
    [ "$(field iters)" = 2 ] && [ "$(field lost_dirty)" = 0 ] && [ "$(field dirty)" = $dirty ] \
        || why="iters=$(field iters) lost_dirty=$(field lost_dirty) dirty=$(field dirty)"
    if [ -z "$why" ] && [ $dirty = hw ] && [ "$(field write_faults)" != 0 ]; then
        why="dirty=hw: write_faults=$(field write_faults) (expected 0)"
    fi
    [ -z "$why" ] && [ $dirty = sw ] && { why=$(positive write_faults) || true; }
    for i in 1 2; do
        [ -n "$why" ] && break
        if [ "$(field written_$i)" != $((VCPUS * 256)) ] || [ "$(field dirtied_$i)" != $((VCPUS * 256)) ]; then
            why="pass $i: written=$(field written_$i) dirtied=$(field dirtied_$i) (expected $((VCPUS * 256)))"
        fi
        # The last racing harvest can take every mark, leaving the final one nothing to protect.
        if [ "$evil" = on ]; then
            [ -z "$why" ] && [ "$(field racing_$i)" != 4 ] && why="pass $i: racing=$(field racing_$i) (expected 4)"
            [ -z "$why" ] && { why=$(positive dirty_pass_ns_$i get_clear_ns_$i racing_dirtied_$i) || true; }
        else
            [ -z "$why" ] && { why=$(positive dirty_pass_ns_$i get_clear_ns_$i tlbi_$i) || true; }
        fi
    done
    if [ -n "$why" ]; then
        fail "$name" "$why"
    else
        pass "$name (dirty_pass_ns_2=$(field dirty_pass_ns_2) get_clear_ns_2=$(field get_clear_ns_2) tlbi_2=$(field tlbi_2) write_faults=$(field write_faults) racing_dirtied_2=$(field racing_dirtied_2))"
    fi
done
a=$(field data_sum "$LOG_DIR/qemu-wl-dirtylog-parallel.log")
for dl in locked parallel-evil locked-evil parallel-hw locked-hw parallel-hw-evil locked-hw-evil; do
    b=$(field data_sum "$LOG_DIR/qemu-wl-dirtylog-$dl.log")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then
        pass "same-data-dirtylog-$dl ($a)"
    else
        fail "same-data-dirtylog-$dl" "data_sum parallel=$a $dl=$b"
    fi
done

# The lost-dirty check can fail: a harvest that does not write-protect again loses pass 2.
run dirtylog-noprotect vcpus=$VCPUS workload=dirtylog mem=1M iters=2 selftest=noprotect
if [ "$code" -ne 0 ] && [ "$(field status)" = fail ] && [ "$(field lost_dirty)" = $((VCPUS * 256)) ] \
    && grep -aq '^FAIL: dirty log: .* not reported dirty' "$out"; then
    pass "dirtylog-noprotect (lost_dirty=$(field lost_dirty))"
else
    fail dirtylog-noprotect "exit $code, status=$(field status) lost_dirty=$(field lost_dirty)"
fi

# The same check fails with dirty=hw: a harvest that leaves the pages writable without DBM (the
# hardware then records nothing) and later only reads the bitmap loses pass 2.
run dirtylog-hw-noprotect vcpus=$VCPUS workload=dirtylog mem=1M iters=2 dirty=hw selftest=noprotect
if [ "$code" -ne 0 ] && [ "$(field status)" = fail ] && [ "$(field lost_dirty)" = $((VCPUS * 256)) ] \
    && [ "$(field write_faults)" = 0 ] && grep -aq '^FAIL: dirty log: .* not reported dirty' "$out"; then
    pass "dirtylog-hw-noprotect (lost_dirty=$(field lost_dirty))"
else
    fail dirtylog-hw-noprotect "exit $code, status=$(field status) lost_dirty=$(field lost_dirty) write_faults=$(field write_faults)"
fi

# aging (VTCR_EL2.HA): 3 vCPUs and the ager on the 4th CPU, mem=1M (256 pages a vCPU), iters=4.
# Pass k faults in 64 new pages a vCPU and reads half of the 64 x (k - 1) before them, so the
# guests touch 3 x (64 + 32 (k - 1)) pages; every one must be found young (lost_young=0), and
# the distinct young pages must cover them. aging=on must have run aging passes concurrently
# (agings > 0), aging=off none. Every mode leaves the data demand leaves.
for ag in parallel locked parallel-off; do
    name="aging-$ag"
    mode=${ag%%-*}
    aging=on
    [ "$ag" = parallel-off ] && aging=off
    run "$name" vcpus=3 mode="$mode" workload=aging mem=1M iters=4 aging="$aging"
    if [ "$code" -ne 0 ] || [ "$(field status)" != pass ] || [ "$(field checksum)" != ok ] \
        || [ "$(field leaked)" != 0 ] || [ "$(field workload)" != aging ] || [ "$(field mode)" != "$mode" ]; then
        fail "$name" "exit $code, status=$(field status) checksum=$(field checksum) leaked=$(field leaked) $(grep -a '^FAIL' "$out" | head -n 1)"
        continue
    fi
    why=""
    [ "$(field iters)" = 4 ] && [ "$(field lost_young)" = 0 ] && [ "$(field aging)" = $aging ] \
        || why="iters=$(field iters) lost_young=$(field lost_young) aging=$(field aging)"
    for k in 1 2 3 4; do
        [ -n "$why" ] && break
        want=$((3 * (64 + 32 * (k - 1))))
        if [ "$(field touched_$k)" != $want ] || [ "$(field faulted_$k)" != 192 ] \
            || ! [ "$(field young_$k)" -ge $want ] 2>/dev/null; then
            why="pass $k: touched=$(field touched_$k) faulted=$(field faulted_$k) young=$(field young_$k) (expected $want, 192, >= $want)"
        fi
    done
    if [ -z "$why" ]; then
        if [ $aging = on ]; then
            why=$(positive agings age_ns_mean) || true
        elif [ "$(field agings)" != 0 ]; then
            why="aging=off: agings=$(field agings) (expected 0)"
        fi
    fi
    if [ -n "$why" ]; then
        fail "$name" "$why"
    else
        pass "$name (agings=$(field agings) age_ns_mean=$(field age_ns_mean) fault_ns_p99=$(field fault_ns_p99))"
    fi
done
a=$(field data_sum "$LOG_DIR/qemu-wl-aging-parallel.log")
for ag in locked parallel-off; do
    b=$(field data_sum "$LOG_DIR/qemu-wl-aging-$ag.log")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then
        pass "same-data-aging-$ag ($a)"
    else
        fail "same-data-aging-$ag" "data_sum parallel=$a $ag=$b"
    fi
done

# The lost-young check can fail: aging passes without their invalidation leave the vCPUs' TLB
# entries with AF = 1, so re-reads set no access flag and are not found young.
run aging-noflush vcpus=3 workload=aging mem=1M iters=4 selftest=noflush
if [ "$code" -ne 0 ] && [ "$(field status)" = fail ] && [ "$(field lost_young)" -gt 0 ] 2>/dev/null \
    && grep -aq '^FAIL: aging: .* not found young' "$out"; then
    pass "aging-noflush (lost_young=$(field lost_young))"
else
    fail aging-noflush "exit $code, status=$(field status) lost_young=$(field lost_young)"
fi

# Bad options fail cleanly.
bad_option() {
    local name=$1 expect=$2; shift 2
    run "$name" "$@"
    if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && grep -aq "^error: .*$expect" "$out"; then
        pass "$name"
    else
        fail "$name" "exit $code, $(grep -a '^error' "$out" | head -n 1)"
    fi
}
bad_option bad-backing "backing=3m" backing=3m
bad_option bad-chunk-mem "multiple of 2M" workload=pagetable mem=1M
bad_option bad-workload "workload=nosuch" workload=nosuch
bad_option iters-other-workload "iters= applies to workload=dirtylog" workload=demand iters=2
bad_option bad-iters "iters=0" workload=dirtylog iters=0
bad_option evil-other-workload "evil= applies to workload=dirtylog only" workload=pagetable evil=on
bad_option dirty-other-workload "dirty= applies to workload=dirtylog only" workload=demand dirty=hw
bad_option bad-dirty "dirty=dma" workload=dirtylog dirty=dma
# A CPU without hardware dirty state (Cortex-A72: ID_AA64MMFR1_EL1.HAFDBS = 0) refuses dirty=hw.
bad_option aging-other-workload "aging= applies to workload=aging only" workload=dirtylog aging=off
bad_option noflush-other-workload "selftest=noflush needs workload=aging" workload=demand selftest=noflush
bad_option aging-no-spare-cpu "workload=aging needs a CPU for the ager" workload=aging vcpus=4
bad_option aging-2m "drop backing=2m" workload=aging vcpus=2 backing=2m
CPU=cortex-a72 bad_option aging-no-hafdbs "workload=aging needs the hardware Access flag.*HAFDBS=0" vcpus=1 workload=aging
CPU=cortex-a72 bad_option dirty-hw-no-hafdbs "dirty=hw needs hardware dirty state.*HAFDBS=0" vcpus=2 workload=dirtylog dirty=hw

finish
