"""The Redis mode end to end on a real Asterisk: announcer's mirror keeps one
Redis key per affected number, and the shipped dialplan
(asterisk/announcer-common.conf and announcer-redis.conf) reads it during the
call. Debian does not package func_redis, so the dialplan reads Redis through
its other reader, SHELL(redis-cli), the same context otherwise.

Needs root and the Asterisk sandbox (see conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.config import PromptSettings, RedisSettings, Settings
from announcer.keys import Keys
from announcer.pbx.mirror import Mirror, RedisKeysSink, Truth
from announcer.private_redis import PrivateRedis
from announcer.redisconn import connect
from announcer.staff import StaffRequest
from tests.asterisk.ami import Call
from tests.asterisk.sandbox import Asterisk
from tests.conftest import InventoryFiles, announce

pytestmark = pytest.mark.timeout(300)

ASTERISK_DIR = Path(__file__).resolve().parents[2] / "asterisk"
ENTRY = "support"
CALLER_FORMS = ("+79161234567", "79161234567", "89161234567", "9161234567", "+7 (916) 123-45-67")
SOUTH_CALLER = "+79260000001"


def dialplan(port: int, prefix: str) -> str:
    shipped = "\n".join(
        (ASTERISK_DIR / name).read_text()
        for name in ("announcer-common.conf", "announcer-redis.conf")
    )
    return f"""[globals]
ANNOUNCER_REDIS_READER=redis-cli
ANNOUNCER_REDIS_PORT={port}
ANNOUNCER_REDIS_PREFIX={prefix}

{shipped}
[{ENTRY}]
exten => 1,1,Gosub(announcer-redis,s,1)
 same => n,Set(REACHED_QUEUE=1)
 same => n,Hangup()
"""


@pytest.fixture(scope="module")
def tcp_redis() -> Iterator[PrivateRedis]:
    """A Redis on a loopback port: Asterisk's redis-cli runs in a chroot and
    cannot reach the tests' unix socket."""
    server = PrivateRedis(tcp=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own(tcp_redis: PrivateRedis, keys: Keys) -> AsyncIterator[tuple[Redis, Settings]]:
    settings = Settings(redis=RedisSettings(url=tcp_redis.url, prefix=keys.prefix))
    client = connect(settings.redis)
    try:
        yield client, settings
    finally:
        await client.flushall()
        await client.aclose()


@pytest.fixture
def pbx(sandbox: Path, tcp_redis: PrivateRedis, keys: Keys) -> Iterator[Asterisk]:
    assert tcp_redis.port is not None
    extensions = dialplan(tcp_redis.port, keys.prefix)
    with Asterisk(sandbox, extensions=extensions, extra_modules=["func_shell"]) as running:
        yield running


@pytest.fixture
async def city(
    own: tuple[Redis, Settings], keys: Keys, files: InventoryFiles, pbx: Asterisk
) -> Settings:
    redis, settings = own
    files.write(
        switches=[
            ("core", "127.0.0.10", "north", ""),
            ("n1", "127.0.0.11", "north", "core"),
            ("s1", "127.0.0.21", "south", "core"),
        ],
        subscribers=[(CALLER_FORMS[2], "n1"), (SOUTH_CALLER, "s1")],
    )
    assert (await files.load_into(settings, redis, keys)).ok
    prompts = PromptSettings(
        sounds_dir=pbx.host_dir / "sounds", asterisk_sounds_dir=Path(pbx.root) / "sounds"
    )
    return settings.model_copy(update={"prompts": prompts})


def mirror(redis: Redis, keys: Keys, settings: Settings, lease_s: float = 60.0) -> Mirror:
    truth = Truth(redis, keys, settings.prompts.for_asterisk)
    sink = RedisKeysSink(redis, keys, lease_s)
    return Mirror(sink, truth, lease_s=lease_s, max_writes_per_s=100_000)


def sound(pbx: Asterisk, name: str) -> str:
    pbx.write_silence(name, 0.2)
    return str(pbx.host_dir / "sounds" / name)


def played(call: Call) -> str | None:
    assert call.variables.get("REACHED_QUEUE") == "1", call.summary()
    if call.variables.get("ANNOUNCER_RESULT") != "heard":
        assert "Playback" not in call.applications, call.summary()
        return None
    (playback,) = (s for s in call.steps if s.application == "Playback")
    assert call.variables.get("PLAYBACKSTATUS") == "SUCCESS", call.summary()
    return playback.data


async def test_affected_callers_hear_their_prompt_and_others_the_global_one(
    city: Settings, own: tuple[Redis, Settings], keys: Keys, pbx: Asterisk
) -> None:
    redis, _ = own
    north = await announce(
        redis, keys, city, StaffRequest(districts=("north",), audio=sound(pbx, "north"))
    )
    await mirror(redis, keys, city).sync_once()
    async with pbx.ami() as ami:
        for caller in CALLER_FORMS:
            call = await ami.originate("1", ENTRY, callerid=caller)
            assert played(call) == f"{pbx.root}/sounds/north", (caller, call.summary())
            assert call.variables["ANNOUNCER_ID"] == north
            assert call.variables["ANNOUNCER_SCOPE"] == "district"
        assert played(await ami.originate("1", ENTRY, callerid=SOUTH_CALLER)) is None

        everyone = await announce(
            redis, keys, city, StaffRequest(everyone=True, audio=sound(pbx, "all"))
        )
        await mirror(redis, keys, city).sync_once()
        for caller in (SOUTH_CALLER, ""):
            call = await ami.originate("1", ENTRY, callerid=caller)
            assert played(call) == f"{pbx.root}/sounds/all", caller
            assert call.variables["ANNOUNCER_ID"] == everyone
        # north's own message outranks the global one
        assert played(await ami.originate("1", ENTRY, callerid=CALLER_FORMS[1])) == (
            f"{pbx.root}/sounds/north"
        )


async def test_keys_vanish_within_the_lease_once_the_daemon_is_gone(
    city: Settings, own: tuple[Redis, Settings], keys: Keys, pbx: Asterisk
) -> None:
    redis, _ = own
    await announce(redis, keys, city, StaffRequest(districts=("north",), audio=sound(pbx, "n")))
    task = asyncio.create_task(mirror(redis, keys, city, lease_s=2.0).run())
    async with pbx.ami() as ami:
        try:
            async with asyncio.timeout(10):
                while not await redis.exists(keys.caller("79161234567")):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert played(await ami.originate("1", ENTRY, callerid=CALLER_FORMS[0]))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.sleep(2.5)
        assert played(await ami.originate("1", ENTRY, callerid=CALLER_FORMS[0])) is None


async def test_with_redis_gone_calls_go_straight_on(
    city: Settings, own: tuple[Redis, Settings], keys: Keys, sandbox: Path
) -> None:
    """Asterisk pointed at a Redis that is not there: nothing plays, the call
    reaches the queue step."""
    redis, _ = own
    with Asterisk(
        sandbox, extensions=dialplan(1, keys.prefix), extra_modules=["func_shell"]
    ) as pbx:
        audio = sound(pbx, "n")
        await announce(redis, keys, city, StaffRequest(districts=("north",), audio=audio))
        await mirror(redis, keys, city).sync_once()
        async with pbx.ami() as ami:
            call = await ami.originate("1", ENTRY, callerid=CALLER_FORMS[0])
    assert played(call) is None
    assert call.variables["ANNOUNCER_RESULT"] == "none"
