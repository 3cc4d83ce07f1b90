# shellcheck shell=bash
# Fetches arm64 packages from Debian's archive with a private apt configuration; sourced, not run.
#
# Nothing of the machine's own apt setup is read or changed: the configuration under
# $GUEST_CACHE/apt has its own state (lists, an empty dpkg status), cache and source list, the
# architectures amd64 + arm64 (the host's own plus the guests'), and bookworm, bookworm-updates and
# bookworm-security (bookworm-backports too when DEBIAN_BACKPORTS=1, which also makes backports the
# default release, so its kernel wins). It is used only through APT_CONFIG. Packages are verified
# against /usr/share/keyrings/debian-archive-keyring.gpg like any apt download.
#
# The caller sets GUEST_CACHE (a directory) and defines fail/finish (tests/lib.sh). This file gives:
#   debian_apt_init            write the configuration and run `apt-get update` (once per call)
#   debian_resolve_kernel      print the current ABI kernel package behind linux-image-arm64,
#                              e.g. linux-image-6.1.0-37-arm64 (never a hard-coded ABI number)
#   debian_fetch PKG DIR [PATH...]  download PKG:arm64 and unpack it (or only PATHs) into DIR
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR
# (default http://deb.debian.org/debian-security), DEBIAN_BACKPORTS (0/1).

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DEBIAN_BACKPORTS=${DEBIAN_BACKPORTS:-0}
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# debian_apt_init: the private configuration in $GUEST_CACHE/apt, then `apt-get update`.
debian_apt_init() {
    local dir=$GUEST_CACHE/apt native
    if [ ! -r "$DEBIAN_KEYRING" ]; then
        fail fetch "no Debian archive keyring at $DEBIAN_KEYRING: apt-get install debian-archive-keyring"
        finish
    fi
    native=$(dpkg --print-architecture)
    mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial" "$dir/etc/preferences.d" \
        "$dir/etc/sources.list.d" "$dir/etc/apt.conf.d" "$dir/etc/trusted.gpg.d"
    : >"$dir/state/status"
    {
        local opt="[arch=arm64 signed-by=$DEBIAN_KEYRING]"
        echo "deb $opt $DEBIAN_MIRROR bookworm main"
        echo "deb $opt $DEBIAN_MIRROR bookworm-updates main"
        echo "deb $opt $DEBIAN_SECURITY_MIRROR bookworm-security main"
        if [ "$DEBIAN_BACKPORTS" = 1 ]; then echo "deb $opt $DEBIAN_MIRROR bookworm-backports main"; fi
    } >"$dir/etc/sources.list"
    # Dir::Etc::* and Dir::State::status point at files of our own so that neither the host's
    # sources, pins and apt.conf.d snippets nor its installed packages play any part.
    cat >"$dir/apt.conf" <<EOF
Dir::State "$dir/state";
Dir::State::status "$dir/state/status";
Dir::Cache "$dir/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Etc::SourceList "$dir/etc/sources.list";
Dir::Etc::SourceParts "$dir/etc/sources.list.d";
Dir::Etc::Preferences "$dir/etc/preferences";
Dir::Etc::PreferencesParts "$dir/etc/preferences.d";
Dir::Etc::Parts "$dir/etc/apt.conf.d";
Dir::Etc::TrustedParts "$dir/etc/trusted.gpg.d";
APT::Architecture "$native";
APT::Architectures { "$native"; "arm64"; };
Acquire::Languages "none";
APT::Get::List-Cleanup "false";
EOF
    if [ "$DEBIAN_BACKPORTS" = 1 ]; then
        echo 'APT::Default-Release "bookworm-backports";' >>"$dir/apt.conf"
    fi
    export APT_CONFIG=$dir/apt.conf
    echo "fetch: apt-get update (private configuration $APT_CONFIG)"
    if ! apt-get update -q >"$dir/update.log" 2>&1; then
        tail -n 10 "$dir/update.log"
        fail fetch "apt-get update with $APT_CONFIG failed (log: $dir/update.log)"
        finish
    fi
}

# debian_resolve_kernel: the ABI package linux-image-arm64's candidate depends on.
debian_resolve_kernel() {
    apt-cache show --no-all-versions linux-image-arm64:arm64 2>/dev/null \
        | sed -n 's/^Depends: //p' | tr ',|' '\n' | sed 's/^ *//; s/ .*//' \
        | grep -E '^linux-image-[0-9][^ ]*-arm64$' | head -n 1
}

# debian_fetch PKG DIR [PATH...]: download PKG for arm64 (the candidate version) into
# $GUEST_CACHE/apt/debs and unpack it into DIR: all of it (`dpkg -x`), or only the PATHs given
# (e.g. ./boot: dpkg-deb's file tree through tar, which spares unpacking a kernel's 400 MB of
# modules).
debian_fetch() {
    local pkg=$1 dir=$2 dl=$GUEST_CACHE/apt/debs deb
    shift 2
    mkdir -p "$dl"
    echo "fetch: apt-get download $pkg:arm64"
    if ! (cd "$dl" && apt-get download -q "$pkg:arm64") >"$dl/$pkg.log" 2>&1; then
        tail -n 5 "$dl/$pkg.log"
        fail fetch "apt-get download $pkg:arm64 failed (log: $dl/$pkg.log)"
        finish
    fi
    deb=$(ls -t "$dl/${pkg}_"*_arm64.deb 2>/dev/null | head -n 1)
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ -z "$deb" ]; then
        fail fetch "apt-get download $pkg:arm64 left no ${pkg}_*_arm64.deb in $dl"
        finish
    elif [ $# -eq 0 ]; then
        dpkg -x "$deb" "$dir" || { fail fetch "dpkg -x $deb failed"; finish; }
    else
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" "$@" \
            || { fail fetch "unpacking $* from $deb failed"; finish; }
    fi
}
