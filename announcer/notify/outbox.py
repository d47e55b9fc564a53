"""Delivering the notifications: each subscriber's queue, task and retries.

Each subscriber has its own queue and task, so a slow or dead destination
delays only its own messages; a message goes to all of a subscriber's
destinations at once, and every destination gets ``attempts`` tries with a
doubling pause, then the failure is logged with the subscriber's name and
the reason. ``sent``, ``failed`` and ``pending`` count deliveries (one
message to one destination).

The outbox also knows which stream entries its queued messages came from,
so that the service's cursor names them until every subscriber has them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from announcer.cancel import raise_if_cancelled
from announcer.config import NotifySettings, NotifySubscriber
from announcer.notify.deliver import (
    AppriseDestination,
    Destination,
    WebhookDestination,
    deliver,
)
from announcer.notify.messages import Message

logger = logging.getLogger(__name__)


@dataclass
class _Delivery:
    token: int
    message: Message


@dataclass
class Subscriber:
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


def _destinations(config: NotifySubscriber, timeout_s: float) -> list[Destination]:
    made: list[Destination] = [AppriseDestination(url, timeout_s) for url in config.urls]
    return made + [WebhookDestination(url) for url in config.webhooks]


class Outbox:
    """The subscribers' queues; ``run`` delivers until cancelled, and
    ``delivered`` is awaited each time a message has reached all its
    subscribers (the service saves its cursor then)."""

    def __init__(self, settings: NotifySettings, delivered: Callable[[], Awaitable[None]]) -> None:
        self.settings = settings
        self.subscribers = [
            Subscriber(s, _destinations(s, settings.timeout_s)) for s in settings.subscribers
        ]
        self.sent = 0
        """deliveries made (one message to one destination)"""
        self.failed = 0
        """deliveries given up after every attempt"""
        self.pending = 0
        """deliveries queued or being attempted"""
        self._delivered = delivered
        self._tokens = itertools.count(1)
        self._outstanding: dict[int, tuple[list[str], int]] = {}
        """a message being delivered: its stream entries, subscribers still to finish"""
        self._aside: set[asyncio.Future[Any]] = set()
        """messages sent outside ``run``"""

    def post(self, message: Message, chosen: Sequence[Subscriber], stream_ids: list[str]) -> None:
        """Queue ``message`` for each of ``chosen``."""
        token = next(self._tokens)
        self._outstanding[token] = (stream_ids, len(chosen))
        for subscriber in chosen:
            self.pending += len(subscriber.destinations)
            subscriber.queue.put_nowait(_Delivery(token, message))

    def stream_ids(self) -> Iterator[str]:
        """The stream entries whose messages are not yet everywhere."""
        return (i for ids, _ in self._outstanding.values() for i in ids)

    def reset(self) -> None:
        """Forget what is queued (a new run reads it again from the cursor)."""
        self._outstanding.clear()
        self.pending = 0
        for subscriber in self.subscribers:
            subscriber.queue = asyncio.Queue()

    def take_in_process(self) -> list[tuple[Subscriber, Message]]:
        """Empty the queues; return what was queued and came from no stream
        entry (nobody could send it again)."""
        taken = []
        for subscriber in self.subscribers:
            while not subscriber.queue.empty():
                delivery = subscriber.queue.get_nowait()
                self.pending -= len(subscriber.destinations)
                from_stream, _ = self._outstanding.get(delivery.token, ([], 0))
                if not from_stream:
                    taken.append((subscriber, delivery.message))
        return taken

    def _sends(self, told: Sequence[tuple[Subscriber, Message]]) -> asyncio.Future[Any]:
        sends = [self._send(s, to, message) for s, message in told for to in s.destinations]
        self.pending += len(sends)
        return asyncio.gather(*sends)

    async def send_now(self, told: Sequence[tuple[Subscriber, Message]]) -> None:
        """Deliver each message to its subscriber, outside the queues."""
        await self._sends(told)

    def send_aside(self, told: Sequence[tuple[Subscriber, Message]]) -> None:
        """``send_now`` without waiting for it (``run`` may not be running)."""
        future = self._sends(told)
        self._aside.add(future)
        future.add_done_callback(self._aside.discard)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for subscriber in self.subscribers:
                tasks.create_task(self._serve(subscriber), name=f"notify {subscriber.name}")

    async def _serve(self, subscriber: Subscriber) -> None:
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
                await self._delivered()

    async def _send(self, subscriber: Subscriber, to: Destination, message: Message) -> None:
        notify = self.settings
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
