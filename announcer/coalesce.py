"""Many callers' questions in one round trip, without making a lone caller wait.

``Coalescer`` wraps a function that answers a list of questions in one round
trip (``send``). A question asked when nothing is in flight goes out as soon
as the event loop comes round (``call_soon``, not a timer), together with any
asked in the same pass of the loop; questions asked while a round trip is in
flight wait for it to land and then go out together in the next one. Under
load the round trips grow instead of multiplying, so the per-command cost of
the client (packing, a syscall each way, parsing, the pool) is paid once a
batch rather than once a question.

Each caller still gets what a call of its own would have got: its answer, or
the exception the round trip raised (the same exception object for every
caller of that batch). A caller that is cancelled drops out of its batch, or
has its answer thrown away, without disturbing the others; a round trip
whose callers have all given up is cancelled, as a lone caller's would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Q = TypeVar("Q")
A = TypeVar("A")

#: Questions in one round trip at most; more wait for the next.
MAX_BATCH = 256

_Waiting = list[tuple[Q, "asyncio.Future[A]"]]


class Coalescer(Generic[Q, A]):
    """Answers ``await coalescer(question)`` with batched calls of ``send``.

    ``send`` gets the questions in the order they were asked and returns one
    answer for each, in the same order. One round trip is in flight at a
    time: letting a second one start beside it made the batches smaller and
    the lookups slower, not faster.
    """

    def __init__(
        self, send: Callable[[list[Q]], Awaitable[Sequence[A]]], max_batch: int = MAX_BATCH
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._send = send
        self.max_batch = max_batch
        self.round_trips = 0
        """calls of ``send`` so far"""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: _Waiting[Q, A] = []
        self._flying: asyncio.Task[None] | None = None
        self._flying_batch: _Waiting[Q, A] = []
        self._flush_due = False

    async def __call__(self, question: Q) -> A:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or asyncio.run() called again
            self._loop, self._waiting, self._flying, self._flush_due = loop, [], None, False
            self._flying_batch = []
        future: asyncio.Future[A] = loop.create_future()
        self._waiting.append((question, future))
        if not self._flush_due and self._flying is None:
            self._flush_due = True
            loop.call_soon(self._flush)
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """A caller gave up. When every caller of the round trip in flight has,
        stop it (redis-py drops its connection), as a caller alone would have:
        a round trip stuck on a bad connection must not hold up the callers
        queued behind it for longer than they wait."""
        if self._flying is not None and all(f.done() for _, f in self._flying_batch):
            self._flying.cancel()

    def _flush(self) -> None:
        """Send what is waiting, unless a round trip is in flight already."""
        self._flush_due = False
        if self._flying is not None or self._loop is None:
            return
        batch: _Waiting[Q, A] = []
        taken = 0
        for entry in self._waiting:
            taken += 1
            if not entry[1].done():  # a caller cancelled meanwhile drops out
                batch.append(entry)
                if len(batch) == self.max_batch:
                    break
        del self._waiting[:taken]
        if batch:
            self._flying = self._loop.create_task(self._round_trip(batch))
            self._flying_batch = batch

    async def _round_trip(self, batch: _Waiting[Q, A]) -> None:
        try:
            self.round_trips += 1
            try:
                answers = await self._send([question for question, _ in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(
                        f"{len(batch)} questions got {len(answers)} answers: a bug in the"
                        " send function"
                    )
            except Exception as exc:  # every caller of the batch gets it, as if alone
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
        finally:
            for _, future in batch:  # only when this task was cancelled: see _abandon
                if not future.done():
                    future.cancel()
            self._flying, self._flying_batch = None, []
            if self._waiting:
                self._flush()
