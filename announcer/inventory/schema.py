"""The columns of each inventory table, shared by the CSV and SQL readers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Columns:
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def known(self) -> tuple[str, ...]:
        return self.required + self.optional


COLUMNS = {
    "districts": Columns(("id", "name")),
    "switches": Columns(
        ("id", "address", "district"), ("parent", "probe", "snmp_profile", "uplink_ports")
    ),
    "subscribers": Columns(("phone", "switch"), ("account", "port", "address")),
}
KINDS = tuple(COLUMNS)
