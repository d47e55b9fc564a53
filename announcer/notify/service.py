"""The notifications service: the event stream in, messages to subscribers out.

``Notifications.run`` reads ``P:events`` with XREAD BLOCK from a cursor kept
in Redis (``P:notify:cursor``: the last entry read, and the entries read but
not yet notified), so a restart, or another instance taking over, neither
loses nor repeats a notification; only one being sent when the service
stopped may be sent again. Link changes (AMI, the Redis-key mirror, Redis
itself) come in-process through ``link_changed``: they cannot travel
through a Redis that is gone.

Events wait ``[notify] debounce_s`` in the ``rules.Debouncer``, then each
group becomes one message (``messages.render``) for every subscriber who
chose its kind and district. Each subscriber has its own queue and task, so
a slow or dead destination delays only its own messages; every destination
gets ``attempts`` tries with a doubling pause, then the failure is logged
with the subscriber's name and the reason. ``sent``, ``failed`` and
``pending`` count deliveries (one message to one destination).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer.cancel import raise_if_cancelled
from announcer.config import NotifySubscriber, Settings
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.notify.deliver import (
    AppriseDestination,
    Destination,
    WebhookDestination,
    deliver,
)
from announcer.notify.messages import CUT_OFF_STATES, Context, Message, extent, render
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


@dataclass
class _Delivery:
    token: int
    message: Message


@dataclass
class _Subscriber:
    """A subscriber as the service keeps it: its destinations and its queue."""

    config: NotifySubscriber
    destinations: list[Destination]
    districts: set[str] = field(default_factory=set)
    """its districts as inventory ids (names resolved)"""
    queue: asyncio.Queue[_Delivery] = field(default_factory=asyncio.Queue)
    failing: set[str] = field(default_factory=set)
    """destinations whose last message was given up"""

    @property
    def name(self) -> str:
        return self.config.name


def _order(entry_id: str) -> tuple[int, ...]:
    """A stream entry id as numbers: "1700000000000-10" comes after "...-9"."""
    return tuple(int(part) for part in entry_id.split("-"))


def _destinations(config: NotifySubscriber, timeout_s: float) -> list[Destination]:
    made: list[Destination] = [AppriseDestination(url, timeout_s) for url in config.urls]
    return made + [WebhookDestination(url) for url in config.webhooks]


class Notifications:
    """Reads the event stream, groups, words and delivers; ``run`` until cancelled."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        notify = settings.notify
        self.subscribers = [
            _Subscriber(s, _destinations(s, notify.timeout_s)) for s in notify.subscribers
        ]
        self.sent = 0
        """deliveries made (one message to one destination)"""
        self.failed = 0
        """deliveries given up after every attempt"""
        self.pending = 0
        """deliveries queued or being attempted"""
        self._debouncer = Debouncer(notify.debounce_s)
        self._wake = asyncio.Event()
        self._tokens = itertools.count(1)
        self._outstanding: dict[int, tuple[list[str], int]] = {}
        """a group being delivered: its stream entries, deliveries still to finish"""
        self._flushing: list[Group] = []
        """groups taken from the debouncer and not yet handed to subscribers"""
        self._read_id: str | None = None
        self._save_lock = asyncio.Lock()
        self._unsaved = False
        """the cursor in Redis is behind: a save failed"""
        self._links: dict[str, dict[str, bool]] = {}
        """link -> observer -> up"""
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

    # the service ----------------------------------------------------------------

    async def run(self) -> None:
        """Read, group and deliver until cancelled; Redis outages are waited out."""
        names = ", ".join(s.name for s in self.subscribers)
        logger.info("notifications to %s", names or "nobody (no [[notify.subscribers]])")
        self._start_afresh()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(), name="notifications: the event stream")
                tasks.create_task(self._group(), name="notifications: grouping")
                for subscriber in self.subscribers:
                    tasks.create_task(self._serve(subscriber), name=f"notify {subscriber.name}")
        finally:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(EXIT_SAVE_S):
                    await self._save()

    def _start_afresh(self) -> None:
        """Forget what a previous run (before this instance lost and regained
        the lead) had read: the cursor in Redis says where to go on, and
        another instance may have gone on meanwhile."""
        self._read_id = None
        self._debouncer.forget_stream()
        self._flushing.clear()
        self._outstanding.clear()
        self.pending = 0
        for subscriber in self.subscribers:
            subscriber.queue = asyncio.Queue()

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
                *(i for ids, _ in self._outstanding.values() for i in ids),
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
        try:
            message = render(group, ctx)
        except Exception:  # a wording bug must not stop the notifications
            logger.exception("could not word the notification for %s; it is skipped", group.key)
            return
        self._remember(group, ctx)
        if message is None:
            return
        where = districts_of(group, ctx.district_of)
        chosen = [
            s
            for s in self.subscribers
            if wanted_by(group.kinds, where, s.config.events, s.districts)
        ]
        if not chosen:
            logger.info("notification %r: no subscriber for it", message.title)
            return
        logger.info("notification %r to %s", message.title, ", ".join(s.name for s in chosen))
        token = next(self._tokens)
        self._outstanding[token] = (group.stream_ids, len(chosen))
        for subscriber in chosen:
            self.pending += len(subscriber.destinations)
            subscriber.queue.put_nowait(_Delivery(token, message))

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

    # delivering -----------------------------------------------------------------

    async def _serve(self, subscriber: _Subscriber) -> None:
        """One subscriber's messages, in order, each to all its destinations at once."""
        while True:
            raise_if_cancelled()
            delivery = await subscriber.queue.get()
            await asyncio.gather(
                *(self._send(subscriber, d, delivery.message) for d in subscriber.destinations)
            )
            ids, left = self._outstanding.pop(delivery.token)
            if left > 1:
                self._outstanding[delivery.token] = (ids, left - 1)
            else:
                await self._save_quietly()

    async def _send(self, subscriber: _Subscriber, to: Destination, message: Message) -> None:
        notify = self.settings.notify
        try:
            reason = await deliver(
                to,
                message,
                attempts=notify.attempts,
                backoff_s=notify.retry_backoff_s,
                timeout_s=notify.timeout_s,
            )
        finally:
            self.pending -= 1
        if reason is None:
            self.sent += 1
            if to.shown in subscriber.failing:
                subscriber.failing.discard(to.shown)
                logger.warning("notifications reach %s (%s) again", subscriber.name, to.shown)
            return
        self.failed += 1
        subscriber.failing.add(to.shown)
        logger.error(
            "notification %r to %s (%s) failed %d times, the last: %s; it is given up."
            " Check the URL in [[notify.subscribers]] and that the service answers",
            message.title,
            subscriber.name,
            to.shown,
            notify.attempts,
            reason,
        )
