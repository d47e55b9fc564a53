"""Several instances on one Redis: the split of the switches, the leader
lease, and three real ``announcer run`` processes of which the leader is
killed: no switch is left unpolled and no announcement is lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer import status
from announcer.cli.watch import render_status
from announcer.cluster import Cluster, ancestors, branches, owner
from announcer.config import ClusterSettings, IcmpSettings, Settings
from announcer.demo import firewall as netfilter
from announcer.keys import Keys
from announcer.poller import Poller
from announcer.probes.icmp import IcmpProbe
from announcer.store import StateStore
from tests.conftest import InventoryFiles
from tests.daemon import daemon_config, start_daemon, stopped

#: A core, four aggregation switches and two access switches behind each.
CITY = (
    ("core", "127.79.0.1", "north", ""),
    *((f"agg{a}", f"127.79.{a}.1", "north" if a < 3 else "south", "core") for a in range(1, 5)),
    *(
        (f"acc{a}{i}", f"127.79.{a}.{10 + i}", "north" if a < 3 else "south", f"agg{a}")
        for a in range(1, 5)
        for i in range(1, 3)
    ),
)
PARENTS = {s: (p or None) for s, _, _, p in CITY}
SUBSCRIBERS = [(f"8916{a}{i}0000{a}", f"acc{a}{i}") for a in range(1, 5) for i in range(1, 3)]
FAST = ClusterSettings(enabled=True, heartbeat_s=0.3, lease_s=1.5)


def test_a_branch_goes_whole_to_one_instance() -> None:
    of = branches(PARENTS)
    assert of["core"] == "core"
    assert of["agg2"] == "agg2"
    assert of["acc21"] == of["acc22"] == "agg2"
    assert ancestors("acc31", PARENTS) == ["agg3", "core"]
    # a loop in a broken inventory does not hang
    assert set(branches({"a": "b", "b": "a"})) == {"a", "b"}


def test_only_a_departed_instance_s_share_moves() -> None:
    items = [f"branch-{i}" for i in range(3000)]
    three = ["one", "two", "three"]
    before = {item: owner(item, three) for item in items}
    counts = {m: sum(o == m for o in before.values()) for m in three}
    assert all(count > 800 for count in counts.values()), counts
    after = {item: owner(item, ["one", "three"]) for item in items}
    moved = [item for item in items if before[item] != after[item]]
    assert moved
    assert all(before[item] == "two" for item in moved)


@pytest.fixture
async def city(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> None:
    files.write(switches=CITY, subscribers=SUBSCRIBERS)
    assert (await files.load_into(settings, redis, keys)).ok


async def test_exactly_one_instance_leads_and_another_takes_over(redis: Redis, keys: Keys) -> None:
    first = Cluster(redis, keys, FAST.model_copy(update={"instance": "first"}))
    second = Cluster(redis, keys, FAST.model_copy(update={"instance": "second"}))
    await first.beat()
    await second.beat()
    await first.beat()
    assert first.leading.is_set()
    assert not second.leading.is_set()
    assert first.members == second.members == ("first", "second")
    assert second.leader == "first"

    # the first stops beating, as a killed process would: its lease lapses
    # and its registration runs out, and the second takes over
    async with asyncio.timeout(10):
        while not second.leading.is_set() or set(second.members) != {"second"}:
            await asyncio.sleep(FAST.heartbeat_s)
            await second.beat()
    info = await redis.hgetall(keys.cluster_info)
    assert info["leader"] == "second"
    assert "first" not in info

    # the first comes back: it follows, it does not lead beside the second
    await first.beat()
    assert not first.leading.is_set()
    assert first.leader == "second"


async def test_a_leader_that_cannot_renew_stops_before_its_lease_lapses(
    redis: Redis, keys: Keys, redis_url: str
) -> None:
    """While Redis does not answer, nobody can take the lease over; the
    leader must have stepped down by the time the lease could lapse."""
    leader = Cluster(redis, keys, FAST.model_copy(update={"instance": "lonely"}))
    task = asyncio.create_task(leader.run())
    try:
        async with asyncio.timeout(10):
            await leader.leading.wait()
        pause_ms = int(FAST.lease_s * 1000 * 2)
        await redis.client_pause(pause_ms, all=True)
        async with asyncio.timeout(pause_ms / 1000):
            await leader.following.wait()
        assert not leader.leading.is_set()
    finally:
        await redis.client_unpause()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # on the way out it gave up the lease and its registration
    assert await redis.get(keys.cluster_leader) is None
    assert await redis.zcard(keys.cluster_members) == 0


async def test_pollers_split_the_switches_and_probe_their_uplinks(
    settings: Settings, redis: Redis, keys: Keys, city: None
) -> None:
    pollers = []
    for name in ("a", "b", "c"):
        cluster = Cluster(redis, keys, FAST.model_copy(update={"instance": name}))
        cluster.members = ("a", "b", "c")
        pollers.append(Poller(redis, keys, settings, {}, cluster=cluster))
    for poller in pollers:
        await poller.load()
    shares = [poller.owned or set() for poller in pollers]
    assert set().union(*shares) == set(PARENTS)
    assert sum(len(share) for share in shares) == len(PARENTS)
    for poller in pollers:
        for switch in poller.owned or ():
            assert set(ancestors(switch, PARENTS)) <= set(poller.targets)
    assert await shares_of(redis, keys) == dict(zip("abc", shares, strict=True))


async def test_a_switch_taken_over_keeps_its_outage(
    settings: Settings, redis: Redis, keys: Keys, city: None, firewall: netfilter.Firewall
) -> None:
    """A poller that picks up a switch that is down (after a restart, or from
    an instance that died) neither closes its outage nor opens a new one."""
    firewall.drop_echo_requests(["127.79.1.11"])
    since = 1_700_000_000.0
    await redis.hset(
        keys.state,
        "acc11",
        json.dumps({"state": "down", "since": since, "reason": "no echo reply", "root": "acc11"}),
    )
    fast = settings.model_copy(update={"icmp": IcmpSettings(timeout_ms=300, interval_s=1)})
    probe = IcmpProbe(fast.icmp)
    try:
        poller = Poller(redis, keys, fast, {"icmp": probe})
        for _ in range(2):
            await poller.sweep()
    finally:
        await probe.close()
    stored = (await StateStore(redis, keys).states())["acc11"]
    assert (stored["state"], stored["since"]) == ("down", since)
    events = await StateStore(redis, keys).events()
    assert not [e for e in events if e.get("switch") == "acc11"], events


# -- three real processes ------------------------------------------------------


async def shares_of(redis: Redis, keys: Keys) -> dict[str, set[str]]:
    raw: dict[str, str] = await redis.hgetall(keys.cluster_shares)  # type: ignore[assignment]
    return {name: set(json.loads(v)) for name, v in raw.items()}


async def settled(redis: Redis, keys: Keys, members: set[str]) -> dict[str, set[str]]:
    """Wait until exactly ``members`` share every switch, each switch once,
    and one of them leads; their shares."""
    async with asyncio.timeout(30):
        while True:
            now = await shares_of(redis, keys)
            leader = await redis.get(keys.cluster_leader)
            every = [s for share in now.values() for s in share]
            if set(now) == members and sorted(every) == sorted(PARENTS) and leader in members:
                return now
            await asyncio.sleep(0.2)


@pytest.fixture
async def instances(
    settings: Settings, keys: Keys, tmp_path: Path, city: None
) -> AsyncIterator[dict[str, asyncio.subprocess.Process]]:
    if os.geteuid() != 0:
        pytest.skip("needs root for raw ICMP")
    running: dict[str, asyncio.subprocess.Process] = {}
    configs: dict[str, Path] = {}
    try:
        for name in ("east", "west", "north"):
            folder = tmp_path / name
            folder.mkdir()
            configs[name] = folder / "announcer.toml"
            daemon_config(
                configs[name],
                settings,
                keys,
                folder,
                f"""
[fastagi]
enabled = false
[icmp]
interval_s = 1
timeout_ms = 300
[cluster]
enabled = true
instance = "{name}"
heartbeat_s = {FAST.heartbeat_s}
lease_s = {FAST.lease_s}
""",
            )
            running[name] = await start_daemon(configs[name])
        yield running
    finally:
        for name, daemon in running.items():
            if daemon.returncode is None or daemon.returncode == 0:
                await stopped(daemon, configs[name])


async def test_three_instances_one_killed_nothing_unpolled_lost_or_doubled(
    redis: Redis,
    keys: Keys,
    instances: dict[str, asyncio.subprocess.Process],
    firewall: netfilter.Firewall,
) -> None:
    before = await settled(redis, keys, set(instances))
    leader = await redis.get(keys.cluster_leader)
    assert leader in instances
    instances[leader].send_signal(signal.SIGKILL)
    await instances[leader].wait()
    survivors = set(instances) - {leader}
    after = await settled(redis, keys, survivors)
    new_leader = await redis.get(keys.cluster_leader)
    assert new_leader in survivors
    said = render_status(await status.gather(redis, keys))
    assert f"{new_leader} (leader): {len(after[new_leader])} switches" in said, said

    # a switch the dead instance polled, else any access switch, goes down
    orphans = sorted(s for s in before[leader] if s.startswith("acc")) or ["acc41"]
    victim = orphans[0]
    address = next(a for s, a, _, _ in CITY if s == victim)
    assert any(victim in share for share in after.values())
    firewall.drop_echo_requests([address])
    async with asyncio.timeout(30):
        while True:
            active = await redis.hgetall(keys.active)
            hears = await redis.hget(keys.active_by_switch, victim)
            if hears and json.loads(active[hears])["source"] == "auto":
                break
            await asyncio.sleep(0.2)
    opened = [
        e
        for e in await StateStore(redis, keys).events(1000)
        if e.get("kind") == "announcement" and e.get("action") == "opened"
    ]
    assert [e["targets"] for e in opened] == [victim], opened
    states = await StateStore(redis, keys).states()
    assert states[victim]["state"] == "down"
    assert all(states[s]["state"] == "up" for s in PARENTS if s != victim), states
