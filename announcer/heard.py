"""Matched lookups, kept for statistics: which caller heard which announcement.

Every FastAGI lookup that played a prompt adds one entry to the ``P:heard``
stream (its id is the time, in milliseconds)::

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

from redis.asyncio import Redis

from announcer.keys import Keys
from announcer.lookup import Answer

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
