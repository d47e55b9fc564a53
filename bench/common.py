"""Shared by the benchmarks: the machine line, Redis URL checks, sizes and percentiles."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import redis

from announcer.private_redis import PrivateRedis, find_server

#: Key prefix of everything a benchmark writes, apart from a production prefix.
PREFIX = "announcer-bench"


def loopback_url(url: str) -> str:
    """``url`` if it names a unix socket or a loopback address; else argparse's error."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return url
    if parts.scheme not in ("redis", "rediss"):
        raise argparse.ArgumentTypeError("expected a unix://, redis:// or rediss:// URL")
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(
            f"{host or '(no host)'} is not a loopback address; benchmarks only talk to"
            " 127.0.0.0/8, ::1 or a unix socket"
        )
    return url


def add_redis_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        type=loopback_url,
        metavar="URL",
        help=(
            "use this Redis (loopback or unix socket only) instead of a private one;"
            f" keys under {PREFIX}: are deleted before and after"
        ),
    )


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=30)


def info(client: redis.Redis, section: str) -> dict[str, Any]:
    return client.info(section)


def used_memory(client: redis.Redis) -> int:
    return int(info(client, "memory")["used_memory"])


def delete_prefix(client: redis.Redis, prefix: str = PREFIX) -> int:
    """Remove every key under ``prefix:``; returns how many."""
    removed = 0
    batch: list[str] = []
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        batch.append(cast(str, key))
        if len(batch) >= 1000:
            removed += client.unlink(*batch)
            batch.clear()
    if batch:
        removed += client.unlink(*batch)
    return removed


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _server_binary_version() -> str:
    binary = find_server()
    if binary is None:
        return "none found"
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        return f"{binary}: {exc}"
    words = done.stdout.split()
    version = next((w[2:] for w in words if w.startswith("v=")), done.stdout.strip())
    return f"{version} ({shutil.which(binary) or binary})"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_lines(url: str) -> list[str]:
    """nproc, CPU, Python and the version of the Redis at ``url``."""
    with sync_client(url) as client:
        server = info(client, "server")
    return [
        f"machine: nproc {_nproc()}, {cpu_model()}, {platform.system()} {platform.release()},"
        f" load average {load_average()} at start",
        f"python:  {platform.python_implementation()} {platform.python_version()}",
        f"redis:   redis-server {server.get('redis_version', '?')} at {url}"
        f" (binary on PATH: {_server_binary_version()}), redis-py {redis.__version__}",
    ]


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(rows: Sequence[Sequence[str]], head: Sequence[str]) -> list[str]:
    """Left-aligned text columns, two spaces apart, with a rule under the header."""
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(head), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


@dataclass
class Timing:
    """Latencies of calls timed one by one, and the calls that raised."""

    latencies_ns: list[int]
    """of the calls that succeeded"""
    wall_s: float
    errors: Counter[str] = field(default_factory=Counter)
    """exception name -> how many calls raised it"""

    def ms(self, share: float) -> float:
        return percentile(sorted(self.latencies_ns), share) / 1e6

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ns, default=math.nan) / 1e6

    @property
    def rate(self) -> float:
        return len(self.latencies_ns) / self.wall_s

    def failures(self) -> str:
        return ", ".join(f"{n:,} x {name}" for name, n in self.errors.most_common())


def workspace(stack: ExitStack, redis_url: str | None) -> tuple[str, Path]:
    """Prints the machine lines; returns the Redis to measure on (a private one
    unless ``redis_url`` names one) and a scratch folder, both released with
    ``stack``."""
    url = redis_url or stack.enter_context(PrivateRedis())
    for line in machine_lines(url):
        print(line)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="announcer-bench-")))
    return url, folder
