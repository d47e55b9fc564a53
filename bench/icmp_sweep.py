"""How fast ``IcmpProbe.sweep`` pings 10,000 loopback addresses, beside fping.

Two cases on the same list, 127.1.0.0 to 127.1.39.15: (a) every address
answers; (b) four /24s spread over the list (1,024 addresses, 10.2 %) are
silenced by an iptables INPUT rule on echo requests, in chains of the
benchmark's own that are removed afterwards, even on error
(``announcer/demo/firewall.py``). The reference, measured in the same run on the
same list, is ``fping -c1 -t1000 -i0 -q``: its wall time, and the hosts its
summary counts as answering.

fping's ``-i0`` does not pace its requests, so the compared sweeps run with
``rate_pps`` at its maximum (1,000,000); one more sweep at the default rate is
shown for information. Rounds alternate fping and the probe; medians are
compared. The probe's first sweep (which also plans the addresses) is shown on
its own; the rounds reuse one probe, as the daemon does.

    sudo .venv/bin/python -m bench.icmp_sweep [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from announcer.config import IcmpSettings
from announcer.demo.firewall import Firewall, missing
from announcer.probes.base import Target, Verdict
from announcer.probes.icmp import IcmpProbe
from bench.common import table, verdict

COUNT = 10_000
FIRST = ipaddress.IPv4Address("127.1.0.0")
SILENT_NETWORKS = ("127.1.5.0/24", "127.1.15.0/24", "127.1.25.0/24", "127.1.35.0/24")
TIMEOUT_MS = 1000
TARGET_RATIO = 1.5
FPING_LINE = re.compile(r"^(\S+)\s*: xmt/rcv/%loss = (\d+)/(\d+)/", re.MULTILINE)


@dataclass
class Run:
    wall_s: float
    cpu_s: float | None
    alive: int


def machine_lines() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return [
        f"machine: nproc {len(os.sched_getaffinity(0))}, {cpu},"
        f" {platform.system()} {platform.release()}",
        f"python:  {platform.python_implementation()} {platform.python_version()}",
    ]


def fping_version(fping: str) -> str:
    done = subprocess.run([fping, "-v"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def run_fping(fping: str, addresses_file: Path) -> Run:
    command = [fping, "-c1", f"-t{TIMEOUT_MS}", "-i0", "-q", "-f", str(addresses_file)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some hosts did not answer
        raise RuntimeError(f"fping exited {done.returncode}: {done.stderr[-500:]}")
    alive = sum(1 for m in FPING_LINE.finditer(done.stderr) if int(m.group(3)) > 0)
    return Run(wall, None, alive)


async def run_probe(probe: IcmpProbe, targets: Sequence[Target]) -> Run:
    cpu, start = time.process_time(), time.perf_counter()
    results = await probe.sweep(targets)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(results) == len(targets)
    return Run(wall, cpu, sum(1 for r in results if r.verdict is Verdict.ALIVE))


async def measure(
    label: str,
    expected: int,
    rounds: int,
    fping: str,
    addresses_file: Path,
    targets: Sequence[Target],
) -> tuple[list[list[str]], bool]:
    fast = IcmpProbe(IcmpSettings(timeout_ms=TIMEOUT_MS, rate_pps=1_000_000))
    try:
        first = await run_probe(fast, targets)
        fpings: list[Run] = []
        sweeps: list[Run] = []
        for _ in range(rounds):
            fpings.append(run_fping(fping, addresses_file))
            sweeps.append(await run_probe(fast, targets))
    finally:
        await fast.close()
    paced = IcmpProbe(IcmpSettings(timeout_ms=TIMEOUT_MS))
    try:
        await run_probe(paced, targets)  # its first sweep plans the addresses
        default = await run_probe(paced, targets)
    finally:
        await paced.close()

    def alive(runs: Sequence[Run]) -> str:
        counts = sorted({r.alive for r in runs})
        return "/".join(f"{c:,}" for c in counts) + (" (varies)" if len(counts) > 1 else "")

    fping_wall = statistics.median(r.wall_s for r in fpings)
    probe_wall = statistics.median(r.wall_s for r in sweeps)
    probe_cpu = statistics.median(r.cpu_s or 0.0 for r in sweeps)
    every_host = all(r.alive == expected for r in [first, *sweeps, default])
    ratio = probe_wall / fping_wall
    ok = ratio <= TARGET_RATIO and every_host
    rows = [
        [label, f"fping -i0, median of {rounds}", f"{fping_wall:.3f}", "-", alive(fpings), "-"],
        [
            label,
            f"IcmpProbe 1M pps, median of {rounds}",
            f"{probe_wall:.3f}",
            f"{probe_cpu:.3f}",
            alive(sweeps),
            f"{ratio:.2f}x fping: {verdict(ok)}",
        ],
        [
            label,
            "IcmpProbe 1M pps, first sweep",
            f"{first.wall_s:.3f}",
            f"{first.cpu_s or 0.0:.3f}",
            f"{first.alive:,}",
            "(plans the addresses)",
        ],
        [
            label,
            "IcmpProbe default 20k pps",
            f"{default.wall_s:.3f}",
            f"{default.cpu_s or 0.0:.3f}",
            f"{default.alive:,}",
            "(paced; no target)",
        ],
    ]
    if not every_host:
        rows.append([label, f"expected {expected:,} alive in every sweep", "", "", "", "MISS"])
    return rows, ok


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (default 5)")
    args = parser.parse_args(argv)
    rounds = max(1, min(args.rounds, 50))

    for line in machine_lines():
        print(line)
    if os.geteuid() != 0:
        print("needs root: raw ICMP sockets and iptables", file=sys.stderr)
        return 2
    fping = shutil.which("fping")
    if fping is None:
        print("needs fping: apt-get install fping", file=sys.stderr)
        return 2
    reason = missing()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    probe = IcmpProbe(IcmpSettings())
    print(f"probe:   {probe.description}; timeout_ms {TIMEOUT_MS}")
    await probe.close()
    print(f"fping:   {fping_version(fping)} ({fping} -c1 -t{TIMEOUT_MS} -i0 -q)")
    addresses = [str(FIRST + i) for i in range(COUNT)]
    silent = {str(a) for n in SILENT_NETWORKS for a in ipaddress.ip_network(n)}
    silent &= set(addresses)
    print(
        f"list:    {COUNT:,} addresses {addresses[0]} .. {addresses[-1]};"
        f" (b) silences {len(silent):,} ({len(silent) / COUNT:.1%}): {', '.join(SILENT_NETWORKS)}"
    )
    print(f"target:  probe median wall <= {TARGET_RATIO}x fping's, every live host counted\n")

    targets = [Target(f"sw-{a}", a) for a in addresses]
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as folder:
        addresses_file = Path(folder) / "addresses.txt"
        addresses_file.write_text("\n".join(addresses) + "\n", encoding="ascii")
        got, ok_a = await measure("(a) all alive", COUNT, rounds, fping, addresses_file, targets)
        rows += got
        with Firewall() as firewall:
            firewall.drop_echo_requests(SILENT_NETWORKS)
            expected = COUNT - len(silent)
            got, ok_b = await measure(
                "(b) 10 % silent", expected, rounds, fping, addresses_file, targets
            )
            rows += got
    head = ["case", "what", "wall s", "cpu s", "alive", "vs target"]
    for line in table(rows, head):
        print(line)
    print(f"\nresult: {verdict(ok_a and ok_b)}")
    return 0 if ok_a and ok_b else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
