"""Mirrors of what callers should hear, for dialplans that read them directly.

The FastAGI mode asks announcer during the call; the AstDB and Redis-key
modes read a copy that announcer keeps up to date, so a call needs no
announcer at all. This module keeps such a copy: ``Truth`` says what every
affected number should hear now, one entry per number plus ``global``::

    79161234567  ->  "1796040000,/var/lib/announcer/sounds/tts-ru-1a2b,auto-district-north,district"
    global       ->  "UNTIL,PROMPT,ID,SCOPE" for everyone else

UNTIL is when the announcement ends (seconds since 1970); the dialplan plays
nothing past it (``announcer-entry`` in asterisk/announcer-common.conf). A
number whose switch hears the global announcement gets no entry of its own:
the dialplan falls back to ``global``, so a city-wide outage is one entry.

``Mirror`` brings a ``Sink`` (AstDB over AMI in ``announcer.pbx.ami``, Redis
keys in ``RedisKeysSink``) to that truth by difference: it remembers what it
wrote, and writes only what changed, the global entry first, then removals,
then additions, in batches at ``max_writes_per_s`` at most. When a change
arrives in the middle of a long batch (a mass outage being mirrored while the
next switch falls), the rest is planned again from the new truth. After every
(re)connection, and at start, it reads the sink back and reconciles.

**No stale prompt.** Each mirror is *vouched for* with a lease: the sink is
told "good until now + lease_s", renewed every quarter of ``lease_s`` while
the truth could be read from Redis and the sink written. AstDB keeps the
lease in ``<family>/lease``, which the dialplan compares with ``${EPOCH}``;
Redis keys carry it as their TTL. If announcer dies, Redis is lost or the AMI
link drops, nobody renews the lease, and every mirrored prompt stops within
``lease_s``; on restart the mirror is rebuilt from the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer.cancel import pause, raise_if_cancelled
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys

logger = logging.getLogger(__name__)

GLOBAL = "global"
LEASE = "lease"
#: Writes sent together; the rate limit sleeps between batches.
BATCH = 500
#: The first reconnection waits this long, then twice as long each time.
FIRST_BACKOFF_S = 1.0


class LinkDown(Exception):
    """The sink cannot be reached or refused a write; the message says why
    and what to check."""


def entry(heard: Mapping[str, object], prompt_path: Callable[[str], str]) -> str | None:
    """The mirrored value of one active announcement (``P:active:heard``), or
    None when it has nothing to play."""
    prompt = heard.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return None
    until = math.floor(float(str(heard["expires"])))
    return f"{until},{prompt_path(prompt)},{heard['id']},{heard['scope']}"


def until_of(value: str) -> float:
    """UNTIL of a mirrored value; 0 when unreadable."""
    try:
        return float(value.partition(",")[0])
    except ValueError:
        return 0.0


class Truth:
    """What each number should hear now, from the active set in Redis."""

    def __init__(self, redis: Redis, keys: Keys, prompt_path: Callable[[str], str]) -> None:
        self.redis = redis
        self.keys = keys
        self.prompt_path = prompt_path
        self.inventory = InventoryStore(redis, keys)

    async def wanted(self, now: float) -> dict[str, str]:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(k.active_heard)
            pipe.hgetall(k.active_by_switch)
            pipe.get(k.active_global)
            heard, by_switch, everyone = await pipe.execute()
        values: dict[str, str] = {}
        for ident, raw in heard.items():
            record = json.loads(raw)
            value = entry(record, self.prompt_path)
            if value is not None and until_of(value) > now:
                values[ident] = value
        out: dict[str, str] = {}
        common = values.get(everyone) if everyone else None
        if common is not None:
            out[GLOBAL] = common
        own = {s: values[i] for s, i in by_switch.items() if i in values and values[i] != common}
        numbers = await self.inventory.numbers_on(sorted(own))
        for switch, value in own.items():
            for number in numbers.get(switch, ()):
                out[number] = value
        return out


class Sink(Protocol):
    """Where a mirror goes. Every method raises ``LinkDown`` when it cannot."""

    name: str

    async def connect(self) -> None:
        """Make the sink usable (log in); a no-op when it already is."""

    async def close(self) -> None: ...

    async def read_all(self) -> dict[str, str]:
        """Every entry the sink holds now (without the lease)."""
        ...

    async def apply(self, puts: Mapping[str, str], deletes: Sequence[str]) -> dict[str, str]:
        """Write ``puts``, remove ``deletes``; return the entries the sink
        refused one by one (entry -> why), the rest having been done."""
        ...

    async def vouch(self, until: float, entries: Collection[str]) -> None:
        """Declare ``entries`` (all the sink holds) good until ``until``."""


@dataclass
class LinkStatus:
    """A mirror's state, as ``announcer status`` shows it."""

    name: str
    state: str = "starting"
    """starting, up (in sync), syncing, down"""
    since: float = field(default_factory=time.time)
    detail: str = ""
    entries: int = 0
    pending: int = 0
    vouched_until: float = 0.0
    synced_at: float = 0.0
    updated_at: float = 0.0


class Mirror:
    """Keeps one sink equal to the truth; ``run`` until cancelled."""

    def __init__(
        self,
        sink: Sink,
        truth: Truth,
        *,
        lease_s: float,
        max_writes_per_s: float,
        max_backoff_s: float = 30.0,
        publish_status: Callable[[LinkStatus], object] | None = None,
    ) -> None:
        self.sink = sink
        self.truth = truth
        self.lease_s = lease_s
        self.max_writes_per_s = max_writes_per_s
        self.max_backoff_s = max_backoff_s
        self.applied: dict[str, str] | None = None
        """what the sink holds, as far as this mirror knows; None: read it back"""
        self.status = LinkStatus(sink.name)
        self._publish_status = publish_status
        self._wake = asyncio.Event()
        self._vouched_at = -math.inf
        self._was_down = False

    def wake(self) -> None:
        """The active set changed: sync now rather than at the next renewal."""
        self._wake.set()

    # one pass -------------------------------------------------------------------

    async def sync_once(self, now: float | None = None) -> bool:
        """Read the truth, bring the sink towards it; True when they are equal.

        Returns early (False) when woken in the middle of a long sync, so the
        rest is planned from the newer truth.
        """
        now = time.time() if now is None else now
        wanted = await self.truth.wanted(now)
        reconciled = self.applied is None
        if self.applied is None:
            self.applied = await self.sink.read_all()
            logger.info("%s: %d entries found, reconciling", self.sink.name, len(self.applied))
        applied = self.applied
        deletes = [k for k in applied if k not in wanted]
        puts = {k: v for k, v in wanted.items() if applied.get(k) != v}
        operations: list[tuple[str, str | None]] = []
        if GLOBAL in puts:
            operations.append((GLOBAL, puts.pop(GLOBAL)))
        elif GLOBAL in deletes:
            deletes.remove(GLOBAL)
            operations.append((GLOBAL, None))
        operations += [(k, None) for k in deletes]
        operations += list(puts.items())
        self._set(pending=len(operations))
        done = 0
        started = time.monotonic()
        for start in range(0, len(operations), BATCH):
            batch = operations[start : start + BATCH]
            put = {k: v for k, v in batch if v is not None}
            delete = [k for k, v in batch if v is None]
            refused = await self.sink.apply(put, delete)
            if refused:
                self._refused(refused)
            for k in delete:
                if k not in refused:
                    applied.pop(k, None)
            # a refused write is not retried until its value changes; a
            # refused removal is, at every sync, until it goes
            applied.update(put)
            done += len(batch)
            self._set(state="syncing", entries=len(applied), pending=len(operations) - done)
            if done < len(operations):
                await self._vouch_if_due(now)
                # the rate limit: batch k may start no earlier than k / rate
                ahead = done / self.max_writes_per_s - (time.monotonic() - started)
                if ahead > 0:
                    await pause(ahead)
                if self._wake.is_set():
                    return False
        await self._vouch_if_due(now, force=reconciled)
        self._set(state="up", detail="", entries=len(applied), pending=0, synced_at=time.time())
        return True

    def _refused(self, refused: Mapping[str, str]) -> None:
        shown = "; ".join(f"{k}: {why}" for k, why in list(refused.items())[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        logger.warning("%s refused %d entries (%s%s)", self.sink.name, len(refused), shown, more)

    async def _vouch_if_due(self, now: float, force: bool = False) -> None:
        if not force and time.monotonic() - self._vouched_at < self.lease_s / 4:
            return
        assert self.applied is not None
        until = math.floor(now + self.lease_s)
        await self.sink.vouch(until, list(self.applied))
        self._vouched_at = time.monotonic()
        self._set(vouched_until=until)

    # the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Sync on every wake and at least every quarter lease; reconnect with
        back-off; never raises but on cancellation."""
        backoff = FIRST_BACKOFF_S
        try:
            while True:
                try:
                    await self.sink.connect()
                    while True:
                        raise_if_cancelled()
                        self._wake.clear()
                        complete = await self.sync_once()
                        backoff = FIRST_BACKOFF_S
                        if complete:
                            # not wait_for: see Publisher.run
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(self.lease_s / 4):
                                    await self._wake.wait()
                except (LinkDown, RedisError, OSError) as exc:
                    self.applied = None
                    self._down(exc)
                    await self.sink.close()
                    await pause(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
        finally:
            await self.sink.close()

    def _down(self, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, RedisError):
            reason = f"cannot read what callers should hear from Redis: {reason}"
        if self.status.state != "down" or self.status.detail != reason:
            logger.error(
                "%s: %s; its prompts stop when the lease runs out (%s)",
                self.sink.name,
                reason,
                time.strftime("%H:%M:%S", time.localtime(self.status.vouched_until))
                if self.status.vouched_until
                else "none given",
            )
            self._was_down = True
            self._set(state="down", since=time.time(), detail=reason)

    def _set(self, **changes: object) -> None:
        status = self.status
        was = status.state
        for name, value in changes.items():
            setattr(status, name, value)
        if was != "up" and status.state == "up":
            status.since = time.time()
            if self._was_down:
                self._was_down = False
                logger.warning("%s: reachable again and in sync", self.sink.name)
        status.updated_at = time.time()
        if self._publish_status is not None:
            self._publish_status(status)


class RedisKeysSink:
    """One Redis string per number (``P:callers:<digits>``) and
    ``P:callers:global``, each expiring ``lease_s`` after it was last vouched
    for; readable by Asterisk's func_redis or any script."""

    name = "Redis keys"

    def __init__(self, redis: Redis, keys: Keys, lease_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.lease_s = lease_s
        self._prefix = keys.caller("")

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def read_all(self) -> dict[str, str]:
        names = [k async for k in self.redis.scan_iter(self.keys.callers_pattern, count=1000)]
        out: dict[str, str] = {}
        for start in range(0, len(names), BATCH):
            chunk = names[start : start + BATCH]
            values: list[str | None] = await self.redis.mget(chunk)  # type: ignore[assignment]
            for name, value in zip(chunk, values, strict=True):
                if value is not None:
                    out[name.removeprefix(self._prefix)] = value
        return out

    async def apply(self, puts: Mapping[str, str], deletes: Sequence[str]) -> dict[str, str]:
        ttl = max(1, math.ceil(self.lease_s))
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in deletes:
                pipe.delete(self.keys.caller(name))
            for name, value in puts.items():
                pipe.set(self.keys.caller(name), value, ex=ttl)
            await pipe.execute()
        return {}

    async def vouch(self, until: float, entries: Collection[str]) -> None:
        names = list(entries)
        when = math.ceil(until)
        for start in range(0, len(names), BATCH * 4):
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names[start : start + BATCH * 4]:
                    pipe.expireat(self.keys.caller(name), when)
                await pipe.execute()


def status_writer(redis: Redis, keys: Keys, field_name: str) -> Callable[[LinkStatus], object]:
    """Publishes a mirror's status into ``P:links`` for ``announcer status``.

    One write at a time, always of the newest status: while one is on its way,
    later ones replace each other, so a fast sync costs a few writes and the
    last state written is the last one reported. Losing one (Redis down) is
    harmless: the next change writes again.
    """
    newest: list[str | None] = [None]
    writer: list[asyncio.Task[None] | None] = [None]

    async def drain() -> None:
        while newest[0] is not None:
            raw, newest[0] = newest[0], None
            with contextlib.suppress(RedisError, OSError):
                await redis.hset(keys.links, field_name, raw)

    def publish(status: LinkStatus) -> None:
        newest[0] = json.dumps(asdict(status))
        task = writer[0]
        if task is None or task.done():
            writer[0] = asyncio.get_running_loop().create_task(drain())

    return publish


async def link_states(redis: Redis, keys: Keys) -> dict[str, LinkStatus]:
    raw: dict[str, str] = await redis.hgetall(keys.links)  # type: ignore[assignment]
    return {name: LinkStatus(**json.loads(value)) for name, value in raw.items()}
