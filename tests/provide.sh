# Shared by the tests/*/setup.sh scripts that provide a real part for the tests (source it, do
# not run it). Each script defines `ready` (succeeds when what it provides under $dir runs), then
# calls `provide_begin NAME CACHE_DIR`, which:
#   - checks its arguments and makes CACHE_DIR (then `$dir` is its absolute path);
#   - returns at once (exit 0) when the stamp holds the calling script's hash and `ready`
#     succeeds — so a run after the first costs nothing;
#   - otherwise takes a lock on CACHE_DIR (concurrent test binaries wait for one install), sends
#     all output to stderr and clears the stamp.
# Then the script installs and calls `provide_done`, which writes the stamp.

provide_name=$0

die() {
    echo "$provide_name: error: $*" >&2
    exit 1
}

provide_begin() {
    provide_name=$1
    local cache=$2
    [ -n "$cache" ] || die "usage: setup.sh CACHE_DIR"
    mkdir -p "$cache" || die "cannot create cache dir $cache"
    dir=$(cd "$cache" && pwd)
    provide_stamp="$dir/.setup-stamp"
    # This file and the calling script: a change to either installs again.
    provide_want=$(cat "$0" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
    provide_is_ready && exit 0
    exec 1>&2
    exec 9>"$dir/.setup.lock"
    flock -w 1200 9 || die "timed out waiting for the lock on $dir/.setup.lock"
    provide_is_ready && exit 0
    trap 'die "setup failed (line $LINENO); see the output above"' ERR
    rm -f "$provide_stamp"
}

provide_is_ready() {
    [ -f "$provide_stamp" ] && [ "$(cat "$provide_stamp")" = "$provide_want" ] && ready >/dev/null 2>&1
}

provide_done() {
    echo "$provide_want" >"$provide_stamp"
}

# Unpacks the given Debian packages (downloaded with apt-get download; as root, after an
# apt-get update when the package lists are missing) under $dir/root.
unpack_debs() {
    rm -rf "$dir/debs" "$dir/root"
    mkdir -p "$dir/debs" "$dir/root"
    fetch() { (cd "$dir/debs" && apt-get download "$@"); }
    if ! fetch "$@"; then
        [ "$(id -u)" = 0 ] || die "apt-get download failed; install the package with apt-get install"
        apt-get update
        fetch "$@"
    fi
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
}

# Links $dir/bin/AS (default: NAME) to the system's NAME when it is on PATH; answers whether it
# did.
link_system() {
    local system
    system=$(command -v "$1") || return 1
    echo "$provide_name: using $system"
    ln -s "$system" "$dir/bin/${2:-$1}"
}

# Writes $dir/bin/NAME: runs EXE (a path under the unpacked root) with LIBDIRS (colon-separated
# paths under the root) first on LD_LIBRARY_PATH.
wrap_unpacked() {
    local name=$1 exe=$2 libs=$3 path="" d
    for d in ${libs//:/ }; do path="$path${path:+:}$dir/root$d"; done
    cat >"$dir/bin/$name" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$path\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root$exe" "\$@"
WRAP
    chmod +x "$dir/bin/$name"
}
