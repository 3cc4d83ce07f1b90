# Shared by the QEMU test scripts (tests/qemu*.sh); sourced, not run.
#
# The including script sets SUITE (the name on its closing line, `SUITE: N passed, M failed`) and
# RUN_TIMEOUT before sourcing. This file gives it: pass/fail/finish, require_tools (install with
# apt-get when root, else fail saying what is missing), build_hyp (the release hypervisor, $ELF),
# qemu_boot (one boot with a hard timeout: $out, $code) and field (a RESULT line's value).

LOG_DIR=${LOG_DIR:-target/test-logs}
mkdir -p "$LOG_DIR"
passed=0
failed=0

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

# finish: print the closing line and exit non-zero if any case failed.
finish() {
    echo "$SUITE: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# require_tools COMMAND:PACKAGE...: install the packages of missing commands (root + apt-get), or
# fail the suite with the apt-get line that would.
require_tools() {
    local need=() t
    for t in "$@"; do
        command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
    done
    [ ${#need[@]} -eq 0 ] && return
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "$SUITE: installing ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
            && return
    fi
    fail setup "missing ${need[*]}: apt-get install ${need[*]}"
    finish
}

# build_hyp: the release hypervisor; sets ELF, or fails the suite.
build_hyp() {
    local log="$LOG_DIR/$SUITE-build.log"
    if ! cargo build --release -p hyp >"$log" 2>&1; then
        tail -n 20 "$log"
        fail build "cargo build --release -p hyp failed (see $log)"
        finish
    fi
    ELF=${CARGO_TARGET_DIR:-target}/aarch64-unknown-none-softfloat/release/hyp
}

# qemu_boot LOG OPTIONS...: boot $ELF with a hard timeout (RUN_TIMEOUT), output to LOG; sets $out
# and $code (124: the timeout killed it). SMP in the environment picks the CPU count.
qemu_boot() {
    out=$1
    shift
    ./run-qemu.sh "$ELF" --timeout "$RUN_TIMEOUT" "$@" </dev/null >"$out" 2>&1
    code=$?
}

# field KEY [LOG]: the value of KEY= on the last RESULT line of LOG (default $out), or empty.
field() {
    grep -a '^RESULT ' "${2:-$out}" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$1=//p" | tr -d '\r'
}
