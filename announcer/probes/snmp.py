"""SNMP: one GET of sysUpTime.0 and the uplinks' ifOperStatus per switch.

Every switch gets one GET request carrying ``sysUpTime.0`` and
``ifOperStatus.N`` for each of its uplink ports. The answer says whether the
switch is up (ALIVE, with its uptime: smaller than last time means it
rebooted), up but cut off (SILENT: every uplink port is down), or not
answering (SILENT after the timeout and the retries). "We could not ask" is
FAILED: an unknown profile, a socket error on this host, credentials the
agent rejects.

SNMPv2c is spoken directly: one non-blocking UDP socket per address family,
watched by the event loop with ``add_reader``, replies matched by request-id,
source address and community, kernel receive timestamps for the round-trip
time. The two messages involved (a GetRequest out, a Response in) are encoded
and decoded by the small BER codec below rather than by pyasn1 through
pysnmp's message API, which took 0.4-0.6 ms to decode and 0.2-0.3 ms to
encode one such message on the development machine: 0.65 ms or more of CPU
per switch, under 1,500 switches a second before any I/O. The tests check the
codec against pyasn1 (a fake agent built on pysnmp) and against a real snmpd.
A GET is retried with the same request-id, so a late reply to an earlier try
still counts; its round-trip time is then taken from the latest try.

SNMPv3 (USM: engine discovery, authentication, privacy) goes through pysnmp's
high-level asyncio API, one ``SnmpEngine`` per v3 profile (pysnmp keeps one
key set per user name and engine), at most ``V3_MAX_IN_FLIGHT`` requests at
once. It is correct but slow: a few hundred GETs a second on one core
(``python -m bench.snmp_rate``), so some thousands of v3 switches per 15 s
interval at best. pysnmp is imported only when a v3 profile is first used.
Privacy (AES, DES) needs the ``cryptography`` package. A wrong auth key or
user name comes back as a report and is FAILED; a wrong priv key is dropped
by Net-SNMP agents without a word, so it looks like silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from announcer.config import SnmpProfile, SnmpSettings
from announcer.probes.base import ProbeResult, Target, Verdict

logger = logging.getLogger(__name__)

SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
IF_OPER_STATUS = (1, 3, 6, 1, 2, 1, 2, 2, 1, 8)
"""ifOperStatus; the port's ifIndex is appended."""

RCVBUF_BYTES = 4 * 1024 * 1024
"""Room for thousands of queued replies (the kernel doubles it for its overhead)."""
SNDBUF_BYTES = 1024 * 1024
DRAIN_BATCH = 1024
"""Datagrams read per readable callback before other callbacks get a turn."""
SEND_RETRIES = 5
V3_MAX_IN_FLIGHT = 64
"""SNMPv3 requests in flight at most: pysnmp spends milliseconds of CPU on each
message, so more only queue replies (in a socket with the default buffer)
until they time out."""
"""Tries of one datagram while the send buffer is full (EAGAIN, ENOBUFS)."""

_SO_RCVBUFFORCE = 33  # Linux; the socket module does not name it
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
_MAX_REQUEST_ID = 0x7FFFFFFF

_OPER_STATUS = dict(enumerate((
    "up", "down", "testing", "unknown", "dormant", "notPresent", "lowerLayerDown"), start=1
))  # fmt: skip
_ERROR_STATUS = dict(enumerate((
    "noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess",
    "wrongType", "wrongLength", "wrongEncoding", "wrongValue", "noCreation",
    "inconsistentValue", "resourceUnavailable", "commitFailed", "undoFailed",
    "authorizationError", "notWritable", "inconsistentName",
)))  # fmt: skip
_ACCESS_ERRORS = {6, 16}
"""Error statuses that mean our credentials may not read these objects."""


# --- BER: a GetRequest out, a Response in (RFC 3416 over RFC 1901) ----------


class BerError(ValueError):
    """A datagram that is not a well-formed SNMPv2c message."""


_GET_REQUEST = 0xA0
_RESPONSE = 0xA2
_UNSIGNED = {0x41, 0x42, 0x43, 0x46, 0x47}
"""Counter32, Gauge32, TimeTicks, Counter64, Unsigned32."""
_EXCEPTIONS = {0x80: "noSuchObject", 0x81: "noSuchInstance", 0x82: "endOfMibView"}


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + body


def _integer(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def encode_oid(oid: Sequence[int]) -> bytes:
    """The contents octets of an OBJECT IDENTIFIER (no tag, no length)."""
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40):
        raise ValueError(f"not an OID: {oid}")
    out = bytearray()
    for arc in (oid[0] * 40 + oid[1], *oid[2:]):
        if arc < 0:
            raise ValueError(f"not an OID: {oid}")
        rest = arc >> 7
        chunk = [arc & 0x7F]
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def encode_varbinds(oids: Sequence[Sequence[int]]) -> bytes:
    """A VarBindList asking for ``oids`` (each value NULL)."""
    return _tlv(0x30, b"".join(_tlv(0x30, _tlv(0x06, encode_oid(o)) + b"\x05\x00") for o in oids))


def encode_get(community: bytes, request_id: int, varbinds: bytes) -> bytes:
    """A whole SNMPv2c GetRequest message; ``varbinds`` from ``encode_varbinds``."""
    pdu = _tlv(_GET_REQUEST, _integer(request_id) + b"\x02\x01\x00\x02\x01\x00" + varbinds)
    return _tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, community) + pdu)


class Message(NamedTuple):
    version: int
    community: bytes
    pdu_type: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[bytes, int, bytes]]
    """(OID contents, value tag, value contents) in the order received."""


def _header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start, end) of the contents of the TLV at ``pos``."""
    if pos + 2 > end:
        raise BerError("truncated")
    tag, size = data[pos], data[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 0 < count <= 4 or pos + count > end:
            raise BerError("unsupported length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + size > end:
        raise BerError("truncated")
    return tag, pos, pos + size


def _expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    found, start, stop = _header(data, pos, end)
    if found != tag:
        raise BerError(f"expected tag 0x{tag:02x}, found 0x{found:02x}")
    return start, stop


def _int_at(data: bytes, pos: int, end: int) -> tuple[int, int]:
    start, stop = _expect(data, pos, end, 0x02)
    if start == stop:
        raise BerError("empty INTEGER")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def decode_message(data: bytes) -> Message:
    """Parse an SNMPv1/v2c message; raises ``BerError`` on anything malformed."""
    start, end = _expect(data, 0, len(data), 0x30)
    version, pos = _int_at(data, start, end)
    start, pos = _expect(data, pos, end, 0x04)
    community = data[start:pos]
    pdu_type, start, end = _header(data, pos, end)
    request_id, pos = _int_at(data, start, end)
    error_status, pos = _int_at(data, pos, end)
    error_index, pos = _int_at(data, pos, end)
    pos, end = _expect(data, pos, end, 0x30)
    varbinds = []
    while pos < end:
        start, pos = _expect(data, pos, end, 0x30)
        oid_start, oid_end = _expect(data, start, pos, 0x06)
        tag, value_start, value_end = _header(data, oid_end, pos)
        varbinds.append((data[oid_start:oid_end], tag, data[value_start:value_end]))
    return Message(version, community, pdu_type, request_id, error_status, error_index, varbinds)


def decode_value(tag: int, contents: bytes) -> int | str:
    """An integer value, or why there is none ("noSuchInstance", ...)."""
    if tag == 0x02 and contents:
        return int.from_bytes(contents, "big", signed=True)
    if tag in _UNSIGNED and contents:
        return int.from_bytes(contents, "big")
    return _EXCEPTIONS.get(tag, f"a value of type 0x{tag:02x}")


# --- what a GET found, whichever version asked ------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    rtt_ms: float
    error_status: int
    error_index: int
    values: list[int | str]
    """One per requested OID, in request order: an integer, or why there is none."""


_Outcome = _Answer | str | None
"""An answer; a FAILED reason; None for no reply after every try."""


def _describe_oid(index: int, ports: Sequence[int]) -> str:
    """The requested object at 1-based ``index`` of the GET (as error-index counts)."""
    if index == 1:
        return "sysUpTime.0"
    if 2 <= index <= len(ports) + 1:
        return f"ifOperStatus.{ports[index - 2]}"
    return "the request"


def _judge(target: Target, outcome: _Outcome, no_reply: str, profile_name: str) -> ProbeResult:
    """Turn what one GET found into the switch's result (pure; see the module docstring)."""
    if outcome is None:
        return ProbeResult(target.switch, Verdict.SILENT, no_reply)
    if isinstance(outcome, str):
        return ProbeResult(target.switch, Verdict.FAILED, outcome)
    rtt = round(outcome.rtt_ms, 3)
    ports = target.uplink_ports
    if outcome.error_status:
        name = _ERROR_STATUS.get(outcome.error_status, f"error {outcome.error_status}")
        where = _describe_oid(outcome.error_index, ports)
        if outcome.error_status in _ACCESS_ERRORS:
            return ProbeResult(
                target.switch,
                Verdict.FAILED,
                f"the agent refused to read {where} ({name}): give the community or user of"
                f" [snmp.profiles.{profile_name}] read access to sysUpTime and ifOperStatus",
                rtt_ms=rtt,
            )
        hint = "; list fewer uplink_ports" if outcome.error_status == 1 else ""
        return ProbeResult(
            target.switch,
            Verdict.ALIVE,
            f"the agent answered {name} for {where}{hint}",
            rtt_ms=rtt,
        )
    values = outcome.values
    notes: list[str] = []
    uptime = values[0]
    if isinstance(uptime, int):
        uptime_s: float | None = uptime / 100
    else:
        uptime_s = None
        notes.append(f"sysUpTime.0 not readable: {uptime}")
    down: list[int] = []
    missing: list[str] = []
    for port, status in zip(ports, values[1:], strict=True):
        if status == 1:
            continue
        down.append(port)
        if status in ("noSuchInstance", "noSuchObject"):
            missing.append(f"uplink port {port} does not exist")
        elif isinstance(status, int):
            state = _OPER_STATUS.get(status, f"status {status}")
            notes.append(f"uplink port {port} is down" + ("" if status == 2 else f" ({state})"))
        else:
            notes.append(f"uplink port {port} is unreadable: {status}")
    if down and len(down) == len(ports):
        listed = ", ".join(str(p) for p in down)
        detail = [*missing, *(n for n in notes if not n.startswith("uplink port"))]
        return ProbeResult(
            target.switch,
            Verdict.SILENT,
            f"all uplink ports down: {listed}" + (f" ({'; '.join(detail)})" if detail else ""),
            rtt_ms=rtt,
            uptime_s=uptime_s,
            uplinks_down=tuple(down),
        )
    return ProbeResult(
        target.switch,
        Verdict.ALIVE,
        "; ".join([*notes, *missing]),
        rtt_ms=rtt,
        uptime_s=uptime_s,
        uplinks_down=tuple(down),
    )


# --- SNMPv2c over one socket per address family -----------------------------


@dataclass(eq=False, slots=True)
class _Request:
    sockaddr: tuple[str, int] | tuple[str, int, int, int]
    community: bytes
    oids: list[bytes]
    future: asyncio.Future[_Answer | None] | None = None
    sent_at: float = 0.0
    """time.time() of the latest send; replies carry kernel timestamps on the same clock."""


@dataclass(eq=False)
class _Channel:
    """One address family's socket and the requests awaiting a reply on it."""

    sock: socket.socket
    loop: asyncio.AbstractEventLoop
    requests: dict[int, _Request] = field(default_factory=dict)
    next_id: int = field(default_factory=lambda: secrets.randbelow(_MAX_REQUEST_ID) + 1)

    @classmethod
    def open(cls, family: socket.AddressFamily, loop: asyncio.AbstractEventLoop) -> _Channel:
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
                data, ancillary, _flags, address = self.sock.recvmsg(65535, _ANC_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("SNMP receive: %s", exc)
                return
            arrived = 0.0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                    arrived = seconds + nanoseconds / 1e9
            self._match(data, address, arrived or time.time())

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
            or message.pdu_type != _RESPONSE
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
        request.future.set_result(
            _Answer(rtt_ms, message.error_status, message.error_index, values)
        )

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
    ) -> _Outcome:
        """One GET, retried with the same request-id; any try's reply answers it."""
        request_id = self._new_id()
        payload = encode_get(community, request_id, varbinds)
        request = _Request(sockaddr, community, oids)
        self.requests[request_id] = request
        try:
            for _ in range(tries):
                future: asyncio.Future[_Answer | None] = self.loop.create_future()
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
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < RCVBUF_BYTES:
        logger.warning(
            "SNMP receive buffer is %d bytes, not %d: replies of big sweeps may be dropped;"
            " raise net.core.rmem_max (sysctl) or lower [snmp] max_in_flight",
            got // 2,
            RCVBUF_BYTES,
        )
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)


# --- SNMPv3 through pysnmp ------------------------------------------------------


class _V3Client:
    """pysnmp's asyncio command generator with one shared engine."""

    def __init__(self, timeout_s: float, retries: int) -> None:
        from pysnmp.error import PySnmpError  # type: ignore[import-untyped]  # noqa: PLC0415
        from pysnmp.hlapi.v3arch import asyncio as hlapi  # type: ignore[import-untyped]  # noqa: PLC0415
        from pysnmp.proto import errind, rfc1905  # type: ignore[import-untyped]  # noqa: PLC0415

        self._hlapi: Any = hlapi
        self._timeout_s = timeout_s
        self._retries = retries
        self._users: dict[str, tuple[Any, Any]] = {}
        """profile name -> (SnmpEngine, UsmUserData)"""
        self._timed_out: Any = errind.RequestTimedOut
        self._credentials: tuple[Any, ...] = (
            errind.UnknownUserName,
            errind.WrongDigest,
            errind.UnknownSecurityName,
            errind.AuthenticationFailure,
            errind.AuthenticationError,
            errind.DecryptionError,
            errind.UnsupportedSecurityLevel,
        )
        self._missing: dict[Any, str] = {
            rfc1905.NoSuchObject: "noSuchObject",
            rfc1905.NoSuchInstance: "noSuchInstance",
            rfc1905.EndOfMibView: "endOfMibView",
        }
        self._pysnmp_error: type[Exception] = PySnmpError

    def _user(self, name: str, profile: SnmpProfile) -> tuple[Any, Any]:
        """The profile's engine and user: pysnmp keeps one key set per user name and
        engine, so two profiles with the same user name but other keys need two engines."""
        known = self._users.get(name)
        if known is None:
            h = self._hlapi
            auth = {
                "MD5": h.USM_AUTH_HMAC96_MD5,
                "SHA": h.USM_AUTH_HMAC96_SHA,
                "SHA224": h.USM_AUTH_HMAC128_SHA224,
                "SHA256": h.USM_AUTH_HMAC192_SHA256,
                "SHA384": h.USM_AUTH_HMAC256_SHA384,
                "SHA512": h.USM_AUTH_HMAC384_SHA512,
            }
            priv = {
                "DES": h.USM_PRIV_CBC56_DES,
                "AES": h.USM_PRIV_CFB128_AES,
                "AES192": h.USM_PRIV_CFB192_AES,
                "AES256": h.USM_PRIV_CFB256_AES,
            }
            user = h.UsmUserData(
                profile.user,
                authKey=profile.auth_key if profile.auth_protocol else None,
                privKey=profile.priv_key if profile.priv_protocol else None,
                authProtocol=auth[profile.auth_protocol]
                if profile.auth_protocol
                else h.USM_AUTH_NONE,
                privProtocol=priv[profile.priv_protocol]
                if profile.priv_protocol
                else h.USM_PRIV_NONE,
            )
            known = self._users[name] = (h.SnmpEngine(), user)
        return known

    async def get(
        self,
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
        profile_name: str,
        profile: SnmpProfile,
        oids: list[tuple[int, ...]],
    ) -> _Outcome:
        h = self._hlapi
        kind = h.UdpTransportTarget if ip.version == 4 else h.Udp6TransportTarget
        engine, user = self._user(profile_name, profile)
        started = time.monotonic()
        try:
            transport = await kind.create(
                (str(ip), profile.port), timeout=self._timeout_s, retries=self._retries
            )
            indication, status, index, varbinds = await h.get_cmd(
                engine,
                user,
                transport,
                h.ContextData(),
                *(h.ObjectType(h.ObjectIdentity(oid)) for oid in oids),
                lookupMib=False,
            )
        except OSError as exc:
            return f"cannot send: {exc}; check this host's firewall and routes"
        except self._pysnmp_error as exc:
            return f"SNMPv3 request failed: {exc}"
        rtt_ms = (time.monotonic() - started) * 1000
        if indication is not None:
            if isinstance(indication, self._timed_out):
                return None
            if isinstance(indication, self._credentials):
                return (
                    f"the agent rejected our SNMPv3 credentials ({indication}): check user,"
                    f" auth_key and priv_key of [snmp.profiles.{profile_name}]"
                )
            return f"SNMPv3 request failed: {indication}"
        values: list[int | str] = []
        for i, oid in enumerate(oids):
            if i >= len(varbinds) or tuple(varbinds[i][0]) != oid:
                values.append("missing from the reply")
                continue
            value = varbinds[i][1]
            missing = next((w for k, w in self._missing.items() if isinstance(value, k)), None)
            if missing is not None:
                values.append(missing)
            else:
                try:
                    values.append(int(value))
                except (TypeError, ValueError):
                    values.append(f"a {type(value).__name__} value")
        return _Answer(rtt_ms, int(status), int(index), values)

    async def close(self) -> None:
        for engine, _user in self._users.values():
            engine.close_dispatcher()
        self._users.clear()
        await asyncio.sleep(0)  # let the dispatcher's cancelled timer task finish


# --- the probe ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    index: int
    target: Target
    profile_name: str
    profile: SnmpProfile
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address


class SnmpProbe:
    """SNMP GETs for many switches at once; see the module docstring."""

    name = "snmp"

    def __init__(self, settings: SnmpSettings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._channels: dict[socket.AddressFamily, _Channel | str] = {}
        self._v3: _V3Client | None = None
        self._varbinds: dict[tuple[int, ...], tuple[list[tuple[int, ...]], list[bytes], bytes]] = {}
        self._closed = False
        tries = settings.retries + 1
        self._no_reply = (
            f"no SNMP reply within {settings.timeout_ms} ms"
            f" ({tries} {'try' if tries == 1 else 'tries'})"
        )

    async def sweep(self, targets: Sequence[Target]) -> list[ProbeResult]:
        if self._closed:
            raise RuntimeError("SnmpProbe.sweep() after close(): make a new probe")
        results: list[ProbeResult | None] = [None] * len(targets)
        jobs: list[_Job] = []
        for index, target in enumerate(targets):
            planned = self._plan(index, target)
            if isinstance(planned, _Job):
                jobs.append(planned)
            else:
                results[index] = planned

        async def worker(queue: Iterator[_Job]) -> None:
            for job in queue:  # shared by the kind's workers: each job goes to one
                async with self._slots:  # shared by all sweeps
                    results[job.index] = await self._ask(job)

        limit = self.settings.max_in_flight
        v3 = [job for job in jobs if job.profile.version == "3"]
        v2c = [job for job in jobs if job.profile.version != "3"]
        async with asyncio.TaskGroup() as group:
            for kind, workers in ((v2c, limit), (v3, min(limit, V3_MAX_IN_FLIGHT))):
                queue = iter(kind)
                for _ in range(min(len(kind), workers)):
                    group.create_task(worker(queue))
        done = [r for r in results if r is not None]
        assert len(done) == len(targets)  # every job wrote its result
        return done

    def _plan(self, index: int, target: Target) -> _Job | ProbeResult:
        name = target.snmp_profile or self.settings.default_profile
        profile = self.settings.profiles.get(name)
        if profile is None:
            return ProbeResult(
                target.switch,
                Verdict.FAILED,
                f"unknown SNMP profile {name!r}: add [snmp.profiles.{name}] to the"
                " configuration or fix the switch's snmp_profile",
            )
        try:
            ip = ipaddress.ip_address(target.address.strip())
        except ValueError:
            return ProbeResult(
                target.switch,
                Verdict.FAILED,
                f"not an IP address: {target.address!r}; fix the switch's address in the inventory",
            )
        return _Job(index, target, name, profile, ip)

    def _requested(
        self, ports: tuple[int, ...]
    ) -> tuple[list[tuple[int, ...]], list[bytes], bytes]:
        """(OIDs, their encoded contents, the VarBindList) for these uplink ports; cached."""
        known = self._varbinds.get(ports)
        if known is None:
            oids = [SYS_UPTIME, *((*IF_OPER_STATUS, port) for port in ports)]
            known = (oids, [encode_oid(o) for o in oids], encode_varbinds(oids))
            if len(self._varbinds) < 10_000:
                self._varbinds[ports] = known
        return known

    async def _ask(self, job: _Job) -> ProbeResult:
        oids, encoded, varbinds = self._requested(job.target.uplink_ports)
        profile = job.profile
        outcome: _Outcome
        if profile.version == "3":
            if self._v3 is None:
                self._v3 = _V3Client(self.settings.timeout_ms / 1000, self.settings.retries)
            outcome = await self._v3.get(job.ip, job.profile_name, profile, oids)
        else:
            channel = self._channel(job.ip.version)
            if isinstance(channel, str):
                outcome = channel
            else:
                sockaddr: tuple[str, int] | tuple[str, int, int, int] = (
                    (str(job.ip), profile.port)
                    if job.ip.version == 4
                    else (str(job.ip), profile.port, 0, 0)
                )
                outcome = await channel.get(
                    sockaddr,
                    profile.community.encode(),
                    encoded,
                    varbinds,
                    self.settings.timeout_ms / 1000,
                    self.settings.retries + 1,
                )
        return _judge(job.target, outcome, self._no_reply, job.profile_name)

    def _channel(self, version: int) -> _Channel | str:
        """The family's channel, opened on first use; a FAILED reason if it cannot be."""
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        channel = self._channels.get(family)
        if channel is None:
            try:
                channel = _Channel.open(family, asyncio.get_running_loop())
            except OSError as exc:
                channel = f"cannot send: no UDP socket for IPv{version} ({exc})"
                logger.warning("SNMP: %s", channel)
            self._channels[family] = channel
        return channel

    async def close(self) -> None:
        self._closed = True
        for channel in self._channels.values():
            if isinstance(channel, _Channel):
                channel.close()
        self._channels.clear()
        if self._v3 is not None:
            await self._v3.close()
            self._v3 = None


_: Callable[[SnmpSettings], object] = SnmpProbe  # SnmpProbe(settings) is the factory
