#!/usr/bin/env bash
# Provide headless Chromium for the dashboard's test.
#
#   tests/browser/setup.sh CACHE_DIR     (the Rust tests pass <repo>/target/chromium)
#
# Leaves CACHE_DIR/bin/chromium runnable: the system's chromium when there is one on PATH; as
# root, Debian's `chromium` package installed with apt-get; otherwise the package and every
# library this machine lacks downloaded with `apt-get download` and unpacked under CACHE_DIR
# with `dpkg-deb -x` (nothing installed system-wide, no root needed). Idempotent and safe to run
# concurrently (see tests/provide.sh); output on stderr; exit status 1 on failure.
set -Eeuo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../provide.sh"
ready() { "$dir/bin/chromium" --headless --version; }
provide_begin tests/browser/setup.sh "${1:-}"

rm -rf "$dir/bin"
mkdir -p "$dir/bin"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null &&
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/browser/setup.sh: installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium || {
        apt-get update
        apt-get install -y --no-install-recommends chromium
    }
fi
if ! link_system chromium && ! link_system chromium-browser chromium; then
    command -v apt-get >/dev/null || die "no chromium on PATH and no apt-get to fetch Debian's"
    # chromium and the libraries it needs, as far as this machine lacks them.
    missing=()
    for p in $(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances chromium | grep '^[a-z0-9]' | sort -u); do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    unpack_debs "${missing[@]}"
    wrap_unpacked chromium /usr/lib/chromium/chromium /usr/lib/x86_64-linux-gnu:/usr/lib/chromium
fi
"$dir/bin/chromium" --headless --version
provide_done
