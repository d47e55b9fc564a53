"""Checking rows and assembling an inventory: pure, no I/O.

Every row that cannot be used becomes a ``RowError`` naming its file (or
query), line and reason, and the rest still imports. Errors cascade in the
direction a reader expects: a switch in a rejected district is rejected,
and so are the switches behind it and their subscribers, each saying why.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from announcer.inventory.model import Details, District, Inventory, Row, RowError, Switch, Table
from announcer.phones import PhoneNormaliser, Rejected, e164

PROBES = ("icmp", "snmp", "icmp+snmp")

Progress = Callable[[Table], Iterable[Row]]


@dataclass
class Outcome:
    inventory: Inventory
    errors: list[RowError] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    ignored_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def over_limit(self, max_bad_share: float) -> list[str]:
        """One sentence per table whose share of bad rows is above the limit."""
        out = []
        for kind, total in self.totals.items():
            bad = self.bad.get(kind, 0)
            if bad and bad / total > max_bad_share:
                out.append(
                    f"{bad:,} of {total:,} rows of {self.sources[kind]} are bad"
                    f" ({bad / total:.1%}, more than the {max_bad_share:.1%} allowed"
                    " by [inventory] max_bad_share)"
                )
        return out


class _Checker:
    def __init__(self, table: Table, outcome: Outcome) -> None:
        self.table = table
        self.outcome = outcome
        outcome.totals[table.kind] = 0
        outcome.bad[table.kind] = 0
        outcome.sources[table.kind] = table.source

    def rows(self, progress: Progress | None) -> Iterator[Row]:
        rows = progress(self.table) if progress else self.table.rows
        for row in rows:
            self.outcome.totals[self.table.kind] += 1
            if row.problem:
                self.reject(row.line, row.problem)
            else:
                yield row
        if self.table.ignored_columns:
            self.outcome.ignored_columns[self.table.kind] = self.table.ignored_columns

    def reject(self, line: int, reason: str) -> None:
        self.outcome.bad[self.table.kind] += 1
        self.outcome.errors.append(self.table.error(line, reason))

    def where(self, line: int) -> str:
        return f"{self.table.source}, {self.table.unit} {line}"


def _districts(table: Table, out: Outcome, progress: Progress | None) -> dict[str, int]:
    check = _Checker(table, out)
    seen: dict[str, int] = {}
    for row in check.rows(progress):
        id_, name = row.cells.get("id", ""), row.cells.get("name", "")
        if not id_:
            check.reject(row.line, "empty id")
        elif not name:
            check.reject(row.line, f"district {id_!r} has an empty name; prompts speak the name")
        elif id_ in seen:
            first = check.where(seen[id_])
            check.reject(row.line, f"duplicate district id {id_!r}, first on {first}")
        else:
            seen[id_] = row.line
            out.inventory.districts[id_] = District(id_, name)
    return seen


def _ports(text: str) -> tuple[int, ...] | None:
    try:
        ports = tuple(int(p) for p in text.replace(",", " ").split())
    except ValueError:
        return None
    return ports if all(p > 0 for p in ports) else None


def _switch(row: Row, district_rows: dict[str, int], default_probe: str) -> Switch | str:
    cells = row.cells
    id_ = cells.get("id", "")
    if not id_:
        return "empty id"
    address = cells.get("address", "")
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        return f"switch {id_!r}: address {address!r} is not an IPv4 or IPv6 address"
    district = cells.get("district", "")
    if district not in district_rows:
        return f"switch {id_!r}: unknown district {district!r}; add it to the districts first"
    probe = cells.get("probe") or default_probe
    if probe not in PROBES:
        return f"switch {id_!r}: probe {probe!r} is not one of {', '.join(PROBES)}"
    ports = _ports(cells.get("uplink_ports", ""))
    if ports is None:
        return f"switch {id_!r}: uplink_ports must be interface numbers (ifIndex) like '25 26'"
    return Switch(
        id=id_,
        address=address,
        district=district,
        parent=cells.get("parent") or None,
        probe=probe,
        snmp_profile=cells.get("snmp_profile") or None,
        uplink_ports=ports,
    )


def _switches(
    table: Table,
    out: Outcome,
    districts: dict[str, int],
    default_probe: str,
    progress: Progress | None,
) -> dict[str, int]:
    """Returns the rejected switch ids with their lines."""
    check = _Checker(table, out)
    lines: dict[str, int] = {}
    addresses: dict[str, str] = {}
    candidates: dict[str, Switch] = {}
    rejected: dict[str, int] = {}
    for row in check.rows(progress):
        result = _switch(row, districts, default_probe)
        if isinstance(result, str):
            check.reject(row.line, result)
            if row.cells.get("id"):
                rejected.setdefault(row.cells["id"], row.line)
        elif result.id in lines:
            first = check.where(lines[result.id])
            check.reject(row.line, f"duplicate switch id {result.id!r}, first on {first}")
        elif result.address in addresses:
            other = addresses[result.address]
            check.reject(
                row.line,
                f"switch {result.id!r}: address {result.address} already belongs to switch"
                f" {other!r} ({check.where(lines[other])})",
            )
        else:
            lines[result.id] = row.line
            addresses[result.address] = result.id
            candidates[result.id] = result

    verdict = _resolve_parents(candidates, {i: check.where(n) for i, n in rejected.items()})
    for id_, switch in candidates.items():
        problem = verdict[id_]
        if problem is None:
            out.inventory.switches[id_] = switch
            continue
        check.reject(lines[id_], f"switch {id_!r}: {problem}")
    return {**rejected, **{i: lines[i] for i, v in verdict.items() if v is not None}}


def _resolve_parents(
    candidates: dict[str, Switch], rejected: dict[str, str]
) -> dict[str, str | None]:
    """For each switch: None when its uplink chain is sound, else why not."""
    verdict: dict[str, str | None] = {}
    for start in candidates:
        path: list[str] = []
        current: str | None = start
        while current in candidates and current not in verdict and current not in path:
            path.append(current)
            current = candidates[current].parent
        if current is not None and current in path:
            at = path.index(current)
            cycle = " -> ".join([*path[at:], current])
            for node in path[at:]:
                verdict[node] = f"parent cycle: {cycle}"
            del path[at:]
        elif current is not None and current not in candidates:
            verdict[path.pop()] = (
                f"parent switch {current!r} was rejected ({rejected[current]})"
                if current in rejected
                else f"parent switch {current!r} is not in the switch list"
            )
        for node in reversed(path):
            parent = candidates[node].parent
            fine = parent is None or verdict[parent] is None
            verdict[node] = None if fine else f"behind rejected switch {parent!r}"
    return verdict


def _subscribers(
    table: Table,
    out: Outcome,
    normaliser: PhoneNormaliser,
    rejected: dict[str, int],
    switch_table: Table,
    progress: Progress | None,
) -> None:
    check = _Checker(table, out)
    switches = out.inventory.switches
    phones = out.inventory.phones
    details = out.inventory.details
    for row in check.rows(progress):
        cells = row.cells
        raw, switch = cells.get("phone", ""), cells.get("switch", "")
        if not raw:
            check.reject(row.line, "empty phone number")
            continue
        digits = normaliser.normalise(raw)
        if isinstance(digits, Rejected):
            check.reject(row.line, digits.reason)
            continue
        if switch not in switches:
            if switch in rejected:
                check.reject(
                    row.line,
                    f"{e164(digits)}: switch {switch!r} was rejected"
                    f" ({switch_table.source}, {switch_table.unit} {rejected[switch]})",
                )
            else:
                check.reject(row.line, f"{e164(digits)}: unknown switch {switch!r}")
            continue
        first = phones.get(digits)
        if first is not None:
            where = "listed twice" if first == switch else f"already on switch {first!r}"
            check.reject(row.line, f"{e164(digits)} ({raw!r}): {where}; a number has one switch")
            continue
        phones[digits] = switch
        account, port, address = cells.get("account"), cells.get("port"), cells.get("address")
        if account or port or address:
            details[digits] = Details(account or None, port or None, address or None)


def build(
    districts: Table,
    switches: Table,
    subscribers: Table,
    normaliser: PhoneNormaliser,
    default_probe: str = "icmp",
    progress: Progress | None = None,
) -> Outcome:
    """Check every row of the three tables and assemble what is good."""
    out = Outcome(Inventory())
    district_lines = _districts(districts, out, progress)
    rejected = _switches(switches, out, district_lines, default_probe, progress)
    _subscribers(subscribers, out, normaliser, rejected, switches, progress)
    return out
