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
if ! link_system systemd-analyze; then
    command -v apt-get >/dev/null || die "no systemd-analyze on PATH and no apt-get to fetch Debian's"
    unpack_debs systemd
    wrap_unpacked systemd-analyze /usr/bin/systemd-analyze /usr/lib/x86_64-linux-gnu/systemd
fi
"$dir/bin/systemd-analyze" --version | head -1
provide_done
