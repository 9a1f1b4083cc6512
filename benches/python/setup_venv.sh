#!/usr/bin/env bash
# Create (once) a virtualenv holding Python Mitogen, the reference the Rust
# implementation is benchmarked against. Safe to run repeatedly: an existing
# venv that already imports mitogen is reused untouched.
#
# Usage: benches/python/setup_venv.sh
#   MITOGEN_PY_VENV  venv location, relative to the repo root (default target/py-venv)
#   PYTHON           interpreter used to create the venv (default python3)
#
# The last line printed is the venv's python, so callers can do
#   PY=$(benches/python/setup_venv.sh | tail -n1)
set -euo pipefail

MITOGEN_VERSION=0.3.54

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
venv="${MITOGEN_PY_VENV:-target/py-venv}"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
    mkdir -p "$(dirname "$venv")"
    "${PYTHON:-python3}" -m venv "$venv"
fi

if ! "$py" -c 'import mitogen' >/dev/null 2>&1; then
    pip_install() {
        "$py" -m pip install --quiet --disable-pip-version-check "$@"
    }
    # Pin the version so results stay comparable over time; fall back to the
    # newest release rather than failing if the pin ever disappears.
    if ! pip_install "mitogen==$MITOGEN_VERSION" 2>/dev/null; then
        echo "mitogen==$MITOGEN_VERSION unavailable, installing newest mitogen" >&2
        pip_install mitogen
    fi
fi

echo "$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"
