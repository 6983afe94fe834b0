#!/usr/bin/env bash
# Provide an OCI engine and the Dockerfile's base images for the image tests, without Docker's
# daemon and without an image registry.
#
#   tests/image/setup.sh CACHE_DIR     (the Rust tests pass <repo>/target/image)
#
# Needs root and apt-get (Debian): installs Debian's podman, runc and mmdebstrap when missing.
# Then makes, once, the two base images the Dockerfile names from Debian's packages and tags them
# with the official names, so the committed Dockerfile builds unchanged with --pull=never:
#   docker.io/library/debian:bookworm-slim   mmdebstrap --variant=minbase bookworm
#   docker.io/library/rust:1-slim-bookworm   the same plus gcc, libc6-dev, ca-certificates and
#                                            binutils, and this machine's stable Rust toolchain
# Everything podman keeps (images, layers, the build cache) lives under CACHE_DIR, so later runs
# reuse it. Leaves CACHE_DIR/bin/podman: podman with that storage, runc and cgroupfs (crun and
# systemd cgroups do not work on every machine this runs on). Idempotent and safe to run
# concurrently (see tests/provide.sh); output on stderr; exit status 1 on failure.
set -Eeuo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../provide.sh"
# The toolchain copied into the build image: the stable one (a new release makes the image again).
toolchain() { rustc +stable --print sysroot 2>/dev/null || rustc --print sysroot; }
ready() {
    "$dir/bin/podman" image exists docker.io/library/debian:bookworm-slim &&
        "$dir/bin/podman" image exists docker.io/library/rust:1-slim-bookworm &&
        [ "$("$dir/bin/podman" image inspect --format '{{index .Labels "rustc"}}' \
            docker.io/library/rust:1-slim-bookworm)" = "$("$(toolchain)/bin/rustc" --version)" ]
}
provide_begin tests/image/setup.sh "${1:-}"

[ "$(id -u)" = 0 ] || die "the image tests need root (podman builds with chroot isolation as root)"
command -v apt-get >/dev/null || die "the image tests need Debian's podman, runc and mmdebstrap (apt-get)"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null; then
    echo "tests/image/setup.sh: installing Debian's podman, runc and mmdebstrap"
    export DEBIAN_FRONTEND=noninteractive
    packages=(podman runc mmdebstrap)
    apt-get install -y --no-install-recommends "${packages[@]}" || {
        apt-get update
        apt-get install -y --no-install-recommends "${packages[@]}"
    }
fi

mkdir -p "$dir/bin" "$dir/storage" "$dir/run" "$dir/tmp"
cat >"$dir/containers.conf" <<'CONF'
[containers]
# The host's limits are not copied in: --ulimit sets what a container gets.
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
CONF
cat >"$dir/bin/podman" <<WRAP
#!/bin/sh
export CONTAINERS_CONF="$dir/containers.conf" TMPDIR="$dir/tmp"
exec podman --root "$dir/storage" --runroot "$dir/run" "\$@"
WRAP
chmod +x "$dir/bin/podman"

# The Debian mirror apt uses here (a proxy or a snapshot, if the machine has one).
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 || true)
mirror=${mirror:-$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}

if ! "$dir/bin/podman" image exists docker.io/library/debian:bookworm-slim; then
    echo "tests/image/setup.sh: making debian:bookworm-slim from $mirror"
    mmdebstrap --variant=minbase bookworm "$dir/tmp/runtime.tar" "$mirror"
    "$dir/bin/podman" import "$dir/tmp/runtime.tar" docker.io/library/debian:bookworm-slim
    rm -f "$dir/tmp/runtime.tar"
fi

if ! ready; then
    toolchain=$(toolchain) || die "no Rust toolchain to copy into the build image"
    version=$("$toolchain/bin/rustc" --version)
    echo "tests/image/setup.sh: making rust:1-slim-bookworm with the toolchain in $toolchain"
    mmdebstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates,binutils \
        --customize-hook="mkdir -p \"\$1/usr/local/rust\" && tar -C \"$toolchain\" --exclude=./share -cf - . | tar -C \"\$1/usr/local/rust\" -xf -" \
        bookworm "$dir/tmp/build.tar" "$mirror"
    "$dir/bin/podman" import \
        --change 'ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change "LABEL rustc=\"$version\"" \
        "$dir/tmp/build.tar" docker.io/library/rust:1-slim-bookworm
    rm -f "$dir/tmp/build.tar"
fi
ready
provide_done
