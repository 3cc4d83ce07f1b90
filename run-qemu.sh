#!/usr/bin/env bash
# Boots the hypervisor in QEMU (the cargo runner: `cargo run [--release] -- [options]`).
#
#   run-qemu.sh [ELF] [--gdb] [--timeout SECONDS] [--release] [hypervisor options ...]
#
# ELF            the hypervisor image; cargo passes it first. Without it, the script builds
#                hyp (debug, or release with --release) and uses that.
# --gdb          start QEMU halted with a gdb stub on tcp::${GDB_PORT:-1234} and print the
#                gdb-multiarch command that attaches with the ELF's symbols.
# --timeout N    kill QEMU after N seconds (exit status 124), for tests.
# anything else  run options for the hypervisor (vcpus=N mem=SIZE mode=... help ...), passed as
#                the kernel command line (-append), which the hypervisor reads from the DTB.
#
# Environment: SMP (CPUs, default 4), MEM (default 1G), GDB_PORT (default 1234),
#              QEMU_EXTRA (extra QEMU arguments, word-split).
set -euo pipefail
cd "$(dirname "$0")"

elf=""
gdb=0
timeout_s=""
release=0
opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --gdb) gdb=1 ;;
        --timeout)
            [ $# -ge 2 ] || { echo "run-qemu.sh: --timeout needs a number of seconds" >&2; exit 2; }
            timeout_s=$2; shift ;;
        --timeout=*) timeout_s=${1#--timeout=} ;;
        --release) release=1 ;;
        --help|-h) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)
            if [ -z "$elf" ] && [ ${#opts[@]} -eq 0 ] && [ -f "$1" ]; then
                elf=$1
            else
                opts+=("$1")
            fi ;;
    esac
    shift
done

if [ -z "$elf" ]; then
    if [ "$release" = 1 ]; then
        cargo build --release -p hyp >&2
        elf=target/aarch64-unknown-none-softfloat/release/hyp
    else
        cargo build -p hyp >&2
        elf=target/aarch64-unknown-none-softfloat/debug/hyp
    fi
fi

# QEMU: install it when we can, or say exactly what is missing.
need=()
command -v qemu-system-aarch64 >/dev/null 2>&1 || need+=(qemu-system-arm)
if [ "$gdb" = 1 ] && ! command -v gdb-multiarch >/dev/null 2>&1; then need+=(gdb-multiarch); fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run-qemu.sh: installing ${need[*]} with apt-get" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    else
        echo "run-qemu.sh: missing ${need[*]}; install it (Debian/Ubuntu: sudo apt-get install ${need[*]})" >&2
        exit 127
    fi
fi

# Tell the hypervisor's report about the host (options host-cpus= and host-prealloc=), unless the
# user set them: a mean fault time far above the median is then explained by its real cause.
case " ${opts[*]:-} " in *" host-cpus="*) ;; *) opts+=("host-cpus=$(nproc)") ;; esac
case " ${opts[*]:-} ${QEMU_EXTRA:-} " in
    *" host-prealloc="*) ;;
    *" -mem-prealloc "*) opts+=("host-prealloc=on") ;;
    *) opts+=("host-prealloc=off") ;;
esac

port=${GDB_PORT:-1234}
cmd=(qemu-system-aarch64
    -M virt,virtualization=on,gic-version=3
    -cpu max
    -smp "${SMP:-4}"
    -m "${MEM:-1G}"
    -nographic
    -no-reboot
    -semihosting
    -kernel "$elf"
    -append "${opts[*]:-}")
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
        exit 124
    fi
    exit "$status"
fi
exec "${cmd[@]}"
