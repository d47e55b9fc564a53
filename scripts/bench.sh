#!/usr/bin/env bash
# Every benchmark, each printing its figures beside its reference. Installs
# what the references need (fping; net-snmp's library and a C compiler for
# the SNMP reference client). Needs root: raw ICMP, iptables and the Asterisk
# chroot (dialplan_delay and astdb_mirror build it when it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-packages.sh redis-server iptables iproute2 snmpd fping gcc libsnmp-dev ffmpeg espeak-ng
. scripts/venv.sh

for bench in inventory_import lookup icmp_sweep snmp_rate detection end_to_end drop_to_live mass_outage fastagi dialplan_delay astdb_mirror resources failover; do
    echo "== bench.$bench"
    .venv/bin/python -m "bench.$bench"
    echo
done
