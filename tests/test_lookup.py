"""The caller lookup against a real Redis, for numbers in every format."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from announcer.config import Settings
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
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
