"""The mirror's truth and its Redis-key sink, against a real Redis: what each
number should hear, written by difference, expiring when nobody vouches."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.announce_store import AnnouncementStore
from announcer.config import PromptSettings, Settings
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.pbx.mirror import (
    GLOBAL,
    LinkDown,
    Mirror,
    RedisKeysSink,
    Truth,
    link_states,
    status_writer,
)
from announcer.publisher import Publisher
from announcer.staff import StaffRequest
from tests.conftest import InventoryFiles, announce

NORTH = ["79160000011", "79160000012", "79160000021"]
SOUTH = ["79260000011"]
NORTH_AUDIO = "/var/lib/announcer/sounds/staff-north"


@pytest.fixture
async def city(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> Settings:
    switches = [("core", "127.0.0.10", "north", "")]
    switches += [("n1", "127.0.0.11", "north", "core"), ("n2", "127.0.0.12", "north", "core")]
    switches += [("s1", "127.0.0.21", "south", "core")]
    subscribers = [("+79160000011", "n1"), ("8 916 000-00-12", "n1"), ("9160000021", "n2")]
    subscribers += [("+79260000011", "s1")]
    files.write(switches=switches, subscribers=subscribers)
    assert (await files.load_into(settings, redis, keys)).ok
    return settings


def truth(redis: Redis, keys: Keys, prompts: PromptSettings | None = None) -> Truth:
    return Truth(redis, keys, (prompts or PromptSettings()).for_asterisk)


class CountingSink(RedisKeysSink):
    """The Redis-key sink, counting what it is asked to write."""

    def __init__(self, redis: Redis, keys: Keys, lease_s: float) -> None:
        super().__init__(redis, keys, lease_s)
        self.puts = 0
        self.deletes = 0
        self.broken = False

    async def apply(self, puts: Mapping[str, str], deletes: Sequence[str]) -> dict[str, str]:
        if self.broken:
            raise LinkDown("the sink is unplugged")
        self.puts += len(puts)
        self.deletes += len(deletes)
        return await super().apply(puts, deletes)


def mirror(redis: Redis, keys: Keys, sink: RedisKeysSink, lease_s: float = 60.0) -> Mirror:
    return Mirror(sink, truth(redis, keys), lease_s=lease_s, max_writes_per_s=1e6)


async def caller_keys(redis: Redis, keys: Keys) -> dict[str, str]:
    prefix = keys.caller("")
    names = [k async for k in redis.scan_iter(keys.callers_pattern)]
    values: list[str | None] = await redis.mget(names) if names else []  # type: ignore[assignment]
    return {n.removeprefix(prefix): v for n, v in zip(names, values, strict=True) if v is not None}


async def eventually(condition: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not await condition():  # noqa: ASYNC110  (polling Redis and a task's state)
            await asyncio.sleep(0.02)


# the inventory's numbers per switch -----------------------------------------------------


async def test_the_inventory_knows_the_numbers_on_each_switch(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    on = await InventoryStore(redis, keys).numbers_on(["n1", "n2", "core", "nowhere"])
    assert sorted(on["n1"]) == NORTH[:2]
    assert on["n2"] == [NORTH[2]]
    assert on["core"] == []
    assert on["nowhere"] == []


# the truth ------------------------------------------------------------------------------


async def test_nothing_active_means_nothing_to_mirror(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await Publisher(redis, keys, city, None).publish_once()
    assert await truth(redis, keys).wanted(time.time()) == {}


async def test_a_district_announcement_reaches_every_number_there(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    request = StaffRequest(districts=("north",), text="Авария", audio=NORTH_AUDIO)
    ident = await announce(redis, keys, city, request)
    wanted = await truth(redis, keys).wanted(time.time())
    assert sorted(wanted) == NORTH
    until, prompt, got_id, scope = wanted[NORTH[0]].split(",")
    assert (prompt, got_id, scope) == (NORTH_AUDIO, ident, "district")
    assert int(until) > time.time() + 3000  # the staff default lasts hours


async def test_a_global_announcement_is_one_entry_not_one_per_number(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    ident = await announce(redis, keys, city, StaffRequest(everyone=True, audio=NORTH_AUDIO))
    wanted = await truth(redis, keys).wanted(time.time())
    assert list(wanted) == [GLOBAL]
    assert wanted[GLOBAL].split(",")[2] == ident


async def test_a_district_message_beside_a_global_one(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    """North hears its own message; everyone else falls back to the global
    entry, with no entry of their own."""
    everyone = await announce(redis, keys, city, StaffRequest(everyone=True, audio="/s/all"))
    north = await announce(redis, keys, city, StaffRequest(districts=("north",), audio="/s/n"))
    wanted = await truth(redis, keys).wanted(time.time())
    assert sorted(wanted) == sorted([GLOBAL, *NORTH])
    assert wanted[GLOBAL].split(",")[1:3] == ["/s/all", everyone]
    assert {wanted[n].split(",")[2] for n in NORTH} == {north}


async def test_expired_announcements_are_not_mirrored(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await announce(redis, keys, city, StaffRequest(districts=("south",), audio=NORTH_AUDIO))
    later = time.time() + 30 * 86_400
    assert await truth(redis, keys).wanted(later) == {}


async def test_prompts_are_named_as_asterisk_sees_them(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await announce(redis, keys, city, StaffRequest(districts=("south",), audio=NORTH_AUDIO))
    chroot = PromptSettings(
        sounds_dir=Path("/var/lib/announcer"), asterisk_sounds_dir=Path("/srv/pbx/announcer")
    )
    wanted = await truth(redis, keys, chroot).wanted(time.time())
    assert wanted[SOUTH[0]].split(",")[1] == "/srv/pbx/announcer/sounds/staff-north"


# the mirror, on Redis keys --------------------------------------------------------------


async def test_keys_appear_with_a_ttl_and_go_when_cleared(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    sink = CountingSink(redis, keys, lease_s=60.0)
    m = mirror(redis, keys, sink)
    ident = await announce(redis, keys, city, StaffRequest(districts=("north",), audio=NORTH_AUDIO))
    assert await m.sync_once()
    mirrored = await caller_keys(redis, keys)
    assert sorted(mirrored) == NORTH
    assert {v.split(",")[2] for v in mirrored.values()} == {ident}
    assert 0 < await redis.ttl(keys.caller(NORTH[0])) <= 60
    assert m.status.state == "up"
    assert m.status.entries == 3

    await AnnouncementStore(redis, keys).remove_staff([ident])
    await Publisher(redis, keys, city, None).publish_once()
    assert await m.sync_once()
    assert await caller_keys(redis, keys) == {}


async def test_only_what_changed_is_written(city: Settings, redis: Redis, keys: Keys) -> None:
    sink = CountingSink(redis, keys, lease_s=60.0)
    m = mirror(redis, keys, sink)
    await announce(redis, keys, city, StaffRequest(districts=("north",), audio=NORTH_AUDIO))
    await m.sync_once()
    assert (sink.puts, sink.deletes) == (3, 0)
    await m.sync_once()
    assert (sink.puts, sink.deletes) == (3, 0)
    await announce(redis, keys, city, StaffRequest(districts=("south",), audio=NORTH_AUDIO))
    await m.sync_once()
    assert (sink.puts, sink.deletes) == (4, 0)


async def test_a_restart_reconciles_with_what_the_sink_holds(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    """A new mirror (announcer restarted) reads the sink back: entries left
    from before that are no longer true go, hand-edited ones are corrected."""
    await announce(redis, keys, city, StaffRequest(districts=("north",), audio=NORTH_AUDIO))
    await redis.set(keys.caller("79990000000"), "9999999999,old,gone,switch")
    await redis.set(keys.caller(NORTH[0]), "9999999999,edited,by-hand,switch")
    sink = CountingSink(redis, keys, lease_s=60.0)
    await mirror(redis, keys, sink).sync_once()
    mirrored = await caller_keys(redis, keys)
    assert sorted(mirrored) == NORTH
    assert all(v.split(",")[1] == NORTH_AUDIO for v in mirrored.values())
    assert (sink.puts, sink.deletes) == (3, 1)


async def test_keys_expire_when_nobody_vouches_for_them(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    """The daemon killed: nothing renews the TTLs, and the prompts vanish
    within the lease."""
    await announce(redis, keys, city, StaffRequest(districts=("north",), audio=NORTH_AUDIO))
    m = mirror(redis, keys, CountingSink(redis, keys, lease_s=2.0), lease_s=2.0)
    task = asyncio.create_task(m.run())
    try:
        await eventually(lambda: _at_least(redis, keys, 3))
        await asyncio.sleep(2.5)
        # renewed while the mirror runs
        assert sorted(await caller_keys(redis, keys)) == NORTH
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await asyncio.sleep(2.5)
    assert await caller_keys(redis, keys) == {}


async def test_a_broken_sink_is_reported_and_reconciled_after(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await announce(redis, keys, city, StaffRequest(districts=("north",), audio=NORTH_AUDIO))
    sink = CountingSink(redis, keys, lease_s=60.0)
    sink.broken = True
    m = Mirror(
        sink,
        truth(redis, keys),
        lease_s=60.0,
        max_writes_per_s=1e6,
        max_backoff_s=0.2,
        publish_status=status_writer(redis, keys, "redis-keys"),
    )
    task = asyncio.create_task(m.run())
    try:
        await eventually(lambda: _is(m, "down"))
        assert "unplugged" in m.status.detail
        await eventually(lambda: _reported(redis, keys, "down"))
        await redis.set(keys.caller("79990000000"), "9999999999,stale,x,switch")
        recovered_from = time.time()
        sink.broken = False
        await eventually(lambda: _is(m, "up"))
        assert sorted(await caller_keys(redis, keys)) == NORTH
        await eventually(lambda: _reported(redis, keys, "up"))
        assert m.status.since >= recovered_from  # "up since" counts from the recovery
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _at_least(redis: Redis, keys: Keys, count: int) -> bool:
    return len(await caller_keys(redis, keys)) >= count


async def _is(m: Mirror, state: str) -> bool:
    return m.status.state == state


async def _reported(redis: Redis, keys: Keys, state: str) -> bool:
    link = (await link_states(redis, keys)).get("redis-keys")
    return link is not None and link.state == state
