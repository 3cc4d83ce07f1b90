# Classifies every instruction of an AArch64 disassembly (llvm-objdump -d or GNU objdump -d) as
# touching FP/SIMD/SVE/SME state or not; used by tests/no-fp.sh, which explains why.
#
# Two independent checks, so neither the disassembler's feature set nor its spelling can hide an
# instruction (llvm-objdump 14, for one, prints SVE and SME encodings as "<unknown>"):
#  1. The encoding, from the raw 32-bit word (Arm ARM C4.1, "A64 instruction set encoding"):
#     op0 = bits[28:25]: 0b0010 SVE; 0b0000 with bit 31 set SME; 0bx111 scalar FP and Advanced
#     SIMD data processing; 0bx1x0 loads and stores with bit 26 (V) set: SIMD&FP loads/stores.
#     System-register moves (MRS/MSR, bits[31:22] = 0b1101010100, op0 >= 2) to a register that
#     holds FP/SVE/SME state or controls it at run time (FPCR, FPSR, FPMR, ZCR_ELx, SMCR_ELx,
#     SVCR, SMPRI_EL1, SMPRIMAP_EL2, TPIDR2_EL0, FPEXC32_EL2); MSR (immediate) to PSTATE.SM/ZA
#     (op1 = 3, CRn = 4, op2 = 3: SMSTART/SMSTOP). ID registers (ID_AA64ZFR0_EL1, ...) and trap
#     controls (CPACR_EL1, CPTR_EL2) describe or gate the state without touching it: allowed.
#  2. The text: an FP/SIMD/SVE/SME register operand (v/q/d/s/h/b/z/p/za/zt0), a mnemonic
#     starting with "f" (every A64 one is floating point), scvtf/ucvtf, smstart/smstop, or one of
#     the system registers above by name.
#
# Input variables: allow = space-separated "symbol:KIND" pairs that are deliberate (KIND is the
# system register name or class reported below). Output: one line per hit,
#   HIT <symbol> <address> <KIND> <allowed|forbidden> <instruction text>
# then "SYMBOL <symbol> <instructions>" per symbol and a final "COUNT <instructions>".

function hexval(s,    i, n) {
    n = 0
    s = tolower(s)
    for (i = 1; i <= length(s); i++)
        n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return n
}
function bits(w, lo, n) { return int(w / 2 ^ lo) % (2 ^ n) }

# The class of raw word w, or "" if it is no FP/SIMD/SVE/SME instruction.
function classify(w,    op0, sop0, key) {
    op0 = bits(w, 25, 4)
    if (op0 == 0 && bits(w, 31, 1) == 1) return "SME"
    if (op0 == 2) return "SVE"
    if (op0 % 8 == 7) return "FP/SIMD-data-processing"
    if (op0 % 8 == 6) return "FP/SIMD-load-store"
    if (bits(w, 22, 10) == 852) {              # 0b1101010100: system instructions
        sop0 = bits(w, 19, 2)
        key = sop0 "_" bits(w, 16, 3) "_" bits(w, 12, 4) "_" bits(w, 8, 4) "_" bits(w, 5, 3)
        if (sop0 >= 2 && key in sysreg) return sysreg[key]
        # MSR (immediate), L = 0, op0 = 0, op1 = 3, CRn = 4, op2 = 3: SVCRSM/SVCRZA/SVCRSMZA.
        if (bits(w, 21, 1) == 0 && key ~ /^0_3_4_[0-9]+_3$/) return "SVCR"
    }
    return ""
}

# The class from the instruction text (lower case, symbols and comments removed), or "".
function classify_text(t,    m) {
    m = t
    sub(/[ \t].*/, "", m)
    if (m ~ /^f/ || m ~ /^(scvtf|ucvtf|smstart|smstop)$/) return "FP-mnemonic"
    if (t ~ /(fpcr|fpsr|fpmr|zcr_el|smcr_el|svcr|smpri|tpidr2_el0|fpexc32_el2)/) return "FP-sysreg-name"
    if (t ~ /[ \t,{\[]([vqdshbz][0-9][0-9]?|p[0-9][0-9]?|za[0-9]*|zt0)([^a-z0-9_]|$)/) return "FP-register"
    return ""
}

BEGIN {
    sysreg["3_3_4_4_0"] = "FPCR";       sysreg["3_3_4_4_1"] = "FPSR"
    sysreg["3_3_4_4_2"] = "FPMR";       sysreg["3_3_4_2_2"] = "SVCR"
    sysreg["3_0_1_2_0"] = "ZCR_EL1";    sysreg["3_4_1_2_0"] = "ZCR_EL2"
    sysreg["3_5_1_2_0"] = "ZCR_EL12";   sysreg["3_6_1_2_0"] = "ZCR_EL3"
    sysreg["3_0_1_2_6"] = "SMCR_EL1";   sysreg["3_4_1_2_6"] = "SMCR_EL2"
    sysreg["3_5_1_2_6"] = "SMCR_EL12";  sysreg["3_6_1_2_6"] = "SMCR_EL3"
    sysreg["3_0_1_2_4"] = "SMPRI_EL1";  sysreg["3_4_1_2_5"] = "SMPRIMAP_EL2"
    sysreg["3_3_13_0_5"] = "TPIDR2_EL0"; sysreg["3_4_5_3_0"] = "FPEXC32_EL2"
    n = split(allow, a, " ")
    for (i = 1; i <= n; i++) allowed[a[i]] = 1
    count = 0
    sym = "?"
}

# A symbol: "0000000040217640 <guest_fp_reset>:"
/^[0-9a-f]+ <.*>:$/ {
    sym = $0
    sub(/^[0-9a-f]+ </, "", sym)
    sub(/>:$/, "", sym)
    next
}

# An instruction: "40217640: 1f 44 1b d5 <TAB>msr..." (LLVM) or "  40217640:<TAB>d51b441f <TAB>msr..." (GNU).
/^ *[0-9a-f]+:[ \t]/ {
    line = $0
    addr = line
    sub(/^ */, "", addr)
    sub(/:.*/, "", addr)
    rest = line
    sub(/^ *[0-9a-f]+:[ \t]+/, "", rest)
    # The raw encoding: four bytes, little-endian (LLVM) or one 32-bit word (GNU).
    if (match(rest, /^[0-9a-f][0-9a-f] [0-9a-f][0-9a-f] [0-9a-f][0-9a-f] [0-9a-f][0-9a-f]/)) {
        split(substr(rest, 1, 11), b, " ")
        word = b[4] b[3] b[2] b[1]
        text = substr(rest, 12)
    } else if (match(rest, /^[0-9a-f]+/) && RLENGTH == 8) {
        word = substr(rest, 1, 8)
        text = substr(rest, 9)
    } else {
        next
    }
    count++
    per_sym[sym]++
    sub(/^[ \t]+/, "", text)
    t = tolower(text)
    sub(/<[^>]*>/, "", t)
    sub(/\/\/.*/, "", t)
    sub(/;.*/, "", t)
    kind = classify(hexval(word))
    if (kind == "") kind = classify_text(t)
    if (kind == "") next
    verdict = ((sym ":" kind) in allowed) ? "allowed" : "forbidden"
    print "HIT " sym " " addr " " kind " " verdict " " text
}

END {
    for (s in per_sym) print "SYMBOL " s " " per_sym[s]
    print "COUNT " count
}
