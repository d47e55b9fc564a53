"""The notifications service: the event stream in, messages to subscribers out.

``Notifications.run`` reads ``P:events`` with XREAD BLOCK from a cursor kept
in Redis (``P:notify:cursor``: the last entry read, and the entries read but
not yet notified), so a restart, or another instance taking over, neither
loses nor repeats a notification; only one being sent when the service
stopped may be sent again. Link changes (AMI, the Redis-key mirror, Redis
itself) come in-process through ``link_changed``: they cannot travel
through a Redis that is gone.

What only this process knows (a link lost, a prompt that failed) would be
lost with it: when the service stops (SIGTERM, or this instance no longer
leads) it is told at once rather than at the end of its grouping window,
within ``LAST_WORDS_S``. An instance of a cluster steps down when Redis is
lost, so the leader that told "Redis lost" is also the one that tells "Redis
back", when its cluster heartbeat reaches Redis again (``redis_seen``).

Events wait ``[notify] debounce_s`` in the ``rules.Debouncer``, then each
group becomes one message (``messages.render``) for every subscriber who
chose its kind and district, handed to the ``outbox.Outbox``, which
delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer.cancel import raise_if_cancelled
from announcer.config import Settings
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.notify.messages import CUT_OFF_STATES, Context, Message, extent, render
from announcer.notify.outbox import Outbox, Subscriber
from announcer.notify.rules import (
    ENDING,
    Debouncer,
    Group,
    classify,
    districts_of,
    link_event,
    resolve_districts,
    wanted_by,
)
from announcer.store import StateStore

logger = logging.getLogger(__name__)

#: The link ``link_changed`` is told about when the event stream cannot be read.
REDIS_LINK = "Redis"
#: The observer of ``REDIS_LINK`` that is this service reading the stream.
EVENT_READER = "the event stream"
#: Entries read from the stream at once.
BATCH = 500
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
#: Writing the cursor on the way out may take this long at most.
EXIT_SAVE_S = 2.0
#: Telling what only this process knows, on the way out, may take this long at most.
LAST_WORDS_S = 5.0


def _order(entry_id: str) -> tuple[int, ...]:
    """A stream entry id as numbers: "1700000000000-10" comes after "...-9"."""
    return tuple(int(part) for part in entry_id.split("-"))


class Notifications:
    """Reads the event stream, groups, words and delivers; ``run`` until cancelled."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.outbox = Outbox(settings.notify, self._save_quietly)
        self.subscribers = self.outbox.subscribers
        self._debouncer = Debouncer(settings.notify.debounce_s)
        self._wake = asyncio.Event()
        self._flushing: list[Group] = []
        """groups taken from the debouncer and not yet handed to subscribers"""
        self._read_id: str | None = None
        self._save_lock = asyncio.Lock()
        self._unsaved = False
        """the cursor in Redis is behind: a save failed"""
        self._links: dict[str, dict[str, bool]] = {}
        """link -> observer -> up"""
        self._told_lost: set[str] = set()
        """links whose loss subscribers were told, and not yet their return"""
        self._running = False
        self._redis_up = True
        self._inventory = InventoryStore(redis, keys)
        self._states = StateStore(redis, keys)
        self._topology: tuple[int | None, dict[str, str], dict[str, str], dict[str, int]] = (
            None, {}, {}, {},
        )  # fmt: skip
        """generation, switch -> district, district names, switch -> numbers"""
        self._cut_off: set[str] = set()
        self._remembered: dict[str, tuple[str, ...]] = {}
        self._warned_districts: set[tuple[str, str]] = set()

    @property
    def sent(self) -> int:
        """Deliveries made (one message to one destination)."""
        return self.outbox.sent

    @property
    def failed(self) -> int:
        """Deliveries given up after every attempt."""
        return self.outbox.failed

    @property
    def pending(self) -> int:
        """Deliveries queued or being attempted."""
        return self.outbox.pending

    @property
    def held(self) -> int:
        """Groups of events waiting for their debounce window to end."""
        return len(self._debouncer) + len(self._flushing)

    # in-process events ----------------------------------------------------------

    def link_changed(self, name: str, up: bool, reason: str = "", seen_by: str = "") -> None:
        """A link (AMI, a mirror, Redis) is up or down, as ``seen_by`` one of
        its observers: Redis is watched both by this service's reading of the
        event stream and by the Redis-key mirror. The link is down while any
        observer says so, and only a change of that makes a message, so a
        caller may say it at every status update."""
        seen = self._links.setdefault(name, {})
        was_up = all(seen.values())
        seen[seen_by] = up
        if all(seen.values()) == was_up:
            return
        self._debouncer.add(link_event(name, up, reason, time.time()), time.monotonic())
        self._wake.set()

    def redis_seen(self, up: bool) -> None:
        """The cluster heartbeat reached Redis (or did not). While this
        instance leads, the event reader speaks for Redis; after it stepped
        down having told "Redis lost", nobody else knows to tell its return,
        so this instance does, when its heartbeat reaches Redis again."""
        if not up or self._running or REDIS_LINK not in self._told_lost:
            return
        self._links.pop(REDIS_LINK, None)  # its observers have stopped with the lead
        group = Group(f"link:{REDIS_LINK}", 0.0, [link_event(REDIS_LINK, True, "", time.time())])
        worded = self._choose(group, self._known_context())
        if worded is None:
            return
        message, chosen = worded
        self.outbox.send_aside([(subscriber, message) for subscriber in chosen])

    # the service ----------------------------------------------------------------

    async def run(self) -> None:
        """Read, group and deliver until cancelled; Redis outages are waited out."""
        names = ", ".join(s.name for s in self.subscribers)
        logger.info("notifications to %s", names or "nobody (no [[notify.subscribers]])")
        self._start_afresh()
        self._running = True
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(), name="notifications: the event stream")
                tasks.create_task(self._group(), name="notifications: grouping")
                tasks.create_task(self.outbox.run(), name="notifications: delivering")
        finally:
            self._running = False
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(EXIT_SAVE_S):
                    await self._save()
            await self._last_words()

    async def _last_words(self) -> None:
        """Tell now what only this process knows: the in-process groups still
        held for grouping, and their messages still queued. What came from
        the stream is left to the cursor (the next leader reads it again)."""
        told = self.outbox.take_in_process()
        ctx = self._known_context()
        for group in self._debouncer.take_in_process():
            chosen = self._choose(group, ctx)
            if chosen is not None:
                told += [(subscriber, chosen[0]) for subscriber in chosen[1]]
        if not told:
            return
        logger.info("notifications: telling %d held messages before stopping", len(told))
        try:
            async with asyncio.timeout(LAST_WORDS_S):
                await self.outbox.send_now(told)
        except TimeoutError:
            logger.error(
                "notifications: %d held messages were not all told within %g s",
                len(told),
                LAST_WORDS_S,
            )

    def _start_afresh(self) -> None:
        """Forget what a previous run (before this instance lost and regained
        the lead) had read: the cursor in Redis says where to go on, and
        another instance may have gone on meanwhile."""
        self._read_id = None
        self._debouncer.forget_stream()
        self._flushing.clear()
        self.outbox.reset()

    # reading --------------------------------------------------------------------

    async def _read(self) -> None:
        backoff = FIRST_BACKOFF_S
        block_ms = max(1, min(1_000, self.settings.redis.timeout_ms // 2))
        while True:
            raise_if_cancelled()
            try:
                await self._refresh_topology()
                if self._read_id is None:
                    await self._resume()
                assert self._read_id is not None
                reply: Any = await self.redis.xread(
                    {self.keys.events: self._read_id}, count=BATCH, block=block_ms
                )
                self._redis_back()
                # RESP2 answers [[stream, entries]], RESP3 {stream: entries}
                streams: list[list[tuple[str, dict[str, str]]]] = (
                    list(reply.values()) if isinstance(reply, dict) else [e for _, e in reply or ()]
                )
                taken = False
                for entries in streams:
                    for entry_id, fields in entries:
                        self._take(entry_id, fields)
                        self._read_id, taken = entry_id, True
                if taken or self._unsaved:
                    await self._save()
                backoff = FIRST_BACKOFF_S
            except (RedisError, OSError) as exc:
                self._redis_lost(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _resume(self) -> None:
        """Where the last run stopped: re-read what it had not notified, then
        go on after the last entry it read. The first run starts now."""
        saved: dict[str, str] = await self.redis.hgetall(self.keys.notify_cursor)  # type: ignore[assignment]
        if not saved.get("read"):
            newest: list[tuple[str, dict[str, str]]] = await self.redis.xrevrange(  # type: ignore[assignment]
                self.keys.events, count=1
            )
            self._read_id = newest[0][0] if newest else "0-0"
            await self._save()
            return
        again = saved.get("pending", "").split()
        if again:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id in again:
                    pipe.xrange(self.keys.events, entry_id, entry_id)
                found = await pipe.execute()
            for entries in found:
                for entry_id, fields in entries:
                    self._take(entry_id, fields)
            logger.info("notifications: %d events from before the restart follow", len(again))
        self._read_id = saved["read"]

    def _take(self, entry_id: str, fields: Mapping[str, str]) -> None:
        event = classify(entry_id, fields, self._topology[1])
        if event is not None:
            self._debouncer.add(event, time.monotonic())
            self._wake.set()

    def _redis_lost(self, exc: BaseException) -> None:
        if self._redis_up:
            self._redis_up = False
            logger.error(
                "notifications cannot read the event stream (%s); waiting for Redis,"
                " then nothing is lost: check that Redis runs",
                exc,
            )
            self.link_changed(REDIS_LINK, False, str(exc) or type(exc).__name__, EVENT_READER)

    def _redis_back(self) -> None:
        if not self._redis_up:
            self._redis_up = True
            logger.warning("notifications read the event stream again")
            self.link_changed(REDIS_LINK, True, seen_by=EVENT_READER)

    async def _save(self) -> None:
        """The cursor: the last entry read, and the entries not yet notified."""
        async with self._save_lock:
            if self._read_id is None:
                return
            self._unsaved = True  # until Redis has it
            pending = [
                *self._debouncer.held_ids(),
                *(i for g in self._flushing for i in g.stream_ids),
                *self.outbox.stream_ids(),
            ]
            await self.redis.hset(
                self.keys.notify_cursor,
                mapping={
                    "read": self._read_id,
                    "pending": " ".join(sorted(set(pending), key=_order)),
                },
            )
            self._unsaved = False

    async def _save_quietly(self) -> None:
        # the reader saves again once Redis answers, and says it is gone meanwhile
        with contextlib.suppress(RedisError, OSError):
            await self._save()

    # grouping -------------------------------------------------------------------

    async def _group(self) -> None:
        while True:
            raise_if_cancelled()
            self._wake.clear()
            due = self._debouncer.due(time.monotonic())
            if due:
                self._flushing += due
                ctx = await self._context()
                for group in due:
                    self._dispatch(group, ctx)
                    self._flushing.remove(group)
                await self._save_quietly()
                # a library may have swallowed a cancellation above, and the
                # wait below may have no end
                raise_if_cancelled()
            upcoming = self._debouncer.next_due()
            wait = None if upcoming is None else max(0.0, upcoming - time.monotonic())
            # not wait_for: see Publisher.run
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _dispatch(self, group: Group, ctx: Context) -> None:
        worded = self._choose(group, ctx)
        if worded is None:
            return
        message, chosen = worded
        self.outbox.post(message, chosen, group.stream_ids)

    def _choose(self, group: Group, ctx: Context) -> tuple[Message, list[Subscriber]] | None:
        """The message for ``group`` and who is to get it; None: nobody."""
        try:
            message = render(group, ctx)
        except Exception:  # a wording bug must not stop the notifications
            logger.exception("could not word the notification for %s; it is skipped", group.key)
            return None
        self._remember(group, ctx)
        if message is None:
            return None
        if "link" in group.kinds:
            link, last = group.events[-1].fields.get("link", ""), group.events[-1].action
            (self._told_lost.add if last == "lost" else self._told_lost.discard)(link)
        where = districts_of(group, ctx.district_of)
        chosen = [
            s
            for s in self.subscribers
            if wanted_by(group.kinds, where, s.config.events, s.districts)
        ]
        if not chosen:
            logger.info("notification %r: no subscriber for it", message.title)
            return None
        logger.info("notification %r to %s", message.title, ", ".join(s.name for s in chosen))
        return message, chosen

    def _remember(self, group: Group, ctx: Context) -> None:
        """Which switches each outage cut off, for the message that it cleared."""
        for ident, events in group.by_announcement().items():
            if events[-1].action in ENDING:
                self._remembered.pop(ident, None)
            elif switches := extent(ctx, events[-1].fields):
                self._remembered[ident] = tuple(switches)

    async def _refresh_topology(self) -> None:
        live = await self._inventory.current()
        gen = live.gen if live is not None else None
        if gen is not None and gen == self._topology[0]:
            return
        _, switches = await self._inventory.switches()
        names = await self._inventory.district_names()
        numbers = await self._inventory.subscriber_counts()
        district_of = {s: str(r["district"]) for s, r in switches.items()}
        self._topology = (gen, district_of, names, numbers)
        for subscriber in self.subscribers:
            subscriber.districts, unknown = resolve_districts(subscriber.config.districts, names)
            for name in unknown:
                if (subscriber.name, name) not in self._warned_districts:
                    self._warned_districts.add((subscriber.name, name))
                    logger.warning(
                        "[notify] subscriber %r: district %r is not in the inventory;"
                        " check its districts (ids or names)",
                        subscriber.name,
                        name,
                    )

    async def _context(self) -> Context:
        """What the messages need from Redis; the last known when it is gone."""
        try:
            await self._refresh_topology()
            states: dict[str, dict[str, Any]] = await self._states.states()
            self._cut_off = {s for s, v in states.items() if v.get("state") in CUT_OFF_STATES}
        except (RedisError, OSError) as exc:
            logger.debug("notifications word this without fresh states: %s", exc)
        return self._known_context()

    def _known_context(self) -> Context:
        """What the messages need, as last read from Redis."""
        _, district_of, names, numbers = self._topology
        return Context(
            language=self.settings.announcements.language,
            now=time.time(),
            district_of=district_of,
            district_names=names,
            subscribers=numbers,
            cut_off=set(self._cut_off),
            remembered=dict(self._remembered),
            restored_s=self.settings.announcements.restored_s,
        )
