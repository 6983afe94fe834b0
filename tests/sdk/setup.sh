#!/usr/bin/env bash
# Install the pinned Alpaca SDKs used by tickrelay's SDK compatibility tests.
#
#   tests/sdk/setup.sh CACHE_DIR        (the Rust tests pass <repo>/target/sdk)
#
# Creates, all under CACHE_DIR (nothing global):
#   venv-py/    alpaca-py         (pins: requirements-py.txt)
#   venv-atap/  alpaca-trade-api  (pins: requirements-atap.txt; its own venv because
#                                  it pins websockets<11 and msgpack==1.0.3)
#   node/       npm ci of package.json + package-lock.json: @alpacahq/alpaca-trade-api
#               3.1.3 as "alpaca-v3" and 4.0.2 as "alpaca-v4"
#
# Idempotent: .setup-stamp holds a hash of this script and the pin files; when it
# matches, the script returns at once. Safe to run concurrently (flock on
# CACHE_DIR/.setup.lock). All output goes to stderr. Exit status 1 on failure.
# Env: PYTHON (default python3, needs >= 3.10), NPM (default npm; node >= 20).
set -Eeuo pipefail

die() {
    echo "tests/sdk/setup.sh: error: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: setup.sh CACHE_DIR"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1" || die "cannot create cache dir $1"
dir=$(cd "$1" && pwd)
stamp="$dir/.setup-stamp"
want=$(cd "$here" && cat setup.sh requirements-py.txt requirements-atap.txt package.json package-lock.json | sha256sum | cut -d' ' -f1)

ready() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
        [ -x "$dir/venv-py/bin/python" ] && [ -x "$dir/venv-atap/bin/python" ] &&
        [ -d "$dir/node/node_modules" ]
}

ready && exit 0

exec 1>&2   # everything below, including pip/npm output, goes to stderr
exec 9>"$dir/.setup.lock"
if ! flock -n 9; then
    echo "tests/sdk/setup.sh: another setup.sh is installing into $dir; waiting"
    flock -w 1800 9 || die "timed out waiting for the lock on $dir/.setup.lock"
fi
ready && exit 0   # another process finished the install while we waited

trap 'die "install failed (line $LINENO); see the output above"' ERR
start=$SECONDS
rm -f "$stamp"

python=${PYTHON:-python3}
npm=${NPM:-npm}
command -v "$python" >/dev/null || die "$python not found (set PYTHON=/path/to/python3.10+)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$python is $("$python" --version 2>&1); alpaca-py needs Python >= 3.10"
"$python" -c 'import venv, ensurepip' 2>/dev/null ||
    die "$python cannot create venvs (on Debian: apt-get install python3-venv)"
command -v "$npm" >/dev/null || die "npm not found (set NPM=...)"
command -v node >/dev/null || die "node not found"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
    die "node $(node --version) is too old; @alpacahq/alpaca-trade-api 4.x needs node >= 20"

make_venv() { # NAME REQUIREMENTS_FILE IMPORT_CHECK
    local venv="$dir/$1"
    echo "tests/sdk/setup.sh: creating $venv from $2"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --no-input -q -r "$here/$2"
    "$venv/bin/python" -c "$3"
    echo "tests/sdk/setup.sh: $1 ready ($((SECONDS - start))s so far)"
}

make_venv venv-py requirements-py.txt \
    'import alpaca.data.live, alpaca.trading.stream, websockets, msgpack'
make_venv venv-atap requirements-atap.txt \
    'import alpaca_trade_api.stream, websockets, msgpack'

echo "tests/sdk/setup.sh: npm ci in $dir/node"
rm -rf "$dir/node"
mkdir -p "$dir/node"
cp "$here/package.json" "$here/package-lock.json" "$dir/node/"
(cd "$dir/node" && "$npm" ci --no-audit --no-fund --loglevel=error)
(cd "$dir/node" && node -e 'require("alpaca-v3"); require("alpaca-v4").Alpaca')

echo "$want" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
echo "tests/sdk/setup.sh: SDKs installed in $dir in $((SECONDS - start))s"
