# bench/qemu/common.sh: what the QEMU benches (run.sh, dirtylog.sh) share, sourced by both after
# they set $out, SMP, QMEM and RUN_TIMEOUT: a python3 with matplotlib for their plots, the release
# build and QEMU check, and the machine lines of their reports. Defines functions only.
# shellcheck shell=bash disable=SC2034,SC2154 # PY and ELF are set for the caller, $out is the caller's.

# find_python: echoes a python3 that imports matplotlib (Debian's python3-matplotlib serves
# /usr/bin/python3, which a python3 earlier in PATH may not be); fails if none does.
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

# need_plot_python: sets PY to a python3 with matplotlib, installing python3-matplotlib with
# apt-get when run as root, before the bench spends minutes on boots; exits 127 without one.
need_plot_python() {
    if PY=$(find_python); then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bench/qemu: installing python3-matplotlib for the plot (apt-get, quiet)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
            --no-install-recommends python3-matplotlib >"$out/apt-matplotlib.log" 2>&1 \
            || { echo "bench/qemu: apt-get install python3-matplotlib failed, see $out/apt-matplotlib.log" >&2; exit 127; }
    fi
    PY=$(find_python) || {
        echo "bench/qemu: the plot needs matplotlib, and no python3 here has it (tried python3 and /usr/bin/python3)." >&2
        echo "  Debian: apt-get install python3-matplotlib (as root; the benches do it when run as root); else pip install matplotlib" >&2
        exit 127
    }
}

# build_release NAME: builds the release hypervisor (NAME says who, on stderr), sets ELF to it and
# exits 127 without qemu-system-aarch64.
build_release() {
    echo "$1: building the release hypervisor" >&2
    cargo build --release -p hyp >&2
    ELF=${CARGO_TARGET_DIR:-target}/aarch64-unknown-none-softfloat/release/hyp
    command -v qemu-system-aarch64 >/dev/null || { echo "bench/qemu: qemu-system-aarch64 missing (apt-get install qemu-system-arm)" >&2; exit 127; }
}

# machine_lines: the report's `key=value` lines both benches record (the host, QEMU, the commit,
# `+dirty` when hyp, guest or stage2 differ from it, the time, how each boot ran); needs ELF.
machine_lines() {
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "qemu=$(qemu-system-aarch64 --version | head -n 1)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- hyp guest stage2 || echo '+dirty')"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "run_cmd=SMP=$SMP MEM=$QMEM QEMU_EXTRA=-mem-prealloc ./run-qemu.sh $ELF --timeout $RUN_TIMEOUT OPTIONS"
}
