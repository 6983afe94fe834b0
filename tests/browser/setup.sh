#!/usr/bin/env bash
# Provide headless Chromium for the dashboard's test.
#
#   tests/browser/setup.sh CACHE_DIR     (the Rust tests pass <repo>/target/chromium)
#
# Leaves CACHE_DIR/bin/chromium runnable: the system's chromium when there is one on PATH; as
# root, Debian's `chromium` package installed with apt-get; otherwise the package and every
# library it needs downloaded with `apt-get download` and unpacked under CACHE_DIR with
# `dpkg-deb -x` (nothing installed system-wide, no root needed). Idempotent (a stamp holds this
# script's hash), safe to run concurrently (flock); output on stderr; exit status 1 on failure.
set -Eeuo pipefail

die() {
    echo "tests/browser/setup.sh: error: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: setup.sh CACHE_DIR"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1" || die "cannot create cache dir $1"
dir=$(cd "$1" && pwd)
stamp="$dir/.setup-stamp"
want=$(sha256sum "$here/setup.sh" | cut -d' ' -f1)

ready() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$dir/bin/chromium" --headless --version >/dev/null 2>&1
}

ready && exit 0
exec 1>&2
exec 9>"$dir/.setup.lock"
flock -w 1200 9 || die "timed out waiting for the lock on $dir/.setup.lock"
ready && exit 0

trap 'die "setup failed (line $LINENO); see the output above"' ERR
rm -f "$stamp"
rm -rf "$dir/bin" "$dir/root" "$dir/debs"
mkdir -p "$dir/bin"

system=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$system" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/browser/setup.sh: installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium || {
        apt-get update
        apt-get install -y --no-install-recommends chromium
    }
    system=$(command -v chromium)
fi
if [ -n "$system" ]; then
    echo "tests/browser/setup.sh: using $system"
    ln -s "$system" "$dir/bin/chromium"
else
    command -v apt-get >/dev/null || die "no chromium on PATH and no apt-get to fetch Debian's"
    mkdir -p "$dir/debs" "$dir/root"
    # chromium and the libraries it needs, as far as this machine lacks them.
    packages=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances chromium | grep '^[a-z0-9]' | sort -u)
    missing=()
    for p in $packages; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    (cd "$dir/debs" && apt-get download "${missing[@]}") || die "apt-get download failed; install chromium (apt-get install chromium)"
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    cat >"$dir/bin/chromium" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu:$dir/root/usr/lib/chromium\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root/usr/lib/chromium/chromium" "\$@"
WRAP
    chmod +x "$dir/bin/chromium"
fi
"$dir/bin/chromium" --headless --version
echo "$want" >"$stamp"
