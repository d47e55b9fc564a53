"""Simulated switches: one tiny SNMPv2c agent per switch, on loopback, without root.

Each ``SnmpAgent`` is an asyncio datagram endpoint bound to its switch's own
loopback address (127.0.1.10, 127.0.3.2, ...) on one unprivileged UDP port
shared by all of them, and answers what announcer's SNMP probe asks
(``announcer.probes.snmp_verdict.requested_oids``): ``sysUpTime.0``, counted
from the agent's boot, and ``ifOperStatus.N`` of ports 1 to ``PORTS`` (up
unless the port was cut), ``noSuchInstance`` for anything else. A GET with
another community, or anything that is not a v2c GET, is ignored, as snmpd
would. Messages are decoded and encoded with pysnmp's v2c message classes
and pyasn1's BER codec: a second implementation beside announcer's own
``snmp_ber``, and a few dozen GETs a second cost nothing here.

A switch fails in two ways: ``power_off`` closes its socket (the kernel
drops the GETs: the probe times out), ``silence`` keeps the socket but
answers nothing (a cut fibre). ``power_on`` and ``resume`` bring it back;
after a power cut sysUpTime starts again from zero, which announcer reports
as a reboot. Every agent runs on the caller's event loop; no process, no
root, and only loopback addresses are ever bound.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pyasn1.error import PyAsn1Error  # type: ignore[import-untyped]
from pysnmp.proto.api import v2c  # type: ignore[import-untyped]

from announcer.probes.snmp_verdict import IF_OPER_STATUS, SYS_UPTIME

logger = logging.getLogger(__name__)

#: Ports (ifIndex 1..PORTS) every simulated switch has.
PORTS = 28
#: ifOperStatus values.
UP, DOWN = 1, 2
#: Tries at finding one UDP port free on every address.
PORT_TRIES = 20
_TICKS = 2**32


def loopback(address: str) -> str | None:
    """Why ``address`` may not carry a simulated switch, or None when it may."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return f"{address!r} is not an IP address"
    if not ip.is_loopback:
        return f"{address} is not a loopback address (127.0.0.0/8 or ::1)"
    return None


class SnmpAgent:
    """One simulated switch; see the module docstring."""

    def __init__(
        self, switch: str, address: str, port: int, community: bytes, uptime_s: float = 0.0
    ) -> None:
        why = loopback(address)
        if why:
            raise ValueError(f"switch {switch}: {why}; the demo simulates loopback switches only")
        self.switch = switch
        self.address = address.strip()
        self.port = port
        self.community = community
        self.booted = time.monotonic() - uptime_s
        self.ports_down: set[int] = set()
        self.silent = False
        self.answered = 0
        """GETs answered since the agent was made"""
        self._transport: asyncio.DatagramTransport | None = None
        self._endpoint: _Endpoint | None = None

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.booted

    @property
    def powered(self) -> bool:
        return self._transport is not None

    async def power_on(self, reboot: bool = True) -> None:
        """Open the socket; after a reboot sysUpTime counts from zero again."""
        if self._transport is not None:
            return
        if reboot:
            self.booted = time.monotonic()
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        transport, endpoint = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Endpoint(self), local_addr=(self.address, self.port), family=family
        )
        self._transport, self._endpoint = transport, endpoint

    async def power_off(self) -> None:
        """Close the socket: nothing answers, the GETs time out. Returns once
        the socket is closed (the event loop closes it a moment later)."""
        transport, self._transport = self._transport, None
        endpoint, self._endpoint = self._endpoint, None
        if transport is not None and endpoint is not None:
            transport.close()
            await endpoint.lost

    def silence(self) -> None:
        """Keep the socket but answer nothing, like a switch behind a cut fibre."""
        self.silent = True

    def resume(self) -> None:
        self.silent = False

    def reply(self, data: bytes) -> bytes | None:
        """The answer to one datagram, or None to ignore it."""
        if self.silent:
            return None
        try:
            request, _ = decoder.decode(data, asn1Spec=v2c.Message())
        except PyAsn1Error:
            return None
        if int(v2c.apiMessage.get_version(request)) != 1:
            return None
        if bytes(v2c.apiMessage.get_community(request)) != self.community:
            return None
        pdu = v2c.apiMessage.get_pdu(request)
        if not pdu.isSameTypeWith(v2c.GetRequestPDU()):
            return None
        response = v2c.apiMessage.get_response(request)
        varbinds = [(oid, self._value(tuple(oid))) for oid, _ in v2c.apiPDU.get_varbinds(pdu)]
        v2c.apiPDU.set_varbinds(v2c.apiMessage.get_pdu(response), varbinds)
        self.answered += 1
        return bytes(encoder.encode(response))

    def _value(self, oid: tuple[int, ...]) -> Any:
        if oid == SYS_UPTIME:
            return v2c.TimeTicks(int(self.uptime_s * 100) % _TICKS)
        if oid[:-1] == IF_OPER_STATUS and 1 <= oid[-1] <= PORTS:
            return v2c.Integer(DOWN if oid[-1] in self.ports_down else UP)
        return v2c.NoSuchInstance("")


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, agent: SnmpAgent) -> None:
        self.agent = agent
        self.transport: asyncio.DatagramTransport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = self.agent.reply(data)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("agent %s: %s", self.agent.switch, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


def _free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class Agents(Mapping[str, SnmpAgent]):
    """An agent per switch, all on one UDP port; ``async with`` closes them all."""

    def __init__(self, agents: dict[str, SnmpAgent], port: int) -> None:
        self._agents = agents
        self.port = port

    @classmethod
    async def start(
        cls,
        switches: Mapping[str, str],
        community: bytes,
        uptimes_s: Mapping[str, float] | None = None,
    ) -> Agents:
        """Agents for ``switches`` (id -> loopback address), answering, on a
        UDP port free on every one of those addresses (chosen here)."""
        if not switches:
            raise ValueError("no switches to simulate")
        for switch, address in switches.items():
            why = loopback(address)
            if why:
                raise ValueError(
                    f"switch {switch}: {why}; the demo simulates switches on loopback"
                    " addresses only: give every switch of the inventory one"
                )
        first = next(iter(switches.values())).strip()
        for _ in range(PORT_TRIES):
            port = _free_port(first)
            agents = {
                s: SnmpAgent(s, a, port, community, (uptimes_s or {}).get(s, 0.0))
                for s, a in switches.items()
            }
            try:
                for agent in agents.values():
                    await agent.power_on(reboot=False)
            except OSError as exc:
                for agent in agents.values():
                    await agent.power_off()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue  # taken on one of the addresses: another port
            return cls(agents, port)
        raise RuntimeError(
            f"no UDP port was free on all {len(switches)} loopback addresses in"
            f" {PORT_TRIES} tries; stop what binds many ports on 127.0.0.0/8 and try again"
        )

    async def close(self) -> None:
        """Close every socket; returns once they are closed."""
        for agent in self._agents.values():
            await agent.power_off()

    async def __aenter__(self) -> Agents:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __getitem__(self, switch: str) -> SnmpAgent:
        return self._agents[switch]

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)
