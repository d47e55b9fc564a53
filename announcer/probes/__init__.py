"""Probes, one module each, chosen by the name a switch's ``probe`` column gives.

``icmp`` and ``snmp`` are probes; ``icmp+snmp`` is the poller asking SNMP
for a second opinion when ICMP gets no answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from announcer.config import Settings
from announcer.probes.base import Probe, ProbeResult, Target, Verdict

__all__ = ["Probe", "ProbeResult", "Target", "Verdict", "create", "needed"]


def needed(methods: Iterable[str]) -> set[str]:
    """The probes that switches probed by ``methods`` (icmp, snmp, icmp+snmp) need."""
    out: set[str] = set()
    for method in methods:
        out.update(method.split("+"))
    return out


def create(name: str, settings: Settings) -> Probe:
    """A probe by its config name; raises a RuntimeError saying what to fix."""
    if name == "icmp":
        from announcer.probes.icmp import IcmpProbe  # noqa: PLC0415  (raw sockets on demand)

        return IcmpProbe(settings.icmp)
    if name == "snmp":
        from announcer.probes.snmp import SnmpProbe  # noqa: PLC0415  (pysnmp loads slowly)

        return SnmpProbe(settings.snmp)
    raise ValueError(f"unknown probe {name!r}; expected icmp or snmp")
