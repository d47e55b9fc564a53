"""The FastAGI mode end to end: a real Asterisk 22 runs the shipped dialplan
(``asterisk/announcer-common.conf`` and ``announcer-fastagi.conf``, included
the way an admin includes them), asks announcer's ``AgiServer`` on loopback,
which looks callers up in a real Redis, and plays a real sound file.

The admin's part is the context ``support`` below: the check, then the queue
step (``Set(REACHED_QUEUE=1)`` standing in for ``Queue()``), then Hangup.
Calls are AMI Originates of ``Local/<exten>@<context>`` with a caller ID.
Originate strips the punctuation from a caller ID, so a trunk that sends one
formatted (or "anonymous") is the context ``trunk``, which sets the caller ID
as given and goes on to ``support``.

The recordings are WAV files in the Asterisk test directory's ``sounds``
folder; announcer's ``[prompts] sounds_dir`` is that folder as the host sees
it and ``asterisk_sounds_dir`` as Asterisk (in its chroot) does, so the AGI
hands Asterisk a path it can play.

They need root and the sandbox (the fixtures in conftest.py build it or
skip, saying why).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.config import PromptSettings, RedisSettings, Settings
from announcer.daemon import start_fastagi
from announcer.heard import HeardLog
from announcer.keys import Keys
from announcer.pbx.agi import AgiServer
from announcer.redisconn import connect
from announcer.staff import StaffRequest
from tests.asterisk.ami import Ami, Call
from tests.asterisk.sandbox import Asterisk, free_tcp_port
from tests.conftest import InventoryFiles, announce

# The first test may build the sandbox (debootstrap and apt: a minute or two
# on a good mirror); each wait inside the harness has its own, shorter bound.
pytestmark = pytest.mark.timeout(960)

SHIPPED = Path(__file__).resolve().parents[2] / "asterisk"
SHIPPED_FILES = ("announcer-common.conf", "announcer-fastagi.conf")
ENTRY = "support"
TRUNK = "trunk"
QUEUE_STEP = ("Set", "REACHED_QUEUE=1")

#: The subscriber on switch n1 (district north) of InventoryFiles' default
#: inventory, in every form a trunk sends it.
NORTH_CALLER_FORMS = (
    "+79161234567",
    "79161234567",
    "89161234567",
    "9161234567",
    "+7 (916) 123-45-67",
)
#: The subscriber on switch s1, district south.
SOUTH_CALLER = "+79260000001"
NOT_A_SUBSCRIBER = "+79990000000"


def dialplan(agi_url: str) -> str:
    """extensions.conf: the shipped files, and what an admin adds around them."""
    return f"""\
[globals]
ANNOUNCER_AGI={agi_url}
ANNOUNCER_OPERATOR_WAIT=1

#include announcer-common.conf
#include announcer-fastagi.conf

[{ENTRY}]
exten => answered,1,Gosub(announcer-fastagi,s,1)
 same => n,Set(REACHED_QUEUE=1)
 same => n,Hangup()
exten => early,1,Gosub(announcer-fastagi,s,1(early))
 same => n,Set(REACHED_QUEUE=1)
 same => n,Hangup()

; a trunk that sends its caller ID as it pleases (TRUNK_CALLERID)
[{TRUNK}]
exten => answered,1,Set(CALLERID(num)=${{TRUNK_CALLERID}})
 same => n,Goto({ENTRY},answered,1)
"""


# what a caller notices --------------------------------------------------------------------


def step_index(call: Call, application: str, data: str | None = None) -> int:
    """Where the dialplan channel ran ``application`` (with ``data``); -1 if it did not."""
    for i, step in enumerate(call.steps):
        if step.application == application and data in (None, step.data):
            return i
    return -1


def reached_queue(call: Call) -> bool:
    """The admin's queue step ran, after everything announcer's part did."""
    queue = step_index(call, *QUEUE_STEP)
    return queue >= 0 and all(s.context == ENTRY for s in call.steps[queue:])


def played(call: Call) -> list[str]:
    """What the caller heard: the sounds Playback or Read played."""
    sounds = [s.data for s in call.steps if s.application == "Playback"]
    return sounds + [s.data.split(",")[1] for s in call.steps if s.application == "Read"]


def states(call: Call) -> set[str]:
    """Every state the call's channels were in (Newchannel, Newstate, ...)."""
    return {e["ChannelStateDesc"] for e in call.events if "ChannelStateDesc" in e}


def heard_nothing(call: Call) -> bool:
    return (
        played(call) == []
        and call.variables.get("ANNOUNCER_PROMPT", "") == ""
        and call.variables.get("ANNOUNCER_RESULT") == "none"
        and step_index(call, "Answer") < 0
    )


# announcer and Asterisk -------------------------------------------------------------------


@pytest.fixture
def pbx(sandbox: Path) -> Iterator[Asterisk]:
    """An Asterisk (PlayDTMF loaded) with the shipped files in its configuration folder."""
    with Asterisk(sandbox, extra_modules=("app_senddtmf",)) as running:
        for name in SHIPPED_FILES:
            shutil.copy(SHIPPED / name, running.host_dir / "etc" / name)
        yield running


@pytest.fixture
def announcer_settings(settings: Settings, pbx: Asterisk) -> Settings:
    """announcer's settings, its sounds folder the Asterisk test directory's."""
    prompts = PromptSettings(
        sounds_dir=pbx.host_dir / "sounds", asterisk_sounds_dir=Path(pbx.root) / "sounds"
    )
    return settings.model_copy(update={"prompts": prompts})


@dataclass(frozen=True)
class Recording:
    """A staff recording: where announcer keeps it, and how Asterisk names it."""

    path: str
    """as announcer sees it (what ``announce --audio`` stores)"""
    asterisk: str
    """as the dialplan must be told to play it"""


def recording(pbx: Asterisk, settings: Settings, name: str, seconds: float = 0.3) -> Recording:
    asterisk = pbx.write_silence(name, seconds)
    path = settings.prompts.sounds_dir / name
    assert settings.prompts.for_asterisk(str(path)) == asterisk
    return Recording(str(path), asterisk)


@pytest.fixture
async def city(
    announcer_settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> Settings:
    """The default inventory: districts north and south, a subscriber on each."""
    assert (await files.write().load_into(announcer_settings, redis, keys)).ok
    return announcer_settings


@pytest.fixture
async def north(city: Settings, redis: Redis, keys: Keys, pbx: Asterisk) -> tuple[str, str]:
    """A staff recording for district north; (its id, the sound Asterisk plays)."""
    sound = recording(pbx, city, "staff-north")
    request = StaffRequest(districts=("Северный",), text="Авария", audio=sound.path)
    return await announce(redis, keys, city, request), sound.asterisk


@contextlib.asynccontextmanager
async def fastagi(settings: Settings, redis: Redis, keys: Keys) -> AsyncIterator[AgiServer]:
    """announcer's FastAGI server wired as ``announcer run`` wires it, on a free port."""
    server = await start_fastagi(redis, keys, settings, port=0)
    task = asyncio.create_task(server.run())
    try:
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def agi(city: Settings, redis: Redis, keys: Keys, pbx: Asterisk) -> AsyncIterator[AgiServer]:
    """announcer's FastAGI server, and the dialplan pointing at it."""
    async with fastagi(city, redis, keys) as server:
        pbx.set_dialplan(dialplan(f"agi://127.0.0.1:{server.port}"))
        yield server


async def settled(server: AgiServer) -> None:
    """Until the server has counted its sessions (it does after closing them)."""
    async with asyncio.timeout(5):
        while server.sessions_active:  # noqa: ASYNC110  (a counter, not something to wait on)
            await asyncio.sleep(0.01)


async def call_from(ami: Ami, caller: str, exten: str = "answered") -> Call:
    """A call into ``support``; through ``trunk`` when Originate would mangle the caller ID."""
    if caller and not caller.lstrip("+").isdigit():
        return await ami.originate(exten, TRUNK, callerid="", variables={"TRUNK_CALLERID": caller})
    return await ami.originate(exten, ENTRY, callerid=caller)


def assert_heard(call: Call, prompt: str, ident: str, scope: str) -> None:
    """The caller was answered, heard ``prompt`` in full, then reached the queue."""
    assert played(call) == [prompt], call.summary()
    assert call.variables["PLAYBACKSTATUS"] == "SUCCESS", call.summary()
    assert 0 <= step_index(call, "Answer") < step_index(call, "Playback", prompt)
    assert "Up" in states(call)
    assert call.variables["AGISTATUS"] == "SUCCESS"
    assert call.variables["ANNOUNCER_PROMPT"] == prompt
    assert call.variables["ANNOUNCER_ID"] == ident
    assert call.variables["ANNOUNCER_SCOPE"] == scope
    assert call.variables["ANNOUNCER_RESULT"] == "heard"
    assert reached_queue(call), call.summary()


def assert_straight_to_the_queue(call: Call) -> None:
    assert heard_nothing(call), call.summary()
    assert call.variables.get("ANNOUNCER_ID", "") == ""
    assert call.variables.get("ANNOUNCER_SCOPE", "") == ""
    assert reached_queue(call), call.summary()


# 1. an affected caller, in every caller-ID form ------------------------------------------


@pytest.mark.parametrize("caller", NORTH_CALLER_FORMS)
async def test_affected_caller_hears_the_prompt_then_reaches_the_queue(
    pbx: Asterisk,
    agi: AgiServer,
    north: tuple[str, str],
    redis: Redis,
    keys: Keys,
    caller: str,
) -> None:
    ident, prompt = north
    async with pbx.ami() as ami:
        call = await call_from(ami, caller)

    await settled(agi)
    assert (agi.sessions_served, agi.sessions_failed) == (1, 0)
    assert_heard(call, prompt, ident, "district")
    assert call.hangup_cause == "Normal Clearing"
    # announcer was given the caller ID exactly as the trunk sent it
    (entry,) = await HeardLog(redis, keys).entries()
    assert (entry["caller"], entry["phone"], entry["announcement"]) == (
        caller,
        "+79161234567",
        ident,
    )


# 2. unaffected callers, and an announcement for everyone -----------------------------------


async def test_unaffected_callers_hear_nothing_and_reach_the_queue(
    pbx: Asterisk, agi: AgiServer, north: tuple[str, str]
) -> None:
    async with pbx.ami() as ami:
        calls = {
            caller: await call_from(ami, caller) for caller in (SOUTH_CALLER, NOT_A_SUBSCRIBER)
        }

    for call in calls.values():
        assert_straight_to_the_queue(call)
        assert call.variables["AGISTATUS"] == "SUCCESS"
        assert "Up" not in states(call)  # not answered, so not charged
    await settled(agi)
    assert (agi.sessions_served, agi.sessions_failed) == (2, 0)


async def test_an_announcement_for_everyone_reaches_unaffected_and_withheld_callers(
    pbx: Asterisk,
    agi: AgiServer,
    north: tuple[str, str],
    city: Settings,
    redis: Redis,
    keys: Keys,
) -> None:
    north_id, north_prompt = north
    sound = recording(pbx, city, "staff-everyone")
    request = StaffRequest(everyone=True, text="Работы на сервере оплаты", audio=sound.path)
    everyone = await announce(redis, keys, city, request)

    async with pbx.ami() as ami:
        calls = {
            caller: await call_from(ami, caller)
            for caller in (SOUTH_CALLER, NOT_A_SUBSCRIBER, "", "anonymous", "+79161234567")
        }

    await settled(agi)
    assert (agi.sessions_served, agi.sessions_failed) == (5, 0)
    for caller in (SOUTH_CALLER, NOT_A_SUBSCRIBER, "", "anonymous"):
        assert_heard(calls[caller], sound.asterisk, everyone, "global")
    # the district's own announcement is more specific than everyone's
    assert_heard(calls["+79161234567"], north_prompt, north_id, "district")


# 3. early media: never answered, any key for an operator -----------------------------------


async def test_early_media_plays_the_prompt_without_answering(
    pbx: Asterisk, agi: AgiServer, north: tuple[str, str]
) -> None:
    ident, prompt = north
    async with pbx.ami() as ami:
        call = await call_from(ami, "89161234567", exten="early")

    assert step_index(call, "Answer") < 0, call.summary()
    assert step_index(call, "Progress") >= 0
    assert "Up" not in states(call)
    assert not call.answered
    assert played(call) == [prompt]
    assert step_index(call, "Read", f"LOCAL(key),{prompt},1,n,1,1") >= 0
    # played to its end, then nobody pressed a key (a file Read cannot open gives ERROR)
    assert call.variables["READSTATUS"] == "TIMEOUT"
    assert call.variables["ANNOUNCER_RESULT"] == "heard"
    assert (call.variables["ANNOUNCER_ID"], call.variables["ANNOUNCER_SCOPE"]) == (
        ident,
        "district",
    )
    assert reached_queue(call), call.summary()


async def channel_reading(ami: Ami, prompt: str) -> str:
    """The name of the channel whose Read() is playing ``prompt``, once it is."""
    async with asyncio.timeout(10):
        while True:
            for channel in await ami.action({"Action": "CoreShowChannels"}):
                if channel.get("Application") == "Read" and prompt in channel.get(
                    "ApplicationData", ""
                ):
                    return channel["Channel"]
            await asyncio.sleep(0.02)


async def test_a_key_during_the_early_prompt_reaches_an_operator(
    pbx: Asterisk, agi: AgiServer, city: Settings, redis: Redis, keys: Keys
) -> None:
    long = recording(pbx, city, "staff-long", seconds=30.0)
    request = StaffRequest(districts=("north",), text="Авария", audio=long.path)
    ident = await announce(redis, keys, city, request)

    async with pbx.ami() as ami:
        placed = asyncio.create_task(call_from(ami, "79161234567", exten="early"))
        try:
            channel = await channel_reading(ami, long.asterisk)
            # "Receive": the digit arrives on the channel, as the caller's key
            # press does. "Async" is for panoramisk 1.4, which reads a reply
            # ending "successfully queued" as the start of an Originate's and
            # drops the connection on a KeyError unless the action says it is
            # not one; Asterisk ignores the header.
            (pressed,) = await ami.action(
                {
                    "Action": "PlayDTMF",
                    "Channel": channel,
                    "Digit": "5",
                    "Receive": "true",
                    "Async": "false",
                }
            )
            assert pressed["Response"] == "Success", pressed
            call = await placed
        finally:
            placed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await placed

    assert call.variables["ANNOUNCER_ID"] == ident
    assert (call.variables["READSTATUS"], call.variables["LOCAL(key)"]) == ("OK", "5")
    assert call.variables["ANNOUNCER_RESULT"] == "operator", call.summary()
    assert step_index(call, "Answer") < 0
    assert "Up" not in states(call)
    assert reached_queue(call), call.summary()


# 4. announcer down, Redis down: the call goes on ------------------------------------------


async def test_with_announcer_stopped_the_call_goes_straight_to_the_queue(
    pbx: Asterisk, north: tuple[str, str], city: Settings, redis: Redis, keys: Keys
) -> None:
    _, prompt = north
    async with fastagi(city, redis, keys) as server, pbx.ami() as ami:
        pbx.set_dialplan(dialplan(f"agi://127.0.0.1:{server.port}"))
        before = await call_from(ami, "+79161234567")
    assert played(before) == [prompt]  # up, it was heard

    async with pbx.ami() as ami:  # announcer has stopped: nothing listens on its port
        for exten in ("answered", "early"):
            call = await call_from(ami, "+79161234567", exten=exten)
            assert call.variables["AGISTATUS"] == "FAILURE", call.summary()
            assert_straight_to_the_queue(call)


async def test_with_redis_unreachable_announcer_fails_open(
    pbx: Asterisk, city: Settings, keys: Keys
) -> None:
    nowhere = city.model_copy(
        update={
            "redis": RedisSettings(url=f"redis://127.0.0.1:{free_tcp_port()}/0", timeout_ms=500)
        }
    )
    client = connect(nowhere.redis)
    try:
        async with fastagi(nowhere, client, keys) as server, pbx.ami() as ami:
            pbx.set_dialplan(dialplan(f"agi://127.0.0.1:{server.port}"))
            calls = [
                await call_from(ami, caller, exten=exten)
                for caller in ("+79161234567", "")
                for exten in ("answered", "early")
            ]
            await settled(server)
            assert (server.sessions_failed, server.sessions_served) == (4, 0)
    finally:
        await client.aclose()
    for call in calls:
        assert call.variables["AGISTATUS"] == "SUCCESS", call.summary()
        assert_straight_to_the_queue(call)


# 5. port scans and slow clients while calls run -------------------------------------------


async def connect_and_close(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def half_a_header(port: int, hold_s: float) -> bool:
    """Connects, sends half an AGI header block, holds; True if announcer hung up on it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"agi_network: yes\nagi_network_script: outage\nagi_calle")
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(hold_s):
                while await reader.read(1024):
                    pass
        return reader.at_eof()
    finally:
        writer.close()


async def test_scans_and_slow_clients_do_not_disturb_callers(
    pbx: Asterisk, agi: AgiServer, north: tuple[str, str], city: Settings
) -> None:
    ident, prompt = north
    port = agi.port
    slow_count = 5

    async def scans() -> None:
        for _ in range(10):
            await asyncio.gather(*(connect_and_close(port) for _ in range(100)))
            await asyncio.sleep(0.2)

    callers = [*NORTH_CALLER_FORMS, SOUTH_CALLER] * 2
    async with pbx.ami() as ami:

        async def calls() -> list[Call]:
            placed = []
            for caller in callers:
                placed.append(await call_from(ami, caller))
            return placed

        slow = [half_a_header(port, hold_s=30.0) for _ in range(slow_count)]
        _, slow_hung_up, heard = await asyncio.gather(scans(), asyncio.gather(*slow), calls())

    await settled(agi)
    counters = agi.counters
    assert (counters.served, counters.failed, counters.refused) == (len(callers), 0, 0)
    assert counters.dropped == 1000 + slow_count
    for caller, call in zip(callers, heard, strict=True):
        if caller == SOUTH_CALLER:
            assert_straight_to_the_queue(call)
        else:
            assert_heard(call, prompt, ident, "district")
    # the slow clients were hung up on after header_timeout_s, not left open
    assert slow_hung_up == [True] * slow_count
