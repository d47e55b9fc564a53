"""SNMP: one GET of sysUpTime.0 and the uplinks' ifOperStatus per switch.

``SnmpProbe`` sweeps many switches at once: it looks up each switch's
profile, hands the GET to the client for the profile's SNMP version, at most
``[snmp] max_in_flight`` at a time, and turns what each GET found into the
switch's result. A switch whose profile is unknown or whose address is not an
IP address is FAILED without being asked.

The parts, one file each:

- ``snmp_verdict``: what a GET asks (``sysUpTime.0``, ``ifOperStatus.N``) and
  the verdict from its answer: ALIVE with the uptime, SILENT when every uplink
  is down or nothing came back, FAILED when we could not ask.
- ``snmp_v2c``: SNMPv2c spoken directly, one UDP socket per address family,
  replies matched by request-id and timed by the kernel.
- ``snmp_ber``: the BER codec of those v2c messages, hand-written because
  pyasn1 costs too much CPU per message for 2,000 GETs a second.
- ``snmp_v3``: SNMPv3 (USM) through pysnmp, correct but a few hundred GETs a
  second; pysnmp is imported only when a v3 profile is first used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from announcer.config import SnmpProfile, SnmpSettings
from announcer.probes.base import ProbeResult, Target, Verdict
from announcer.probes.snmp_ber import encode_oid, encode_varbinds
from announcer.probes.snmp_v2c import Channel
from announcer.probes.snmp_v3 import V3_MAX_IN_FLIGHT, V3Client
from announcer.probes.snmp_verdict import Outcome, judge, requested_oids

__all__ = ["SnmpProbe"]

logger = logging.getLogger(__name__)


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
        self._channels: dict[socket.AddressFamily, Channel | str] = {}
        self._v3: V3Client | None = None
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
            oids = requested_oids(ports)
            known = (oids, [encode_oid(o) for o in oids], encode_varbinds(oids))
            if len(self._varbinds) < 10_000:
                self._varbinds[ports] = known
        return known

    async def _ask(self, job: _Job) -> ProbeResult:
        oids, encoded, varbinds = self._requested(job.target.uplink_ports)
        profile = job.profile
        outcome: Outcome
        if profile.version == "3":
            if self._v3 is None:
                self._v3 = V3Client(self.settings.timeout_ms / 1000, self.settings.retries)
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
        return judge(job.target, outcome, self._no_reply, job.profile_name)

    def _channel(self, version: int) -> Channel | str:
        """The family's channel, opened on first use; a FAILED reason if it cannot be."""
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        channel = self._channels.get(family)
        if channel is None:
            try:
                channel = Channel.open(family, asyncio.get_running_loop())
            except OSError as exc:
                channel = f"cannot send: no UDP socket for IPv{version} ({exc})"
                logger.warning("SNMP: %s", channel)
            self._channels[family] = channel
        return channel

    async def close(self) -> None:
        self._closed = True
        for channel in self._channels.values():
            if isinstance(channel, Channel):
                channel.close()
        self._channels.clear()
        if self._v3 is not None:
            await self._v3.close()
            self._v3 = None


_: Callable[[SnmpSettings], object] = SnmpProbe  # SnmpProbe(settings) is the factory
