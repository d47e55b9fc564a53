"""What callers can be told: announcements, staff requests, maintenance windows.

Plain data, no I/O. The engine turns switch states, staff requests and
maintenance windows into the *active* announcements; the store keeps them in
Redis; the lookup finds the one a caller hears.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


class Scope(enum.StrEnum):
    SWITCH = "switch"
    DISTRICT = "district"
    GLOBAL = "global"


class Source(enum.StrEnum):
    AUTO = "auto"
    """derived from switch states"""
    STAFF = "staff"
    """recorded or typed by tech support"""
    MAINTENANCE = "maintenance"
    """planned works inside their window"""
    RESTORED = "restored"
    """an automatic outage has just cleared"""


#: Which source wins where several announcements apply to one caller.
RANK = {Source.STAFF: 3, Source.MAINTENANCE: 2, Source.AUTO: 1, Source.RESTORED: 0}
#: Within a rank, the most specific scope wins.
SPECIFICITY = {Scope.SWITCH: 2, Scope.DISTRICT: 1, Scope.GLOBAL: 0}


def new_id(kind: str) -> str:
    """A short id staff can type: ``staff-3f9a1c``."""
    return f"{kind}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Announcement:
    """One thing callers in ``scope``/``targets`` hear until ``expires``."""

    id: str
    scope: Scope
    targets: tuple[str, ...]
    """switch ids (scope switch) or district ids (scope district); () for global"""
    source: Source
    text: str
    """what it says: spoken by text-to-speech, shown by `announcer list`"""
    created: float
    expires: float
    prompt: str | None = None
    """the sound the dialplan plays (Asterisk path without extension)"""
    audio: str | None = None
    """a staff recording already converted for Asterisk (its sound name)"""
    eta: float | None = None
    author: str | None = None
    root_cause: str | None = None
    """for automatic ones: the switch whose failure this is"""

    def beats(self, other: Announcement) -> bool:
        """True when this one is what a caller covered by both should hear."""
        mine = (RANK[self.source], SPECIFICITY[self.scope], self.created, self.id)
        theirs = (RANK[other.source], SPECIFICITY[other.scope], other.created, other.id)
        return mine > theirs

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["scope"] = self.scope.value
        out["source"] = self.source.value
        out["targets"] = list(self.targets)
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Announcement:
        return cls(
            id=data["id"],
            scope=Scope(data["scope"]),
            targets=tuple(data.get("targets", ())),
            source=Source(data["source"]),
            text=data.get("text", ""),
            created=float(data["created"]),
            expires=float(data["expires"]),
            prompt=data.get("prompt"),
            audio=data.get("audio"),
            eta=data.get("eta"),
            author=data.get("author"),
            root_cause=data.get("root_cause"),
        )


@dataclass(frozen=True, slots=True)
class Maintenance:
    """Planned works in some districts between two moments."""

    id: str
    districts: tuple[str, ...]
    starts: float
    ends: float
    text: str = ""
    author: str | None = None
    created: float = 0.0

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["districts"] = list(self.districts)
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Maintenance:
        return cls(
            id=data["id"],
            districts=tuple(data["districts"]),
            starts=float(data["starts"]),
            ends=float(data["ends"]),
            text=data.get("text", ""),
            author=data.get("author"),
            created=float(data.get("created", 0.0)),
        )


@dataclass
class Topology:
    """What the engine needs of the inventory."""

    district_of: dict[str, str] = field(default_factory=dict)
    """switch id -> district id"""
    parent_of: dict[str, str | None] = field(default_factory=dict)
    district_names: dict[str, str] = field(default_factory=dict)
    subscribers: dict[str, int] = field(default_factory=dict)
    """switch id -> subscriber numbers on it (for the district share)"""


def event_targets(fields: Mapping[str, str]) -> list[str]:
    """The targets of an announcement event on the stream (the publisher
    joins them with commas)."""
    return [t for t in fields.get("targets", "").split(",") if t]
