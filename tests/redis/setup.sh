#!/usr/bin/env bash
# Provide a redis-server for tickrelay's Redis tests.
#
#   tests/redis/setup.sh CACHE_DIR        (the Rust tests pass <repo>/target/redis)
#
# Leaves CACHE_DIR/bin/redis-server runnable: the system's redis-server when there is one on
# PATH, otherwise Debian's packages (redis-server, redis-tools and the two libraries they need)
# downloaded with `apt-get download` and unpacked under CACHE_DIR with `dpkg-deb -x` — nothing is
# installed system-wide and no root is needed (as root it runs `apt-get update` first if the
# package lists are missing).
#
# Idempotent (a stamp holds this script's hash) and safe to run concurrently (flock). All output
# goes to stderr. Exit status 1 on failure.
set -Eeuo pipefail

die() {
    echo "tests/redis/setup.sh: error: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: setup.sh CACHE_DIR"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1" || die "cannot create cache dir $1"
dir=$(cd "$1" && pwd)
stamp="$dir/.setup-stamp"
want=$(sha256sum "$here/setup.sh" | cut -d' ' -f1)

ready() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$dir/bin/redis-server" --version >/dev/null 2>&1
}

ready && exit 0
exec 1>&2
exec 9>"$dir/.setup.lock"
flock -w 600 9 || die "timed out waiting for the lock on $dir/.setup.lock"
ready && exit 0

trap 'die "setup failed (line $LINENO); see the output above"' ERR
rm -f "$stamp"
rm -rf "$dir/bin" "$dir/root" "$dir/debs"
mkdir -p "$dir/bin"

if system=$(command -v redis-server); then
    echo "tests/redis/setup.sh: using $system"
    ln -s "$system" "$dir/bin/redis-server"
else
    command -v apt-get >/dev/null || die "no redis-server on PATH and no apt-get to fetch Debian's"
    mkdir -p "$dir/debs" "$dir/root"
    packages=(redis-server redis-tools libjemalloc2 liblzf1)
    fetch() { (cd "$dir/debs" && apt-get download "${packages[@]}"); }
    if ! fetch; then
        [ "$(id -u)" = 0 ] || die "apt-get download failed; install redis-server (apt-get install redis-server)"
        apt-get update
        fetch
    fi
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    cat >"$dir/bin/redis-server" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root/usr/bin/redis-server" "\$@"
WRAP
    chmod +x "$dir/bin/redis-server"
fi
"$dir/bin/redis-server" --version
echo "$want" >"$stamp"
