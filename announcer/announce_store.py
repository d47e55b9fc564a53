"""Announcements in Redis: staff requests, maintenance windows, the active set.

The active set is written whole by the publisher after every evaluation,
with an index from switch to the announcement its callers hear, so that a
lookup needs no logic of its own: switch -> id -> announcement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from announcer.announcements import Announcement, Maintenance
from announcer.keys import Keys
from announcer.store import EVENTS_MAXLEN

_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


#: A lookup names the targets of an announcement up to this many, then counts.
NAMED_TARGETS = 5


def heard(a: Announcement) -> dict[str, object]:
    """What a lookup needs of an announcement: small even when it covers
    thousands of switches, since every caller who hears it reads it."""
    out: dict[str, object] = {
        "id": a.id,
        "scope": a.scope.value,
        "source": a.source.value,
        "expires": a.expires,
        "targets": list(a.targets[:NAMED_TARGETS]),
        "count": len(a.targets),
    }
    if a.prompt:
        out["prompt"] = a.prompt
    return out


class AnnouncementStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # staff -------------------------------------------------------------------

    async def add_staff(self, announcement: Announcement) -> None:
        await self.redis.hset(self.keys.staff, announcement.id, _json(announcement.record()))

    async def staff(self) -> list[Announcement]:
        raw: dict[str, str] = await self.redis.hgetall(self.keys.staff)  # type: ignore[assignment]
        return [Announcement.from_record(json.loads(v)) for v in raw.values()]

    async def remove_staff(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(await self.redis.hdel(self.keys.staff, *ids))

    # maintenance -------------------------------------------------------------

    async def add_maintenance(self, window: Maintenance) -> None:
        await self.redis.hset(self.keys.maintenance, window.id, _json(window.record()))

    async def maintenance(self) -> list[Maintenance]:
        raw: dict[str, str] = await self.redis.hgetall(self.keys.maintenance)  # type: ignore[assignment]
        return [Maintenance.from_record(json.loads(v)) for v in raw.values()]

    async def remove_maintenance(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(await self.redis.hdel(self.keys.maintenance, *ids))

    # the active set ----------------------------------------------------------

    async def active(self) -> list[Announcement]:
        raw: dict[str, str] = await self.redis.hgetall(self.keys.active)  # type: ignore[assignment]
        return [Announcement.from_record(json.loads(v)) for v in raw.values()]

    async def write_active(
        self,
        active: Sequence[Announcement],
        by_switch: Mapping[str, str],
        everyone: str | None,
        events: Sequence[Mapping[str, str]] = (),
    ) -> None:
        """Replace the active set and its index in one transaction."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(k.active, k.active_heard, k.active_by_switch, k.active_global)
            if active:
                pipe.hset(k.active, mapping={a.id: _json(a.record()) for a in active})
                pipe.hset(k.active_heard, mapping={a.id: _json(heard(a)) for a in active})
            if by_switch:
                pipe.hset(k.active_by_switch, mapping=dict(by_switch))  # type: ignore[arg-type]
            if everyone:
                pipe.set(k.active_global, everyone)
            for event in events:
                pipe.xadd(
                    k.events,
                    {"at": f"{time.time():.3f}", **event},  # type: ignore[dict-item]
                    maxlen=EVENTS_MAXLEN,
                    approximate=True,
                )
            await pipe.execute()
