"""Staff announcements: checking what tech support asked for, then publishing it.

The CLI, the drop folder and the phone extension all build a
``StaffRequest`` and call ``publish``. Whatever is wrong with a request comes
back as a ``Refused`` with a sentence a support engineer understands; nothing
is half-published.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.asyncio import Redis

from announcer.announce_store import AnnouncementStore
from announcer.announcements import Announcement, Scope, Source, new_id
from announcer.config import Settings
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys

_DURATION = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*(s|sec|m|min|h|hours?|d|days?)?\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600}
_UNITS |= {"d": 86400, "day": 86400, "days": 86400}


@dataclass(frozen=True)
class Refused:
    """Why a request was not published, in plain words."""

    reason: str


def parse_duration(text: str) -> float | Refused:
    """``90`` (seconds), ``45m``, ``2h``, ``1.5h``, ``1d`` -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        return Refused(f"{text!r} is not a duration; write it like 45m, 2h or 1d")
    number = float(match.group(1).replace(",", "."))
    unit = (match.group(2) or "s").lower()
    return number * _UNITS[unit]


def parse_moment(text: str, now: float) -> float | Refused:
    """``14:30`` (today, or tomorrow if that has passed), ``2026-12-01 09:00``,
    or an ISO 8601 time with its offset -> a Unix time. Local time unless
    the text says otherwise."""
    text = str(text).strip()
    current = datetime.fromtimestamp(now).astimezone()
    clock = re.fullmatch(r"(\d{1,2})[:.](\d{2})", text)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            return Refused(f"{text!r} is not a time of day")
        moment = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if moment.timestamp() <= now:
            moment += timedelta(days=1)
        return moment.timestamp()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return Refused(f"{text!r} is not a time; write it like 14:30 or 2026-12-01 09:00")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=current.tzinfo)
    return parsed.timestamp()


@dataclass(frozen=True)
class StaffRequest:
    """What a support engineer asked for, as given (names, not yet checked)."""

    districts: tuple[str, ...] = ()
    """district ids or names, as staff wrote them"""
    switches: tuple[str, ...] = ()
    everyone: bool = False
    text: str = ""
    audio: str | None = None
    """a recording already converted for Asterisk: its sound path"""
    ttl_s: float | None = None
    until: float | None = None
    eta: float | None = None
    author: str | None = None


def _near_miss(name: str, known: dict[str, str]) -> str:
    folded = " ".join(name.split()).casefold()
    for id_, title in known.items():
        if folded in (id_.casefold(), title.casefold()):
            shown = title if folded == title.casefold() else id_
            if name != name.strip():
                return f"; did you mean {shown!r}, without the spaces around it?"
            return f"; did you mean {shown!r}?"
    return ""


async def resolve(
    redis: Redis,
    keys: Keys,
    settings: Settings,
    request: StaffRequest,
    now: float,
    ident: str | None = None,
) -> Announcement | Refused:
    """Check a request against the inventory and the limits; build the announcement."""
    chosen = sum(bool(x) for x in (request.districts, request.switches, request.everyone))
    if chosen != 1:
        return Refused("say who hears it: some districts, some switches, or everyone (all)")
    if not request.text and not request.audio:
        return Refused("an announcement needs a recording or a text to speak")
    limits = settings.announcements
    if request.until is not None:
        if request.until <= now:
            return Refused("the end time is already past; give a later one")
        ttl = request.until - now
    else:
        ttl = request.ttl_s if request.ttl_s is not None else limits.staff_ttl_s
    if ttl <= 0:
        return Refused("the duration must be more than zero")
    if ttl > limits.staff_max_ttl_s:
        days = limits.staff_max_ttl_s / 86400
        return Refused(
            f"at most {days:g} days ([announcements] staff_max_ttl_s); give a shorter duration"
        )
    inventory = InventoryStore(redis, keys)
    targets: tuple[str, ...] = ()
    scope = Scope.GLOBAL
    if request.districts:
        names = await inventory.district_names()
        by_name = {title: id_ for id_, title in names.items()}
        resolved = []
        for given in request.districts:
            if given in names:
                resolved.append(given)
            elif given in by_name:
                resolved.append(by_name[given])
            else:
                known = ", ".join(sorted(names.values())) or "none: import the inventory first"
                return Refused(
                    f"unknown district {given!r}{_near_miss(given, names)} Known districts: {known}"
                )
        targets, scope = tuple(dict.fromkeys(resolved)), Scope.DISTRICT
    elif request.switches:
        _, switches = await inventory.switches()
        missing = [s for s in request.switches if s not in switches]
        if missing:
            return Refused(f"unknown switch {', '.join(map(repr, missing))}; check the ids")
        targets, scope = tuple(dict.fromkeys(request.switches)), Scope.SWITCH
    return Announcement(
        id=ident or new_id("staff"),
        scope=scope,
        targets=targets,
        source=Source.STAFF,
        text=request.text,
        created=now,
        expires=now + ttl,
        audio=request.audio,
        eta=request.eta,
        author=request.author,
    )


async def publish(
    redis: Redis,
    keys: Keys,
    settings: Settings,
    request: StaffRequest,
    now: float | None = None,
    ident: str | None = None,
) -> Announcement | Refused:
    """Check and store a staff announcement; the publisher makes it live.

    ``ident`` names it (the drop folder names the recording's sound the same);
    a new one is made otherwise.
    """
    announcement = await resolve(redis, keys, settings, request, now or time.time(), ident)
    if isinstance(announcement, Announcement):
        await AnnouncementStore(redis, keys).add_staff(announcement)
    return announcement
