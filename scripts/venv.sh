#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: makes .venv with announcer and its
# development tools installed, and reinstalls when pyproject.toml changes.
set -euo pipefail

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "announcer needs Python 3.11 or newer as $python (set PYTHON=... to choose one)" >&2
    exit 1
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    bash scripts/system-packages.sh python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.announcer-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing announcer and its Python dependencies into .venv"
    log=.venv/pip.log
    if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
        .venv/bin/python -m pip install --disable-pip-version-check -e ".[dev]"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "installing the Python dependencies failed; the log is above and in $log" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
fi
