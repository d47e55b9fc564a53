"""Sending one message to one destination: an apprise URL or a JSON webhook.

Both senders block (apprise's plugins, urllib), so they run in a thread,
bounded by ``timeout_s`` twice over: the plugin's own socket timeouts and an
asyncio timeout around the thread, so a slow SMTP server or webhook never
holds up the daemon. ``deliver`` tries ``attempts`` times with a doubling
pause and returns why it gave up, in words without secrets.

Webhooks are posted with urllib rather than apprise's ``json://``: apprise
wraps every message in its own ``{"version", "title", "message", ...}``
body, where the webhook should get the message's fields themselves.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Protocol

import apprise

from announcer import __version__
from announcer.notify import urls
from announcer.notify.messages import Message

logger = logging.getLogger(__name__)

#: A reply body longer than this is not read (only its status matters).
MAX_REPLY_BYTES = 64 * 1024
#: The thread gets this much longer than the sockets, to report their timeout itself.
THREAD_GRACE_S = 1.0


class Destination(Protocol):
    shown: str
    """how the log names it: never with its secrets"""

    async def send(self, message: Message, timeout_s: float) -> str | None:
        """Send once; None when delivered, else why not (without secrets)."""
        ...


async def _in_thread(
    blocking: Callable[..., str | None], timeout_s: float, *args: object
) -> str | None:
    try:
        async with asyncio.timeout(timeout_s + THREAD_GRACE_S):
            return await asyncio.to_thread(blocking, *args)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"


class AppriseDestination:
    """One apprise URL: email, Telegram, Slack, Matrix, ..."""

    def __init__(self, url: str, timeout_s: float) -> None:
        made = urls.instantiate(url)
        if isinstance(made, str):  # the configuration was checked: only on a changed apprise
            raise ValueError(made)
        made.socket_connect_timeout = timeout_s
        made.socket_read_timeout = timeout_s
        self._plugin = made
        self.shown = urls.shown_apprise(made)
        self._scrub = urls.Scrubber(url, self.shown)

    async def send(self, message: Message, timeout_s: float) -> str | None:
        # apprise spaces the messages of one destination (5.5 s for most
        # plugins) by sleeping before it sends: that is not the server's delay
        spacing_s = float(getattr(self._plugin, "request_rate_per_sec", 0) or 0)
        return await _in_thread(self._send, timeout_s + spacing_s, message)

    def _send(self, message: Message) -> str | None:
        sender = apprise.Apprise()
        sender.add(self._plugin)
        try:
            result = sender.notify(
                body=message.body, title=message.title, body_format=apprise.NotifyFormat.TEXT
            )
        except Exception as exc:  # a plugin's bug must not end the delivery loop
            return self._scrub(f"apprise failed: {type(exc).__name__}: {exc}")
        if result:
            return None
        # apprise 2 keeps what it logged while sending; 1.x only says False
        logs = getattr(result, "logs", None)
        said = [
            str(entry.message)
            for entry in (logs() if callable(logs) else ())
            if getattr(entry, "level", "") in ("WARNING", "ERROR", "CRITICAL")
        ]
        return self._scrub(said[-1]) if said else "apprise reported a failure"


class WebhookDestination:
    """An http(s) URL that gets the message's fields as a JSON POST."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = urls.shown_webhook(url)
        self._scrub = urls.Scrubber(url, self.shown)

    async def send(self, message: Message, timeout_s: float) -> str | None:
        body = json.dumps(message.payload, ensure_ascii=False).encode()
        return await _in_thread(self._post, timeout_s, body, timeout_s)

    def _post(self, body: bytes, timeout_s: float) -> str | None:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": f"announcer/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                reply.read(MAX_REPLY_BYTES)
        except urllib.error.HTTPError as exc:
            with exc:
                return f"the server answered HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            return self._scrub(f"cannot reach it: {exc.reason}")
        except (OSError, http.client.HTTPException) as exc:
            return self._scrub(f"{type(exc).__name__}: {exc}")
        return None


async def deliver(
    destination: Destination,
    message: Message,
    *,
    attempts: int,
    backoff_s: float,
    timeout_s: float,
) -> str | None:
    """Send with retries; None when delivered, else the last reason."""
    reason: str | None = None
    for attempt in range(1, attempts + 1):
        reason = await destination.send(message, timeout_s)
        if reason is None:
            return None
        if attempt < attempts:
            pause = backoff_s * 2 ** (attempt - 1)
            logger.debug(
                "%s: attempt %d failed (%s); again in %g s",
                destination.shown,
                attempt,
                reason,
                pause,
            )
            await asyncio.sleep(pause)
    return reason
