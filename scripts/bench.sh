#!/usr/bin/env bash
# Every benchmark, each printing its figures beside its reference. Installs
# what the references need (fping; net-snmp's library and a C compiler for
# the SNMP reference client). Needs root: raw ICMP and iptables.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-packages.sh redis-server iptables iproute2 snmpd fping gcc libsnmp-dev ffmpeg espeak-ng
. scripts/venv.sh

for bench in inventory_import lookup icmp_sweep snmp_rate detection drop_to_live mass_outage fastagi; do
    echo "== bench.$bench"
    .venv/bin/python -m "bench.$bench"
    echo
done
