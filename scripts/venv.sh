#!/usr/bin/env bash
# Create (or reuse) the project's Python virtual environment and print its python.
#
#   PY=$(scripts/venv.sh)
#
# The venv lives in $DEED_VENV (default: .venv at the repository root). Packages are
# installed only when scripts/requirements.txt changed since the last successful
# install, tracked by a stamp file holding the hash of the requirements. All progress
# goes to stderr so that stdout is exactly the python path.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DEED_VENV:-$repo/.venv}"
req="$repo/scripts/requirements.txt"
stamp="$venv/.deed-requirements.sha256"
host_python="${PYTHON:-python3}"

if ! command -v "$host_python" >/dev/null 2>&1; then
    echo "venv.sh: '$host_python' not found; install Python 3.10+ or set PYTHON" >&2
    exit 1
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "venv.sh: creating $venv" >&2
    "$host_python" -m venv "$venv" >&2
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    echo "venv.sh: installing $req into $venv" >&2
    start=$SECONDS
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input -r "$req" >&2
    # Written only after pip succeeded, so a failed install is retried next time.
    echo "$want" >"$stamp"
    echo "venv.sh: installed in $((SECONDS - start)) s" >&2
fi

echo "$venv/bin/python"
