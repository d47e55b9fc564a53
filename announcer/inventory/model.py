"""What an inventory is: districts, switches, subscribers, and rejected rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Row:
    """One input row: where it came from and its cells by column name."""

    line: int
    cells: dict[str, str]
    problem: str | None = None
    """set when the row could not even be split into cells"""


@dataclass(frozen=True, slots=True)
class RowError:
    """Why a row (or, without a line, a whole table) was not imported."""

    source: str
    line: int | None
    reason: str
    unit: str = "line"

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}, {self.unit} {self.line}"
        return f"{where}: {self.reason}"


class TableError(Exception):
    """A table that cannot be read at all (missing file or column, bad query)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass
class Table:
    """Rows of one kind, as read from a CSV file or a billing query."""

    kind: str
    """districts, switches or subscribers"""
    source: str
    """a file path or a query's name, for messages"""
    rows: Iterator[Row]
    unit: str = "line"
    expected_rows: int | None = None
    """for a progress bar, when known in advance"""
    ignored_columns: tuple[str, ...] = ()

    def error(self, line: int | None, reason: str) -> RowError:
        return RowError(self.source, line, reason, self.unit)


@dataclass(frozen=True, slots=True)
class District:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Switch:
    id: str
    address: str
    district: str
    parent: str | None = None
    probe: str = "icmp"
    snmp_profile: str | None = None
    uplink_ports: tuple[int, ...] = ()

    def record(self) -> dict[str, object]:
        """The switch as stored in Redis (defaults left out to save memory)."""
        out: dict[str, object] = {
            "id": self.id,
            "address": self.address,
            "district": self.district,
        }
        if self.parent:
            out["parent"] = self.parent
        out["probe"] = self.probe
        if self.snmp_profile:
            out["snmp_profile"] = self.snmp_profile
        if self.uplink_ports:
            out["uplink_ports"] = list(self.uplink_ports)
        return out


#: Between the fields of packed subscriber details; no billing text contains it.
SEPARATOR = "\x1f"


@dataclass(frozen=True, slots=True)
class Details:
    """Optional billing facts about a subscriber, shown by lookups."""

    account: str | None = None
    port: str | None = None
    address: str | None = None

    def pack(self) -> str:
        """One compact string for Redis: the fields joined by US (0x1F).

        JSON would spend 30 bytes a subscriber on braces, quotes and names, and
        push more hashes out of Redis's compact encoding (values over 64 bytes).
        """
        return SEPARATOR.join((self.account or "", self.port or "", self.address or ""))

    @classmethod
    def unpack(cls, packed: str) -> Details:
        account, port, address = ([*packed.split(SEPARATOR), "", "", ""])[:3]
        return cls(account or None, port or None, address or None)


@dataclass
class Inventory:
    districts: dict[str, District] = field(default_factory=dict)
    switches: dict[str, Switch] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)
    """E.164 digits -> switch id"""
    details: dict[str, Details] = field(default_factory=dict)
    """E.164 digits -> account, port, address (only where billing has them)"""
