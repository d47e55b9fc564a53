"""The caller lookup against a real Redis, for numbers in every format, one
caller at a time and many at once."""

from __future__ import annotations

import asyncio
import socket

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from announcer.announce_store import AnnouncementStore
from announcer.announcements import Announcement, Scope, Source
from announcer.coalesce import MAX_BATCH
from announcer.config import RedisSettings, Settings
from announcer.keys import Keys
from announcer.lookup import Answer, Lookup
from announcer.phones import PhoneNormaliser
from announcer.redisconn import connect
from announcer.states import State, SwitchState
from announcer.store import StateStore
from tests.conftest import InventoryFiles


@pytest.fixture
async def lookup(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> Lookup:
    files.write(
        subscribers=[
            ("8 (916) 123-45-67", "n1", "1001", "7", "ул. Северная, 1"),
            ("+7 926 000-00-01", "s1", "", "", ""),
        ],
        subscriber_header=("phone", "switch", "account", "port", "address"),
    )
    assert (await files.load_into(settings, redis, keys)).ok
    return Lookup(redis, keys, PhoneNormaliser("RU"))


@pytest.mark.parametrize(
    "caller_id",
    ["+79161234567", "79161234567", "89161234567", "9161234567", "+7 (916) 123-45-67"],
)
async def test_known_caller_in_any_format(lookup: Lookup, caller_id: str) -> None:
    answer = await lookup(caller_id)
    assert answer.known
    assert answer.phone == "+79161234567"
    assert (answer.switch, answer.district, answer.district_name) == ("n1", "north", "Северный")
    assert (answer.account, answer.port, answer.address) == ("1001", "7", "ул. Северная, 1")
    assert answer.prompt is None
    assert answer.announcement is None
    assert answer.state == "unknown"
    assert answer.reason == (
        "known subscriber on switch n1 in Северный; the switch has not been probed yet;"
        " nothing is active"
    )


async def test_subscriber_without_details(lookup: Lookup) -> None:
    answer = await lookup("89260000001")
    assert (answer.switch, answer.district_name, answer.account) == ("s1", "Южный", None)


async def test_unknown_number(lookup: Lookup) -> None:
    answer = await lookup("+7 999 000-00-00")
    assert not answer.known
    assert answer.phone == "+79990000000"
    assert answer.switch is None
    assert answer.reason == "+79990000000 is not in the inventory; nothing is active"


@pytest.mark.parametrize("caller_id", ["", "anonymous", "Unknown", None])
async def test_withheld_number_is_not_an_error(lookup: Lookup, caller_id: str | None) -> None:
    answer = await lookup(caller_id)
    assert not answer.known
    assert answer.phone is None
    assert answer.prompt is None
    assert answer.reason.startswith("the caller ID is withheld: only announcements for everyone")


async def test_garbage_caller_id_is_not_an_error(lookup: Lookup) -> None:
    answer = await lookup("sip:operator@10.0.0.1")
    assert not answer.known
    assert answer.phone is None
    assert answer.reason.startswith("'sip:operator@10.0.0.1' has the wrong number of digits")


async def test_before_any_import(redis: Redis, keys: Keys) -> None:
    answer = await Lookup(redis, keys, PhoneNormaliser())("+79161234567")
    assert not answer.known
    assert answer.reason == "no inventory has been imported yet; nothing is active"


async def test_answer_as_json_has_the_documented_fields(lookup: Lookup) -> None:
    data = (await lookup("89161234567")).as_dict()
    for name in ("phone", "known", "switch", "district", "prompt", "announcement", "reason"):
        assert name in data


async def test_answer_carries_the_switch_state_and_root_cause(
    lookup: Lookup, redis: Redis, keys: Keys
) -> None:
    await StateStore(redis, keys).publish(
        {
            "core": SwitchState(State.DOWN, 1000.0, "no echo reply within 1000 ms", "core"),
            "n1": SwitchState(State.UNREACHABLE, 1001.0, "uplink core is down", "core"),
            "s1": SwitchState(State.UP, 900.0, "", None, 0.2),
        }
    )
    answer = await lookup("89161234567")
    assert (answer.state, answer.state_since, answer.root_cause) == ("unreachable", 1001.0, "core")
    assert "the switch is unreachable since" in answer.reason
    assert answer.reason.endswith(
        "(uplink core is down); root cause: switch core; nothing is active"
    )
    up = await lookup("89260000001")
    assert (up.state, up.root_cause) == ("up", None)


# Many callers at once ---------------------------------------------------------------------

BUSY_SWITCHES = (
    ("core", "127.0.0.10", "north", ""),
    *((f"n{i}", f"127.0.0.1{i}", "north", "core") for i in range(1, 5)),
    *((f"s{i}", f"127.0.0.2{i}", "south", "core") for i in range(1, 4)),
)
ACCESS = [s[0] for s in BUSY_SWITCHES[1:]]
SUBSCRIBERS = 300


def busy_number(i: int) -> str:
    return f"7916100{i:04d}"


def written(i: int) -> str:
    """Subscriber ``i``'s number as a trunk or billing might write it."""
    digits = busy_number(i)
    forms = (
        f"+{digits}",
        f"8{digits[1:]}",
        f"8 ({digits[1:4]}) {digits[4:7]}-{digits[7:9]}-{digits[9:]}",
        digits[1:],
    )
    return forms[i % len(forms)]


@pytest.fixture
async def busy(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> Lookup:
    """Subscribers spread over seven access switches; n2's callers hear an
    announcement of their own, everyone else one for everyone; n3 is down."""
    files.write(
        switches=BUSY_SWITCHES,
        subscribers=[
            (busy_number(i), ACCESS[i % len(ACCESS)], f"acc{i}" if i % 2 else "", "", "")
            for i in range(SUBSCRIBERS)
        ],
        subscriber_header=("phone", "switch", "account", "port", "address"),
    )
    assert (await files.load_into(settings, redis, keys)).ok
    await StateStore(redis, keys).publish(
        {"n3": SwitchState(State.DOWN, 1000.0, "no echo reply within 1000 ms", "n3")}
    )
    far = 4_000_000_000.0

    def made(id: str, scope: Scope, targets: tuple[str, ...]) -> Announcement:
        return Announcement(id, scope, targets, Source.STAFF, id, 1000.0, far, prompt=f"p/{id}")

    n2 = made("works-n2", Scope.SWITCH, ("n2",))
    everyone = made("notice-all", Scope.GLOBAL, ())
    await AnnouncementStore(redis, keys).write_active([n2, everyone], {"n2": n2.id}, everyone.id)
    return Lookup(redis, keys, PhoneNormaliser("RU"))


BUSY_CALLERS = [
    *(written(i) for i in range(SUBSCRIBERS)),
    "+7 999 000-00-00",
    "anonymous",
    "",
    "sip:operator@10.0.0.1",
]


async def test_callers_at_once_each_get_their_own_answer_in_one_round_trip(
    busy: Lookup, redis: Redis, keys: Keys
) -> None:
    callers = BUSY_CALLERS[: MAX_BATCH - 4] + BUSY_CALLERS[-4:]
    together = await asyncio.gather(*(busy(c, now=2000.0) for c in callers))
    assert busy.round_trips == 1
    alone = Lookup(redis, keys, PhoneNormaliser("RU"))
    for caller, answer in zip(callers, together, strict=True):
        assert answer == await alone(caller, now=2000.0)
    assert alone.round_trips == len(callers)
    for i, answer in enumerate(together[: MAX_BATCH - 4]):
        switch = ACCESS[i % len(ACCESS)]
        assert (answer.phone, answer.switch) == (f"+{busy_number(i)}", switch)
        assert answer.district_name == ("Северный" if switch.startswith("n") else "Южный")
        assert answer.account == (f"acc{i}" if i % 2 else None)
        assert answer.announcement == ("works-n2" if switch == "n2" else "notice-all")
        assert answer.state == ("down" if switch == "n3" else "unknown")
    unknown, *without_number = together[-4:]
    assert (unknown.known, unknown.phone, unknown.announcement) == (
        False,
        "+79990000000",
        "notice-all",
    )
    assert [a.prompt for a in without_number] == ["p/notice-all"] * 3


async def test_more_callers_than_a_batch_take_another_round_trip(busy: Lookup) -> None:
    answers = await asyncio.gather(*(busy(c) for c in BUSY_CALLERS))
    assert busy.round_trips == 2
    assert [a.switch for a in answers[:SUBSCRIBERS]] == [
        ACCESS[i % len(ACCESS)] for i in range(SUBSCRIBERS)
    ]


async def test_a_lone_caller_goes_out_at_once(busy: Lookup) -> None:
    for i in range(5):
        assert (await busy(written(i))).switch == ACCESS[i]
        assert busy.round_trips == i + 1


class Paused:
    """Redis holding every script until ``release``: the round trip in flight
    stays in flight while the test asks more and cancels some."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def __aenter__(self) -> Paused:
        await self.redis.client_pause(10_000, all=False)  # writes, and every script
        return self

    async def release(self) -> None:
        await self.redis.client_unpause()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


async def in_flight(lookup: Lookup, trips: int) -> None:
    async with asyncio.timeout(5):  # a guard against a hang, not a benchmark
        while lookup.round_trips < trips:  # noqa: ASYNC110  (a counter, not an event)
            await asyncio.sleep(0)


async def test_callers_who_ask_during_a_round_trip_share_the_next(
    busy: Lookup, redis: Redis
) -> None:
    async with Paused(redis) as paused:
        first = asyncio.create_task(busy(written(0)))
        await in_flight(busy, 1)
        later = [asyncio.create_task(busy(written(i))) for i in range(1, 20)]
        await asyncio.sleep(0.05)  # not a timing: Redis holds the first until released
        assert not first.done()
        await paused.release()
        answers = [await first, *[await t for t in later]]
    assert busy.round_trips == 2
    assert [a.switch for a in answers] == [ACCESS[i % len(ACCESS)] for i in range(20)]


async def test_a_cancelled_caller_does_not_disturb_the_others(busy: Lookup, redis: Redis) -> None:
    async with Paused(redis) as paused:
        flying = [asyncio.create_task(busy(written(i))) for i in range(10)]
        await in_flight(busy, 1)
        waiting = [asyncio.create_task(busy(written(i))) for i in range(10, 20)]
        await asyncio.sleep(0)  # they are queued behind the round trip in flight
        flying[3].cancel()
        waiting[5].cancel()
        await paused.release()
        done = await asyncio.gather(*flying, *waiting, return_exceptions=True)
    cancelled = {3, 15}
    for i, answer in enumerate(done):
        if i in cancelled:
            assert isinstance(answer, asyncio.CancelledError)
        else:
            assert isinstance(answer, Answer)
            assert answer.switch == ACCESS[i % len(ACCESS)]
    assert busy.round_trips == 2
    assert (await busy(written(3))).switch == ACCESS[3]


async def test_callers_queued_behind_a_round_trip_nobody_waits_for_go_on(
    busy: Lookup, settings: Settings, redis: Redis, keys: Keys
) -> None:
    """Redis does not answer the round trip in flight, and its only caller gives
    up (the FastAGI lookup timeout): the callers queued behind it go out at
    once, not after Redis's socket timeout (30 s here)."""
    patient = connect(settings.redis.model_copy(update={"timeout_ms": 30_000}))
    try:
        lookup = Lookup(patient, keys, PhoneNormaliser("RU"))
        async with Paused(redis) as paused:
            gave_up = asyncio.create_task(lookup(written(0)))
            await in_flight(lookup, 1)
            # let the command reach the socket: on Python 3.11 a cancel landing just
            # as redis-py's send completes is swallowed by asyncio.wait_for
            await asyncio.sleep(0.01)
            behind = asyncio.create_task(lookup(written(1)))
            await asyncio.sleep(0)
            gave_up.cancel()
            await in_flight(lookup, 2)
            await paused.release()
            answer = await behind
        assert answer.switch == "n2"
        with pytest.raises(asyncio.CancelledError):
            await gave_up
    finally:
        await patient.aclose()


async def test_a_caller_with_broken_records_fails_alone(
    busy: Lookup, redis: Redis, keys: Keys
) -> None:
    gen = await redis.hget(keys.inventory, "gen")
    assert isinstance(gen, str)
    index = await redis.hget(keys.switch_index(gen), "s1")
    assert isinstance(index, str)
    await redis.hset(keys.switches(gen), index, "{not json")
    s1 = ACCESS.index("s1")
    s1_caller, s1_neighbour = written(s1), written(s1 + len(ACCESS))
    with pytest.raises(ResponseError):
        await busy(s1_caller)
    callers = [written(0), s1_caller, written(1), s1_neighbour, "+7 999 000-00-00"]
    done = await asyncio.gather(*(busy(c) for c in callers), return_exceptions=True)
    assert busy.round_trips == 2
    assert isinstance(done[1], ResponseError)
    assert isinstance(done[3], ResponseError)
    assert [a.switch for a in done if isinstance(a, Answer)] == ["n1", "n2", None]


async def test_redis_down_reaches_every_caller_of_the_batch(keys: Keys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    nowhere = connect(RedisSettings(url=f"redis://127.0.0.1:{closed}/0", timeout_ms=500))
    try:
        lookup = Lookup(nowhere, keys, PhoneNormaliser("RU"))
        with pytest.raises(RedisConnectionError):
            await lookup(written(0))
        done = await asyncio.gather(*(lookup(c) for c in BUSY_CALLERS[:50]), return_exceptions=True)
        assert all(isinstance(e, RedisConnectionError) for e in done)
        assert lookup.round_trips == 2
    finally:
        await nowhere.aclose()


async def test_lookups_survive_redis_forgetting_the_script(busy: Lookup, redis: Redis) -> None:
    """Redis restarted (or SCRIPT FLUSH): the next round trip loads the script again."""
    assert (await busy(written(0))).switch == "n1"
    await redis.script_flush()
    answers = await asyncio.gather(*(busy(written(i)) for i in range(30)))
    assert [a.switch for a in answers] == [ACCESS[i % len(ACCESS)] for i in range(30)]
    await redis.script_flush()
    assert (await busy(written(1))).switch == "n2"
