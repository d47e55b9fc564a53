"""The prompts' texts, word for word."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from announcer.announcements import Source
from announcer.prompts.templates import text_for

MSK = timezone(timedelta(hours=3))
AT_1430 = datetime(2025, 3, 14, 14, 30, tzinfo=MSK).timestamp()
AT_0600 = datetime(2025, 3, 15, 6, 0, tzinfo=MSK).timestamp()


@pytest.mark.parametrize(
    ("source", "names", "eta", "expected"),
    [
        (
            Source.AUTO,
            [],
            AT_1430,
            "По вашему адресу авария на сети. Ведутся работы. "
            "Ориентировочное время восстановления — 14:30.",
        ),
        (
            Source.AUTO,
            ["Северный"],
            AT_1430,
            "В районе Северный авария на сети. Ведутся работы. "
            "Ориентировочное время восстановления — 14:30.",
        ),
        (Source.AUTO, ["Северный"], None, "В районе Северный авария на сети. Ведутся работы."),
        (
            Source.AUTO,
            ["Северный", "Южный"],
            None,
            "В районах Северный и Южный авария на сети. Ведутся работы.",
        ),
        (
            Source.AUTO,
            ["Северный", "Южный", "Центральный"],
            None,
            "В районах Северный, Южный и Центральный авария на сети. Ведутся работы.",
        ),
        (
            Source.AUTO,
            ["Северный", "Южный", "Центральный", "Западный"],
            None,
            "В нескольких районах авария на сети. Ведутся работы.",
        ),
        (
            Source.MAINTENANCE,
            ["Северный"],
            AT_0600,
            "В районе Северный проводятся плановые работы на сети. Работы завершатся к 06:00.",
        ),
        (Source.MAINTENANCE, [], None, "По вашему адресу проводятся плановые работы на сети."),
        (
            Source.RESTORED,
            ["Северный"],
            AT_1430,
            "Связь восстановлена. Если интернет не работает, перезагрузите роутер.",
        ),
    ],
)
def test_russian(source: Source, names: list[str], eta: float | None, expected: str) -> None:
    assert text_for(source, "ru", names, eta, MSK) == expected


@pytest.mark.parametrize(
    ("source", "names", "eta", "expected"),
    [
        (
            Source.AUTO,
            [],
            AT_1430,
            "There is a network failure at your address. Engineers are working on it. "
            "Expected restoration time: 14:30.",
        ),
        (
            Source.AUTO,
            ["North", "South"],
            None,
            "There is a network failure in the North and South districts. "
            "Engineers are working on it.",
        ),
        (
            Source.MAINTENANCE,
            ["North"],
            AT_0600,
            "Planned maintenance is under way in the North district. It will be finished by 06:00.",
        ),
        (
            Source.RESTORED,
            [],
            None,
            "Service has been restored. "
            "If your Internet connection still does not work, please restart your router.",
        ),
    ],
)
def test_english(source: Source, names: list[str], eta: float | None, expected: str) -> None:
    assert text_for(source, "en", names, eta, MSK) == expected


def test_times_are_local_to_the_zone_given() -> None:
    utc = text_for(Source.AUTO, "ru", [], AT_1430, UTC)
    assert utc.endswith("— 11:30.")


def test_staff_fallback_text_names_no_time() -> None:
    for language in ("ru", "en"):
        text = text_for(Source.STAFF, language, ["Северный"], AT_1430, MSK)
        assert text
        assert "14:30" not in text


def test_blank_district_names_are_ignored() -> None:
    assert text_for(Source.AUTO, "ru", ["  ", ""], None, MSK).startswith("По вашему адресу")


def test_unknown_language() -> None:
    with pytest.raises(ValueError, match="'de'"):
        text_for(Source.AUTO, "de", [], None, MSK)
