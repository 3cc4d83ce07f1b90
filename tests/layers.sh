#!/usr/bin/env bash
# The hypervisor's layers (docs/hypervisor.md "Layers"): no module imports one in a layer above
# its own. Checks the `crate::`/`super::` paths each file of hyp/src names (comments stripped):
#   - platform/ names no module of vmm/ or builtin/, and not the built-in guest's abi/expect/pattern;
#   - vmm/ names no module of builtin/, and not abi/expect/pattern;
#   - inside vmm/, each file names only modules of its own layer or below (VMM_LAYERS, bottom
#     first): the trap path reads exceptions -> decode -> vcpu -> memslot/stage 2 -> ERET with
#     no import pointing back up.
# Prints one line per violation and ends with `layers: N passed, M failed`; exits non-zero on any.
set -u
cd "$(dirname "$0")/.." || exit 2
SRC=hyp/src

# Bottom first; a module may import its own layer and those before it.
VMM_LAYERS=(
    "frame"
    "exceptions decode memslot tables tlb idregs el1_reset guest_dtb boot_protocol"
    "vm harness passthrough inject write_log"
    "lifecycle psci evict"
    "vcpu finish"
)

mods() { sed -n 's/^pub mod \([a-z_0-9]*\);.*/\1/p' "$SRC/$1/mod.rs"; }
# refs FILE: the module names FILE reaches through crate:: or super:: (one per line).
# A path through a folder module (crate::vmm::vcpu) names the module after the folder.
refs() {
    sed 's://.*$::' "$1" | tr '\n' ' ' \
        | grep -oE '(crate|super)::((vmm|platform|builtin)::)?(\{[^}]*\}|[a-z_0-9]+)' \
        | sed -E 's/^(crate|super):://; s/^(vmm|platform|builtin):://; s/[{}]//g' | tr ',' '\n' \
        | sed -E 's/^ *//; s/[^a-z_0-9].*$//' | grep -v '^$' | sort -u
}
# nested FILE: whether FILE has a nested use group (crate::{a::{B}, c}), which refs cannot split.
nested() { sed 's://.*$::' "$1" | tr '\n' ' ' | grep -qE '(crate|super)::(([a-z_0-9]+::)*)\{[^}]*\{'; }
in_list() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }

PLATFORM=$(mods platform | tr '\n' ' ')
VMM=$(mods vmm | tr '\n' ' ')
BUILTIN=$(mods builtin | tr '\n' ' ')
GUEST_ABI="abi expect pattern"
passed=0
failed=0
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }

# Every vmm module must be in exactly one layer (a new file must be placed).
for m in $VMM; do
    n=0
    for l in "${VMM_LAYERS[@]}"; do in_list "$m" "$l" && n=$((n + 1)); done
    [ "$n" = 1 ] || bad "vmm/$m.rs is in $n layers of tests/layers.sh VMM_LAYERS (must be 1)"
done

for f in "$SRC"/platform/*.rs; do
    ok=1
    grep -qE '\b(vmm|builtin)::' "$f" && { bad "$f names vmm:: or builtin::"; ok=0; }
    nested "$f" && { bad "$f has a nested crate::{..{..}..} use group: one use per module, so this check can read it"; ok=0; }
    for r in $(refs "$f"); do
        if in_list "$r" "$PLATFORM"; then continue; fi
        if in_list "$r" "$VMM $BUILTIN $GUEST_ABI options"; then
            bad "$f imports crate::$r (platform/ is the bottom layer)"; ok=0
        fi
    done
    [ $ok = 1 ] && passed=$((passed + 1))
done

for f in "$SRC"/vmm/*.rs; do
    m=$(basename "$f" .rs)
    [ "$m" = mod ] && continue
    ok=1
    grep -qE '\bbuiltin::' "$f" && { bad "$f names builtin::"; ok=0; }
    nested "$f" && { bad "$f has a nested crate::{..{..}..} use group: one use per module, so this check can read it"; ok=0; }
    # The modules this file may name inside vmm/: its layer and every layer below.
    allowed=""
    for l in "${VMM_LAYERS[@]}"; do
        allowed="$allowed $l"
        in_list "$m" "$l" && break
    done
    for r in $(refs "$f"); do
        if in_list "$r" "$PLATFORM options"; then continue; fi
        if in_list "$r" "$VMM"; then
            in_list "$r" "$allowed" || { bad "$f imports crate::$r, a layer above vmm/$m.rs"; ok=0; }
        elif in_list "$r" "$BUILTIN $GUEST_ABI"; then
            bad "$f imports crate::$r (the built-in guest's: vmm/ knows no guest kind)"; ok=0
        fi
    done
    [ $ok = 1 ] && passed=$((passed + 1))
done

echo "layers: $passed passed, $failed failed"
[ "$failed" = 0 ]
