"""Reads what ``announcer report`` needs from Redis and hands it to ``report.build``."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from announcer.heard import MAXLEN as HEARD_MAXLEN
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.report import Entry, Kept, Report, build, entry_time
from announcer.store import EVENTS_MAXLEN

#: Entries asked for at a time: a capped stream is read in a few hundred
#: round trips at most, none of them long for Redis.
CHUNK = 10_000


async def entries(redis: Redis, key: str, start: str = "-", end: str = "+") -> list[Entry]:
    """Every entry of a stream between two ids (inclusive), oldest first."""
    out: list[Entry] = []
    while True:
        raw: list[tuple[str, dict[str, str]]] = await redis.xrange(  # type: ignore[assignment]
            key, min=start, max=end, count=CHUNK
        )
        out += [Entry(entry_time(entry_id), fields) for entry_id, fields in raw]
        if len(raw) < CHUNK:
            return out
        start = "(" + raw[-1][0]


async def kept(redis: Redis, key: str, cap: int) -> Kept:
    """How much of a capped stream is left: its oldest entry, and whether
    older ones were dropped."""
    try:
        info: dict[str, Any] = await redis.xinfo_stream(key)
    except ResponseError:  # no such key: nothing recorded yet
        return Kept(None, False, cap)
    first = info.get("first-entry")
    oldest = entry_time(first[0]) if first else None
    length = int(info.get("length", 0))
    added = info.get("entries-added")  # Redis 7 and later
    trimmed = int(added) > length if added is not None else length >= cap
    return Kept(oldest, trimmed, cap)


def _ms(at: float) -> str:
    return str(max(0, int(at * 1000)))


async def read(redis: Redis, keys: Keys, since: float, until: float) -> Report:
    """The report for ``since`` <= t < ``until`` from what Redis holds now."""
    inventory = InventoryStore(redis, keys)
    _, switches = await inventory.switches()
    names = await inventory.district_names()
    events = await entries(redis, keys.events)
    heard = await entries(redis, keys.heard, _ms(since), _ms(until))
    return build(
        events,
        heard,
        since,
        until,
        {switch: record["district"] for switch, record in switches.items()},
        names,
        await kept(redis, keys.events, EVENTS_MAXLEN),
        await kept(redis, keys.heard, HEARD_MAXLEN),
    )
