# Shared by tests/guests/linux.sh and kvm-unit-tests.sh; sourced, not run (bash).
#
# abs PATH: PATH made absolute against the directory the script was started from ($OLDPWD, as the
# scripts cd to the project root first).
# guest_cache_dir [CACHE]: sets GUEST_CACHE to where fetched guests and builds go: CACHE (the
# --cache option), else $S2PAR_GUEST_CACHE, else $XDG_CACHE_HOME/s2par/guests, else target/guests.

abs() { case "$1" in /*) echo "$1" ;; *) echo "$OLDPWD/$1" ;; esac; }

guest_cache_dir() {
    if [ -n "${1:-}" ]; then
        GUEST_CACHE=$(abs "$1")
    elif [ -n "${S2PAR_GUEST_CACHE:-}" ]; then
        GUEST_CACHE=$S2PAR_GUEST_CACHE
    elif [ -n "${XDG_CACHE_HOME:-}" ]; then
        GUEST_CACHE=$XDG_CACHE_HOME/s2par/guests
    else
        GUEST_CACHE=$PWD/target/guests
    fi
}
