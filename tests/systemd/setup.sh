#!/usr/bin/env bash
# Provide systemd-analyze for the unit file's test.
#
#   tests/systemd/setup.sh CACHE_DIR      (the Rust tests pass <repo>/target/systemd)
#
# Leaves CACHE_DIR/bin/systemd-analyze runnable: the system's when there is one on PATH,
# otherwise Debian's `systemd` package downloaded with `apt-get download` and unpacked under
# CACHE_DIR with `dpkg-deb -x` (no root, nothing installed system-wide; as root it runs
# `apt-get update` first if the package lists are missing). Idempotent, safe to run
# concurrently; output on stderr; exit status 1 on failure.
set -Eeuo pipefail

die() {
    echo "tests/systemd/setup.sh: error: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: setup.sh CACHE_DIR"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1" || die "cannot create cache dir $1"
dir=$(cd "$1" && pwd)
stamp="$dir/.setup-stamp"
want=$(sha256sum "$here/setup.sh" | cut -d' ' -f1)

ready() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$dir/bin/systemd-analyze" --version >/dev/null 2>&1
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

if system=$(command -v systemd-analyze); then
    echo "tests/systemd/setup.sh: using $system"
    ln -s "$system" "$dir/bin/systemd-analyze"
else
    command -v apt-get >/dev/null || die "no systemd-analyze on PATH and no apt-get to fetch Debian's"
    mkdir -p "$dir/debs" "$dir/root"
    fetch() { (cd "$dir/debs" && apt-get download systemd); }
    if ! fetch; then
        [ "$(id -u)" = 0 ] || die "apt-get download failed; install systemd (apt-get install systemd)"
        apt-get update
        fetch
    fi
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    cat >"$dir/bin/systemd-analyze" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu/systemd\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root/usr/bin/systemd-analyze" "\$@"
WRAP
    chmod +x "$dir/bin/systemd-analyze"
fi
"$dir/bin/systemd-analyze" --version | head -1
echo "$want" >"$stamp"
