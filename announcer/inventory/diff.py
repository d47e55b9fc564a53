"""What an import changes, for the report an admin reads afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field

from announcer.inventory.model import Inventory

_EXAMPLES = 5


@dataclass
class Snapshot:
    """The live inventory as far as a diff needs it."""

    districts: dict[str, str] = field(default_factory=dict)
    """id -> name"""
    switches: dict[str, dict[str, object]] = field(default_factory=dict)
    """id -> stored record"""
    phones: dict[str, str] = field(default_factory=dict)
    """E.164 digits -> switch id"""


@dataclass
class Diff:
    districts_added: list[str] = field(default_factory=list)
    districts_removed: list[str] = field(default_factory=list)
    districts_renamed: list[str] = field(default_factory=list)
    switches_added: list[str] = field(default_factory=list)
    switches_removed: list[str] = field(default_factory=list)
    switches_changed: list[str] = field(default_factory=list)
    """district, parent, address or probe settings differ"""
    subscribers_added: int = 0
    subscribers_removed: int = 0
    subscribers_moved: int = 0
    moved_examples: list[tuple[str, str, str]] = field(default_factory=list)
    """(digits, old switch, new switch)"""

    @property
    def empty(self) -> bool:
        return not (
            self.districts_added or self.districts_removed or self.districts_renamed
            or self.switches_added or self.switches_removed or self.switches_changed
            or self.subscribers_added or self.subscribers_removed or self.subscribers_moved
        )  # fmt: skip


def compare(old: Snapshot, new: Inventory) -> Diff:
    d = Diff()
    d.districts_added = sorted(set(new.districts) - set(old.districts))
    d.districts_removed = sorted(set(old.districts) - set(new.districts))
    d.districts_renamed = sorted(
        i
        for i, name in old.districts.items()
        if i in new.districts and new.districts[i].name != name
    )
    d.switches_added = sorted(set(new.switches) - set(old.switches))
    d.switches_removed = sorted(set(old.switches) - set(new.switches))
    d.switches_changed = sorted(
        i
        for i, record in old.switches.items()
        if i in new.switches and new.switches[i].record() != record
    )
    old_phones, new_phones = old.phones, new.phones
    for digits, switch in new_phones.items():
        before = old_phones.get(digits)
        if before is None:
            d.subscribers_added += 1
        elif before != switch:
            d.subscribers_moved += 1
            if len(d.moved_examples) < _EXAMPLES:
                d.moved_examples.append((digits, before, switch))
    d.subscribers_removed = len(old_phones) - (len(new_phones) - d.subscribers_added)
    return d
