"""ICMP echo: one socket per address family sweeps every switch at an even rate.

A sweep sends one echo request per distinct address, paced at
``[icmp] rate_pps``, over a single non-blocking socket per family that the
event loop watches with ``add_reader``. Outstanding requests are keyed by
(identifier, sequence, address); a reply also has to carry this sweep's tag in
its payload, so replies to other processes' pings, to another ``IcmpProbe``
or to an earlier sweep are ignored. Replies are timed by the kernel
(``SO_TIMESTAMPNS``), so a busy event loop does not turn an answer that came
in time into a miss.

This module owns the sweep: planning the addresses, pacing the requests,
matching the replies, turning them into results. The sockets (raw or ping
sockets, their buffers and kernel filters, reading ICMP errors) live in
``announcer.probes.icmp_socket``. icmplib opens them, but its per-packet
helpers are not used on the hot path: ``_create_packet`` costs about 9 µs a
packet (a byte-by-byte checksum), ``send`` resolves the address and sets two
socket options per packet and reports a firewall's EPERM as a broadcast
error, and ``_parse_reply`` assumes a 20-byte IPv4 header and does not check
which request an ICMP error quotes.
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
from collections.abc import Sequence
from dataclasses import dataclass

from icmplib import ICMPSocketError  # type: ignore[import-untyped]

from announcer.config import IcmpSettings
from announcer.probes import kernel
from announcer.probes.base import ProbeResult, Target, Verdict
from announcer.probes.icmp_socket import (
    ANCILLARY_BYTES,
    ID_SEQ,
    Channel,
    IcmpMode,
    IcmpUnavailable,
    choose_mode,
    open_socket,
)

__all__ = ["IcmpMode", "IcmpProbe", "IcmpUnavailable"]

logger = logging.getLogger(__name__)

PAYLOAD_BYTES = 56
"""Echo data, as ping and fping send by default."""
SEND_BATCH = 256
#: The pacing's grain: requests due within this long go out together, so a
#: sweep of 10,000 at 20,000 a second wakes the event loop 250 times, not
#: 10,000 times (which cost more CPU than the sending).
PACE_S = 0.002
"""Requests sent between two yields to the event loop."""
DRAIN_BATCH = 1024
"""Packets read per readable callback before other callbacks get a turn."""
YIELD_EVERY = 1024
"""Targets planned or answered between two yields to the event loop."""
SEND_RETRIES = 5
"""Tries of one request when the send buffer is full (EAGAIN, ENOBUFS)."""
_HEADER = struct.Struct("!BBHHH")
"""ICMP echo header: type, code, checksum, identifier, sequence."""


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
    dests: list[tuple[Channel, _SockAddr, bytes]]
    """One per distinct address: channel, socket address, packed address."""
    slots: list[int]
    """Per target: its index in ``dests``, or -1 when it cannot be asked."""
    failed: dict[str, str]
    """Address -> the FAILED reason for targets that cannot be asked."""
    reusable: bool
    """False when a socket could not be opened: try again next sweep."""


class _Sweep:
    """One sweep's requests and answers, matched as the sockets become readable."""

    def __init__(self, channels: list[Channel], tag: bytes, timeout_ms: int, count: int) -> None:
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

    def drain(self, channel: Channel, limit: int = DRAIN_BATCH) -> None:
        """Read what the socket holds (at most ``limit`` packets) and match it."""
        sock, outstanding, tag, sent_at = channel.sock, channel.outstanding, self.tag, self.sent_at
        reply, ends = channel.echo_reply, 8 + len(tag)
        v4, header = channel.family == socket.AF_INET, channel.raw
        timeout_s = self.timeout_ms / 1000
        for _ in range(limit):
            try:
                data, ancillary, _flags, address = sock.recvmsg(1024, ANCILLARY_BYTES)
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
                ident, seq = ID_SEQ.unpack_from(data, at + 4)
                if not v4:
                    source = socket.inet_pton(socket.AF_INET6, address[0].partition("%")[0])
                else:
                    source = data[12:16] if header else socket.inet_aton(address[0])
            except (IndexError, struct.error, OSError):
                continue
            index = outstanding.pop((ident, seq, source), None)
            if index is None:
                continue
            elapsed = (kernel.arrival(ancillary) or time.time()) - sent_at[index]
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

    def _error(self, channel: Channel, data: bytes, address: tuple[str, int]) -> None:
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
        self.mode, first = choose_mode(settings.privileged)
        self._channels = {socket.AF_INET: Channel.wrap(first, self.mode.raw)}
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

    def _channel(self, family: socket.AddressFamily) -> Channel | str:
        """The family's channel, opened on first use; else the FAILED reason."""
        channel = self._channels.get(family)
        if channel is None:
            try:
                channel = Channel.wrap(open_socket(family, self.mode.raw), self.mode.raw)
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
        dests: list[tuple[Channel, _SockAddr, bytes]] = []
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
            due = min(
                len(dests), int((time.monotonic() - start + PACE_S) * rate) + 1, sent + SEND_BATCH
            )
            if due <= sent:
                await asyncio.sleep(start + sent / rate - PACE_S - time.monotonic())
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
        channel: Channel,
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
