#!/usr/bin/env bash
# The hypervisor never executes an FP/SIMD/SVE/SME instruction.
#
#   tests/no-fp.sh [ELF...]
#
# Why it matters: the guest's FP/SIMD/SVE state is not saved on a trap, it stays in the
# registers (hyp/src/vmm/exceptions.rs), which is only correct while no hypervisor instruction
# touches it. A compiler-generated `movi v0.2d` on the fault path also killed the whole
# hypervisor when the guest was in SME streaming mode (issue 9). The hypervisor is built for
# aarch64-unknown-none-softfloat so the compiler emits none; this test checks the binary.
#
# Cases:
#   canary   the checker (tests/no-fp.awk) flags every instruction of the bad_* functions in
#            tests/no-fp-canary.rs (FP, SIMD, their loads/stores, SVE, SME, SMSTART, FPCR, ZCR,
#            SVCR, ...) and nothing in good_* (integer code, CPTR_EL2, ID registers, DC/TLBI),
#            with the disassembler this run uses: the test can fail, and catches SVE/SME even
#            where the disassembler does not decode them (it checks the raw encodings).
#   release  target/aarch64-unknown-none-softfloat/release/hyp: every executable section.
#   debug    target/aarch64-unknown-none-softfloat/debug/hyp: the same.
# With ELF arguments, those files are checked instead of the two builds (e.g. an old build, to
# see the test fail on it).
#
# Deliberate exceptions, by symbol and kind (every one must still exist, so the list cannot go
# stale); each is a named asm function with a comment saying why:
#   guest_fp_reset:FPCR, guest_fp_reset:FPSR   exceptions.rs: the guest's FPCR/FPSR := 0 before
#                                              its first entry.
#   zcr_el2_write:ZCR_EL2                      sysreg_ext.rs: the guest's maximum SVE vector length.
#
# Disassembler: llvm-objdump from the Rust toolchain (rustup component llvm-tools) if present,
# else GNU aarch64-linux-gnu-objdump (package binutils-aarch64-linux-gnu, installed with apt-get
# when root); NOFP_OBJDUMP overrides. Closing line: "no-fp: N passed, M failed".
set -u
cd "$(dirname "$0")/.."
SUITE=no-fp
# shellcheck source=tests/lib.sh
. tests/lib.sh

ALLOW="guest_fp_reset:FPCR guest_fp_reset:FPSR zcr_el2_write:ZCR_EL2"
# An ELF with fewer instructions than this was not really disassembled (a wrong tool or format).
MIN_INSNS=1000

pick_objdump() {
    if [ -n "${NOFP_OBJDUMP:-}" ]; then
        OBJDUMP=$NOFP_OBJDUMP
        return
    fi
    local t
    for t in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-objdump; do
        if [ -x "$t" ]; then
            OBJDUMP=$t
            return
        fi
    done
    require_tools aarch64-linux-gnu-objdump:binutils-aarch64-linux-gnu
    OBJDUMP=aarch64-linux-gnu-objdump
}

# scan FILE ALLOW OUT: the classified disassembly of FILE's executable sections into OUT.
scan() {
    "$OBJDUMP" -d -C "$1" | awk -v allow="$2" -f tests/no-fp.awk >"$3"
}

# check_canary: the checker must flag all of bad_* but ret, and nothing of good_*.
check_canary() {
    local obj=$LOG_DIR/no-fp-canary.o res=$LOG_DIR/no-fp-canary.txt bad=0 sym n hits
    if ! rustc --edition 2021 --crate-type lib --target aarch64-unknown-none -C opt-level=0 \
        --emit obj -o "$obj" tests/no-fp-canary.rs >"$LOG_DIR/no-fp-canary.log" 2>&1; then
        fail canary "building tests/no-fp-canary.rs failed: $(head -n 5 "$LOG_DIR/no-fp-canary.log")"
        return
    fi
    scan "$obj" "" "$res"
    while read -r _ sym n; do
        hits=$(grep -c "^HIT $sym .* forbidden " "$res")
        case "$sym" in
            bad_*) if [ "$hits" -ne $((n - 1)) ]; then
                       echo "canary: $sym: $hits of $((n - 1)) instructions flagged"
                       bad=1
                   fi ;;
            good_*) if [ "$hits" -ne 0 ]; then
                        echo "canary: $sym: $hits instructions flagged that are not FP:"
                        grep "^HIT $sym " "$res"
                        bad=1
                    fi ;;
        esac
    done < <(grep '^SYMBOL ' "$res")
    if [ "$(grep -c '^SYMBOL \(bad\|good\)_' "$res")" -ne 4 ]; then
        echo "canary: expected 4 canary functions in the disassembly:"
        cat "$res"
        bad=1
    fi
    if [ "$bad" = 0 ]; then
        pass "canary ($(grep -c '^HIT ' "$res") FP/SIMD/SVE/SME instructions caught with $(basename "$OBJDUMP"))"
    else
        fail canary "the checker misclassifies the canary (see $res)"
    fi
}

# check_elf NAME FILE: no forbidden hit, every allow-list entry used, enough instructions seen.
check_elf() {
    local name=$1 elf=$2 res=$LOG_DIR/no-fp-$1.txt count forbidden entry missing=()
    if [ ! -f "$elf" ]; then
        fail "$name" "$elf does not exist"
        return
    fi
    scan "$elf" "$ALLOW" "$res"
    count=$(sed -n 's/^COUNT //p' "$res")
    forbidden=$(grep -c '^HIT .* forbidden ' "$res")
    for entry in $ALLOW; do
        grep -q "^HIT ${entry%%:*} [0-9a-f]* ${entry#*:} allowed " "$res" || missing+=("$entry")
    done
    if [ "${count:-0}" -lt "$MIN_INSNS" ]; then
        fail "$name" "only ${count:-0} instructions disassembled from $elf (wrong disassembler?)"
    elif [ "$forbidden" -gt 0 ]; then
        grep '^HIT .* forbidden ' "$res" | head -n 20 | sed 's/^HIT /  /'
        fail "$name" "$forbidden FP/SIMD/SVE/SME instructions in $elf (list: $res)"
    elif [ ${#missing[@]} -gt 0 ]; then
        fail "$name" "allow-list entries not found in $elf (stale list?): ${missing[*]}"
    else
        pass "$name ($count instructions, none touches FP/SIMD/SVE/SME state outside: $ALLOW)"
    fi
}

pick_objdump
echo "no-fp: disassembler $OBJDUMP"
check_canary
if [ $# -gt 0 ]; then
    i=0
    for elf in "$@"; do
        i=$((i + 1))
        check_elf "elf$i" "$elf"
    done
else
    build_hyp
    check_elf release "$ELF"
    if cargo build -p hyp >"$LOG_DIR/no-fp-build-debug.log" 2>&1; then
        check_elf debug "${CARGO_TARGET_DIR:-target}/aarch64-unknown-none-softfloat/debug/hyp"
    else
        tail -n 20 "$LOG_DIR/no-fp-build-debug.log"
        fail debug "cargo build -p hyp failed (see $LOG_DIR/no-fp-build-debug.log)"
    fi
fi
finish
