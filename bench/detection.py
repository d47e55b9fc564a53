"""Detection latency: a switch stops answering -> its state is ``down`` in Redis.

The poller runs with the default settings ([icmp] interval_s 5, timeout_ms
1000, [poller] down_after 3, confirm_interval_s 1) over a fleet of loopback switches. Each trial
silences one switch with an iptables rule at a random moment of the sweep
cycle and times how long until Redis says ``down``. Trials run a few at a
time on different switches, each at its own random moment, so twenty take
about a minute. The reference printed beside the figures is the range the
settings allow: the first miss is seen one timeout after the next sweep
(0 to interval_s after the failure), each further one after a confirmation
round (confirm_interval_s + timeout), until down_after misses.

Needs root (raw ICMP and iptables). Only 127.0.0.0/8 addresses are probed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from announcer.config import RedisSettings, Settings
from announcer.demo import firewall as netfilter
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import run_import
from announcer.keys import Keys
from announcer.poller import Poller
from announcer.private_redis import PrivateRedis
from announcer.probes.icmp import IcmpProbe
from announcer.redisconn import connect
from bench.common import machine_lines, percentile, table, verdict

TARGET_S = 16.0


def write_fleet(folder: Path, switches: int) -> list[tuple[str, str]]:
    fleet = [(f"sw{i}", f"127.80.{i // 250}.{i % 250 + 1}") for i in range(switches)]
    (folder / "districts.csv").write_text("id,name\nd1,Район\n")
    (folder / "switches.csv").write_text(
        "id,address,district,parent\n" + "".join(f"{s},{a},d1,\n" for s, a in fleet)
    )
    (folder / "subscribers.csv").write_text("phone,switch\n89160000001,sw0\n")
    return fleet


async def trial(
    redis_url: str,
    keys: Keys,
    firewall: netfilter.Firewall,
    switch: str,
    address: str,
    delay: float,
) -> float:
    client = connect(RedisSettings(url=redis_url))
    try:
        await asyncio.sleep(delay)
        firewall.drop_echo_requests([address])
        started = time.monotonic()
        deadline = started + 60
        while time.monotonic() < deadline:
            raw = await client.hget(keys.state, switch)
            if raw is not None and '"state":"down"' in raw:
                return time.monotonic() - started
            await asyncio.sleep(0.02)
        return float("inf")
    finally:
        await client.aclose()


async def main(args: argparse.Namespace, redis_url: str) -> int:
    settings = Settings(redis=RedisSettings(url=redis_url))
    keys = Keys("announcer-bench-detection")
    client = connect(settings.redis)
    with tempfile.TemporaryDirectory() as tmp:
        fleet = write_fleet(Path(tmp), args.switches)
        folder = Path(tmp)
        tables = (
            read_table("districts", folder / "districts.csv"),
            read_table("switches", folder / "switches.csv"),
            read_table("subscribers", folder / "subscribers.csv"),
        )
        await run_import(settings, client, keys, lambda: tables, "bench")
    probe = IcmpProbe(settings.icmp)
    poller = Poller(client, keys, settings, {"icmp": probe})
    running = asyncio.create_task(poller.run())
    latencies: list[float] = []
    try:
        for _ in range(600):  # the first sweep writes every state; a minute at most
            if await client.hlen(keys.state) >= len(fleet):
                break
            await asyncio.sleep(0.1)
        victims = random.Random(args.seed).sample(fleet[1:], args.trials)
        rng = random.Random(args.seed + 1)
        with netfilter.Firewall() as firewall:
            for start in range(0, args.trials, args.parallel):
                group = victims[start : start + args.parallel]
                cycle = settings.icmp.interval_s
                done = await asyncio.gather(
                    *(
                        trial(redis_url, keys, firewall, s, a, rng.uniform(0, cycle))
                        for s, a in group
                    )
                )
                latencies += done
                print(
                    f"  trials {start + 1}-{start + len(group)}: "
                    + ", ".join(f"{x:.1f} s" for x in done),
                    flush=True,
                )
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await probe.close()
        async for key in client.scan_iter(f"{keys.prefix}:*"):
            await client.unlink(key)
        await client.aclose()
    ordered = sorted(latencies)
    s = settings
    timeout = s.icmp.timeout_ms / 1000
    step = (
        s.poller.confirm_interval_s + timeout
        if s.poller.confirm_interval_s
        else (s.icmp.interval_s)
    )
    low = timeout + (s.poller.down_after - 1) * step
    high = low + s.icmp.interval_s
    p95 = percentile(ordered, 0.95)
    print()
    for line in table(
        [
            ["settings allow (reference)", f"{low:.1f}", f"{high:.1f}", "-", "-"],
            [
                f"measured, {len(ordered)} trials",
                f"{ordered[0]:.1f}",
                f"{ordered[-1]:.1f}",
                f"{percentile(ordered, 0.5):.1f}",
                f"{p95:.1f}",
            ],
        ],
        ["", "min s", "max s", "p50 s", "p95 s"],
    ):
        print(line)
    print(f"\ntarget: p95 <= {TARGET_S:.0f} s: {verdict(p95 <= TARGET_S)}")
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=5, help="trials at once")
    parser.add_argument("--switches", type=int, default=1000, help="fleet size")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root: raw ICMP and iptables", file=sys.stderr)
        return 1
    reason = netfilter.missing()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    with PrivateRedis() as url:
        for line in machine_lines(url):
            print(line)
        print(
            f"fleet:   {args.switches:,} loopback switches; {args.trials} trials,"
            f" {args.parallel} at a time; default settings\n"
        )
        return asyncio.run(main(args, url))


if __name__ == "__main__":
    raise SystemExit(cli())
