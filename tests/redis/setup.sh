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
if ! link_system redis-server; then
    command -v apt-get >/dev/null || die "no redis-server on PATH and no apt-get to fetch Debian's"
    unpack_debs redis-server redis-tools libjemalloc2 liblzf1
    wrap_unpacked redis-server /usr/bin/redis-server /usr/lib/x86_64-linux-gnu
fi
"$dir/bin/redis-server" --version
provide_done
