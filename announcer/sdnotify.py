"""systemd's notify protocol, and a watchdog that only pets a daemon at work.

Under ``Type=notify`` systemd hands the service ``$NOTIFY_SOCKET`` (a unix
datagram socket, ``@`` for the abstract namespace) and, with ``WatchdogSec=``,
``$WATCHDOG_USEC``; the service sends newline-separated ``KEY=value``
datagrams: ``READY=1`` once it serves, ``STATUS=...`` for ``systemctl
status``, ``WATCHDOG=1`` at least every ``WATCHDOG_USEC``, ``STOPPING=1``
when it shuts down. A few lines over a socket: no library is needed for it.
Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing.

``Watchdog`` pets only while the parts that must keep moving (the poller's
sweeps, the publisher's evaluations) have each completed a round recently: an
event loop that still runs while a part hangs is not a healthy daemon, and
systemd should restart it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd; silent when not run by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._socket: socket.socket | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """Send ``fields`` as one datagram; False when there is nobody to tell
        or it could not be sent (logged once, never raised)."""
        if not self.address:
            return False
        try:
            if self._socket is None:
                # non-blocking: a reader that falls behind (its queue holds a
                # few datagrams) loses a status line rather than freezing the
                # event loop, and with it every call
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                logger.warning("cannot notify systemd at %s: %s", self.address, exc)
            return False
        self._failing = False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def pet(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


@dataclass
class Beat:
    """One part that must keep moving: when it last completed a round."""

    name: str
    within_s: float
    """a round older than this means the part is stuck"""
    last: Callable[[], float]
    """``time.monotonic()`` of its last completed round"""


class Watchdog:
    """Decides whether to pet: every beat recent enough."""

    def __init__(self, beats: list[Beat], clock: Callable[[], float] = time.monotonic) -> None:
        self.beats = beats
        self.clock = clock

    def stuck(self) -> list[str]:
        """What has not moved within its allowance, in words; empty when healthy."""
        now = self.clock()
        out = []
        for beat in self.beats:
            age = now - beat.last()
            if age > beat.within_s:
                out.append(f"{beat.name}: no round for {age:.0f} s")
        return out
