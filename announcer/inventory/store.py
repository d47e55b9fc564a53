"""The inventory in Redis: written as a new generation, then swapped in at once.

An import writes every key of a new generation while lookups keep reading the
old one, then replaces the ``inventory`` hash (which names the live
generation) in one transaction. A lookup resolves the generation and reads
its data inside one Lua script, so it sees the old inventory or the new one,
never a mix. An import that fails before the swap only leaves keys of an
unused generation, which the next import removes; the live one is untouched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from announcer import keys as layout
from announcer.inventory.diff import Diff, Snapshot, compare
from announcer.inventory.model import Inventory
from announcer.keys import Keys

logger = logging.getLogger(__name__)

_PIPELINE = 500
#: An import that died is assumed gone after this long; its lock expires.
LOCK_TIMEOUT_S = 900


class ImportBusy(Exception):
    """Another import holds the lock."""


@dataclass(frozen=True)
class Generation:
    """The live inventory's identity and size."""

    gen: int
    buckets: int
    imported_at: float
    source: str
    districts: int
    switches: int
    subscribers: int

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Generation:
        return cls(
            gen=int(data["gen"]),
            buckets=int(data["buckets"]),
            imported_at=float(data["imported_at"]),
            source=data.get("source", ""),
            districts=int(data.get("districts", 0)),
            switches=int(data.get("switches", 0)),
            subscribers=int(data.get("subscribers", 0)),
        )


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class InventoryStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def current(self) -> Generation | None:
        data: dict[str, str] = await self.redis.hgetall(self.keys.inventory)  # type: ignore[assignment]
        return Generation.from_hash(data) if data else None

    async def switches(self) -> tuple[Generation | None, dict[str, dict[str, Any]]]:
        """The live generation and its switches by id, read consistently."""
        for _ in range(3):
            live = await self.current()
            if live is None:
                return None, {}
            raw: dict[str, str] = await self.redis.hgetall(self.keys.switches(live.gen))  # type: ignore[assignment]
            if raw or live.switches == 0:
                records = (json.loads(v) for v in raw.values())
                return live, {r["id"]: r for r in records}
            # an import swapped generations between the two reads: read again
        raise RuntimeError("the inventory changed three times while being read")

    async def district_names(self) -> dict[str, str]:
        live = await self.current()
        if live is None:
            return {}
        raw: dict[str, str] = await self.redis.hgetall(self.keys.districts(live.gen))  # type: ignore[assignment]
        return {i: json.loads(v)["name"] for i, v in raw.items()}

    async def snapshot(self) -> Snapshot:
        """Read the live inventory back (for the diff of the next import)."""
        snap = Snapshot()
        live = await self.current()
        if live is None:
            return snap
        k, g = self.keys, live.gen
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(k.districts(g))
            pipe.hgetall(k.switches(g))
            districts, switches = await pipe.execute()
        snap.districts = {i: json.loads(v)["name"] for i, v in districts.items()}
        by_index: dict[str, str] = {}
        for index, raw in switches.items():
            record = json.loads(raw)
            snap.switches[record["id"]] = record
            by_index[index] = record["id"]
        for start in range(0, live.buckets, _PIPELINE):
            async with self.redis.pipeline(transaction=False) as pipe:
                for bucket in range(start, min(start + _PIPELINE, live.buckets)):
                    pipe.hgetall(k.phones(g, bucket))
                for bucket_map in await pipe.execute():
                    for digits, index in bucket_map.items():
                        snap.phones[digits] = by_index[index]
        return snap

    async def replace(
        self,
        inventory: Inventory,
        source: str,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[Generation, Diff]:
        """Write ``inventory`` as the new live one; return it and what changed."""
        lock = self.redis.lock(self.keys.inventory_lock, timeout=LOCK_TIMEOUT_S, blocking=False)
        if not await lock.acquire():
            raise ImportBusy(
                "another import is running; wait for it to finish (its lock expires by"
                f" itself {LOCK_TIMEOUT_S // 60} minutes after it started if it died)"
            )
        try:
            diff = compare(await self.snapshot(), inventory)
            gen = await self._write(inventory, source, progress)
            await self.remove_stale()
            return gen, diff
        finally:
            await lock.release()

    async def _write(
        self, inv: Inventory, source: str, progress: Callable[[int], None] | None
    ) -> Generation:
        k, r = self.keys, self.redis
        gen = int(await r.incr(k.inventory_seq))
        await r.sadd(k.inventory_gens, gen)
        buckets = layout.bucket_count(len(inv.phones))
        index = {switch_id: i for i, switch_id in enumerate(inv.switches)}

        phone_buckets: list[dict[str, int]] = [{} for _ in range(buckets)]
        for digits, switch_id in inv.phones.items():
            phone_buckets[layout.bucket_of(digits, buckets)][digits] = index[switch_id]
        detail_buckets: dict[int, dict[str, str]] = {}
        for digits, details in inv.details.items():
            held = detail_buckets.setdefault(layout.bucket_of(digits, buckets), {})
            held[digits] = _json(details.record())

        pipe = r.pipeline(transaction=False)
        if inv.districts:
            pipe.hset(
                k.districts(gen),
                mapping={i: _json({"name": d.name}) for i, d in inv.districts.items()},
            )
        if inv.switches:
            pipe.hset(
                k.switches(gen),
                mapping={index[i]: _json(s.record()) for i, s in inv.switches.items()},
            )
            pipe.hset(k.switch_index(gen), mapping=index)  # type: ignore[arg-type]
        queued = pending = 0
        for bucket, phone_map in enumerate(phone_buckets):
            if phone_map:
                pipe.hset(k.phones(gen, bucket), mapping=phone_map)  # type: ignore[arg-type]
            if bucket in detail_buckets:
                pipe.hset(k.details(gen, bucket), mapping=detail_buckets[bucket])  # type: ignore[arg-type]
            queued += 1
            pending += len(phone_map)
            if queued >= _PIPELINE or bucket == buckets - 1:
                await pipe.execute()
                if progress:
                    progress(pending)
                queued = pending = 0
        await pipe.execute()

        live = Generation(
            gen=gen,
            buckets=buckets,
            imported_at=time.time(),
            source=source,
            districts=len(inv.districts),
            switches=len(inv.switches),
            subscribers=len(inv.phones),
        )
        async with r.pipeline(transaction=True) as swap:
            swap.delete(k.inventory)
            swap.hset(
                k.inventory,
                mapping={
                    "gen": live.gen,
                    "buckets": live.buckets,
                    "imported_at": f"{live.imported_at:.3f}",
                    "source": source,
                    "districts": live.districts,
                    "switches": live.switches,
                    "subscribers": live.subscribers,
                },
            )
            await swap.execute()
        logger.info("inventory generation %d is live (%s)", gen, source)
        return live

    async def remove_stale(self) -> int:
        """Delete the keys of every generation but the live one; return how many."""
        live = await self.current()
        removed = 0
        gens: set[str] = await self.redis.smembers(self.keys.inventory_gens)  # type: ignore[assignment]
        for gen in gens:
            if live is not None and int(gen) == live.gen:
                continue
            batch: list[str] = []
            async for key in self.redis.scan_iter(self.keys.generation_pattern(gen), count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    removed += await self.redis.unlink(*batch)
                    batch.clear()
            if batch:
                removed += await self.redis.unlink(*batch)
            await self.redis.srem(self.keys.inventory_gens, gen)
        return removed
