"""The FastAGI server over real TCP, against a real Redis.

The clients speak the AGI protocol as Asterisk does: a header block, then
"200 result=1" to every command until the server closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from announcer.config import PromptSettings, RedisSettings, Settings
from announcer.heard import HeardLog
from announcer.keys import Keys
from announcer.lookup import Answer, Lookup
from announcer.pbx.agi import AgiServer, Record, agi_quote
from announcer.phones import PhoneNormaliser
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.redisconn import connect
from announcer.staff import StaffRequest
from announcer.states import State, SwitchState
from announcer.store import StateStore
from tests.conftest import InventoryFiles, announce

NORTH_PROMPT = "/var/lib/announcer/sounds/staff-north"
EVERYONE_PROMPT = "/var/lib/announcer/sounds/staff-everyone"
#: The subscriber on switch n1 in district north, in every form a trunk sends.
NORTH_CALLER_FORMS = ("+79161234567", "79161234567", "89161234567", "9161234567")
SOUTH_CALLER = "+79260000001"
VARIABLES = ("ANNOUNCER_PROMPT", "ANNOUNCER_ID", "ANNOUNCER_SCOPE")


def agi_args(command: str) -> list[str]:
    """Split an AGI command line into arguments the way Asterisk's res_agi
    ``parse_args`` does: double quotes group, a backslash escapes."""
    args: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for ch in command:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None:
                current = []
            continue
        if ch in " \t" and not quoted and not escaped:
            if current is not None:
                args.append("".join(current))
                current = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if current is None:
            current = []
        current.append(ch)
        escaped = False
    if current is not None:
        args.append("".join(current))
    return args


@dataclass
class Conversation:
    commands: list[str] = field(default_factory=list)

    @property
    def variables(self) -> dict[str, str]:
        out = {}
        for command in self.commands:
            verb, noun, name, value = agi_args(command)
            assert (verb, noun) == ("SET", "VARIABLE"), command
            out[name] = value
        return out

    @property
    def heard(self) -> tuple[str, str, str]:
        assert [agi_args(c)[2] for c in self.commands] == list(VARIABLES)
        values = self.variables
        return values["ANNOUNCER_PROMPT"], values["ANNOUNCER_ID"], values["ANNOUNCER_SCOPE"]


def header_block(port: int, caller_id: str, script: str = "outage") -> bytes:
    headers = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:{port}/{script}",
        "agi_channel": "PJSIP/trunk-00000001",
        "agi_language": "ru",
        "agi_type": "PJSIP",
        "agi_uniqueid": "1764496200.1",
        "agi_version": "20.5.0",
        "agi_callerid": caller_id,
        "agi_calleridname": 'Иванов "Ivan" \\',
        "agi_context": "from-trunk",
        "agi_extension": "100",
        "agi_priority": "2",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140230000000000",
    }
    return "".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n"


async def agi_call(port: int, caller_id: str, script: str = "outage") -> Conversation:
    """One AGI session as Asterisk runs it: headers, then answer every command."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    talk = Conversation()
    try:
        writer.write(header_block(port, caller_id, script))
        while line := await reader.readline():
            talk.commands.append(line.decode().rstrip("\n"))
            writer.write(b"200 result=1\n")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return talk


async def eventually(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds: the server records and counts after
    it has closed the connection."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110  (a counter, not something to wait on)
            await asyncio.sleep(0.01)


async def settled(server: AgiServer) -> None:
    """Wait for the server to finish its sessions: it counts them (and records
    matched lookups) after closing their connections."""
    await eventually(lambda: server.sessions_active == 0)


@pytest.fixture
async def city(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> Settings:
    """Two districts of a few switches each, a subscriber on each access switch."""
    switches = [("core", "127.0.0.10", "north", "")]
    switches += [(f"n{i}", f"127.0.0.1{i}", "north", "core") for i in (1, 2, 3)]
    switches += [(f"s{i}", f"127.0.0.2{i}", "south", "core") for i in (1, 2)]
    subscribers = [(NORTH_CALLER_FORMS[0], "n1"), (SOUTH_CALLER, "s1")]
    subscribers += [("+79160000002", "n2"), ("+79160000003", "n3"), ("+79260000002", "s2")]
    files.write(switches=switches, subscribers=subscribers)
    assert (await files.load_into(settings, redis, keys)).ok
    return settings


@pytest.fixture
async def north_outage(city: Settings, redis: Redis, keys: Keys) -> str:
    """A staff announcement for district north, with its recording; its id."""
    request = StaffRequest(districts=("Северный",), text="Авария", audio=NORTH_PROMPT)
    return await announce(redis, keys, city, request)


class Running:
    def __init__(self, server: AgiServer, task: asyncio.Task[None]) -> None:
        self.server = server
        self.task = task

    @property
    def port(self) -> int:
        return self.server.port


@contextlib.asynccontextmanager
async def serving(lookup: Lookup, **options: Any) -> AsyncIterator[Running]:
    server = AgiServer(lookup, port=0, **options)
    await server.start()
    task = asyncio.create_task(server.run())
    try:
        yield Running(server, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def lookup(redis: Redis, keys: Keys) -> Lookup:
    return Lookup(redis, keys, PhoneNormaliser("RU"))


@pytest.fixture
async def agi(lookup: Lookup, city: Settings) -> AsyncIterator[Running]:
    async with serving(lookup, header_timeout_s=1.0) as running:
        yield running


# answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("caller_id", NORTH_CALLER_FORMS)
async def test_affected_caller_in_any_format_hears_the_prompt(
    agi: Running, north_outage: str, caller_id: str
) -> None:
    talk = await agi_call(agi.port, caller_id)
    assert talk.heard == (NORTH_PROMPT, north_outage, "district")
    await settled(agi.server)
    assert agi.server.sessions_served == 1


async def test_a_dead_switch_is_heard_with_its_spoken_prompt(
    agi: Running, city: Settings, redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    """The whole path: a switch down, the publisher renders speech, the
    dialplan is told which sound to play."""
    await StateStore(redis, keys).publish(
        {"n1": SwitchState(State.DOWN, 100.0, "no echo reply", "n1")}
    )
    prompts = PromptSettings(
        sounds_dir=tmp_path / "sounds", cache_dir=tmp_path / "cache", tts="espeak"
    )
    settings = city.model_copy(update={"prompts": prompts})
    renderer = PromptRenderer(settings.prompts, settings.announcements.language)
    await Publisher(redis, keys, settings, renderer).publish_once()
    prompt, ident, scope = (await agi_call(agi.port, NORTH_CALLER_FORMS[2])).heard
    assert (ident, scope) == ("auto-switch-n1", "switch")
    assert await asyncio.to_thread(Path(prompt + ".wav").is_file)
    assert (await agi_call(agi.port, SOUTH_CALLER)).heard == ("", "", "")


async def test_unaffected_and_unknown_callers_get_empty_values(
    agi: Running, north_outage: str
) -> None:
    for caller in (SOUTH_CALLER, "+7 999 000-00-00", "not a number"):
        talk = await agi_call(agi.port, caller)
        assert talk.heard == ("", "", ""), caller
    await settled(agi.server)
    assert agi.server.sessions_served == 3


async def test_withheld_caller_hears_only_an_announcement_for_everyone(
    agi: Running, north_outage: str, redis: Redis, keys: Keys, city: Settings
) -> None:
    for withheld in ("unknown", "anonymous", ""):
        assert (await agi_call(agi.port, withheld)).heard == ("", "", "")
    request = StaffRequest(everyone=True, text="Работы", audio=EVERYONE_PROMPT)
    everyone = await announce(redis, keys, city, request)
    for withheld in ("unknown", "anonymous", ""):
        assert (await agi_call(agi.port, withheld)).heard == (EVERYONE_PROMPT, everyone, "global")
    # the district's own announcement is more specific than everyone's
    assert (await agi_call(agi.port, NORTH_CALLER_FORMS[0])).heard[1] == north_outage
    assert (await agi_call(agi.port, SOUTH_CALLER)).heard[1] == everyone


async def test_other_route_sets_nothing_and_closes(
    agi: Running, north_outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="announcer.pbx.agi"):
        for _ in range(3):
            talk = await agi_call(agi.port, NORTH_CALLER_FORMS[0], script="status")
            assert talk.commands == []
    await settled(agi.server)
    assert agi.server.counters.other_routes == 3
    assert agi.server.sessions_served == 0
    assert len([r for r in caplog.records if "'status'" in r.getMessage()]) == 1


async def test_route_from_agi_request_with_a_query_string(agi: Running, north_outage: str) -> None:
    """Without agi_network_script, the route is read from agi_request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    writer.write(b"agi_request: agi://127.0.0.1/outage?x=1\nagi_callerid: 89161234567\n\n")
    talk = Conversation()
    while line := await reader.readline():
        talk.commands.append(line.decode().rstrip("\n"))
        writer.write(b"200 result=1\n")
    writer.close()
    assert talk.heard == (NORTH_PROMPT, north_outage, "district")


def test_values_cannot_inject_commands() -> None:
    hostile = 'x" \\"\nEXEC Dial "SIP/666\r\n\x00'
    command = f"SET VARIABLE ANNOUNCER_PROMPT {agi_quote(hostile)}"
    assert not {"\n", "\r", "\x00"} & set(command)
    assert agi_args(command) == ["SET", "VARIABLE", "ANNOUNCER_PROMPT", 'x" \\"EXEC Dial "SIP/666']
    assert agi_args(f"SET VARIABLE X {agi_quote('')}") == ["SET", "VARIABLE", "X", ""]
    assert len(agi_quote("a" * 10_000)) < 1100


# Redis down -----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_unreachable_fails_open_and_logs_once(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = connect(RedisSettings(url=f"redis://127.0.0.1:{closed_port()}/0", timeout_ms=500))
    try:
        lookup = Lookup(nowhere, keys, PhoneNormaliser("RU"))
        with caplog.at_level(logging.WARNING, logger="announcer.pbx.agi"):
            async with serving(lookup, lookup_timeout_s=1.0) as agi:
                for caller in (*NORTH_CALLER_FORMS, "anonymous"):
                    async with asyncio.timeout(10):  # a guard against a hang, not a benchmark
                        talk = await agi_call(agi.port, caller)
                    assert talk.heard == ("", "", "")
                await settled(agi.server)
                assert agi.server.sessions_failed == 5
                assert not agi.task.done()
    finally:
        await nowhere.aclose()
    failures = [r for r in caplog.records if "lookups fail" in r.getMessage()]
    assert len(failures) == 1
    assert "straight to the queue" in failures[0].getMessage()


class FlakyLookup(Lookup):
    """The real lookup, or Redis's error while ``down``."""

    down = False

    async def __call__(self, caller_id: str | None, now: float | None = None) -> Answer:
        if self.down:
            raise RedisConnectionError(
                "Error 111 connecting to 127.0.0.1:6379. Connection refused."
            )
        return await super().__call__(caller_id, now)


async def test_lookups_recover_after_redis_comes_back(
    redis: Redis, keys: Keys, north_outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyLookup(redis, keys, PhoneNormaliser("RU"))
    with caplog.at_level(logging.WARNING, logger="announcer.pbx.agi"):
        async with serving(flaky) as agi:
            flaky.down = True
            for _ in range(3):
                assert (await agi_call(agi.port, NORTH_CALLER_FORMS[0])).heard == ("", "", "")
            flaky.down = False
            for _ in range(3):
                talk = await agi_call(agi.port, NORTH_CALLER_FORMS[0])
                assert talk.heard == (NORTH_PROMPT, north_outage, "district")
            await settled(agi.server)
            assert (agi.server.sessions_failed, agi.server.sessions_served) == (3, 3)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lookups fail" in m for m in messages) == 1
    assert sum("lookups work again" in m for m in messages) == 1


class StuckLookup(Lookup):
    """A Redis that accepts the command and never answers."""

    async def __call__(self, caller_id: str | None, now: float | None = None) -> Answer:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


async def test_a_stuck_lookup_fails_open_after_lookup_timeout(redis: Redis, keys: Keys) -> None:
    stuck = StuckLookup(redis, keys, PhoneNormaliser("RU"))
    async with serving(stuck, lookup_timeout_s=0.2) as agi:
        async with asyncio.timeout(10):  # a guard against a hang, not a benchmark
            talk = await agi_call(agi.port, NORTH_CALLER_FORMS[0])
        assert talk.heard == ("", "", "")
        await settled(agi.server)
        assert agi.server.sessions_failed == 1


async def test_close_cancels_a_session_waiting_for_its_lookup(redis: Redis, keys: Keys) -> None:
    stuck = StuckLookup(redis, keys, PhoneNormaliser("RU"))
    async with serving(stuck, lookup_timeout_s=60.0) as agi:
        reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
        writer.write(header_block(agi.port, NORTH_CALLER_FORMS[0]))
        await eventually(lambda: agi.server.sessions_active == 1)
        agi.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await agi.task
        assert agi.server.sessions_active == 0
        async with asyncio.timeout(5):
            await until_closed(reader)
        writer.close()


async def test_asterisk_hangup_notices_and_error_replies_are_tolerated(
    agi: Running, north_outage: str
) -> None:
    """The caller hangs up mid-session ("HANGUP" before a reply), and Asterisk
    refuses a command, once in one line and once in a multi-line 520 reply."""
    replies = [
        b"HANGUP\n200 result=1\n",
        b"510 Invalid or unknown command\n",
        b"520-Invalid command syntax.  Proper usage follows:\nUsage: ...\n520 End of usage.\n",
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    writer.write(header_block(agi.port, NORTH_CALLER_FORMS[0]))
    talk = Conversation()
    while line := await reader.readline():
        talk.commands.append(line.decode().rstrip("\n"))
        writer.write(replies.pop(0))
    writer.close()
    assert talk.heard == (NORTH_PROMPT, north_outage, "district")
    await settled(agi.server)
    assert agi.server.sessions_served == 1


# record() -------------------------------------------------------------------------------


async def test_record_receives_matched_lookups(
    lookup: Lookup, city: Settings, north_outage: str
) -> None:
    recorded: list[tuple[str | None, str]] = []

    async def record(answer: Answer, caller_id: str) -> None:
        recorded.append((answer.announcement, caller_id))

    async with serving(lookup, record=record) as agi:
        for caller in (*NORTH_CALLER_FORMS, SOUTH_CALLER, "anonymous"):
            await agi_call(agi.port, caller)
        await settled(agi.server)
    assert recorded == [(north_outage, caller) for caller in NORTH_CALLER_FORMS]


async def test_matched_lookups_land_on_the_heard_stream(
    lookup: Lookup, city: Settings, north_outage: str, redis: Redis, keys: Keys
) -> None:
    log = HeardLog(redis, keys)
    async with serving(lookup, record=log.record) as agi:
        for caller in (NORTH_CALLER_FORMS[1], SOUTH_CALLER, NORTH_CALLER_FORMS[2]):
            await agi_call(agi.port, caller)
        await settled(agi.server)
    heard = await log.entries()
    assert [(e["announcement"], e["phone"], e["caller"]) for e in heard] == [
        (north_outage, "+79161234567", NORTH_CALLER_FORMS[2]),
        (north_outage, "+79161234567", NORTH_CALLER_FORMS[1]),
    ]
    assert {(e["scope"], e["switch"], e["district"]) for e in heard} == {
        ("district", "n1", "north")
    }


async def test_prompts_are_named_as_asterisk_sees_them(
    lookup: Lookup, city: Settings, north_outage: str
) -> None:
    """An Asterisk that mounts the sounds folder elsewhere (or runs in a
    chroot) is told its own path; paths outside the folder are left alone."""
    prompts = PromptSettings(
        sounds_dir=Path("/var/lib/announcer"), asterisk_sounds_dir=Path("/mnt/announcer")
    )
    async with serving(lookup, prompt_path=prompts.for_asterisk) as agi:
        talk = await agi_call(agi.port, NORTH_CALLER_FORMS[0])
    assert talk.heard[0] == "/mnt/announcer/sounds/staff-north"
    outside = PromptSettings(sounds_dir=Path("/srv/x"), asterisk_sounds_dir=Path("/mnt/x"))
    assert outside.for_asterisk(NORTH_PROMPT) == NORTH_PROMPT
    assert PromptSettings().for_asterisk(NORTH_PROMPT) == NORTH_PROMPT


async def test_failing_record_does_not_affect_the_call(
    lookup: Lookup, city: Settings, north_outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def record(answer: Answer, caller_id: str) -> None:
        raise RuntimeError("statistics are down")

    failing: Record = record
    with caplog.at_level(logging.WARNING, logger="announcer.pbx.agi"):
        async with serving(lookup, record=failing) as agi:
            for _ in range(3):
                talk = await agi_call(agi.port, NORTH_CALLER_FORMS[0])
                assert talk.heard == (NORTH_PROMPT, north_outage, "district")
            await settled(agi.server)
            assert agi.server.counters.record_failures == 3
            assert agi.server.sessions_served == 3
    assert sum("recording a matched lookup failed" in r.getMessage() for r in caplog.records) == 1


# hostile clients ------------------------------------------------------------------------


async def connect_and_close(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Read until the server closes the connection (or resets it)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


async def garbage(port: int, size: int = 200_000) -> None:
    """Bytes without a newline: more than any header block may be."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            for _ in range(size // 1000):
                writer.write(b"x" * 1000)
                await writer.drain()
        await until_closed(reader)
    finally:
        writer.close()


async def many_lines(port: int) -> None:
    """Well-formed header lines that never end: past max_header_bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            for i in range(5_000):
                writer.write(f"agi_arg_{i}: {'y' * 20}\n".encode())
                await writer.drain()
        await until_closed(reader)
    finally:
        writer.close()


async def slowloris(port: int, closed: list[bool]) -> None:
    """A byte a second, never finishing the header block."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for byte in b"agi_network: yes\nagi_callerid: 89161234567\n":
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await until_closed(reader)
                    break
        closed.append(reader.at_eof())
    finally:
        writer.close()


async def headers_then_close(port: int, half: bool) -> None:
    """The headers, then gone (``half``: shut down writing only) before any answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(header_block(port, NORTH_CALLER_FORMS[0]))
    await writer.drain()
    if half:
        writer.write_eof()
        await until_closed(reader)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_hostile_clients_do_not_disturb_callers(
    agi: Running, north_outage: str, keys: Keys
) -> None:
    port = agi.port

    async def scanners() -> None:
        for _ in range(10):
            await asyncio.gather(*(connect_and_close(port) for _ in range(100)))

    async def callers() -> list[tuple[str, tuple[str, str, str]]]:
        heard = []
        for _ in range(10):
            await asyncio.sleep(0.1)
            for caller in (*NORTH_CALLER_FORMS, SOUTH_CALLER):
                heard.append((caller, (await agi_call(port, caller)).heard))
        return heard

    slow_closed: list[bool] = []
    hostile = [
        scanners(),
        *(garbage(port) for _ in range(5)),
        *(many_lines(port) for _ in range(3)),
        *(slowloris(port, slow_closed) for _ in range(3)),
        *(headers_then_close(port, half=False) for _ in range(20)),
        *(headers_then_close(port, half=True) for _ in range(20)),
    ]
    calling = asyncio.create_task(callers())
    await asyncio.gather(*hostile)
    heard = await calling
    assert len(heard) == 50
    for caller, values in heard:
        expected = (
            ("", "", "") if caller == SOUTH_CALLER else (NORTH_PROMPT, north_outage, "district")
        )
        assert values == expected, caller
    assert slow_closed == [True, True, True]  # dropped after header_timeout_s, not left open
    assert not agi.task.done()
    await settled(agi.server)
    counters = agi.server.counters
    assert counters.served >= 50
    assert counters.dropped >= 1000 + 5 + 3 + 3 + 20
    assert counters.failed == 0
    # and afterwards, business as usual
    assert (await agi_call(port, NORTH_CALLER_FORMS[1])).heard[0] == NORTH_PROMPT


async def test_connections_beyond_max_sessions_are_closed_at_once(
    lookup: Lookup, city: Settings, north_outage: str
) -> None:
    async with serving(lookup, max_sessions=2, header_timeout_s=30.0) as agi:
        idle = [await asyncio.open_connection("127.0.0.1", agi.port) for _ in range(2)]
        await eventually(lambda: agi.server.sessions_active == 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
        async with asyncio.timeout(5):
            await until_closed(reader)
        writer.close()
        assert agi.server.counters.refused == 1
        for _, w in idle:
            w.close()
        await eventually(lambda: agi.server.sessions_active == 0)
        talk = await agi_call(agi.port, NORTH_CALLER_FORMS[0])
        assert talk.heard == (NORTH_PROMPT, north_outage, "district")


async def test_close_ends_sessions_in_progress(lookup: Lookup, city: Settings) -> None:
    server = AgiServer(lookup, port=0, header_timeout_s=60.0)
    port = await server.start()
    task = asyncio.create_task(server.run())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network: yes\n")  # and then nothing for a minute
    await eventually(lambda: server.sessions_active == 1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert server.sessions_active == 0
    async with asyncio.timeout(5):
        await until_closed(reader)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
