"""Staff requests: durations and times as staff write them, districts by name."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from redis.asyncio import Redis

from announcer.announcements import Announcement, Scope, Source
from announcer.config import Settings
from announcer.keys import Keys
from announcer.staff import Refused, StaffRequest, parse_duration, parse_moment, resolve
from tests.conftest import InventoryFiles


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("45m", 2700), ("2h", 7200), ("1.5h", 5400), ("1,5h", 5400), ("1d", 86400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_says_how_to_write_one() -> None:
    result = parse_duration("two hours")
    assert isinstance(result, Refused)
    assert "write it like 45m, 2h or 1d" in result.reason


def moment(text: str, now: float) -> datetime:
    at = parse_moment(text, now)
    assert not isinstance(at, Refused), at
    return datetime.fromtimestamp(at)


def test_time_of_day_is_today_or_tomorrow() -> None:
    morning = datetime(2026, 11, 30, 9, 30).timestamp()
    assert moment("12:00", morning) == datetime(2026, 11, 30, 12, 0)
    assert moment("01:00", morning) == datetime(2026, 12, 1, 1, 0)


def test_full_date_and_bad_time() -> None:
    assert moment("2026-12-01 09:00", time.time()) == datetime(2026, 12, 1, 9, 0)
    assert isinstance(parse_moment("25:00", time.time()), Refused)
    assert isinstance(parse_moment("tomorrow", time.time()), Refused)


@pytest.fixture
async def imported(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> None:
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok


@pytest.mark.usefixtures("imported")
async def test_districts_by_name_or_id(settings: Settings, redis: Redis, keys: Keys) -> None:
    request = StaffRequest(districts=("Северный", "south"), text="Авария", ttl_s=3600)
    result = await resolve(redis, keys, settings, request, 1000.0)
    assert isinstance(result, Announcement)
    assert (result.scope, result.targets, result.source) == (
        Scope.DISTRICT,
        ("north", "south"),
        Source.STAFF,
    )
    assert (result.created, result.expires) == (1000.0, 4600.0)


@pytest.mark.usefixtures("imported")
async def test_trailing_space_is_refused_with_the_spelling_that_matches(
    settings: Settings, redis: Redis, keys: Keys
) -> None:
    request = StaffRequest(districts=("Северный ",), text="Авария")
    result = await resolve(redis, keys, settings, request, 1000.0)
    assert isinstance(result, Refused)
    assert result.reason.startswith(
        "unknown district 'Северный '; did you mean 'Северный', without the spaces around it?"
    )
    assert "Known districts: Северный, Южный" in result.reason


@pytest.mark.usefixtures("imported")
async def test_default_and_maximum_duration(settings: Settings, redis: Redis, keys: Keys) -> None:
    plain = await resolve(redis, keys, settings, StaffRequest(everyone=True, text="x"), 0.0)
    assert isinstance(plain, Announcement)
    assert plain.expires == settings.announcements.staff_ttl_s
    too_long = StaffRequest(everyone=True, text="x", ttl_s=30 * 86400)
    refused = await resolve(redis, keys, settings, too_long, 0.0)
    assert isinstance(refused, Refused)
    assert "at most 7 days" in refused.reason


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (StaffRequest(text="x"), "say who hears it"),
        (StaffRequest(everyone=True, districts=("north",), text="x"), "say who hears it"),
        (StaffRequest(everyone=True), "needs a recording or a text"),
        (StaffRequest(switches=("nope",), text="x"), "unknown switch 'nope'"),
        (StaffRequest(everyone=True, text="x", until=500.0), "already past"),
    ],
)
@pytest.mark.usefixtures("imported")
async def test_bad_requests(
    settings: Settings, redis: Redis, keys: Keys, request_: StaffRequest, words: str
) -> None:
    result = await resolve(redis, keys, settings, request_, 1000.0)
    assert isinstance(result, Refused)
    assert words in result.reason
