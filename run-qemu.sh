#!/usr/bin/env bash
# Boots the hypervisor in QEMU (the cargo runner: `cargo run [--release] -- [options]`).
#
#   run-qemu.sh [ELF] [--release] [--gdb] [--timeout SECONDS] [--cpu MODEL]
#               [--kernel FILE [--initrd FILE] [--cmdline "GUEST ARGS"]] [hypervisor options ...]
#
# ELF              the hypervisor image; cargo passes it first. Without it, the script builds
#                  hyp (debug, or release with --release) and uses that.
# --kernel FILE    boot FILE as the guest instead of the built-in one: an arm64 Linux Image
#                  (recognised by its header) or a kvm-unit-tests .flat (anything else).
# --initrd FILE    the guest's initramfs (Linux) or environ file (.flat).
# --cmdline ARGS   the guest's command line (its /chosen/bootargs), e.g. "console=ttyAMA0".
# --cpu MODEL      QEMU -cpu (default: max, or $CPU); e.g. max,pauth-impdef=on for fast Linux.
# --gdb            start QEMU halted with a gdb stub on tcp::${GDB_PORT:-1234} and print the
#                  gdb-multiarch command that attaches with the ELF's symbols.
# --timeout N      kill QEMU after N seconds (exit status 124), for tests. N is a number,
#                  optionally with a suffix s, m, h or d (as timeout(1) takes it).
# --help           this text; `run-qemu.sh help` prints the hypervisor's options.
# --               ends this script's flags: everything after it goes to the hypervisor as is.
#                  A `--` before any hypervisor option is dropped (`run-qemu.sh --release --
#                  vcpus=2`); one after them is the hypervisor's own ` -- GUEST ARGS` separator.
# anything else    run options for the hypervisor (vcpus=N mem=SIZE ram=SIZE mode=... help ...),
#                  passed as the kernel command line (-append), which the hypervisor reads from
#                  the DTB. Any other word starting with `--` is refused (exit 2).
#
# A guest file reaches the hypervisor through QEMU's generic loader: `-device loader,file=FILE,
# addr=A,force-raw=on` puts it in host RAM near its top (above the hypervisor's pools' start),
# and the bootargs say where: `kernel=A:SIZE [initrd=A:SIZE] [options] -- GUEST ARGS`
# (docs/guests.md). Exit status: 0 when the guest ends cleanly (PSCI SYSTEM_OFF; a .flat's
# "EXIT: STATUS=1"), non-zero when it fails, 124 on timeout.
#
# Environment: SMP (CPUs, default 4), MEM (host RAM, default 1G), CPU (default max),
#              GDB_PORT (default 1234), QEMU_EXTRA (extra QEMU arguments, word-split).
set -euo pipefail
# Paths the user gives (--kernel, --initrd, an ELF) are relative to where they ran us.
caller_dir=$PWD
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$caller_dir/$1" ;; esac; }
cd "$(dirname "$0")"

elf=""
gdb=0
timeout_s=""
release=0
kernel=""
initrd=""
cmdline=""
have_cmdline=0
cpu=${CPU:-max}
opts=()
need_arg() {
    [ "$2" -ge 2 ] || { echo "run-qemu.sh: $1 needs an argument (see --help)" >&2; exit 2; }
}
check_timeout() {
    [[ "$1" =~ ^[0-9]+(\.[0-9]+)?[smhd]?$ ]] || {
        echo "run-qemu.sh: --timeout $1: expected a number of seconds (e.g. 60, 2.5, 5m)" >&2; exit 2; }
}
while [ $# -gt 0 ]; do
    case "$1" in
        --)
            # The end of this script's flags: the rest goes to the hypervisor untouched (a guest
            # command line after the hypervisor's own ` -- ` may hold words starting with --).
            shift
            [ ${#opts[@]} -eq 0 ] || opts+=(--)
            opts+=("$@")
            break ;;
        --gdb) gdb=1 ;;
        --timeout)
            [ $# -ge 2 ] || { echo "run-qemu.sh: --timeout needs a number of seconds" >&2; exit 2; }
            check_timeout "$2"; timeout_s=$2; shift ;;
        --timeout=*) timeout_s=${1#--timeout=}; check_timeout "$timeout_s" ;;
        --release) release=1 ;;
        --kernel) need_arg "$1" $#; kernel=$(abspath "$2"); shift ;;
        --kernel=*) kernel=$(abspath "${1#--kernel=}") ;;
        --initrd) need_arg "$1" $#; initrd=$(abspath "$2"); shift ;;
        --initrd=*) initrd=$(abspath "${1#--initrd=}") ;;
        --cmdline) need_arg "$1" $#; cmdline=$2; have_cmdline=1; shift ;;
        --cmdline=*) cmdline=${1#--cmdline=}; have_cmdline=1 ;;
        --cpu) need_arg "$1" $#; cpu=$2; shift ;;
        --cpu=*) cpu=${1#--cpu=} ;;
        --help|-h)
            # As cargo's runner (`cargo run -- --help`: the ELF came first) the user asks for
            # the hypervisor's options; run directly, for this script's.
            if [ -n "$elf" ]; then
                echo "run-qemu.sh: the hypervisor's options follow; ./run-qemu.sh --help lists this script's" >&2
                opts+=(help)
            else
                sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0
            fi ;;
        --*)
            echo "run-qemu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *)
            if [ -z "$elf" ] && [ ${#opts[@]} -eq 0 ] && [ -f "$(abspath "$1")" ]; then
                elf=$(abspath "$1")
            else
                opts+=("$1")
            fi ;;
    esac
    shift
done

if [ -z "$elf" ]; then
    if [ "$release" = 1 ]; then
        cargo build --release -p hyp >&2
        elf=${CARGO_TARGET_DIR:-target}/aarch64-unknown-none-softfloat/release/hyp
    else
        cargo build -p hyp >&2
        elf=${CARGO_TARGET_DIR:-target}/aarch64-unknown-none-softfloat/debug/hyp
    fi
fi

# QEMU: install it when we can, or say exactly what is missing.
need=()
command -v qemu-system-aarch64 >/dev/null 2>&1 || need+=(qemu-system-arm)
if [ "$gdb" = 1 ] && ! command -v gdb-multiarch >/dev/null 2>&1; then need+=(gdb-multiarch); fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run-qemu.sh: installing ${need[*]} with apt-get (about a minute)..." >&2
        # Quietly: dpkg's progress lines would flood the terminal; the log is kept for failures.
        apt_log=$(mktemp)
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
            >"$apt_log" 2>&1; then
            tail -n 20 "$apt_log" >&2
            echo "run-qemu.sh: apt-get install ${need[*]} failed (log: $apt_log)" >&2
            exit 127
        fi
        rm -f "$apt_log"
    else
        echo "run-qemu.sh: missing ${need[*]}; install it (Debian/Ubuntu: sudo apt-get install ${need[*]})" >&2
        exit 127
    fi
fi

# Tell the hypervisor's report about the host (options host-cpus= and host-prealloc=), unless the
# user set them: a mean fault time far above the median is then explained by its real cause.
# They go before a ` -- GUEST ARGS` the user gave, which must stay last.
tail_args=()
for i in "${!opts[@]}"; do
    if [ "${opts[$i]}" = -- ]; then
        tail_args=("${opts[@]:$i}")
        opts=("${opts[@]:0:$i}")
        break
    fi
done
case " ${opts[*]:-} " in *" host-cpus="*) ;; *) opts+=("host-cpus=$(nproc)") ;; esac
case " ${opts[*]:-} ${QEMU_EXTRA:-} " in
    *" host-prealloc="*) ;;
    *" -mem-prealloc "*) opts+=("host-prealloc=on") ;;
    *) opts+=("host-prealloc=off") ;;
esac
opts+=("${tail_args[@]}")

# A guest file: loaded near the top of host RAM, its place and size in the bootargs.
loaders=()
if [ -n "$initrd" ] && [ -z "$kernel" ]; then
    echo "run-qemu.sh: --initrd needs --kernel" >&2; exit 2
fi
if [ "$have_cmdline" = 1 ] && [ -z "$kernel" ]; then
    echo "run-qemu.sh: --cmdline needs --kernel (hypervisor options go without it)" >&2; exit 2
fi
mem_bytes() {
    local v=$1 n
    n=${v%[KkMmGgTt]}
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "run-qemu.sh: cannot place --kernel with MEM=$v (use e.g. 1G or 2048M)" >&2; exit 2; }
    case "${v: -1}" in
        K|k) echo $((n << 10)) ;; M|m) echo $((n << 20)) ;; G|g) echo $((n << 30)) ;;
        T|t) echo $((n << 40)) ;; *) echo $((n << 20)) ;;  # QEMU: a bare number is MiB
    esac
}
if [ -n "$kernel" ]; then
    top=$((0x40000000 + $(mem_bytes "${MEM:-1G}")))
    guest_args=()
    for pair in "kernel:$kernel" "initrd:$initrd"; do
        name=${pair%%:*} file=${pair#*:}
        [ -n "$file" ] || continue
        [ -f "$file" ] || { echo "run-qemu.sh: --$name $file: no such file" >&2; exit 2; }
        size=$(stat -L -c %s "$file")
        [ "$size" -gt 0 ] || { echo "run-qemu.sh: --$name $file is empty" >&2; exit 2; }
        # 2 MiB-aligned, from the top of RAM down.
        top=$(( (top - size) & ~0x1FFFFF ))
        loaders+=(-device "loader,file=$(realpath "$file"),addr=$(printf '%#x' $top),force-raw=on")
        guest_args+=("$name=$(printf '%#x:%#x' $top "$size")")
    done
    opts=("${guest_args[@]}" "${opts[@]}" -- "$cmdline")
fi

port=${GDB_PORT:-1234}
cmd=(qemu-system-aarch64
    -M virt,virtualization=on,gic-version=3
    -cpu "$cpu"
    -smp "${SMP:-4}"
    -m "${MEM:-1G}"
    -nographic
    -no-reboot
    -semihosting
    -kernel "$elf"
    -append "${opts[*]:-}"
    "${loaders[@]}")
if [ "$gdb" = 1 ]; then
    cmd+=(-gdb "tcp::$port" -S)
    echo "run-qemu.sh: QEMU is halted at the first instruction, waiting for gdb. Attach with:" >&2
    echo "  gdb-multiarch $elf -ex 'target remote :$port'" >&2
fi
# shellcheck disable=SC2206
[ -n "${QEMU_EXTRA:-}" ] && cmd+=($QEMU_EXTRA)

if [ -n "$timeout_s" ]; then
    set +e
    timeout --foreground -k 5 "$timeout_s" "${cmd[@]}"
    status=$?
    set -e
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        echo "FAIL: run-qemu.sh: QEMU killed after the ${timeout_s}s timeout" >&2
        # The hypervisor printed no report (it was still running): say so in the machine-readable
        # form, so a script that reads the last RESULT line sees the failure, not nothing.
        echo "RESULT status=fail reason=timeout timeout_s=${timeout_s}"
        exit 124
    fi
    exit "$status"
fi
exec "${cmd[@]}"
