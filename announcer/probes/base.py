"""What every probe shares: the target, the result, the one signature.

A probe sweeps many switches at once and returns one ``ProbeResult`` per
target. "The switch did not answer" is a result (``Verdict.SILENT``) with a
reason, never an exception; so is "we could not even ask" (``Verdict.FAILED``:
no route, a firewall rule on our own host, a full send buffer), which says
nothing about the switch and must not count as a miss.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Verdict(enum.Enum):
    ALIVE = "alive"
    SILENT = "silent"
    """asked properly, no (good) answer in time: counts as a miss"""
    FAILED = "failed"
    """could not ask (a local problem): no verdict on the switch"""


@dataclass(frozen=True, slots=True)
class Target:
    switch: str
    address: str
    snmp_profile: str | None = None
    uplink_ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    switch: str
    verdict: Verdict
    reason: str = ""
    """plain words: 'no echo reply within 1000 ms', 'uplink port 25 is down'"""
    rtt_ms: float | None = None
    uptime_s: float | None = None
    """SNMP sysUpTime.0 in seconds; smaller than last time means a reboot"""
    uplinks_down: tuple[int, ...] = ()
    """SNMP: configured uplink ports whose ifOperStatus is not up"""

    @property
    def alive(self) -> bool:
        return self.verdict is Verdict.ALIVE


class Probe(Protocol):
    """One sweep over many targets; every target gets exactly one result."""

    name: str

    async def sweep(self, targets: Sequence[Target]) -> list[ProbeResult]: ...

    async def close(self) -> None: ...
