"""Pure: what announcer recorded in, statistics out. No I/O, no clock.

Two streams hold the facts (``announcer.report_reader`` reads them):

* ``P:events``: every switch state change (``kind=state``: old, new, root,
  ``at`` when it was declared, ``silent_since`` its first missed probe) and
  every change of the active set (``kind=announcement``: opened, updated or
  closed, with the id, scope, source and targets);
* ``P:heard``: every call played a prompt, by FastAGI or by the AstDB
  dialplan (the announcement, the caller's number, switch and district).

An announcement id comes back (``auto-district-north`` opens again at the
next outage there), so a row is one *episode*: from its ``opened`` event to
its ``closed`` one. A caller counts for the episode of that id that was
live when the call came. For an automatic announcement, the outage behind
it is the switches at the root of what it covers when it opened (and when it
grew): it started at their first missed probe, was declared at their state
change to down, and cleared when the last of them answered again.

Times in the report come from two clocks: episodes and calls from the
streams' entry ids (Redis's clock), the outage's own times from the poller's
(``at``, ``silent_since``), so detection and duration never mix the two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from announcer.announcements import event_targets

#: States in which a switch is at the root of an outage.
ROOT_STATES = frozenset({"down", "flapping"})
#: States in which a switch cannot be reached, whatever the cause.
BROKEN_STATES = ROOT_STATES | {"unreachable"}
#: An id's prefix says where an announcement came from, for ids whose opening
#: is no longer kept.
_SOURCES: tuple[tuple[str, str], ...] = (
    ("auto-", "auto"),
    ("staff-", "staff"),
    ("maintenance-", "maintenance"),
    ("restored-", "restored"),
)

_AGO = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*([a-z]+)\s*$", re.I)
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_S |= {"sec": 1, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
_UNIT_S |= {"week": 7 * 86400, "weeks": 7 * 86400}


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: its id's time (seconds) and its fields."""

    at: float
    fields: Mapping[str, str]


def entry_time(entry_id: str) -> float:
    """A stream entry id (``1764496200123-0``) as seconds since 1970."""
    return int(entry_id.partition("-")[0]) / 1000


def parse_moment(text: str, now: float) -> float | str:
    """``30m``, ``12h``, ``7d``, ``2w`` before ``now``, or an ISO date or time
    (``2025-11-30``, ``2025-11-30 14:00``, with an offset or in local time);
    a sentence saying what to write instead when it is neither."""
    match = _AGO.match(text)
    if match and match.group(2).lower() in _UNIT_S:
        return now - float(match.group(1).replace(",", ".")) * _UNIT_S[match.group(2).lower()]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return (
            f"{text!r} is neither a time span nor a date; write it like 30m, 12h, 7d,"
            " 2025-11-30 or 2025-11-30 14:00"
        )
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as staff read clocks
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Kept:
    """How much of a capped stream is still there."""

    oldest: float | None
    """when its oldest entry kept was added; None for an empty stream"""
    trimmed: bool
    """older entries were dropped to respect the cap"""
    cap: int
    """entries kept, about"""


@dataclass
class AnnouncementRow:
    """One episode of an announcement, and the outage behind it (automatic ones)."""

    id: str
    source: str
    scope: str
    targets: list[str]
    """switch ids (scope switch), district ids (scope district), none (global)"""
    districts: list[str]
    """district ids it covers (all the inventory's for global)"""
    text: str
    published: float | None
    """its opening; None when that is older than the oldest event kept"""
    closed: float | None
    """None while it is still live"""
    calls: int = 0
    numbers: int = 0
    """distinct callers' numbers (calls from withheld numbers count as calls only)"""
    first_heard: float | None = None
    roots: list[str] = field(default_factory=list)
    """automatic: the switches at the root of the outage"""
    outage_start: float | None = None
    """the first missed probe of the earliest of those switches"""
    declared_down: float | None = None
    """when that switch was declared down"""
    cleared: float | None = None
    """when the last of them answered again; None while one is still down"""

    @property
    def detection_s(self) -> float | None:
        """From the first missed probe to the switch declared down."""
        if self.outage_start is None or self.declared_down is None:
            return None
        return max(0.0, self.declared_down - self.outage_start)

    @property
    def duration_s(self) -> float | None:
        """From the first missed probe until the last root switch answered again."""
        if self.outage_start is None or self.cleared is None:
            return None
        return max(0.0, self.cleared - self.outage_start)

    @property
    def outage(self) -> bool:
        return self.source == "auto"


@dataclass
class DistrictRow:
    district: str
    """its id; empty for callers not in the inventory"""
    name: str
    calls: int = 0
    numbers: int = 0
    announcements: int = 0
    """distinct announcements its callers heard"""
    outages: int = 0
    """automatic announcements that covered it"""


@dataclass
class Report:
    since: float
    until: float
    announcements: list[AnnouncementRow]
    districts: list[DistrictRow]
    calls: int
    numbers: int
    notes: list[str]
    """what the figures cannot show (records dropped by a cap)"""
    names: Mapping[str, str] = field(default_factory=dict)
    """district id -> name, from the inventory"""

    @property
    def empty(self) -> bool:
        return not self.announcements and not self.calls


@dataclass
class _Run:
    """A switch at the root of an outage: from its declared down to its answer."""

    declared: float
    silent_since: float | None
    ended: float | None = None

    @property
    def start(self) -> float:
        return self.silent_since if self.silent_since is not None else self.declared


@dataclass
class _Episode:
    row: AnnouncementRow
    runs: dict[str, _Run] = field(default_factory=dict)
    """root switch -> its run that this announcement tells about"""
    phones: set[str] = field(default_factory=set)


class _Fleet:
    """Switch states as the event stream tells them, in stream order."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.root: dict[str, str] = {}
        self.run: dict[str, _Run] = {}

    def change(self, fields: Mapping[str, str]) -> None:
        switch, new = fields.get("switch", ""), fields.get("new", "")
        at = _number(fields.get("at")) or 0.0
        self.state[switch] = new
        self.root[switch] = fields.get("root") or (switch if new in ROOT_STATES else "")
        if new in ROOT_STATES and switch not in self.run:
            self.run[switch] = _Run(at, _number(fields.get("silent_since")))
        elif new not in BROKEN_STATES and switch in self.run:
            self.run.pop(switch).ended = at

    def roots(self, covered: Iterable[str]) -> set[str]:
        """The root switches of whatever is broken among ``covered``."""
        out = set()
        for switch in covered:
            if self.state.get(switch) in BROKEN_STATES and self.root.get(switch):
                out.add(self.root[switch])
        return {r for r in out if r in self.run}


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _source_of(ident: str) -> str:
    return next((source for prefix, source in _SOURCES if ident.startswith(prefix)), "")


def build(
    events: Sequence[Entry],
    heard: Sequence[Entry],
    since: float,
    until: float,
    district_of: Mapping[str, str],
    district_names: Mapping[str, str],
    events_kept: Kept | None = None,
    heard_kept: Kept | None = None,
) -> Report:
    """The report for ``since`` <= t < ``until``.

    ``events`` is the whole event stream up to now in stream order (an
    announcement live in the period may have opened long before it),
    ``heard`` the lookups recorded; ``district_of`` maps each switch of the
    inventory to its district. Announcements live at some moment of the
    period are reported; calls count when they came inside it.
    """
    tally = _Tally(district_of, district_names)
    for event in events:
        tally.event(event)
    for entry in heard:
        if since <= entry.at < until:
            tally.heard(entry)
    rows = tally.rows(since, until)
    notes = [
        note
        for note in (
            _note("event", events_kept, since, "what began earlier is shown without its start"),
            _note("call", heard_kept, since, "earlier calls are not counted"),
        )
        if note
    ]
    return Report(
        since,
        until,
        rows,
        sorted(tally.districts.values(), key=lambda d: (d.district == "", d.name, d.district)),
        tally.calls,
        len(tally.phones),
        notes,
        district_names,
    )


class _Tally:
    """Folds the streams, oldest first, into episodes and district totals."""

    def __init__(self, district_of: Mapping[str, str], names: Mapping[str, str]) -> None:
        self.district_of = district_of
        self.members: dict[str, list[str]] = {}
        for switch, district in district_of.items():
            self.members.setdefault(district, []).append(switch)
        self.names = names
        self.fleet = _Fleet()
        self.episodes: list[_Episode] = []
        self.live: dict[str, _Episode] = {}
        self.by_id: dict[str, list[_Episode]] = {}
        self.districts: dict[str, DistrictRow] = {}
        self.district_phones: dict[str, set[str]] = {}
        self.district_heard: dict[str, set[int]] = {}
        self.phones: set[str] = set()
        self.calls = 0

    def event(self, event: Entry) -> None:
        f = event.fields
        kind = f.get("kind")
        if kind == "state":
            self.fleet.change(f)
            return
        ident, action = f.get("id", ""), f.get("action")
        if kind != "announcement" or not ident:
            return
        if action == "opened":
            if ident in self.live:  # its closing was lost: it ended at the latest now
                self.live.pop(ident).row.closed = event.at
            episode = self._add(_row(ident, f, published=event.at))
            self.live[ident] = episode
        elif action == "updated":
            episode = self.live.get(ident) or self._orphan(ident, f)
            known = set(episode.row.targets)
            episode.row.targets += [t for t in event_targets(f) if t not in known]
            episode.row.text = f.get("text", episode.row.text)
        elif action == "closed":
            episode = self.live.get(ident) or self._orphan(ident, f)
            del self.live[ident]
            episode.row.closed = event.at
            return
        else:
            return
        row = episode.row
        switches, districts = self._covered(row.scope, row.targets)
        row.districts = sorted(set(row.districts) | districts)
        if row.outage:
            for root in self.fleet.roots(switches):
                episode.runs.setdefault(root, self.fleet.run[root])

    def _covered(self, scope: str, targets: Sequence[str]) -> tuple[Iterable[str], set[str]]:
        """The switches and the districts an announcement covers."""
        if scope == "switch":
            return targets, {self.district_of[s] for s in targets if s in self.district_of}
        if scope == "district":
            return (s for d in targets for s in self.members.get(d, ())), set(targets)
        return self.fleet.state.keys() | self.district_of.keys(), set(self.members)

    def _add(self, row: AnnouncementRow, first: bool = False) -> _Episode:
        episode = _Episode(row)
        if first:  # older than everything kept of its id
            self.episodes.insert(0, episode)
            self.by_id.setdefault(row.id, []).insert(0, episode)
        else:
            self.episodes.append(episode)
            self.by_id.setdefault(row.id, []).append(episode)
        return episode

    def _orphan(self, ident: str, fields: Mapping[str, str]) -> _Episode:
        """An episode whose opening is no longer kept (or was never written)."""
        episode = self._add(_row(ident, fields, published=None), first=True)
        self.live[ident] = episode
        return episode

    def heard(self, entry: Entry) -> None:
        f = entry.fields
        ident = f.get("announcement", "")
        if not ident:
            return
        episode = _episode_at(self.by_id.get(ident, []), entry.at)
        if episode is None:  # opened before the oldest event kept
            episode = self._add(_row(ident, {"scope": f.get("scope", "")}, None), first=True)
        row = episode.row
        row.calls += 1
        if row.first_heard is None or entry.at < row.first_heard:
            row.first_heard = entry.at
        district = f.get("district", "")
        self._district(district).calls += 1
        self.district_heard.setdefault(district, set()).add(id(episode))
        number = f.get("phone") or f.get("caller") or ""
        if number:
            episode.phones.add(number)
            self.district_phones.setdefault(district, set()).add(number)
            self.phones.add(number)
        self.calls += 1

    def _district(self, district: str) -> DistrictRow:
        place = self.districts.get(district)
        if place is None:
            place = self.districts[district] = DistrictRow(
                district, self.names.get(district, district)
            )
        return place

    def rows(self, since: float, until: float) -> list[AnnouncementRow]:
        """The episodes live during the period or heard in it, with their outages."""
        rows = []
        for episode in self.episodes:
            row = episode.row
            overlaps = (row.published is None or row.published < until) and (
                row.closed is None or row.closed >= since
            )
            if not overlaps and not row.calls:
                continue
            row.numbers = len(episode.phones)
            if episode.runs:
                runs = episode.runs
                row.roots = sorted(runs)
                first = min(runs.values(), key=lambda r: (r.start, r.declared))
                row.outage_start, row.declared_down = first.start, first.declared
                ended = [r.ended for r in runs.values()]
                row.cleared = None if None in ended else max(e for e in ended if e is not None)
            rows.append(row)
            if row.outage:
                for district in row.districts:
                    self._district(district).outages += 1
        for district, place in self.districts.items():
            place.numbers = len(self.district_phones.get(district, ()))
            place.announcements = len(self.district_heard.get(district, ()))
        rows.sort(key=lambda r: (r.published or 0.0, r.first_heard or 0.0, r.id))
        return rows


def _row(ident: str, fields: Mapping[str, str], published: float | None) -> AnnouncementRow:
    return AnnouncementRow(
        id=ident,
        source=fields.get("source") or _source_of(ident),
        scope=fields.get("scope", ""),
        targets=event_targets(fields),
        districts=[],
        text=fields.get("text", ""),
        published=published,
        closed=None,
    )


def _episode_at(candidates: Sequence[_Episode], at: float) -> _Episode | None:
    """The episode that was live at ``at``: the last one opened by then (a
    call may be recorded a moment after its announcement closed)."""
    found = None
    for episode in candidates:
        opened = episode.row.published
        if opened is None or opened <= at:
            found = episode
    return found


def _note(what: str, kept: Kept | None, since: float, lost: str) -> str | None:
    if kept is None or not kept.trimmed or kept.oldest is None or since >= kept.oldest:
        return None
    oldest = datetime.fromtimestamp(kept.oldest).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"The period starts before the oldest {what} still kept, at {oldest} (about the last"
        f" {kept.cap:,} are kept): {lost}."
    )
