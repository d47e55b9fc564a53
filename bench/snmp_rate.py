"""SNMP GETs per second of ``SnmpProbe.sweep``, beside net-snmp's C library.

Starts private snmpd agents on loopback (tests/probes/snmpd.py: Debian's
snmpd, 127.0.0.2 and up, each on a free port), pins them to one CPU and this
process to another, then times:

1. ``SnmpProbe.sweep`` over ``--count`` targets spread over the agents, each
   one GET of sysUpTime.0 (v2c), ``[snmp] max_in_flight`` at its default;
2. the same with two uplink ports per target (three OIDs per GET);
3. the reference: a small C program on net-snmp's own library (libnetsnmp,
   the code behind snmpget), compiled here from the source below, sending the
   same GETs of sysUpTime.0 asynchronously (``snmp_async_send``) with the same
   number in flight, one session per agent, a 4 MB receive buffer;
4. SNMPv3 (SHA + AES) through the probe, on fewer targets: pysnmp's speed,
   for information only.

Retries are off everywhere (``retries = 0``), so every request or reply that
goes missing shows as a lost GET instead of being hidden by a retry. The
kernel's UDP receive-buffer drop counter (/proc/net/snmp, whole host) is shown
too. Each figure is the median of ``--runs`` runs; lost GETs are summed.
Target: at least 2,000 GETs a second with none lost.

    python -m bench.snmp_rate [--count N] [--agents N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from announcer.config import SnmpSettings
from announcer.probes.base import Target
from announcer.probes.snmp import SnmpProbe
from bench.common import cpu_model, table, verdict
from tests.probes.snmpd import Snmpd, find_snmpd, snmpd_version

TARGET_RATE = 2_000.0
TIMEOUT_MS = 2_000
V3_COUNT = 500

C_CLIENT = r"""
#include <net-snmp/net-snmp-config.h>
#include <net-snmp/net-snmp-includes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <time.h>

static oid uptime[] = {1, 3, 6, 1, 2, 1, 1, 3, 0};
static long remaining, outstanding, ok, lost;
static netsnmp_session *sessions[64];
static int nsessions, next_session;

static int on_reply(int op, netsnmp_session *s, int reqid, netsnmp_pdu *pdu, void *magic) {
    outstanding--;
    if (op == NETSNMP_CALLBACK_OP_RECEIVED_MESSAGE && pdu->errstat == SNMP_ERR_NOERROR
        && pdu->variables && pdu->variables->type == ASN_TIMETICKS)
        ok++;
    else
        lost++;
    return 1;
}

static void fill(long window) {
    while (remaining > 0 && outstanding < window) {
        netsnmp_pdu *pdu = snmp_pdu_create(SNMP_MSG_GET);
        snmp_add_null_var(pdu, uptime, OID_LENGTH(uptime));
        remaining--;
        if (snmp_async_send(sessions[next_session++ % nsessions], pdu, on_reply, NULL))
            outstanding++;
        else {
            snmp_free_pdu(pdu);
            lost++;
        }
    }
}

int main(int argc, char **argv) {
    /* count window timeout_ms community peer... */
    if (argc < 6 || argc - 5 > 64) return 2;
    long count = atol(argv[1]), window = atol(argv[2]), timeout_ms = atol(argv[3]);
    init_snmp("announcer-bench");
    for (int i = 5; i < argc; i++) {
        netsnmp_session s;
        snmp_sess_init(&s);
        s.version = SNMP_VERSION_2c;
        s.peername = argv[i];
        s.community = (u_char *)argv[4];
        s.community_len = strlen(argv[4]);
        s.timeout = timeout_ms * 1000;
        s.retries = 0;
        sessions[nsessions] = snmp_open(&s);
        if (!sessions[nsessions]) { snmp_perror("snmp_open"); return 1; }
        nsessions++;
    }
    struct timespec t0, t1;
    remaining = count;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fill(window);
    while (outstanding > 0) {
        int fds = 0, block = 1;
        fd_set fdset;
        struct timeval tv;
        FD_ZERO(&fdset);
        snmp_select_info(&fds, &fdset, &tv, &block);
        int n = select(fds, &fdset, NULL, NULL, block ? NULL : &tv);
        if (n > 0) snmp_read(&fdset);
        else if (n == 0) snmp_timeout();
        fill(window);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%ld %ld %.6f\n", ok, lost, seconds);
    for (int i = 0; i < nsessions; i++) snmp_close(sessions[i]);
    return 0;
}
"""


@dataclass
class Run:
    gets: int
    lost: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.gets / self.seconds if self.seconds > 0 else 0.0


def _rcvbuf_errors() -> int:
    """UDP datagrams the kernel dropped for a full receive buffer, whole host."""
    try:
        lines = Path("/proc/net/snmp").read_text(encoding="ascii").splitlines()
    except OSError:
        return -1
    udp = [line.split()[1:] for line in lines if line.startswith("Udp:")]
    if len(udp) < 2 or "RcvbufErrors" not in udp[0]:
        return -1
    return int(udp[1][udp[0].index("RcvbufErrors")])


def _pin(cpus: set[int], pid: int = 0) -> str:
    """Pin process ``pid`` (0: this one) to ``cpus``; says where it runs."""
    os.sched_setaffinity(pid, cpus)
    return "CPU " + ",".join(str(c) for c in sorted(cpus))


async def _probe_run(snmp: SnmpSettings, targets: Sequence[Target]) -> Run:
    probe = SnmpProbe(snmp)
    try:
        await probe.sweep(targets[:50])  # open the sockets, warm caches (v3: discovery)
        started = time.perf_counter()
        results = await probe.sweep(targets)
        seconds = time.perf_counter() - started
    finally:
        await probe.close()
    lost = sum(not r.alive for r in results)
    return Run(len(results) - lost, lost, seconds)


def _build_client(folder: Path) -> tuple[Path | None, str]:
    """(binary, "") or (None, why the reference cannot be built)."""
    if shutil.which("gcc") is None:
        return None, "gcc not found (apt-get install gcc)"
    if not Path("/usr/include/net-snmp/net-snmp-includes.h").exists():
        return None, "net-snmp headers not found (apt-get install libsnmp-dev)"
    source, binary = folder / "getrate.c", folder / "getrate"
    source.write_text(C_CLIENT, encoding="utf-8")
    done = subprocess.run(
        ["gcc", "-O2", "-o", str(binary), str(source), "-lnetsnmp"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode:
        return None, f"compiling the C client failed: {done.stderr.strip()[-500:]}"
    return binary, ""


def _c_run(binary: Path, folder: Path, agents: Sequence[Snmpd], count: int, window: int) -> Run:
    (folder / "snmp.conf").write_text("clientRecvBuf 4194304\n", encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SNMPCONFPATH": str(folder),
        "SNMP_PERSISTENT_DIR": str(folder / "persist"),
        "MIBDIRS": str(folder),
        "MIBS": "",
    }
    peers = [f"udp:{a.address}:{a.port}" for a in agents]
    command = [str(binary), str(count), str(window), str(TIMEOUT_MS), agents[0].community, *peers]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, check=False
    )
    if done.returncode:
        raise RuntimeError(f"C client failed: {done.stderr.strip()}")
    ok, lost, seconds = done.stdout.split()
    return Run(int(ok), int(lost), float(seconds))


def _row(name: str, runs: Sequence[Run], target: bool) -> list[str]:
    rate = statistics.median(r.rate for r in runs)
    lost = sum(r.lost for r in runs)
    gets = sum(r.gets + r.lost for r in runs)
    check = verdict(rate >= TARGET_RATE and lost == 0) if target else "(info)"
    return [name, f"{rate:,.0f}", f"{lost} of {gets:,}", check]


def _measure(
    agents: Sequence[Snmpd], folder: Path, count: int, repeat: int
) -> tuple[list[list[str]], int, str]:
    """(table rows, kernel drops during the v2c runs, why the reference did not run)."""
    profiles = {f"a{n}": a.v2c_profile() for n, a in enumerate(agents)}
    profiles |= {f"v{n}": a.v3_profile() for n, a in enumerate(agents)}
    snmp = SnmpSettings(timeout_ms=TIMEOUT_MS, retries=0, default_profile="a0", profiles=profiles)
    n = len(agents)
    plain = [Target(f"sw-{i}", agents[i % n].address, f"a{i % n}") for i in range(count)]
    uplinks = [Target(t.switch, t.address, t.snmp_profile, uplink_ports=(1, 1)) for t in plain]
    v3 = [
        Target(f"sw-{i}", agents[i % n].address, f"v{i % n}") for i in range(min(V3_COUNT, count))
    ]
    binary, why = _build_client(folder)

    rows: list[list[str]] = []
    drops_before = _rcvbuf_errors()
    runs = [asyncio.run(_probe_run(snmp, plain)) for _ in range(repeat)]
    rows.append(_row("SnmpProbe v2c, sysUpTime.0", runs, target=True))
    runs = [asyncio.run(_probe_run(snmp, uplinks)) for _ in range(repeat)]
    rows.append(_row("SnmpProbe v2c, sysUpTime.0 + 2 ifOperStatus", runs, target=True))
    if binary is not None:
        window = snmp.max_in_flight
        runs = [_c_run(binary, folder, agents, count, window) for _ in range(repeat)]
        rows.append(_row("net-snmp C library (async), sysUpTime.0", runs, target=False))
    drops = _rcvbuf_errors() - drops_before if drops_before >= 0 else -1
    runs = [asyncio.run(_probe_run(snmp, v3))]
    rows.append(_row(f"SnmpProbe v3 SHA+AES (pysnmp), {len(v3)} GETs", runs, target=False))
    return rows, drops, why


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="GETs per run (10,000)")
    parser.add_argument("--agents", type=int, default=2, help="snmpd agents (2, at most 50)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (3)")
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= 50 or not 1 <= args.count <= 1_000_000 or not 1 <= args.runs <= 20:
        parser.error("expected 1-50 agents, 1-1,000,000 GETs and 1-20 runs")
    if find_snmpd() is None:
        print("snmpd not found: apt-get install snmpd", file=sys.stderr)
        return 1

    cpus = sorted(os.sched_getaffinity(0))
    print(f"machine: nproc {len(cpus)}, {cpu_model()}, {platform.system()} {platform.release()}")
    print(f"python:  {platform.python_implementation()} {platform.python_version()}")
    print(f"snmpd:   {snmpd_version()}")
    agents = [Snmpd(address=f"127.0.0.{n + 2}") for n in range(args.agents)]
    folder = Path(tempfile.mkdtemp(prefix="announcer-bench-snmp-"))
    try:
        agent_pinned = "not pinned"
        for agent in agents:
            agent.start()
            if agent.pid is not None:
                agent_pinned = _pin({cpus[-1]}, agent.pid)
        client_pinned = _pin({cpus[0]})
        print(
            f"setup:   {args.agents} snmpd agent(s) on 127.0.0.2.. ({agent_pinned}); this"
            f" process and the C client on {client_pinned}; {args.count:,} GETs a run,"
            f" {args.runs} runs, timeout {TIMEOUT_MS} ms, no retries,"
            f" {SnmpSettings().max_in_flight} in flight ([snmp] max_in_flight default)"
        )
        rows, drops, why = _measure(agents, folder, args.count, args.runs)
    finally:
        for agent in agents:
            agent.close()
        shutil.rmtree(folder, ignore_errors=True)

    print()
    for line in table(rows, ["what", "GETs/s (median)", "lost", f"target >= {TARGET_RATE:,.0f}/s"]):
        print(line)
    print()
    if why:
        print(f"reference not run: {why}")
    shown = "unreadable" if drops < 0 else str(drops)
    print(f"kernel UDP receive-buffer drops during the v2c runs (whole host): {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
