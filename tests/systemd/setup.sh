#!/usr/bin/env bash
# Provide systemd-analyze for the unit file's test.
#
#   tests/systemd/setup.sh CACHE_DIR      (the Rust tests pass <repo>/target/systemd)
#
# Leaves CACHE_DIR/bin/systemd-analyze runnable: the system's when there is one on PATH,
# otherwise Debian's `systemd` package downloaded with `apt-get download` and unpacked under
# CACHE_DIR with `dpkg-deb -x` (no root, nothing installed system-wide). Idempotent and safe to
# run concurrently (see tests/provide.sh); output on stderr; exit status 1 on failure.
set -Eeuo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../provide.sh"
ready() { "$dir/bin/systemd-analyze" --version; }
provide_begin tests/systemd/setup.sh "${1:-}"

rm -rf "$dir/bin"
mkdir -p "$dir/bin"
if system=$(command -v systemd-analyze); then
    echo "tests/systemd/setup.sh: using $system"
    ln -s "$system" "$dir/bin/systemd-analyze"
else
    command -v apt-get >/dev/null || die "no systemd-analyze on PATH and no apt-get to fetch Debian's"
    unpack_debs systemd
    cat >"$dir/bin/systemd-analyze" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu/systemd\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root/usr/bin/systemd-analyze" "\$@"
WRAP
    chmod +x "$dir/bin/systemd-analyze"
fi
"$dir/bin/systemd-analyze" --version | head -1
provide_done
