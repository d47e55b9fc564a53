"""Failover: the leader killed -> a new leader publishing, target <= 2 lease periods.

Two ``announcer run`` processes share one private Redis with ``[cluster]``
on and its default timings. Each trial kills the leader with SIGKILL (no
chance to hand the lease over), at once asks for a staff announcement, and
times until it is live in ``P:active``, which only a leader's publisher
writes. Beside it, in the same run: the same request while the leader is
alive (the publisher's own beat), and the lease period itself. The killed
instance is started again before the next trial, as systemd would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from redis.asyncio import Redis

from announcer.config import ClusterSettings, RedisSettings, Settings
from announcer.keys import Keys
from announcer.private_redis import PrivateRedis
from announcer.redisconn import connect
from announcer.staff import StaffRequest, publish
from bench.common import PREFIX, load_average, machine_lines, percentile, table, verdict
from tests.daemon import daemon_config, start_daemon

NAMES = ("first", "second")
SWITCHES = (("core", "127.81.0.1", "north", ""), ("acc", "127.81.0.2", "north", "core"))


def _config(folder: Path, settings: Settings, name: str) -> Path:
    """An instance's configuration: the shared Redis, its own folders, the
    cluster on with its default timings."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "announcer.toml"
    extra = f'[fastagi]\nenabled = false\n[cluster]\nenabled = true\ninstance = "{name}"\n'
    daemon_config(path, settings, Keys(PREFIX), folder, extra)
    return path


async def _import(config: Path, folder: Path) -> None:
    rows = "\n".join(",".join(s) for s in SWITCHES)
    (folder / "districts.csv").write_text("id,name\nnorth,North\n")
    (folder / "switches.csv").write_text(f"id,address,district,parent\n{rows}\n")
    (folder / "subscribers.csv").write_text("phone,switch\n89161234567,acc\n")
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "announcer", "import",
        "--districts", str(folder / "districts.csv"),
        "--switches", str(folder / "switches.csv"),
        "--subscribers", str(folder / "subscribers.csv"),
        env={k: v for k, v in os.environ.items() if not k.startswith("ANNOUNCER_")}
        | {"ANNOUNCER_CONFIG": str(config)},
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await done.wait():
        raise SystemExit("the inventory import failed")


async def _until_live(redis: Redis, keys: Keys, settings: Settings, label: str) -> float:
    """Ask for a staff announcement now; seconds until it is live."""
    began = time.monotonic()
    made = await publish(
        redis, keys, settings, StaffRequest(everyone=True, text=label, audio="/bench/none")
    )
    ident = getattr(made, "id", None)
    if ident is None:
        raise SystemExit(f"the staff announcement was refused: {made}")
    async with asyncio.timeout(120):
        while True:
            if await redis.hexists(keys.active, ident):
                break
            await asyncio.sleep(0.02)
    return time.monotonic() - began


async def _members(redis: Redis, keys: Keys, want: int) -> str:
    """Wait for ``want`` registered members and a leader; the leader."""
    async with asyncio.timeout(120):
        while True:
            leader = await redis.get(keys.cluster_leader)
            if leader and await redis.zcard(keys.cluster_members) == want:
                return str(leader)
            await asyncio.sleep(0.05)


async def bench(url: str, trials: int, folder: Path) -> list[str]:
    keys = Keys(PREFIX)
    settings = Settings(redis=RedisSettings(url=url, prefix=PREFIX))
    lease_s = ClusterSettings().lease_s
    configs = {name: _config(folder / name, settings, name) for name in NAMES}
    await _import(configs[NAMES[0]], folder)
    running = {name: await start_daemon(configs[name]) for name in NAMES}
    redis = connect(settings.redis)
    alive: list[float] = []
    failover: list[float] = []
    try:
        for trial in range(trials):
            leader = await _members(redis, keys, len(NAMES))
            alive.append(await _until_live(redis, keys, settings, f"alive {trial}"))
            running[leader].send_signal(signal.SIGKILL)
            await running[leader].wait()
            spent = await _until_live(redis, keys, settings, f"failover {trial}")
            failover.append(spent)
            now_leader = str(await redis.get(keys.cluster_leader))
            print(
                f"  trial {trial + 1}: {leader} killed, {now_leader} publishing after"
                f" {spent:.2f} s",
                flush=True,
            )
            running[leader] = await start_daemon(configs[leader])
    finally:
        for process in running.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in running.values():
            await process.wait()
        await redis.aclose()

    def row(label: str, values: Sequence[float]) -> list[str]:
        ordered = sorted(values)
        return [
            label,
            f"{percentile(ordered, 0.5):.2f}",
            f"{percentile(ordered, 0.95):.2f}",
            f"{ordered[-1]:.2f}",
        ]

    worst = max(failover)
    rows = [
        ["reference: [cluster] lease_s (default)", *[f"{lease_s:.2f}"] * 3],
        row("reference: staff request -> live, leader alive", alive),
        row(f"measured: leader killed -> request live, {trials} trials", failover),
    ]
    return [
        "",
        *table(rows, ["", "p50 s", "p95 s", "max s"]),
        "",
        f"target: leader killed -> new leader publishing <= 2 lease periods"
        f" ({2 * lease_s:g} s), worst of {trials} ({worst:.2f} s): {verdict(worst <= 2 * lease_s)}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--trials", type=int, default=5, metavar="N")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    with PrivateRedis() as url, tempfile.TemporaryDirectory(prefix="announcer-bench-") as scratch:
        for line in machine_lines(url):
            print(line)
        defaults = ClusterSettings()
        print(
            f"setup:   {len(NAMES)} instances of announcer run, [cluster] heartbeat_s"
            f" {defaults.heartbeat_s:g}, lease_s {defaults.lease_s:g}; {args.trials} trials\n",
            flush=True,
        )
        for line in asyncio.run(bench(url, args.trials, Path(scratch))):
            print(line)
    print(f"load average {load_average()} at the end (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
