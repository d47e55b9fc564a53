"""ICMP echo: one socket per address family sweeps every switch at an even rate.

A sweep sends one echo request per distinct address, paced at
``[icmp] rate_pps``, over a single non-blocking socket per family that the
event loop watches with ``add_reader``. Outstanding requests are keyed by
(identifier, sequence, address); a reply also has to carry this sweep's tag in
its payload, so replies to other processes' pings, to another ``IcmpProbe``
or to an earlier sweep are ignored. Replies are timed by the kernel
(``SO_TIMESTAMPNS``), so a busy event loop does not turn an answer that came
in time into a miss.

icmplib opens the sockets and tells a permission problem from other errors.
Its per-packet helpers are not used on the hot path: ``_create_packet`` costs
about 9 µs a packet (a byte-by-byte checksum), ``send`` resolves the address
and sets two socket options per packet and reports a firewall's EPERM as a
broadcast error, and ``_parse_reply`` assumes a 20-byte IPv4 header and does
not check which request an ICMP error quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import logging
import os
import pwd
import secrets
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from icmplib import (  # type: ignore[import-untyped]
    ICMPSocketError,
    ICMPv4Socket,
    ICMPv6Socket,
    SocketPermissionError,
)

from announcer.config import IcmpSettings
from announcer.probes.base import ProbeResult, Target, Verdict

logger = logging.getLogger(__name__)

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
RCVBUF_BYTES = 4 * 1024 * 1024
"""Room for well over 10,000 queued replies (the kernel doubles it for overhead)."""
SNDBUF_BYTES = 1024 * 1024
PAYLOAD_BYTES = 56
"""Echo data, as ping and fping send by default."""
SEND_BATCH = 256
"""Requests sent between two yields to the event loop."""
DRAIN_BATCH = 1024
"""Packets read per readable callback before other callbacks get a turn."""
YIELD_EVERY = 1024
"""Targets planned or answered between two yields to the event loop."""
SEND_RETRIES = 5
"""Tries of one request when the send buffer is full (EAGAIN, ENOBUFS)."""

# Linux socket options that the socket module does not name.
_SO_RCVBUFFORCE = 33
_SO_ATTACH_FILTER = 26
_SO_TIMESTAMPNS = 35
_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1
_TIMESPEC = struct.Struct("@ll")  # struct timespec of SO_TIMESTAMPNS(_OLD)
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
_HEADER = struct.Struct("!BBHHH")
_ID_SEQ = struct.Struct("!HH")

_UNREACHABLE_V4 = {
    0: "network unreachable",
    1: "host unreachable",
    3: "port unreachable",
    9: "network administratively prohibited",
    10: "host administratively prohibited",
    13: "communication administratively prohibited",
}
_UNREACHABLE_V6 = {
    0: "no route to destination",
    1: "communication administratively prohibited",
    3: "address unreachable",
    4: "port unreachable",
    5: "source address failed policy",
    6: "reject route to destination",
}


class IcmpUnavailable(RuntimeError):
    """This process may open neither raw ICMP sockets nor ping sockets."""


@dataclass(frozen=True)
class IcmpMode:
    raw: bool
    """True: raw sockets; False: unprivileged ping sockets (the kernel picks the identifier)."""
    description: str
    """One sentence for the start-up log: which sockets and why."""


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _ping_range() -> tuple[int, int] | None:
    try:
        low, high = PING_GROUP_RANGE.read_text(encoding="ascii").split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def _groups() -> list[int]:
    return [os.getegid(), *(g for g in os.getgroups() if g != os.getegid())]


def _open(family: socket.AddressFamily, raw: bool) -> ICMPv4Socket | ICMPv6Socket:
    """icmplib's socket; raises SocketPermissionError or ICMPSocketError."""
    kind = ICMPv4Socket if family == socket.AF_INET else ICMPv6Socket
    return kind(privileged=raw)


def _raw_needs() -> str:
    if os.geteuid() == 0:
        return (
            "raw sockets need CAP_NET_RAW, which this root process lacks"
            " (a container or a systemd unit can drop it)"
        )
    return f"raw sockets need root or CAP_NET_RAW (user {_user()} has neither)"


def _permission_advice(ping_range: tuple[int, int] | None) -> str:
    group = os.getegid()
    shown = "unreadable" if ping_range is None else f"{ping_range[0]} {ping_range[1]}"
    return (
        f"{_raw_needs()}, and ping sockets are off for group {group}"
        f" (net.ipv4.ping_group_range is {shown}); run announcer as root, give it"
        " CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW), or allow ping sockets with"
        f' sysctl -w net.ipv4.ping_group_range="{group} {group}"'
        " (and make it permanent in /etc/sysctl.d/)"
    )


def _choose_mode(privileged: bool | None) -> tuple[IcmpMode, ICMPv4Socket]:
    """Decide between raw and ping sockets as ``[icmp] privileged`` says.

    Returns the mode and the IPv4 socket opened to prove it works.
    Raises ``IcmpUnavailable`` with what to do when neither may be used.
    """
    forced = "" if privileged is None else f"[icmp] privileged = {str(privileged).lower()}; "
    if privileged is not False:
        try:
            sock = _open(socket.AF_INET, raw=True)
        except ICMPSocketError as exc:
            if privileged:
                why = _raw_needs() if isinstance(exc, SocketPermissionError) else str(exc)
                raise IcmpUnavailable(
                    f"cannot open a raw ICMP socket: {why}; run announcer as root, give it"
                    " CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW), or leave"
                    " [icmp] privileged unset to use ping sockets"
                ) from None
        else:
            who = "running as root" if os.geteuid() == 0 else f"user {_user()} has CAP_NET_RAW"
            return IcmpMode(True, f"ICMP: raw sockets ({forced}{who})"), sock
    ping_range = _ping_range()
    try:
        sock = _open(socket.AF_INET, raw=False)
    except ICMPSocketError as exc:
        if privileged is None:
            raise IcmpUnavailable(
                f"cannot send ICMP echo: {_permission_advice(ping_range)}"
            ) from None
        raise IcmpUnavailable(
            f"cannot open an unprivileged ping socket ({exc}); allow group {os.getegid()} with"
            f' sysctl -w net.ipv4.ping_group_range="{os.getegid()} {os.getegid()}",'
            " or leave [icmp] privileged unset to use raw sockets as root or with CAP_NET_RAW"
        ) from None
    if ping_range is None:
        why = "net.ipv4.ping_group_range is unreadable but the kernel allowed one"
    else:
        low, high = ping_range
        group = next((g for g in _groups() if low <= g <= high), os.getegid())
        why = f"net.ipv4.ping_group_range {low} {high} includes group {group}"
    return IcmpMode(False, f"ICMP: unprivileged ping sockets ({forced}{why})"), sock


def _ones_sum(data: bytes) -> int:
    """16-bit one's complement sum (RFC 1071) of an even number of bytes."""
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _bpf_program(ident: int, ipv4: bool) -> bytes:
    """Classic BPF that drops echo replies carrying another identifier (as iputils ping does)."""
    insn = struct.Struct("=HBBI")
    accept, drop = insn.pack(0x06, 0, 0, 0xFFFFFFFF), insn.pack(0x06, 0, 0, 0)
    if ipv4:  # X = IP header length; type at [X], identifier at [X + 4]
        head = [insn.pack(0xB1, 0, 0, 0), insn.pack(0x50, 0, 0, 0), insn.pack(0x15, 0, 2, 0)]
        head.append(insn.pack(0x48, 0, 0, 4))
    else:  # ICMPv6 raw sockets see no IP header
        head = [insn.pack(0x30, 0, 0, 0), insn.pack(0x15, 0, 2, 129), insn.pack(0x28, 0, 0, 4)]
    return b"".join([*head, insn.pack(0x15, 0, 1, ident), accept, drop])


def _tune(sock: socket.socket, raw: bool, ident: int) -> None:
    """Big buffers, kernel timestamps; on raw sockets only the ICMP types we read."""
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < RCVBUF_BYTES:
        logger.warning(
            "ICMP receive buffer is %d bytes, not %d: replies of big sweeps may be dropped;"
            " raise net.core.rmem_max to %d",
            got // 2,
            RCVBUF_BYTES,
            RCVBUF_BYTES,
        )
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
    with contextlib.suppress(OSError):  # without it replies are timed when read
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    if not raw:
        return  # the kernel hands a ping socket only its own echo replies
    ipv4 = sock.family == socket.AF_INET
    try:
        if ipv4:  # pass echo reply (0), destination unreachable (3), time exceeded (11)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", ~0x0809 & 0xFFFFFFFF))
        else:  # block all but echo reply (129), unreachable (1), time exceeded (3)
            words = [0xFFFFFFFF] * 8
            words[0] &= ~((1 << 1) | (1 << 3))
            words[4] &= ~(1 << 1)
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))
        program = _bpf_program(ident, ipv4)
        buffer = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError as exc:  # still correct, only busier: every ICMP packet is read
        logger.info("ICMP socket filters not installed (%s); filtering in Python", exc)


@dataclass(eq=False)
class _Channel:
    """One address family's socket, kept open across sweeps."""

    family: socket.AddressFamily
    raw: bool
    icmp: ICMPv4Socket | ICMPv6Socket
    sock: socket.socket
    ident: int
    echo_request: int
    echo_reply: int
    seq: int = field(default_factory=lambda: secrets.randbelow(0x10000))
    """Destination i of a sweep gets sequence number seq + i (mod 2**16)."""
    outstanding: dict[tuple[int, int, bytes], int] = field(default_factory=dict)
    """(identifier, sequence, packed address) -> destination index, this sweep only."""
    checksum_base: int | None = None
    """Folded sum of this sweep's payload, type and identifier; None: the kernel sums."""

    @classmethod
    def wrap(cls, icmp: ICMPv4Socket | ICMPv6Socket, raw: bool) -> _Channel:
        sock: socket.socket = icmp.sock
        v4 = sock.family == socket.AF_INET
        if raw:
            ident = secrets.randbelow(0xFFFF) + 1
        else:  # the kernel writes the socket's port into every request
            sock.bind(("0.0.0.0" if v4 else "::", 0))
            ident = int(sock.getsockname()[1])
        _tune(sock, raw, ident)
        return cls(sock.family, raw, icmp, sock, ident, *((8, 0) if v4 else (128, 129)))

    def prepare(self, payload: bytes) -> None:
        self.outstanding.clear()
        self.checksum_base = None
        if self.raw and self.family == socket.AF_INET:
            total = _ones_sum(payload) + (self.echo_request << 8) + self.ident
            self.checksum_base = (total & 0xFFFF) + (total >> 16)

    def quoted(self, data: bytes, address: tuple[str, int]) -> tuple[int, int, bytes, str] | None:
        """An ICMP error quoting one of our requests: (identifier, sequence, address, reason).

        Only raw sockets see errors; raises IndexError or struct.error on a short packet.
        """
        if self.family == socket.AF_INET:
            at = (data[0] & 0x0F) * 4
            kind, code, inner = data[at], data[at + 1], at + 8
            if kind not in (3, 11) or data[inner + 9] != socket.IPPROTO_ICMP:
                return None
            request = inner + (data[inner] & 0x0F) * 4
            destination = data[inner + 16 : inner + 20]
            what = _UNREACHABLE_V4.get(code, f"code {code}")
            exceeded = kind == 11
        else:
            kind, code, inner = data[0], data[1], 8
            if kind not in (1, 3) or data[inner + 6] != socket.IPPROTO_ICMPV6:
                return None
            request, destination = inner + 40, data[inner + 24 : inner + 40]
            what = _UNREACHABLE_V6.get(code, f"code {code}")
            exceeded = kind == 3
        if data[request] != self.echo_request:
            return None
        ident, seq = _ID_SEQ.unpack_from(data, request + 4)
        what = "time exceeded in transit" if exceeded else f"destination unreachable: {what}"
        return ident, seq, destination, f"{address[0]} says {what}"

    def close(self) -> None:
        self.icmp.close()


_SockAddr = tuple[str, int] | tuple[str, int, int, int]


def _where(address: str) -> tuple[socket.AddressFamily, _SockAddr, bytes] | str:
    """(family, socket address, packed address) of a switch address, or why there is none."""
    try:  # the common case, ten times faster than ipaddress
        return socket.AF_INET, (address, 0), socket.inet_pton(socket.AF_INET, address)
    except OSError:
        pass
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return f"not an IP address: {address!r}; fix the switch's address in the inventory"
    if isinstance(ip, ipaddress.IPv4Address):
        return socket.AF_INET, (str(ip), 0), ip.packed
    scope = 0
    if ip.scope_id:
        try:
            scope = socket.if_nametoindex(ip.scope_id)
        except OSError:
            return f"cannot send: no interface {ip.scope_id!r} for {address}; check the address"
    return socket.AF_INET6, (str(ip).partition("%")[0], 0, 0, scope), ip.packed


@dataclass(eq=False)
class _Plan:
    """Which socket and socket address each target's address goes to; kept while unchanged."""

    addresses: list[str]
    dests: list[tuple[_Channel, _SockAddr, bytes]]
    """One per distinct address: channel, socket address, packed address."""
    slots: list[int]
    """Per target: its index in ``dests``, or -1 when it cannot be asked."""
    failed: dict[str, str]
    """Address -> the FAILED reason for targets that cannot be asked."""
    reusable: bool
    """False when a socket could not be opened: try again next sweep."""


class _Sweep:
    """One sweep's requests and answers, matched as the sockets become readable."""

    def __init__(self, channels: list[_Channel], tag: bytes, timeout_ms: int, count: int) -> None:
        self.channels = channels
        self.tag = tag
        self.timeout_ms = timeout_ms
        self.sent_at = [0.0] * count
        self.rtt_ms: list[float | None] = [None] * count
        self.other: dict[int, tuple[Verdict, str]] = {}
        """Destinations that are not ALIVE and not plainly SILENT: FAILED, ICMP error, late."""
        self.sending = True
        self.finished = asyncio.Event()

    def waiting(self) -> bool:
        return any(channel.outstanding for channel in self.channels)

    def drain(self, channel: _Channel, limit: int = DRAIN_BATCH) -> None:
        """Read what the socket holds (at most ``limit`` packets) and match it."""
        sock, outstanding, tag, sent_at = channel.sock, channel.outstanding, self.tag, self.sent_at
        reply, ends = channel.echo_reply, 8 + len(tag)
        v4, header = channel.family == socket.AF_INET, channel.raw
        timeout_s = self.timeout_ms / 1000
        for _ in range(limit):
            try:
                data, ancillary, _flags, address = sock.recvmsg(1024, _ANC_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                logger.debug("ICMP receive: %s", exc)
                break
            try:
                at = (data[0] & 0x0F) << 2 if v4 and header else 0
                if data[at] != reply:
                    if header:
                        self._error(channel, data, address)
                    continue
                if data[at + 8 : at + ends] != tag:
                    continue  # another process's, another probe's or an earlier sweep's
                ident, seq = _ID_SEQ.unpack_from(data, at + 4)
                if not v4:
                    source = socket.inet_pton(socket.AF_INET6, address[0].partition("%")[0])
                else:
                    source = data[12:16] if header else socket.inet_aton(address[0])
            except (IndexError, struct.error, OSError):
                continue
            index = outstanding.pop((ident, seq, source), None)
            if index is None:
                continue
            if ancillary:
                seconds, nanoseconds = _TIMESPEC.unpack_from(ancillary[0][2])
                elapsed = seconds + nanoseconds * 1e-9 - sent_at[index]
            else:
                elapsed = time.time() - sent_at[index]
            if elapsed <= timeout_s:
                self.rtt_ms[index] = int(max(elapsed, 0.0) * 1e6) / 1000
            else:
                self.other[index] = (
                    Verdict.SILENT,
                    f"no echo reply within {self.timeout_ms} ms"
                    f" (one came after {elapsed * 1000:.0f} ms)",
                )
        if not self.sending and not self.waiting():
            self.finished.set()

    def _error(self, channel: _Channel, data: bytes, address: tuple[str, int]) -> None:
        try:
            quoted = channel.quoted(data, address)
        except (IndexError, struct.error):
            return
        if quoted is not None:
            ident, seq, destination, reason = quoted
            index = channel.outstanding.pop((ident, seq, destination), None)
            if index is not None:
                self.other[index] = (Verdict.SILENT, reason)

    def fail(self, index: int, exc: OSError) -> None:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        self.other[index] = (
            Verdict.FAILED,
            f"cannot send: {reason}; check this host's firewall and routes",
        )


class IcmpProbe:
    """Echo requests over one socket per address family; see the module docstring."""

    name = "icmp"

    def __init__(self, settings: IcmpSettings) -> None:
        self.settings = settings
        self.mode, first = _choose_mode(settings.privileged)
        self._channels = {socket.AF_INET: _Channel.wrap(first, self.mode.raw)}
        self._token = secrets.token_bytes(8)
        self._sweeps = 0
        self._plan: _Plan | None = None
        self._unopened: dict[socket.AddressFamily, str] = {}
        """Families whose socket failed to open, with the reason last logged."""
        self._lock = asyncio.Lock()

    @property
    def description(self) -> str:
        """Which sockets and why, in one sentence for the start-up log.

        For example "ICMP: raw sockets (running as root)".
        """
        return self.mode.description

    def _channel(self, family: socket.AddressFamily) -> _Channel | str:
        """The family's channel, opened on first use; else the FAILED reason."""
        channel = self._channels.get(family)
        if channel is None:
            try:
                channel = _Channel.wrap(_open(family, self.mode.raw), self.mode.raw)
            except (ICMPSocketError, OSError) as exc:
                version = "ICMPv6" if family == socket.AF_INET6 else "ICMP"
                reason = f"cannot send: no {version} socket ({exc}); check this host's IP setup"
                if self._unopened.get(family) != reason:
                    logger.warning("ICMP: %s", reason)
                self._unopened[family] = reason
                return reason
            if self._unopened.pop(family, None):
                logger.info("ICMP: the %s socket opened after all", family.name)
            self._channels[family] = channel
        return channel

    async def _planned(self, targets: Sequence[Target]) -> _Plan:
        addresses = [target.address for target in targets]
        plan = self._plan
        if plan is not None and plan.reusable and plan.addresses == addresses:
            return plan
        dests: list[tuple[_Channel, _SockAddr, bytes]] = []
        index: dict[str, int] = {}
        failed: dict[str, str] = {}
        reusable = True
        for at, address in enumerate(dict.fromkeys(addresses)):
            if at % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            where = _where(address)
            if isinstance(where, str):
                failed[address] = where
                continue
            family, sockaddr, packed = where
            channel = self._channel(family)
            if isinstance(channel, str):
                failed[address], reusable = channel, False  # try to open it again next sweep
                continue
            index[address] = len(dests)
            dests.append((channel, sockaddr, packed))
        slots = [index.get(address, -1) for address in addresses]
        self._plan = _Plan(addresses, dests, slots, failed, reusable)
        return self._plan

    async def sweep(self, targets: Sequence[Target]) -> list[ProbeResult]:
        async with self._lock:
            return await self._sweep(targets)

    async def _sweep(self, targets: Sequence[Target]) -> list[ProbeResult]:
        plan = await self._planned(targets)
        self._sweeps += 1
        tag = self._token + struct.pack("!I", self._sweeps & 0xFFFFFFFF)
        payload = tag + bytes(PAYLOAD_BYTES - len(tag))
        channels = list(dict.fromkeys(channel for channel, _, _ in plan.dests))
        state = _Sweep(channels, tag, self.settings.timeout_ms, len(plan.dests))
        loop = asyncio.get_running_loop()
        try:
            for channel in channels:
                channel.prepare(payload)
                state.drain(channel, limit=1 << 20)  # late replies to the last sweep: dropped
                loop.add_reader(channel.sock.fileno(), state.drain, channel)
            await self._send_all(plan, state, payload)
            state.sending = False
            for channel in channels:  # sequence numbers go on where this sweep's ended
                channel.seq = (channel.seq + len(plan.dests)) & 0xFFFF
            if state.waiting():
                last = max(state.sent_at) + self.settings.timeout_ms / 1000
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, last - time.time())):
                        await state.finished.wait()
            for channel in channels:
                state.drain(channel, limit=1 << 20)
        finally:
            for channel in channels:
                loop.remove_reader(channel.sock.fileno())
                channel.outstanding.clear()
        silent = (Verdict.SILENT, f"no echo reply within {self.settings.timeout_ms} ms")
        results: list[ProbeResult] = []
        for at, (target, slot) in enumerate(zip(targets, plan.slots, strict=True)):
            if at % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # 10,000 results take tens of milliseconds
            if slot < 0:
                reason = plan.failed[target.address]
                results.append(ProbeResult(target.switch, Verdict.FAILED, reason))
            elif (rtt_ms := state.rtt_ms[slot]) is not None:
                results.append(ProbeResult(target.switch, Verdict.ALIVE, rtt_ms=rtt_ms))
            else:
                results.append(ProbeResult(target.switch, *state.other.get(slot, silent)))
        return results

    async def _send_all(self, plan: _Plan, state: _Sweep, payload: bytes) -> None:
        """One request per destination, ``rate_pps`` evenly, yielding between batches."""
        rate, dests, sent_at = float(self.settings.rate_pps), plan.dests, state.sent_at
        pack, now = _HEADER.pack, time.time
        start = time.monotonic()
        sent = 0
        while sent < len(dests):
            due = min(len(dests), int((time.monotonic() - start) * rate) + 1, sent + SEND_BATCH)
            if due <= sent:
                await asyncio.sleep(start + sent / rate - time.monotonic())
                continue
            current = None
            for index in range(sent, due):
                channel, sockaddr, packed = dests[index]
                if channel is not current:  # locals: this loop is the hot path
                    current, ident, first = channel, channel.ident, channel.seq
                    kind, base = channel.echo_request, channel.checksum_base
                    outstanding, sendto = channel.outstanding, channel.sock.sendto
                seq = (first + index) & 0xFFFF
                checksum = 0
                if base is not None:
                    total = base + seq
                    checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
                packet = pack(kind, 0, checksum, ident, seq) + payload
                key = (ident, seq, packed)
                outstanding[key] = index  # before sendto: loopback answers inside it
                sent_at[index] = now()
                try:
                    sendto(packet, sockaddr)
                except OSError as exc:
                    del outstanding[key]
                    await self._resend(channel, packet, sockaddr, key, index, exc, state)
            sent = due
            await asyncio.sleep(0)

    async def _resend(
        self,
        channel: _Channel,
        packet: bytes,
        sockaddr: _SockAddr,
        key: tuple[int, int, bytes],
        index: int,
        exc: OSError,
        state: _Sweep,
    ) -> None:
        """Try again while the send buffer is full; else the destination is FAILED."""
        for attempt in range(1, SEND_RETRIES):
            if not (isinstance(exc, BlockingIOError) or exc.errno == errno.ENOBUFS):
                break
            await asyncio.sleep(0.002 * attempt)
            channel.outstanding[key] = index
            state.sent_at[index] = time.time()
            try:
                channel.sock.sendto(packet, sockaddr)
                return
            except OSError as again:
                del channel.outstanding[key]
                exc = again
        logger.debug("ICMP echo to %s not sent: %s", sockaddr[0], exc)
        state.fail(index, exc)

    async def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._plan = None
