"""Resources: ``announcer run`` watching 10,000 switches for 1,000,000 subscribers, beside fping.

Imports a synthetic city (``bench.synthetic``: by default 10,000 switches on
127.1.0.1 .. 127.1.39.16, which answer pings on Linux without any setup, 50
districts, 1,000,000 subscribers) into a private Redis with the real import
path (not measured), then starts ``announcer run`` as a real process
(``tests/daemon.py``) with the default settings apart from what a test machine
needs (``bench.end_to_end.Daemon``: the private Redis and the benchmark
prefix, sounds and spool in a temporary folder, ``tts = "espeak"``, FastAGI
and the metrics on free ports; AMI stays off, as by default). After a
warm-up (its first sweep written, ``--warmup`` seconds since its start) it
samples ``/proc/PID/status`` (VmRSS, VmHWM) every second and
``/proc/PID/stat`` (utime + stime) at both ends of a ``--seconds`` window:
the average CPU in % of one core, the peak RSS in the window, the RSS at
its end and the high-water mark since start. The daemon's own pulse (``P:poller``) shows the
sweeps it did meanwhile.

The reference, in the same window: ``fping -c1`` over the same addresses at
the same cadence and pace (one sweep every ``[icmp] interval_s``, requests
``1000 / [icmp] rate_pps`` ms apart, ``-t`` ``[icmp] timeout_ms``), its CPU
from the children's rusage. Running beside the daemon, fping's raw socket
also receives the daemon's echo traffic (the daemon's sockets filter in the
kernel, fping's do not), so a few fping sweeps alone, before the daemon
starts, are shown too. Redis's own CPU (``INFO cpu``) is shown for context.

Needs root (raw ICMP) and fping. Only 127.0.0.0/8 addresses are probed.

    sudo .venv/bin/python -m bench.resources [--seconds N] [--warmup N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from announcer.config import IcmpSettings
from announcer.store import StateStore
from bench import synthetic
from bench.astdb_mirror import cpu_of
from bench.common import info, load_average, sync_client, table, verdict, workspace
from bench.end_to_end import Daemon
from bench.inventory_import import generate_and_import
from tests.asterisk.sandbox import free_tcp_port

TARGET_RSS_MB = 200.0
TARGET_CPU = 15.0
SAMPLE_S = 1.0
#: fping sweeps alone, back to back, before the daemon starts.
ALONE_SWEEPS = 5
MB = 1024 * 1024


@dataclass
class Memory:
    """The daemon's memory, sampled through the window."""

    rss: list[int] = field(default_factory=list)
    """VmRSS in bytes, once a second"""
    hwm: int = 0
    """VmHWM in bytes at the end: the peak since the process started"""


@dataclass
class Pulse:
    """The daemon's sweeps seen in ``P:poller`` during the window."""

    ats: set[str] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)
    alive: list[int] = field(default_factory=list)


@dataclass
class Fping:
    """fping's sweeps: how many, their wall times, their exit statuses."""

    walls: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    late: int = 0
    """sweeps that started late because the one before overran the interval"""


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of process ``pid``, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have been waited for."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def redis_cpu_s(url: str) -> float:
    with sync_client(url) as client:
        cpu = info(client, "cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def fping_command(fping: str, addresses: Path, icmp: IcmpSettings) -> list[str]:
    pace_ms = 1000 / icmp.rate_pps
    return [fping, "-c1", f"-t{icmp.timeout_ms}", f"-i{pace_ms:g}", "-q", "-f", str(addresses)]


async def fping_sweep(command: Sequence[str]) -> tuple[float, int]:
    """One fping run; its wall time and exit status (1: some host did not answer)."""
    start = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return time.monotonic() - start, status


async def fping_every(command: Sequence[str], interval: float, seconds: float) -> Fping:
    """fping once every ``interval`` for ``seconds``, on a drift-free beat."""
    runs = Fping()
    begun = time.monotonic()
    tick = 0
    while (due := begun + tick * interval) < begun + seconds:
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            runs.late += tick > 0
        wall, status = await fping_sweep(command)
        runs.walls.append(wall)
        runs.statuses.append(status)
        tick = max(tick + 1, int((time.monotonic() - begun) // interval))
    return runs


async def sample(daemon: Daemon, pid: int, seconds: float, memory: Memory, pulse: Pulse) -> None:
    """The daemon's RSS and pulse once every ``SAMPLE_S`` for ``seconds``."""
    store = StateStore(daemon.client, daemon.keys)
    end = time.monotonic() + seconds
    while True:
        daemon.check_running()
        memory.rss.append(memory_of(pid)["VmRSS"])
        beat = await store.poller()
        if beat.get("at") and beat["at"] not in pulse.ats:
            pulse.ats.add(beat["at"])
            pulse.durations.append(float(beat["duration_s"]))
            pulse.alive.append(int(beat["alive"]))
        left = end - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(SAMPLE_S, left))
    memory.hwm = memory_of(pid)["VmHWM"]


@dataclass
class Window:
    seconds: float
    daemon_cpu_s: float
    fping_cpu_s: float
    redis_cpu_s: float
    memory: Memory
    pulse: Pulse
    fping: Fping
    alone_cpu_s: float
    """fping alone: CPU seconds per sweep"""
    started_s: float
    """the daemon's start to its first sweep written"""


async def measure(
    folder: Path, url: str, switches: int, addresses: Path, fping: str, args: argparse.Namespace
) -> Window:
    icmp = IcmpSettings()
    command = fping_command(fping, addresses, icmp)
    before = children_cpu_s()
    for _ in range(ALONE_SWEEPS):
        await fping_sweep(command)
    alone = (children_cpu_s() - before) / ALONE_SWEEPS
    daemon = Daemon(folder, url, free_tcp_port())
    try:
        started = await daemon.start(switches)
        assert daemon.process is not None
        pid = daemon.process.pid
        print(
            f"announcer run: pid {pid}, FastAGI on 127.0.0.1:{daemon.port}, every switch"
            f" swept {started:.1f} s after start; warm-up until {args.warmup:g} s, then"
            f" {args.seconds:g} s measured",
            flush=True,
        )
        await asyncio.sleep(max(0.0, args.warmup - started))
        memory, pulse = Memory(), Pulse()
        cpu, redis, children = cpu_of(pid), redis_cpu_s(url), children_cpu_s()
        begun = time.monotonic()
        runs, _ = await asyncio.gather(
            fping_every(command, icmp.interval_s, args.seconds),
            sample(daemon, pid, args.seconds, memory, pulse),
        )
        seconds = time.monotonic() - begun
        return Window(
            seconds,
            cpu_of(pid) - cpu,
            children_cpu_s() - children,
            redis_cpu_s(url) - redis,
            memory,
            pulse,
            runs,
            alone,
            started,
        )
    finally:
        await daemon.stop()


def report(w: Window, switches: int) -> list[str]:
    icmp = IcmpSettings()
    daemon_cpu = w.daemon_cpu_s / w.seconds * 100
    peak, end, hwm = max(w.memory.rss) / MB, w.memory.rss[-1] / MB, w.memory.hwm / MB
    rss_ok, cpu_ok = hwm <= TARGET_RSS_MB, daemon_cpu <= TARGET_CPU
    fping_label = (
        f"fping -c1 -i{1000 / icmp.rate_pps:g} every {icmp.interval_s:g} s, {len(w.fping.walls)}"
        " sweeps"
    )
    sweeps = len(w.pulse.durations)
    sweep_s = statistics.median(w.pulse.durations) if sweeps else float("nan")
    rows = [
        [
            f"reference: {fping_label}, beside the daemon",
            f"{w.fping_cpu_s / w.seconds * 100:.1f}",
            "-",
            "-",
            "-",
            "-",
        ],
        [
            f"reference: fping alone, {ALONE_SWEEPS} sweeps, at one per {icmp.interval_s:g} s",
            f"{w.alone_cpu_s / icmp.interval_s * 100:.1f}",
            "-",
            "-",
            "-",
            "-",
        ],
        ["context: redis-server", f"{w.redis_cpu_s / w.seconds * 100:.1f}", "-", "-", "-", "-"],
        [
            f"measured: announcer run, {sweeps} sweeps seen",
            f"{daemon_cpu:.1f}",
            f"{peak:.1f}",
            f"{end:.1f}",
            f"{hwm:.1f}",
            f"≤ {TARGET_CPU:g} %, ≤ {TARGET_RSS_MB:g} MB: {verdict(rss_ok and cpu_ok)}",
        ],
    ]
    fping_all = sum(s == 0 for s in w.fping.statuses)
    out = [
        "",
        *table(rows, ["", "CPU %", "RSS MB peak", "RSS MB end", "VmHWM MB", "target"]),
        "",
        f"window {w.seconds:.1f} s; CPU in % of one core on average (utime + stime of all"
        f" threads; fping: its children's rusage; redis: INFO cpu); RSS peak: the highest of"
        f" {len(w.memory.rss)} VmRSS samples; VmHWM: the peak since the daemon started",
        f"the daemon's sweeps in the window: {sweeps}, each {sweep_s:.2f} s (median),"
        f" {min(w.pulse.alive, default=0):,} to"
        f" {max(w.pulse.alive, default=0):,} of {switches:,} alive",
        f"fping's sweeps: {statistics.median(w.fping.walls):.2f} s wall (median),"
        f" {fping_all} of {len(w.fping.walls)} with every host alive, {w.fping.late} started"
        " late; beside the daemon its raw socket also reads the daemon's echo traffic",
    ]
    if sweeps < w.seconds / icmp.interval_s - 2:
        out.append(f"!! fewer sweeps than one every {icmp.interval_s:g} s: the cadence slipped")
    out.append(
        f"\ntarget: RSS <= {TARGET_RSS_MB:g} MB (VmHWM {hwm:.1f} MB): {verdict(rss_ok)};"
        f" CPU <= {TARGET_CPU:g} % of one core (measured {daemon_cpu:.1f} %): {verdict(cpu_ok)}"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.resources", description=__doc__.split("\n\n")[0]
    )
    synthetic.add_size_arguments(parser)
    parser.add_argument("--seconds", type=float, default=120.0, help="the measured window")
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds from the daemon's start to the window"
    )
    args = parser.parse_args(argv)
    problem = synthetic.check_sizes(args.districts, args.switches, args.subscribers)
    if problem:
        parser.error(problem)
    if args.seconds < 10 or args.warmup < 0:
        parser.error("--seconds must be at least 10 and --warmup not negative")
    if os.geteuid() != 0:
        print("needs root: raw ICMP sockets; run it with sudo", file=sys.stderr)
        return 1
    fping = shutil.which("fping")
    if fping is None:
        print("needs fping: sudo bash scripts/system-packages.sh fping", file=sys.stderr)
        return 1

    with ExitStack() as stack:
        url, folder = workspace(stack, None)
        prepared = generate_and_import(url, folder / "inventory", args)
        if prepared is None:
            return 1
        syn, run = prepared
        switches = len(syn.switch_ids)
        with syn.switches_csv.open(encoding="utf-8") as f:
            addresses = [line.split(",")[1] for line in f.readlines()[1:]]
        listed = folder / "addresses.txt"
        listed.write_text("\n".join(addresses) + "\n", encoding="ascii")
        with sync_client(url) as client:
            held = info(client, "memory")["used_memory"] / MB
        print(
            f"setup:   {switches:,} loopback switches {addresses[0]} .. {addresses[-1]},"
            f" {run.subscribers:,} subscribers imported in {run.wall_s:.1f} s"
            f" ({held:.0f} MB in Redis; not measured); default settings, FastAGI and metrics on,"
            " AMI off",
            flush=True,
        )
        del syn
        window = asyncio.run(measure(folder, url, switches, listed, fping, args))
        for line in report(window, switches):
            print(line)
    print(f"load average {load_average()} at the end (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
