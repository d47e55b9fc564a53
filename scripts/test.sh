#!/usr/bin/env bash
# The whole test suite on Debian 12, from a fresh clone: installs what is
# missing (Debian packages, a virtualenv), starts the databases the billing
# tests need, then runs the linters, the type checker and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-packages.sh redis-server postgresql mariadb-server \
    iptables iputils-ping iproute2 snmpd ffmpeg espeak-ng
bash scripts/databases.sh
. scripts/venv.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest "$@"
