#!/usr/bin/env bash
# The live demo on Debian 12, from a fresh clone: installs what is missing
# (that needs root), then runs `announcer demo` (a private Redis and a simulated
# city, until Ctrl-C), which itself needs no root. Arguments go to the demo:
# scripts/demo.sh --scenes 6
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-packages.sh redis-server ffmpeg espeak-ng
. scripts/venv.sh
exec .venv/bin/announcer demo "$@"
