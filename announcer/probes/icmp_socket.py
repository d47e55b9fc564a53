"""ICMP sockets: which kind this process may open, tuned and wrapped, one per family.

``choose_mode`` decides between raw sockets (root or CAP_NET_RAW) and the
kernel's unprivileged ping sockets, as ``[icmp] privileged`` says, and raises
``IcmpUnavailable`` with what to do when neither may be opened. ``Channel``
is one address family's socket, kept open across sweeps: non-blocking, with
big buffers and kernel receive timestamps (``SO_TIMESTAMPNS``) and, on raw
sockets, kernel filters (``ICMP_FILTER`` and a classic BPF program on the
identifier, as iputils ping installs) so that Python reads only replies and
errors meant for it. ``Channel.quoted`` reads an ICMP error (unreachable,
time exceeded) and tells which of our requests it quotes.

icmplib opens the sockets and tells a permission problem from other errors;
the packets themselves are built and parsed by ``announcer.probes.icmp``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import secrets
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from icmplib import (  # type: ignore[import-untyped]
    ICMPSocketError,
    ICMPv4Socket,
    ICMPv6Socket,
    SocketPermissionError,
)

from announcer.probes import kernel

logger = logging.getLogger(__name__)

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
RCVBUF_BYTES = 4 * 1024 * 1024
"""Room for well over 10,000 queued replies (the kernel doubles it for overhead)."""
SNDBUF_BYTES = 1024 * 1024

# Linux socket options that the socket module does not name.
_SO_ATTACH_FILTER = 26
_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1

ANCILLARY_BYTES = kernel.ANCILLARY_BYTES
ID_SEQ = struct.Struct("!HH")
"""Identifier and sequence number, 4 bytes into an echo header."""

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


def open_socket(family: socket.AddressFamily, raw: bool) -> ICMPv4Socket | ICMPv6Socket:
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


def choose_mode(privileged: bool | None) -> tuple[IcmpMode, ICMPv4Socket]:
    """Decide between raw and ping sockets as ``[icmp] privileged`` says.

    Returns the mode and the IPv4 socket opened to prove it works.
    Raises ``IcmpUnavailable`` with what to do when neither may be used.
    """
    forced = "" if privileged is None else f"[icmp] privileged = {str(privileged).lower()}; "
    if privileged is not False:
        try:
            sock = open_socket(socket.AF_INET, raw=True)
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
        sock = open_socket(socket.AF_INET, raw=False)
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
    kernel.enlarge_buffers(
        sock, RCVBUF_BYTES, SNDBUF_BYTES, "ICMP", f"raise net.core.rmem_max to {RCVBUF_BYTES}"
    )
    kernel.time_arrivals(sock)
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
class Channel:
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
    def wrap(cls, icmp: ICMPv4Socket | ICMPv6Socket, raw: bool) -> Channel:
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
        ident, seq = ID_SEQ.unpack_from(data, request + 4)
        what = "time exceeded in transit" if exceeded else f"destination unreachable: {what}"
        return ident, seq, destination, f"{address[0]} says {what}"

    def close(self) -> None:
        self.icmp.close()
