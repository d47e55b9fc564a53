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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from announcer import keys as layout
from announcer.inventory.diff import Diff, Snapshot, compare
from announcer.inventory.model import Inventory
from announcer.keys import Keys
from announcer.redisconn import send_bulk

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


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def pack_numbers(numbers: Sequence[str]) -> str:
    """E.164 digit strings as one compact string: their width, a colon, then
    each number in base 36 padded to that width (eight characters for a
    Russian number instead of twelve with a separator; Redis holds a million)."""
    values = [int(n) for n in numbers]
    width = 1
    while values and 36**width <= max(values):
        width += 1
    out = []
    for value in values:
        chars = []
        rest = value
        for _ in range(width):
            rest, digit = divmod(rest, 36)
            chars.append(_DIGITS36[digit])
        out.append("".join(reversed(chars)))
    return f"{width}:{''.join(out)}"


def unpack_numbers(packed: str) -> list[str]:
    """The numbers ``pack_numbers`` packed, as E.164 digit strings."""
    head, _, body = packed.partition(":")
    if not body:
        return []
    width = int(head)
    return [str(int(body[i : i + width], 36)) for i in range(0, len(body), width)]


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

    async def subscriber_counts(self) -> dict[str, int]:
        """Switch id -> subscriber numbers on it, in the live inventory."""
        live = await self.current()
        if live is None:
            return {}
        raw: dict[str, str] = await self.redis.hgetall(self.keys.switch_load(live.gen))  # type: ignore[assignment]
        return {switch: int(count) for switch, count in raw.items()}

    async def numbers_on(self, switch_ids: Sequence[str]) -> dict[str, list[str]]:
        """The numbers (E.164 digits) on each of ``switch_ids``, in the live inventory;
        a switch it does not know has none."""
        if not switch_ids:
            return {}
        for _ in range(3):
            live = await self.current()
            if live is None:
                return {}
            key = self.keys.switch_phones(live.gen)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.exists(key)
                pipe.hmget(key, list(switch_ids))
                present, packed = await pipe.execute()
            if present or live.subscribers == 0:
                return {s: unpack_numbers(p or "") for s, p in zip(switch_ids, packed, strict=True)}
            # an import swapped generations and removed this one meanwhile
        raise RuntimeError("the inventory changed three times while being read")

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

        phone_buckets: list[list[str | int]] = [[] for _ in range(buckets)]
        detail_buckets: dict[int, list[str | int]] = {}
        details = inv.details
        for digits, switch_id in inv.phones.items():
            bucket = layout.bucket_of(digits, buckets)
            phone_buckets[bucket] += (digits, index[switch_id])
            if digits in details:
                detail_buckets.setdefault(bucket, []).extend((digits, details[digits].pack()))

        members: dict[str, list[str]] = {}
        for digits, switch_id in inv.phones.items():
            members.setdefault(switch_id, []).append(digits)
        load = {switch_id: len(numbers) for switch_id, numbers in members.items()}

        def commands() -> Iterator[list[str | int]]:
            if inv.districts:
                names = (x for i, d in inv.districts.items() for x in (i, _json({"name": d.name})))
                yield ["HSET", k.districts(gen), *names]
            if inv.switches:
                records = (
                    x for i, s in inv.switches.items() for x in (index[i], _json(s.record()))
                )
                yield ["HSET", k.switches(gen), *records]
                yield ["HSET", k.switch_index(gen), *(x for pair in index.items() for x in pair)]
            if load:
                yield ["HSET", k.switch_load(gen), *(x for pair in load.items() for x in pair)]
                on_switch = list(members.items())
                for start in range(0, len(on_switch), _PIPELINE):
                    chunk = on_switch[start : start + _PIPELINE]
                    numbers = (x for switch_id, n in chunk for x in (switch_id, pack_numbers(n)))
                    yield ["HSET", k.switch_phones(gen), *numbers]
            for bucket, pairs in enumerate(phone_buckets):
                if pairs:
                    yield ["HSET", k.phones(gen, bucket), *pairs]
                if bucket in detail_buckets:
                    yield ["HSET", k.details(gen, bucket), *detail_buckets[bucket]]

        per_command = max(1, len(inv.phones) // max(1, buckets + len(detail_buckets)))
        await send_bulk(
            r, commands(), progress=(lambda n: progress(n * per_command)) if progress else None
        )

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
