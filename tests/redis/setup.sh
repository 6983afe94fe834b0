#!/usr/bin/env bash
# Provide a redis-server for tickrelay's Redis tests.
#
#   tests/redis/setup.sh CACHE_DIR        (the Rust tests pass <repo>/target/redis)
#
# Leaves CACHE_DIR/bin/redis-server runnable: the system's redis-server when there is one on
# PATH, otherwise Debian's packages (redis-server, redis-tools and the two libraries they need)
# downloaded with `apt-get download` and unpacked under CACHE_DIR with `dpkg-deb -x` — nothing is
# installed system-wide and no root is needed. Idempotent and safe to run concurrently (see
# tests/provide.sh); output on stderr; exit status 1 on failure.
set -Eeuo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../provide.sh"
ready() { "$dir/bin/redis-server" --version; }
provide_begin tests/redis/setup.sh "${1:-}"

rm -rf "$dir/bin"
mkdir -p "$dir/bin"
if system=$(command -v redis-server); then
    echo "tests/redis/setup.sh: using $system"
    ln -s "$system" "$dir/bin/redis-server"
else
    command -v apt-get >/dev/null || die "no redis-server on PATH and no apt-get to fetch Debian's"
    unpack_debs redis-server redis-tools libjemalloc2 liblzf1
    cat >"$dir/bin/redis-server" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root/usr/bin/redis-server" "\$@"
WRAP
    chmod +x "$dir/bin/redis-server"
fi
"$dir/bin/redis-server" --version
provide_done
