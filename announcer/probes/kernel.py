"""What both probes ask of a Linux socket: big buffers and kernel receive times.

A sweep sends thousands of requests at once; their replies queue in the
socket until the event loop reads them, so the receive buffer must hold a
whole sweep's worth. Each reply is timed by the kernel when it arrives
(``SO_TIMESTAMPNS``), so a busy event loop does not turn an answer that came
in time into a miss, nor inflate the round-trip time.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Iterable

logger = logging.getLogger(__name__)

# Linux socket options that the socket module does not name.
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35

TIMESPEC = struct.Struct("@ll")
"""struct timespec of SO_TIMESTAMPNS(_OLD): the kernel's receive time of a packet."""
ANCILLARY_BYTES = socket.CMSG_SPACE(TIMESPEC.size)
"""Ancillary buffer size for ``recvmsg``: room for that timestamp."""


def enlarge_buffers(sock: socket.socket, receive: int, send: int, what: str, hint: str) -> None:
    """Ask for big buffers (forcing past net.core.rmem_max as root); warn once
    with ``hint`` when the kernel gives less than ``receive`` bytes."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, receive)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < receive:
        logger.warning(
            "%s receive buffer is %d bytes, not %d: replies of big sweeps may be dropped; %s",
            what,
            got // 2,
            receive,
            hint,
        )
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send)


def time_arrivals(sock: socket.socket) -> None:
    """Have the kernel stamp every packet's arrival (read with ``arrival``)."""
    with contextlib.suppress(OSError):  # without it replies are timed when read
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def arrival(ancillary: Iterable[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time from ``recvmsg``'s ancillary data, if any."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = TIMESPEC.unpack_from(value)
            return float(seconds + nanoseconds / 1e9)
    return None
