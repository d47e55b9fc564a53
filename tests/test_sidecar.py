"""The sidecar parser: what staff write, and what they are told when it is wrong."""

from __future__ import annotations

from datetime import datetime

import pytest

from announcer.sidecar import Sidecar, parse_sidecar
from announcer.staff import Refused

# 2026-03-10 09:30 local time
NOW = datetime(2026, 3, 10, 9, 30).timestamp()


def parse(text: str) -> Sidecar:
    got = parse_sidecar(text.encode(), "авария.toml", NOW)
    assert isinstance(got, Sidecar), got
    return got


def refused(data: str | bytes) -> str:
    got = parse_sidecar(data.encode() if isinstance(data, str) else data, "авария.toml", NOW)
    assert isinstance(got, Refused), got
    return got.reason


def test_the_scenario_sidecar() -> None:
    sidecar = parse(
        'districts = ["Северный", "Южный"]\n'
        'ttl = "2h"\n'
        'eta = "12:00"\n'
        'text = "Авария у магистрального провайдера"\n'
        'author = "Иванова"\n'
    )
    assert sidecar.districts == ("Северный", "Южный")
    assert sidecar.ttl_s == 7200
    assert sidecar.eta == datetime(2026, 3, 10, 12, 0).timestamp()
    assert sidecar.until is None
    assert sidecar.text == "Авария у магистрального провайдера"
    assert sidecar.author == "Иванова"
    request = sidecar.request("/var/lib/announcer/sounds/staff-1")
    assert request.audio == "/var/lib/announcer/sounds/staff-1"
    assert (request.districts, request.ttl_s, request.author) == (
        ("Северный", "Южный"),
        7200,
        "Иванова",
    )


def test_names_are_passed_on_as_written() -> None:
    """A trailing space is for staff.resolve to explain, against the inventory."""
    assert parse('districts = ["Северный "]').districts == ("Северный ",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all = true", Sidecar(everyone=True)),
        ('switches = ["n1", "s1"]', Sidecar(switches=("n1", "s1"))),
        ('districts = "Северный"', Sidecar(districts=("Северный",))),
        ("districts = [12]", Sidecar(districts=("12",))),
        ('all = true\nuntil = "12:00"', Sidecar(everyone=True, until=NOW + 2.5 * 3600)),
        ("all = true\nuntil = 12:00:00", Sidecar(everyone=True, until=NOW + 2.5 * 3600)),
        ('all = true\nuntil = "09:00"', Sidecar(everyone=True, until=NOW + 23.5 * 3600)),
        (
            "all = true\nuntil = 2026-03-11T08:00:00",
            Sidecar(everyone=True, until=datetime(2026, 3, 11, 8).timestamp()),
        ),
        ('all = true\nttl = "45m"', Sidecar(everyone=True, ttl_s=2700)),
        ('all = true\ntext = "  Авария  "', Sidecar(everyone=True, text="Авария")),
        ("\ufeffall = true\r\n", Sidecar(everyone=True)),
    ],
)
def test_accepted_forms(text: str, expected: Sidecar) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ('district = ["Северный"]', ["авария.toml", "unknown key 'district'", "'districts'"]),
        ("all = true\n[extra]\nx = 1", ["unknown key 'extra'", "districts, all, switches"]),
        (
            'districts = ["Северный"]\nuntil = 12:00',
            ["not valid TOML", "line 2", 'until = "12:00"'],
        ),
        ("districts = [Северный]", ["not valid TOML", "line 1", 'districts = ["Северный"]']),
        ("text = “Авария”\nall = true", ["not valid TOML", "straight double quotes"]),
        ('districts = ["Северный"\nttl = "2h"', ["not valid TOML", "line 2"]),
        ("ttl = \"2h\"\ntext = 'x'", ["does not say who hears it", "all = true"]),
        ("", ["does not say who hears it"]),
        ("districts = []", ["does not say who hears it"]),
        ('all = true\ndistricts = ["Южный"]', ["only one of districts, switches and all"]),
        ('all = true\nttl = "2h"\nuntil = "12:00"', ["either ttl", "or until", "not both"]),
        ("all = true\nttl = 2", ["ttl = 2 has no unit", 'ttl = "2h"']),
        ('all = true\nttl = "2"', ["has no unit"]),
        ('all = true\nttl = "2 weeks"', ["ttl:", "not a duration"]),
        ('all = true\nuntil = "25:00"', ["until:", "not a time of day"]),
        ('all = true\neta = "soon"', ["eta:", "not a time"]),
        ("all = true\neta = 2026-03-10", ["eta needs a time of day too"]),
        ('all = "yes"', ["all must be true or false"]),
        ("districts = [true]", ["districts must be a list of names in quotes"]),
        ("all = true\ntext = 5", ["text must be text in quotes"]),
        ("all = true\nauthor = ['a']", ["author must be text"]),
        ("text = 'Авария'\nall = true".encode("cp1251"), ["not UTF-8", "UTF-8 encoding"]),
        ("all = true".encode("utf-16"), ["not UTF-8"]),
        (b"all = true\n" + b"#" * 70_000, ["too big for a sidecar"]),
    ],
)
def test_refused_with_a_reason_staff_understand(data: str | bytes, words: list[str]) -> None:
    reason = refused(data)
    assert reason.startswith("авария.toml")
    for word in words:
        assert word in reason
