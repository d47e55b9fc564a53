"""Cancellation that a library swallowed.

Some awaits deep in the libraries announcer uses catch ``CancelledError``
when it lands at an awkward moment (a Redis reply arriving as the task is
cancelled) and carry on; the task is then still marked as cancelling, but
a service loop would go round for ever and the task group stopping the
daemon (SIGTERM, SIGHUP) would wait on it for ever. Every service loop
calls ``raise_if_cancelled`` once a round.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and is still running."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
