"""Cancellation that a library swallowed.

redis-py sends every command through ``asyncio.wait_for`` when a socket
timeout is set, and Python 3.11's ``wait_for`` drops a cancellation that
arrives just as the wrapped operation completes. The task is then still
marked as cancelling, but nothing raises: a service loop would go round, or
sleep until its next round, while the task group stopping the daemon
(SIGTERM, SIGHUP, a crashed part) waits on it. Every service loop calls
``raise_if_cancelled`` once a round, and sleeps with ``pause``, which
checks first.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and is still running."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float) -> None:
    """``asyncio.sleep``, unless this task was already asked to stop."""
    raise_if_cancelled()
    await asyncio.sleep(seconds)
