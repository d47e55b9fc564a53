"""The SNMPv2c client: GETs over one non-blocking UDP socket per address family.

``Channel.open`` makes the family's socket and has the event loop watch it
with ``add_reader``; ``Channel.get`` sends one GET and waits for its answer.
Replies are matched by request-id, source address and port, version,
community and PDU type, and timed by the kernel's receive timestamp
(``SO_TIMESTAMPNS``), so a busy event loop does not inflate the round-trip
time. A GET is retried with the same request-id, so a late reply to an
earlier try still counts; its round-trip time is then taken from the latest
try. The messages are built and parsed by ``announcer.probes.snmp_ber``,
whose docstring says why that is not pysnmp.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from announcer.probes import kernel
from announcer.probes.snmp_ber import (
    RESPONSE,
    BerError,
    decode_message,
    decode_value,
    encode_get,
)
from announcer.probes.snmp_verdict import Answer, Outcome

logger = logging.getLogger(__name__)

RCVBUF_BYTES = 4 * 1024 * 1024
"""Room for thousands of queued replies (the kernel doubles it for its overhead)."""
SNDBUF_BYTES = 1024 * 1024
DRAIN_BATCH = 1024
"""Datagrams read per readable callback before other callbacks get a turn."""
SEND_RETRIES = 5
"""Tries of one datagram while the send buffer is full (EAGAIN, ENOBUFS)."""

_MAX_REQUEST_ID = 0x7FFFFFFF


@dataclass(eq=False, slots=True)
class _Request:
    sockaddr: tuple[str, int] | tuple[str, int, int, int]
    community: bytes
    oids: list[bytes]
    future: asyncio.Future[Answer | None] | None = None
    sent_at: float = 0.0
    """time.time() of the latest send; replies carry kernel timestamps on the same clock."""


@dataclass(eq=False)
class Channel:
    """One address family's socket and the requests awaiting a reply on it."""

    sock: socket.socket
    loop: asyncio.AbstractEventLoop
    requests: dict[int, _Request] = field(default_factory=dict)
    next_id: int = field(default_factory=lambda: secrets.randbelow(_MAX_REQUEST_ID) + 1)

    @classmethod
    def open(cls, family: socket.AddressFamily, loop: asyncio.AbstractEventLoop) -> Channel:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _tune(sock)
            sock.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))
            channel = cls(sock, loop)
            loop.add_reader(sock.fileno(), channel.drain)
        except BaseException:
            sock.close()
            raise
        return channel

    def drain(self, limit: int = DRAIN_BATCH) -> None:
        """Read what the socket holds (at most ``limit`` datagrams) and match it."""
        for _ in range(limit):
            try:
                data, ancillary, _flags, address = self.sock.recvmsg(65535, kernel.ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("SNMP receive: %s", exc)
                return
            self._match(data, address, kernel.arrival(ancillary) or time.time())

    def _match(self, data: bytes, address: Any, arrived: float) -> None:
        try:
            message = decode_message(data)
        except BerError as exc:
            logger.debug("SNMP: ignored a malformed datagram from %s: %s", address, exc)
            return
        request = self.requests.get(message.request_id)
        if (
            request is None
            or request.future is None
            or request.future.done()
            or address[0] != request.sockaddr[0]
            or address[1] != request.sockaddr[1]
            or message.version != 1
            or message.community != request.community
            or message.pdu_type != RESPONSE
        ):
            logger.debug("SNMP: ignored a reply from %s matching no request", address)
            return
        received = message.varbinds
        values: list[int | str] = []
        for i, oid in enumerate(request.oids):
            if i < len(received) and received[i][0] == oid:
                values.append(decode_value(received[i][1], received[i][2]))
            else:
                values.append("missing from the reply")
        rtt_ms = max(0.0, arrived - request.sent_at) * 1000
        request.future.set_result(Answer(rtt_ms, message.error_status, message.error_index, values))

    def _new_id(self) -> int:
        for _ in range(len(self.requests) + 1):  # one of these ids is free
            request_id = self.next_id
            self.next_id = request_id % _MAX_REQUEST_ID + 1
            if request_id not in self.requests:
                return request_id
        raise AssertionError("no free request-id")  # unreachable: the loop finds one

    def _expire(self, request: _Request) -> None:
        self.drain()  # a reply may be waiting behind a busy event loop
        if request.future is not None and not request.future.done():
            request.future.set_result(None)

    async def get(
        self,
        sockaddr: tuple[str, int] | tuple[str, int, int, int],
        community: bytes,
        oids: list[bytes],
        varbinds: bytes,
        timeout_s: float,
        tries: int,
    ) -> Outcome:
        """One GET, retried with the same request-id; any try's reply answers it."""
        request_id = self._new_id()
        payload = encode_get(community, request_id, varbinds)
        request = _Request(sockaddr, community, oids)
        self.requests[request_id] = request
        try:
            for _ in range(tries):
                future: asyncio.Future[Answer | None] = self.loop.create_future()
                request.future = future
                failure = await self._send(payload, request)
                if failure:
                    return failure
                timer = self.loop.call_later(timeout_s, self._expire, request)
                try:
                    answer = await future
                finally:
                    timer.cancel()
                if answer is not None:
                    return answer
            return None
        finally:
            del self.requests[request_id]

    async def _send(self, payload: bytes, request: _Request) -> str:
        """An empty string once sent, else a FAILED reason."""
        for attempt in range(1, SEND_RETRIES + 1):
            request.sent_at = time.time()
            try:
                self.sock.sendto(payload, request.sockaddr)
                return ""
            except OSError as exc:
                busy = isinstance(exc, BlockingIOError) or exc.errno == errno.ENOBUFS
                if busy and attempt < SEND_RETRIES:
                    await asyncio.sleep(0.002 * attempt)
                    continue
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                logger.debug("SNMP GET to %s not sent: %s", request.sockaddr[0], reason)
                return f"cannot send: {reason}; check this host's firewall and routes"
        return "cannot send: the send buffer stayed full"  # unreachable: the loop returns

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for request in self.requests.values():
            if request.future is not None and not request.future.done():
                request.future.set_result(None)


def _tune(sock: socket.socket) -> None:
    """Big buffers (replies of a whole sweep may queue up) and kernel timestamps."""
    kernel.enlarge_buffers(
        sock,
        RCVBUF_BYTES,
        SNDBUF_BYTES,
        "SNMP",
        "raise net.core.rmem_max (sysctl) or lower [snmp] max_in_flight",
    )
    kernel.time_arrivals(sock)
