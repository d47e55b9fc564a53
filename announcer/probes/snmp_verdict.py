"""What one SNMP GET asks a switch, and the switch's verdict from what it found.

Every switch gets one GET request carrying ``sysUpTime.0`` and
``ifOperStatus.N`` for each of its uplink ports (``requested_oids``). The
answer says whether the switch is up (ALIVE, with its uptime: smaller than
last time means it rebooted), up but cut off (SILENT: every uplink port is
down or does not exist), or not answering (SILENT after the timeout and the
retries). "We could not ask" is FAILED: a socket error on this host,
credentials the agent rejects, an agent that may not show us these objects.

``Answer`` is what the v2c client (``snmp_v2c``) and the v3 client
(``snmp_v3``) both return; ``judge`` turns it into the switch's result. Pure:
no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from announcer.probes.base import ProbeResult, Target, Verdict

SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
IF_OPER_STATUS = (1, 3, 6, 1, 2, 1, 2, 2, 1, 8)
"""ifOperStatus; the port's ifIndex is appended."""

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


def requested_oids(ports: Sequence[int]) -> list[tuple[int, ...]]:
    """The OIDs one GET asks for, in the order ``judge`` reads the values."""
    return [SYS_UPTIME, *((*IF_OPER_STATUS, port) for port in ports)]


@dataclass(frozen=True, slots=True)
class Answer:
    rtt_ms: float
    error_status: int
    error_index: int
    values: list[int | str]
    """One per requested OID, in request order: an integer, or why there is none."""


Outcome = Answer | str | None
"""An answer; a FAILED reason; None for no reply after every try."""


def _describe_oid(index: int, ports: Sequence[int]) -> str:
    """The requested object at 1-based ``index`` of the GET (as error-index counts)."""
    if index == 1:
        return "sysUpTime.0"
    if 2 <= index <= len(ports) + 1:
        return f"ifOperStatus.{ports[index - 2]}"
    return "the request"


def judge(target: Target, outcome: Outcome, no_reply: str, profile_name: str) -> ProbeResult:
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
