#!/usr/bin/env bash
# Boots the current Debian arm64 Linux kernel with a busybox initramfs on the hypervisor and checks
# that it ran: SMP, its RAM demand-paged through the stage-2 fault path, nothing lost.
#
#   tests/guests/linux.sh [--vcpus N] [--mode parallel|locked] [--chaos] [--migrate] [--backing 4k|2m]
#                         [--release] [--timeout S] [--kernel IMAGE] [--initrd FILE]
#                         [--ram SIZE] [--files F] [--rounds R] [--backports] [--refresh] [--cache DIR]
#                         [--fetch-only] [--bare] [--repeat K] [--suite] [-- HYPERVISOR OPTIONS...]
#
# Fetch (skipped when --kernel and --initrd are both given): the kernel package that Debian's
# linux-image-arm64 currently depends on (its -unsigned variant: the same Image without the EFI
# signature) and busybox-static, both arm64, with a private apt configuration (tests/guests/
# debian.sh) into the cache directory: --cache, else $S2PAR_GUEST_CACHE, else
# $XDG_CACHE_HOME/s2par/guests when XDG_CACHE_HOME is set, else target/guests. What is there is
# reused without touching the network; --refresh resolves and downloads again. --backports takes
# bookworm-backports' newer kernel instead. Kernels are never committed: the cache is outside git.
#
# Initramfs (always rebuilt, about a second): busybox, tests/guests/initramfs/init and
# s2par-toucher, and /s2par/expected (the SHA-256 of each CPU's pattern, computed here on the
# host), as cpio newc + gzip. The guest prints `S2PAR-GUEST: init ...`, checks nproc, runs the
# toucher pinned on every CPU (F files of 1 MiB x R rounds each), prints `S2PAR-GUEST: PASS ...` or
# `S2PAR-GUEST: FAIL why`, and powers off (PSCI SYSTEM_OFF).
#
# Boot: ./run-qemu.sh HYP --timeout S --cpu max,pauth-impdef=on --kernel Image --initrd initramfs
# --cmdline "console=ttyAMA0 ... s2par_cpus=N" vcpus=N ram=SIZE mode=M [backing=2m] [chaos=on]
# [HYPERVISOR OPTIONS] with SMP = N, plus one CPU for the chaos pruner (pauth-impdef: QARMA5
# pointer authentication under TCG makes a boot about 3x slower). A run passes when: run-qemu.sh
# exits 0, the init marker is printed, the verdict is PASS with cpus=N, the RESULT line says
# status=pass and leaked=0, and its faults_vcpu= has N entries, each > 0 (every vCPU took
# stage-2 faults).
#
# --bare: boot the same kernel and initramfs directly on QEMU at EL1, without the hypervisor
# (same -cpu, -smp N, -m of --ram, default 512M like the hypervisor's ram=): the baseline for
# boot times, and a check of the initramfs on its own; such a run passes on exit 0, the init
# marker and the PASS verdict.
#
# --repeat K: boot K times and print the medians of the guest's time to the init marker (its
# uptime, the same virtual counter on the hypervisor and on bare QEMU) and of the wall time of
# the whole run (QEMU start to exit): how docs/guests.md compares the two.
#
# --migrate: migrate=on (hyp/src/builtin/migrate.rs): a spare CPU live-migrates the guest's RAM
# into a buffer while the toucher writes (rounds of pre-copy passes, stop-and-copy, the copy
# compared with the guest's memory at the stop) until the guest powers off; one more CPU, and
# ram=256M unless --ram is given (the copy needs as much host memory again). Passes also need
# RESULT migrate_rounds >= 1 and migrate_diff=0.
#
# --suite: vCPUs 1, 2, 4 in both modes, then 4 vCPUs with backing=2m and 4 vCPUs with chaos=on
# (release build), migrate=on at 4 vCPUs in parallel mode and at 2 vCPUs in locked mode, and
# migrate-skip: selftest=migrate-skip (each pass leaves out one changed page) must fail the run
# with the comparison's reason while the guest itself passes; and selftest-corrupt: a guest told to damage one of its files
# (s2par_selftest=corrupt) must print the FAIL verdict that names it, and chaos-nocopy: chaos=on
# with the hypervisor's page migration broken (selftest=nocopy zeroes the new page instead of
# copying) must fail: no PASS verdict and a non-zero exit status; gicr-no-lpis: the guest must see
# no LPIs (GICR_TYPER.PLPIS = 0, GICR_PROPBASER RAZ/WI), and gicr-no-lpis-bare: the same probe on
# bare QEMU must see them (PLPIS = 1, the write sticks), which proves the probe reads the GIC.
#
# Prints `PASS name (...)` or `FAIL name: why` per run and ends with `guests-linux: N passed,
# M failed`; exits non-zero if any run failed. Logs: $LOG_DIR/guests-linux-*.log.
set -u
cd "$(dirname "$0")/../.." || exit 2

SUITE=guests-linux
RUN_TIMEOUT=120
vcpus=1
mode=parallel
chaos=0
migrate=0
backing=""
release=0
kernel=""
initrd=""
files=4
ram=512M # guest RAM (the hypervisor's ram=, bare QEMU's -m)
ram_given=0
MIGRATE_RAM=256M # guest RAM under --migrate: the copy takes as much host memory again
rounds=2
refresh=0
fetch_only=0
suite=0
bare=0
repeat=1
cache=""
hyp_opts=()

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die() { echo "linux.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --vcpus) [ $# -ge 2 ] || die "--vcpus needs a number"; vcpus=$2; shift ;;
        --mode) [ $# -ge 2 ] || die "--mode needs parallel or locked"; mode=$2; shift ;;
        --chaos) chaos=1 ;;
        --migrate) migrate=1 ;;
        --backing) [ $# -ge 2 ] || die "--backing needs 4k or 2m"; backing=$2; shift ;;
        --release) release=1 ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; RUN_TIMEOUT=$2; shift ;;
        --kernel) [ $# -ge 2 ] || die "--kernel needs a file"; kernel=$2; shift ;;
        --initrd) [ $# -ge 2 ] || die "--initrd needs a file"; initrd=$2; shift ;;
        --ram) [ $# -ge 2 ] || die "--ram needs a size, e.g. 512M"; ram=$2; ram_given=1; shift ;;
        --files) [ $# -ge 2 ] || die "--files needs a number"; files=$2; shift ;;
        --rounds) [ $# -ge 2 ] || die "--rounds needs a number"; rounds=$2; shift ;;
        --cache) [ $# -ge 2 ] || die "--cache needs a directory"; cache=$2; shift ;;
        --backports) export DEBIAN_BACKPORTS=1 ;;
        --refresh) refresh=1 ;;
        --fetch-only) fetch_only=1 ;;
        --bare) bare=1 ;;
        --repeat) [ $# -ge 2 ] || die "--repeat needs a count"; repeat=$2; shift ;;
        --suite) suite=1; release=1 ;;
        --help | -h) usage; exit 0 ;;
        --) shift; hyp_opts=("$@"); break ;;
        *) die "unknown option '$1' (--help lists them)" ;;
    esac
    shift
done
case "$vcpus" in '' | *[!0-9]* | 0) die "--vcpus '$vcpus': a number from 1" ;; esac
case "$mode" in parallel | locked) ;; *) die "--mode '$mode': parallel or locked" ;; esac
case "$backing" in '' | 4k | 2m) ;; *) die "--backing '$backing': 4k or 2m" ;; esac
case "$RUN_TIMEOUT$files$rounds$repeat" in *[!0-9]*) die "--timeout, --files, --rounds and --repeat take whole numbers" ;; esac
[ "$repeat" -ge 1 ] && [ "$files" -ge 1 ] && [ "$rounds" -ge 1 ] || die "--repeat, --files and --rounds: at least 1"

# A path the user gave is relative to where they stood, $OLDPWD since the cd above.
. tests/guests/paths.sh
[ -z "$kernel" ] || kernel=$(abs "$kernel")
[ -z "$initrd" ] || initrd=$(abs "$initrd")
for f in "$kernel" "$initrd"; do
    [ -z "$f" ] || [ -f "$f" ] || die "no such file: $f"
done

guest_cache_dir "$cache"
mkdir -p "$GUEST_CACHE" || die "cannot create the cache directory $GUEST_CACHE"

. tests/lib.sh
. tests/guests/debian.sh
require_tools cpio:cpio gzip:gzip dpkg-deb:dpkg apt-get:apt sha256sum:coreutils \
    qemu-system-aarch64:qemu-system-arm

# PATTERN_BYTES: the size of one toucher file; the guest reads it from /s2par/config.
PATTERN_BYTES=1048576
MAX_CPUS=64 # /s2par/expected covers CPUs 0..MAX_CPUS-1

# fetch_kernel: sets KERNEL_IMAGE (the cached Image) and KERNEL_PACKAGE ("name version").
fetch_kernel() {
    local dir=$GUEST_CACHE/linux pkg ver img
    [ "$DEBIAN_BACKPORTS" = 0 ] || dir=$GUEST_CACHE/linux-backports
    if [ "$refresh" = 0 ] && [ -s "$dir/Image" ] && [ -s "$dir/package" ]; then
        KERNEL_IMAGE=$dir/Image
        KERNEL_PACKAGE=$(cat "$dir/package")
        return
    fi
    [ -n "${APT_CONFIG:-}" ] || debian_apt_init
    pkg=$(debian_resolve_kernel)
    if [ -z "$pkg" ]; then
        fail fetch "linux-image-arm64:arm64 names no linux-image-<abi>-arm64 package (apt-cache show linux-image-arm64:arm64)"
        finish
    fi
    pkg=$pkg-unsigned
    debian_fetch "$pkg" "$GUEST_CACHE/unpack/kernel" ./boot
    img=$(ls "$GUEST_CACHE"/unpack/kernel/boot/vmlinuz-* 2>/dev/null | head -n 1)
    if [ -z "$img" ]; then
        fail fetch "$pkg has no boot/vmlinuz-*"
        finish
    fi
    # An arm64 Image has the magic "ARM\x64" at offset 56 (Documentation/arch/arm64/booting.rst).
    if [ "$(od -An -tx1 -j56 -N4 "$img" | tr -d ' \n')" != 41524d64 ]; then
        fail fetch "$img is not an uncompressed arm64 Image (no ARM\\x64 magic at offset 56)"
        finish
    fi
    ver=$(dpkg-deb -f "$GUEST_CACHE"/apt/debs/"${pkg}"_*_arm64.deb Version 2>/dev/null | head -n 1)
    mkdir -p "$dir"
    cp "$img" "$dir/Image"
    echo "$pkg $ver" >"$dir/package"
    rm -rf "$GUEST_CACHE/unpack/kernel" "$GUEST_CACHE"/apt/debs/"${pkg}"_*.deb
    KERNEL_IMAGE=$dir/Image
    KERNEL_PACKAGE="$pkg $ver"
}

# fetch_busybox: sets BUSYBOX (the cached static arm64 busybox binary).
fetch_busybox() {
    local dir=$GUEST_CACHE/busybox ver
    if [ "$refresh" = 0 ] && [ -x "$dir/busybox" ] && [ -s "$dir/package" ]; then
        BUSYBOX=$dir/busybox
        return
    fi
    [ -n "${APT_CONFIG:-}" ] || debian_apt_init
    debian_fetch busybox-static "$GUEST_CACHE/unpack/busybox" ./bin
    if [ ! -f "$GUEST_CACHE/unpack/busybox/bin/busybox" ]; then
        fail fetch "busybox-static has no bin/busybox"
        finish
    fi
    ver=$(dpkg-deb -f "$GUEST_CACHE"/apt/debs/busybox-static_*_arm64.deb Version 2>/dev/null | head -n 1)
    mkdir -p "$dir"
    cp "$GUEST_CACHE/unpack/busybox/bin/busybox" "$dir/busybox"
    chmod 755 "$dir/busybox"
    echo "busybox-static $ver" >"$dir/package"
    rm -rf "$GUEST_CACHE/unpack/busybox" "$GUEST_CACHE"/apt/debs/busybox-static_*.deb
    BUSYBOX=$dir/busybox
}

# build_initramfs: sets INITRD (cpio newc + gzip) from $BUSYBOX and tests/guests/initramfs/.
build_initramfs() {
    local root=$GUEST_CACHE/initramfs c
    rm -rf "$root"
    mkdir -p "$root/bin" "$root/s2par"
    cp "$BUSYBOX" "$root/bin/busybox"
    cp tests/guests/initramfs/init "$root/init"
    cp tests/guests/initramfs/s2par-toucher "$root/bin/s2par-toucher"
    chmod 755 "$root/init" "$root/bin/busybox" "$root/bin/s2par-toucher"
    echo "PATTERN_BYTES=$PATTERN_BYTES" >"$root/s2par/config"
    # The guest makes CPU c's pattern with busybox's yes and head; GNU's give the same bytes.
    for c in $(seq 0 $((MAX_CPUS - 1))); do
        echo "$c $(yes "s2par-guest cpu $c pattern" | head -c "$PATTERN_BYTES" | sha256sum | cut -d' ' -f1)"
    done >"$root/s2par/expected"
    INITRD=$GUEST_CACHE/initramfs.cpio.gz
    if ! (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9n) >"$INITRD.tmp"; then
        fail initramfs "cpio/gzip of $root failed"
        finish
    fi
    mv "$INITRD.tmp" "$INITRD"
}

# run_guest NAME VCPUS MODE SPARE BACKING [GUEST ARGS]: one boot (on the hypervisor, or on bare
# QEMU with --bare); SPARE is 0, 1 (chaos=on) or m (migrate=on); sets out (the log), code (exit
# status), secs, verdict, initline and faults (the RESULT line's faults_vcpu: stage-2 faults of
# vCPU 0, 1, ... comma-separated).
run_guest() {
    local name=$1 n=$2 m=$3 ch=$4 bk=$5 extra=${6:-} ram=$ram
    local spare=0
    if [ "$ch" = m ]; then
        spare=1
        ch=0
        [ "$ram_given" = 1 ] || ram=$MIGRATE_RAM
    fi
    # Under chaos=on the toucher runs three times as many rounds: its re-reads then span more of the
    # pruner's collapse/split/unmap/migrate passes over the pages it wrote.
    local r=$rounds
    [ "$ch" = 0 ] || r=$((rounds * 3))
    local cmdline="console=ttyAMA0 panic=-1 s2par_cpus=$n s2par_files=$files s2par_rounds=$r${extra:+ $extra}"
    local opts=("vcpus=$n" "ram=$ram" "mode=$m")
    [ -z "$bk" ] || opts+=("backing=$bk")
    [ "$ch" = 0 ] || opts+=(chaos=on)
    [ "$spare" = 0 ] || opts+=(migrate=on)
    spare=$((spare + ch))
    opts+=(${hyp_opts[@]+"${hyp_opts[@]}"})
    local start
    start=$(date +%s%N)
    out=$LOG_DIR/guests-linux-$name.log
    if [ "$bare" = 1 ]; then
        timeout --foreground -k 5 "$RUN_TIMEOUT" qemu-system-aarch64 -M virt,gic-version=3 \
            -cpu max,pauth-impdef=on -smp "$n" -m "$ram" -nographic -no-reboot \
            -kernel "$kernel" -initrd "$initrd" -append "$cmdline" </dev/null >"$out" 2>&1
    else
        # One vCPU per CPU; the chaos pruner runs on a CPU of its own, outside the guest's.
        SMP=$((n + spare)) ./run-qemu.sh "$ELF" --timeout "$RUN_TIMEOUT" --cpu max,pauth-impdef=on \
            --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline" "${opts[@]}" </dev/null >"$out" 2>&1
    fi
    code=$?
    secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    verdict=$(grep -aoE 'S2PAR-GUEST: (PASS|FAIL).*' "$out" | tail -n 1 | tr -d '\r')
    initline=$(grep -aoE 'S2PAR-GUEST: init.*' "$out" | head -n 1 | tr -d '\r')
    faults=$(field faults_vcpu)
}

# boot NAME VCPUS MODE CHAOS BACKING: one boot and its checks (pass/fail).
boot() {
    local name=$1 n=$2 missing="" c=0 f
    run_guest "$@"
    for f in $(echo "$faults" | tr ',' ' '); do
        [ "$f" -gt 0 ] 2>/dev/null || missing="$missing $c"
        c=$((c + 1))
    done
    [ "$c" = "$n" ] || missing="$missing (faults_vcpu has $c entries, expected $n)"
    if [ "$code" -ne 0 ]; then
        fail "$name" "exit status $code after ${secs}s${verdict:+, guest said '$verdict'}, $(grep -aE '^(FAIL|error)' "$out" | head -n 1) (log: $out)"
    elif [ -z "$initline" ]; then
        fail "$name" "no init marker 'S2PAR-GUEST: init' (log: $out)"
    elif [ "${verdict#S2PAR-GUEST: PASS cpus="$n" }" = "$verdict" ]; then
        fail "$name" "guest verdict '${verdict:-none}', expected 'S2PAR-GUEST: PASS cpus=$n ...' (log: $out)"
    elif [ "$bare" = 1 ]; then
        pass "$name (${secs}s, bare QEMU, ${initline#S2PAR-GUEST: }, ${verdict#S2PAR-GUEST: PASS })"
    elif [ "$(field status)" != pass ] || [ "$(field leaked)" != 0 ]; then
        fail "$name" "RESULT status=$(field status) leaked=$(field leaked) (log: $out)"
    elif [ -n "$missing" ]; then
        fail "$name" "no stage-2 faults counted for vCPU(s)$missing (RESULT faults_vcpu=${faults:-missing}) (log: $out)"
    elif [ "$4" = m ] && ! { [ "$(field migrate_rounds)" -ge 1 ] 2>/dev/null && [ "$(field migrate_diff)" = 0 ]; }; then
        fail "$name" "RESULT migrate_rounds=$(field migrate_rounds) migrate_diff=$(field migrate_diff) (log: $out)"
    elif [ "$4" = m ]; then
        pass "$name (${secs}s, ${initline#S2PAR-GUEST: }, ${verdict#S2PAR-GUEST: PASS }, $(migrate_figures))"
    else
        pass "$name (${secs}s, ${initline#S2PAR-GUEST: }, ${verdict#S2PAR-GUEST: PASS }, faults per vCPU $faults)"
    fi
}

# migrate_figures: the migration's figures from the RESULT line, one phrase.
migrate_figures() {
    echo "$(field migrate_rounds) migration rounds from $(field migrate_began_ms | cut -d, -f1) ms," \
        "medians: $(field migrate_median_passes) pre-copy passes, $(field migrate_median_pass_pages)" \
        "dirty pages per pass, stop $(field migrate_median_stop_pages) pages, downtime" \
        "$(($(field migrate_median_downtime_ns) / 1000)) us (drain $(($(field migrate_median_drain_ns) / 1000)) us), freeze to resume" \
        "$(($(field migrate_median_stop_ns) / 1000)) us; diff=$(field migrate_diff)"
}

# migrate_boot NAME VCPUS MODE: a --suite migrate=on boot; the toucher runs one round (CI time:
# the migration rounds start 3 s after the VM and repeat every ~2.5 s, so several still overlap
# the toucher's writes).
migrate_boot() {
    local rounds=1
    boot "$1" "$2" "$3" m ""
}

# migrate_skip NAME: migrate=on with selftest=migrate-skip (every pass leaves out one page that
# changed): the comparison at the stop must find those pages, so the run must fail with exit
# status 1 and the reason 'migrate: N pages differ from their copy at the stop' (N > 0), while
# the guest itself, whose memory the hypervisor never touched, passes and powers off. The
# negative test of the migration's checker.
migrate_skip() {
    local name=$1 reason diff rounds=1
    local -a hyp_opts=(${hyp_opts[@]+"${hyp_opts[@]}"} selftest=migrate-skip)
    run_guest "$name" 2 parallel m ""
    reason=$(grep -aoE '^FAIL: migrate: [0-9]+ pages differ from their copy at the stop' "$out" | head -n 1)
    diff=$(field migrate_diff)
    if [ "$code" -eq 1 ] && [ -n "$reason" ] && [ "${diff:-0}" -gt 0 ] 2>/dev/null &&
        [ "${verdict#S2PAR-GUEST: PASS}" != "$verdict" ]; then
        pass "$name (${secs}s, failed as it must: '${reason#FAIL: }', migrate_skipped=$(field migrate_skipped), guest said PASS)"
    else
        fail "$name" "selftest=migrate-skip must fail with 'FAIL: migrate: N pages differ ...': exit status $code, reason '${reason:-none}', migrate_diff=${diff:-none}, guest verdict '${verdict:-none}' (log: $out)"
    fi
}

# corrupt NAME: the guest damages one of CPU 0's files on purpose (s2par_selftest=corrupt); its
# verdict must be FAIL naming that file's round, and the guest must still power off cleanly.
corrupt() {
    local name=$1
    run_guest "$name" 1 parallel 0 "" s2par_selftest=corrupt
    if [ "$code" -eq 0 ] && [ "$verdict" = "S2PAR-GUEST: FAIL cpu 0: round 1: 1 of $files files read back wrong" ]; then
        pass "$name (${secs}s, guest said '${verdict#S2PAR-GUEST: }')"
    else
        fail "$name" "exit status $code, guest verdict '${verdict:-none}', expected 'S2PAR-GUEST: FAIL cpu 0: round 1: 1 of $files files read back wrong' (log: $out)"
    fi
}

# nocopy NAME: chaos=on with selftest=nocopy: every page the pruner migrates loses its data, so
# the run must fail (exit status != 0 and no PASS verdict): the toucher reads back wrong files,
# or, as usually happens first, the kernel loses its own pages, panics and resets (panic=-1:
# PSCI SYSTEM_RESET, exit 4) or hangs (exit 124 at this case's 60 s bound, which a healthy
# 2-vCPU chaos run stays well inside: parallel-4-chaos above passes in under 50 s). Either way a hypervisor that loses guest memory cannot pass.
# Rule: a check that never fails proves nothing; this is the guest-side check's negative test.
nocopy() {
    # Dynamic scope: run_guest sees these (a guest that hangs instead of crashing is bounded).
    local name=$1 RUN_TIMEOUT=60
    local -a hyp_opts=(${hyp_opts[@]+"${hyp_opts[@]}"} selftest=nocopy)
    run_guest "$name" 2 parallel 1 ""
    if [ "$code" -ne 0 ] && [ "${verdict#S2PAR-GUEST: PASS}" = "$verdict" ]; then
        pass "$name (${secs}s, failed as it must: exit status $code, ${verdict:-no guest verdict})"
    else
        fail "$name" "selftest=nocopy lost migrated pages but the run passed: exit status $code, guest verdict '${verdict:-none}' (log: $out)"
    fi
}

# gicr NAME: 1 vCPU with s2par_gicr_probe=2: the guest reads its redistributor's GICR_TYPER,
# writes/reads back GICR_PROPBASER and sets/reads back GICR_CTLR.EnableLPIs through /dev/mem. On
# the hypervisor LPIs must be hidden and stay off (PLPIS = 0, PROPBASER reads 0 after the write,
# EnableLPIs reads 0 after being set: the RD_base frame is emulated,
# passthrough.rs); on bare QEMU (probe 1: no EnableLPIs write; with --bare, and always in the
# suite as NAME-bare, which proves the probe reaches the hardware) PLPIS = 1 and the write sticks. Either way the guest then runs
# its toucher and must pass.
gicr() {
    local name=$1 want
    # iomem=relaxed: the GIC driver claims its regions, and /dev/mem refuses claimed I/O memory
    # otherwise (CONFIG_IO_STRICT_DEVMEM).
    local probe=2 seen
    [ "$bare" = 0 ] || probe=1
    run_guest "$name" 1 parallel 0 "" "s2par_gicr_probe=$probe iomem=relaxed"
    seen=$(grep -aoE 'S2PAR-GUEST: gicr .*' "$out" | head -n 1 | tr -d '\r')
    if [ "$bare" = 1 ]; then
        want="S2PAR-GUEST: gicr plpis=1 propbaser=0x0000000040000000 enable_lpis=-"
    else
        want="S2PAR-GUEST: gicr plpis=0 propbaser=0x0000000000000000 enable_lpis=0"
    fi
    if [ "$code" -ne 0 ] || [ "${verdict#S2PAR-GUEST: PASS}" = "$verdict" ]; then
        fail "$name" "exit status $code, guest verdict '${verdict:-none}' (log: $out)"
    elif [ "$seen" != "$want" ]; then
        fail "$name" "guest saw '${seen:-nothing}', expected '$want' (log: $out)"
    else
        pass "$name (${secs}s, guest saw '${seen#S2PAR-GUEST: }')"
    fi
}

# gicr_bare NAME: gicr on bare QEMU (dynamic scope: run_guest and gicr see bare=1).
gicr_bare() {
    local bare=1
    gicr "$1"
}

if [ -z "$kernel" ] || [ -z "$initrd" ]; then
    [ -n "$initrd" ] || fetch_busybox
    [ -n "$kernel" ] || { fetch_kernel; kernel=$KERNEL_IMAGE; echo "kernel: $KERNEL_PACKAGE ($kernel)"; }
    [ -n "$initrd" ] || { build_initramfs; initrd=$INITRD; echo "initramfs: $initrd ($(wc -c <"$initrd") bytes, $(cat "$GUEST_CACHE/busybox/package"))"; }
fi
if [ "$fetch_only" = 1 ]; then
    echo "kernel=$kernel"
    echo "initrd=$initrd"
    exit 0
fi

if [ "$bare" = 1 ]; then
    ELF=""
elif [ "$release" = 1 ]; then
    build_hyp
else
    log="$LOG_DIR/$SUITE-build.log"
    cargo build -p hyp >"$log" 2>&1 || { tail -n 20 "$log"; fail build "cargo build -p hyp failed (see $log)"; finish; }
    ELF=target/aarch64-unknown-none-softfloat/debug/hyp
fi

if [ "$suite" = 1 ] && [ "$bare" = 1 ]; then
    for n in 1 2 4; do
        boot "bare-$n" "$n" - 0 ""
    done
    corrupt bare-selftest-corrupt
elif [ "$suite" = 1 ]; then
    for m in parallel locked; do
        for n in 1 2 4; do
            boot "$m-$n" "$n" "$m" 0 ""
        done
    done
    boot "parallel-4-2m" 4 parallel 0 2m
    boot "parallel-4-chaos" 4 parallel 1 ""
    migrate_boot "parallel-4-migrate" 4 parallel
    migrate_boot "locked-2-migrate" 2 locked
    migrate_skip migrate-skip
    corrupt selftest-corrupt
    nocopy chaos-nocopy
    gicr gicr-no-lpis
    gicr_bare gicr-no-lpis-bare
else
    name="$mode-$vcpus${backing:+-$backing}"
    [ "$bare" = 0 ] || name="bare-$vcpus"
    [ "$chaos" = 0 ] || name="$name-chaos"
    [ "$migrate" = 0 ] || name="$name-migrate"
    [ "$chaos" = 0 ] || [ "$migrate" = 0 ] || die "--chaos and --migrate both need the spare CPU: one at a time"
    [ "$migrate" = 0 ] || [ "$bare" = 0 ] || die "--migrate needs the hypervisor (not --bare)"
    [ "$migrate" = 0 ] || chaos=m
    if [ "$repeat" = 1 ]; then
        boot "$name" "$vcpus" "$mode" "$chaos" "$backing"
    else
        inits=()
        walls=()
        for r in $(seq 1 "$repeat"); do
            boot "$name-r$r" "$vcpus" "$mode" "$chaos" "$backing"
            inits+=("$(echo "$initline" | sed -n 's/.*uptime=\([0-9.]*\).*/\1/p')")
            walls+=("$secs")
        done
        median() { printf '%s\n' "$@" | grep . | sort -n | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
        echo "$name x$repeat: init marker at median $(median "${inits[@]}") s guest uptime (${inits[*]}), run median $(median "${walls[@]}") s wall (${walls[*]})"
    fi
fi
finish
