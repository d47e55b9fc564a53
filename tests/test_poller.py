"""The poller end to end: real ICMP on loopback, real firewall rules, real Redis.

A fibre cut is an iptables rule that drops echo requests to the switches
behind one aggregation switch; the rule's removal is the splice.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.config import IcmpSettings, Settings
from announcer.demo import firewall as netfilter
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from announcer.poller import Poller
from announcer.probes.icmp import IcmpProbe
from announcer.store import StateStore
from tests.conftest import InventoryFiles

CITY = (
    ("core", "127.78.0.1", "north", ""),
    ("agg", "127.78.0.2", "north", "core"),
    *((f"acc{i}", f"127.78.1.{i}", "north", "agg") for i in range(1, 6)),
    ("south1", "127.78.2.1", "south", "core"),
)
BEHIND_AGG = ["127.78.0.2", "127.78.1.0/24"]


@pytest.fixture
async def poller(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> AsyncIterator[Poller]:
    if os.geteuid() != 0:
        pytest.skip("needs root for raw ICMP")
    files.write(switches=CITY, subscribers=[("89161234567", "acc3"), ("89260000001", "south1")])
    assert (await files.load_into(settings, redis, keys)).ok
    fast = settings.model_copy(
        update={"icmp": IcmpSettings(timeout_ms=300, rate_pps=100_000, interval_s=1)}
    )
    probe = IcmpProbe(fast.icmp)
    try:
        yield Poller(redis, keys, fast, {"icmp": probe})
    finally:
        await probe.close()


async def states(redis: Redis, keys: Keys) -> dict[str, str]:
    return {s: v["state"] for s, v in (await StateStore(redis, keys).states()).items()}


async def test_fibre_cut_is_one_outage_and_the_splice_ends_it_at_once(
    poller: Poller, firewall: netfilter.Firewall, redis: Redis, keys: Keys
) -> None:
    info = await poller.sweep()
    assert (info.probed, info.alive) == (8, 8)
    assert set((await states(redis, keys)).values()) == {"up"}

    firewall.drop_echo_requests(BEHIND_AGG)
    for _ in range(2):
        await poller.sweep()
    assert set((await states(redis, keys)).values()) == {"up"}, "two misses are not an outage"
    await poller.sweep()
    now = await states(redis, keys)
    assert now["agg"] == "down"
    assert {now[f"acc{i}"] for i in range(1, 6)} == {"unreachable"}
    assert (now["core"], now["south1"]) == ("up", "up")
    lookup = Lookup(redis, keys, PhoneNormaliser())
    caller = await lookup("+79161234567")
    assert (caller.state, caller.root_cause) == ("unreachable", "agg")
    assert (await lookup("+79260000001")).state == "up"
    events = await StateStore(redis, keys).events(1000)
    downs = [e for e in events if e["new"] == "down"]
    assert [e["switch"] for e in downs] == ["agg"], "one root cause, not six"

    firewall.remove()
    await poller.sweep()  # agg answers once: not yet trusted
    assert (await states(redis, keys))["agg"] == "down"
    await poller.sweep()  # twice: up, and the switches behind it are re-checked right away
    assert set((await states(redis, keys)).values()) == {"up"}


async def test_cannot_send_is_not_an_outage(
    poller: Poller, firewall: netfilter.Firewall, redis: Redis, keys: Keys
) -> None:
    await poller.sweep()
    firewall.drop_echo_requests(BEHIND_AGG, hook="OUTPUT")
    for _ in range(5):
        info = await poller.sweep()
    assert info.failed == 6
    assert set((await states(redis, keys)).values()) == {"up"}


async def test_poller_follows_a_new_import(
    poller: Poller,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    files: InventoryFiles,
) -> None:
    await poller.sweep()
    files.write(
        switches=[*CITY[:2], ("new1", "127.78.3.1", "north", "agg")],
        subscribers=[("89161234567", "new1")],
    )
    assert (await files.load_into(settings, redis, keys)).ok
    info = await poller.sweep()
    assert info.probed == 3
    assert await states(redis, keys) == {"core": "up", "agg": "up", "new1": "up"}


async def test_a_miss_is_confirmed_within_seconds_not_sweeps(
    poller: Poller, firewall: netfilter.Firewall, redis: Redis, keys: Keys
) -> None:
    await poller.sweep()
    assert await poller.confirm() is None, "nothing pending while all answer"
    firewall.drop_echo_requests(["127.78.2.1"])
    await poller.sweep()
    assert poller.fleet.suspects() == ["south1"]
    await poller.confirm()
    assert (await states(redis, keys))["south1"] == "up"
    info = await poller.confirm()
    assert info is not None
    assert info.probed == 1, "only the suspect is probed again"
    assert (await states(redis, keys))["south1"] == "down"
    firewall.remove()
    assert await poller.confirm() is None, "a down switch is re-checked by the sweep"
    await poller.sweep()
    assert poller.fleet.suspects() == ["south1"], "one answer: recovery pending"
    await poller.confirm()
    assert (await states(redis, keys))["south1"] == "up"
    assert poller.fleet.suspects() == []


async def test_poll_once_from_the_command_line(
    poller: Poller, settings: Settings, keys: Keys, redis: Redis, tmp_path: Path
) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        f'[redis]\nurl = "{settings.redis.url}"\nprefix = "{keys.prefix}"\n'
        "[icmp]\ntimeout_ms = 300\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOUNCER_")}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "announcer", "--config", str(config), "poll", "--once"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ICMP: raw sockets (running as root)" in done.stderr
    assert "swept 8 switches" in done.stdout
    assert "8 alive, 0 silent, 0 could not be probed" in done.stdout
    assert set((await states(redis, keys)).values()) == {"up"}
