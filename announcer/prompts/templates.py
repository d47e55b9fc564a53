"""What the automatic prompts say, in Russian and English. Pure: no I/O.

``text_for(Source.AUTO, "ru", ["Северный"], eta, tz)`` gives
"В районе Северный авария на сети. Ведутся работы. Ориентировочное время
восстановления — 14:30." Without district names the prompt speaks of the
caller's address; without an ETA the last sentence is left out. Times are
HH:MM in ``tz`` (the host's zone when None).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo

from announcer.announcements import Source

LANGUAGES = ("ru", "en")
#: More districts than this are "several districts" rather than a list.
MAX_NAMED = 3


def hhmm(moment: float, tz: tzinfo | None) -> str:
    """14:30, in ``tz`` (the host's local zone when None)."""
    return datetime.fromtimestamp(moment, tz).strftime("%H:%M")


def _join(names: Sequence[str], conjunction: str) -> str:
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def _where_ru(names: Sequence[str]) -> str:
    if not names:
        return "По вашему адресу"
    if len(names) > MAX_NAMED:
        return "В нескольких районах"
    if len(names) == 1:
        return f"В районе {names[0]}"
    return f"В районах {_join(names, 'и')}"


def _where_en(names: Sequence[str]) -> str:
    if not names:
        return "at your address"
    if len(names) > MAX_NAMED:
        return "in several districts"
    if len(names) == 1:
        return f"in the {names[0]} district"
    return f"in the {_join(names, 'and')} districts"


def _ru(source: Source, names: Sequence[str], at: str | None) -> str:
    where = _where_ru(names)
    if source is Source.AUTO:
        parts = [f"{where} авария на сети.", "Ведутся работы."]
        if at:
            parts.append(f"Ориентировочное время восстановления — {at}.")
    elif source is Source.MAINTENANCE:
        parts = [f"{where} проводятся плановые работы на сети."]
        if at:
            parts.append(f"Работы завершатся к {at}.")
    elif source is Source.RESTORED:
        parts = ["Связь восстановлена.", "Если интернет не работает, перезагрузите роутер."]
    else:
        parts = [
            "Важное сообщение для абонентов.",
            "Мы знаем о проблеме и уже работаем над ней.",
            "Спасибо за терпение.",
        ]
    return " ".join(parts)


def _en(source: Source, names: Sequence[str], at: str | None) -> str:
    where = _where_en(names)
    if source is Source.AUTO:
        parts = [f"There is a network failure {where}.", "Engineers are working on it."]
        if at:
            parts.append(f"Expected restoration time: {at}.")
    elif source is Source.MAINTENANCE:
        parts = [f"Planned maintenance is under way {where}."]
        if at:
            parts.append(f"It will be finished by {at}.")
    elif source is Source.RESTORED:
        parts = [
            "Service has been restored.",
            "If your Internet connection still does not work, please restart your router.",
        ]
    else:
        parts = [
            "An important message for our subscribers.",
            "We know about the problem and are already working on it.",
            "Thank you for your patience.",
        ]
    return " ".join(parts)


def text_for(
    source: Source,
    language: str,
    district_names: Sequence[str],
    eta: float | None,
    tz: tzinfo | None,
) -> str:
    """The prompt for an announcement from ``source``.

    ``district_names``: the districts of a district announcement (empty for
    one that covers a switch: "at your address"). ``eta``: when service
    should be back (auto) or the maintenance window's end, as a Unix time;
    ignored for restored and staff prompts. ``language``: "ru" or "en".
    """
    names = [n.strip() for n in district_names if n.strip()]
    at = hhmm(eta, tz) if eta is not None else None
    if language == "ru":
        return _ru(source, names, at)
    if language == "en":
        return _en(source, names, at)
    raise ValueError(f"no prompt texts in language {language!r}; use one of {LANGUAGES}")
