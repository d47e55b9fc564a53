"""Matched lookups, kept for statistics: which caller heard which announcement.

Every FastAGI lookup that played a prompt adds one entry to the ``P:heard``
stream (its id is the time, in milliseconds), and so does every call the
AstDB dialplan played a mirrored prompt to (its ``UserEvent`` over AMI,
``HeardOverAmi``; the switch and district are looked up when it arrives)::

    announcement  auto-district-north
    phone         +79161234567      (E.164; empty for a withheld number)
    caller        89161234567       (the caller ID as Asterisk sent it)
    scope         district
    switch        sw-north-1        (empty for a caller not in the inventory)
    district      north

The stream is capped (approximately) at ``maxlen`` entries, oldest first out:
a million entries take about 100 MB of Redis memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer.keys import Keys
from announcer.lookup import Answer, Lookup

logger = logging.getLogger(__name__)

#: Entries kept; at 500 matched calls an hour, over two months.
MAXLEN = 1_000_000


class HeardLog:
    def __init__(self, redis: Redis, keys: Keys, maxlen: int = MAXLEN) -> None:
        self.redis = redis
        self.key = keys.heard
        self.maxlen = maxlen

    async def record(self, answer: Answer, caller: str) -> None:
        """Add one matched lookup; the AGI server calls it after the call went on."""
        await self.redis.xadd(
            self.key,
            {
                "announcement": answer.announcement or "",
                "phone": answer.phone or "",
                "caller": caller,
                "scope": answer.scope or "",
                "switch": answer.switch or "",
                "district": answer.district or "",
            },
            maxlen=self.maxlen,
            approximate=True,
        )

    async def entries(self, count: int = 100) -> list[dict[str, str]]:
        """The latest ``count`` entries, newest first, each with its ``at`` (seconds)."""
        raw: list[tuple[str, dict[str, str]]] = await self.redis.xrevrange(  # type: ignore[assignment]
            self.key, count=count
        )
        out = []
        for entry_id, fields in raw:
            at = int(str(entry_id).partition("-")[0]) / 1000
            out.append({**fields, "at": f"{at:.3f}"})
        return out


class HeardOverAmi:
    """Records the calls the AstDB dialplan reports (``UserEvent(AnnouncerHeard,
    Announcement: ..., Scope: ..., Number: <E.164 digits>, CallerID: ...)``):
    the number is looked up for its switch and district, and the entry
    written like a FastAGI one. Called from the AMI reader, so it only
    starts the work; a Redis that does not answer loses that entry, never
    the AMI link."""

    def __init__(self, log: HeardLog, lookup: Lookup) -> None:
        self.log = log
        self.lookup = lookup
        self._writing: set[asyncio.Task[None]] = set()

    def __call__(self, event: Mapping[str, str]) -> None:
        task = asyncio.get_running_loop().create_task(self._record(event))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _record(self, event: Mapping[str, str]) -> None:
        announcement = event.get("Announcement", "")
        if not announcement:
            return
        number = "".join(c for c in event.get("Number", "") if c.isdigit())
        try:
            answer = await self.lookup(f"+{number}" if number else None)
            heard = dataclasses.replace(
                answer, announcement=announcement, scope=event.get("Scope") or answer.scope
            )
            await self.log.record(heard, event.get("CallerID", ""))
        except (RedisError, OSError) as exc:
            logger.warning("a call that heard %s is not counted: %s", announcement, exc)
