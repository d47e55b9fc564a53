"""Pure: which events deserve a message, how they group, who receives them.

No I/O. The service feeds every entry of the event stream to ``classify``
and every link change to ``link_event``; what matters goes into the
``Debouncer``, which holds it for ``debounce_s`` from the first event of its
group and hands the group over whole. A group is what one message tells:

- the automatic outages of one district (``outage:<district>``, or
  ``outage:global``): a switch outage that grows into a district outage,
  an outage that opens and clears, a flapping one, are one message;
- one staff announcement, with the drop it came from;
- one planned works window; one rejected drop; one link; one announcement
  whose prompt could not be rendered.

A key flushed starts a new window at its next event, so whatever happens,
one outage yields at most one message per ``debounce_s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from announcer.announcements import Scope, Source, event_targets

#: Announcement actions as the publisher writes them, as people say them.
OUTAGE_ACTIONS = {"opened": "opened", "updated": "updated", "closed": "cleared"}
MAINTENANCE_ACTIONS = {"opened": "started", "updated": "updated", "closed": "ended"}
STAFF_ACTIONS = {"opened": "published", "updated": "updated", "closed": "withdrawn"}
#: Actions after which the thing is over.
ENDING = frozenset({"cleared", "ended", "withdrawn", "expired", "regained", "rejected"})
RESTORED_PREFIX = "restored-"


@dataclass(frozen=True)
class Event:
    """Something a person may want to hear about."""

    stream_id: str | None
    """its entry on the event stream; None for a link change (in-process)"""
    kind: str
    """one of config.EVENT_KINDS"""
    key: str
    """events with one key make one message"""
    action: str
    at: float
    fields: Mapping[str, str]
    """the stream entry as written (announcement: id, scope, source, targets, ...)"""
    info: bool = False
    """adds to a message but makes none by itself (service restored: what callers hear)"""


def _float(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


def root_of(announcement_id: str) -> str | None:
    """The root-cause switch of an automatic switch outage, from its id."""
    head = "auto-switch-"
    return announcement_id[len(head) :] if announcement_id.startswith(head) else None


def outage_key(fields: Mapping[str, str], district_of: Mapping[str, str]) -> str:
    """``outage:<district>`` of an automatic (or restored) announcement."""
    scope = fields.get("scope", "")
    targets = event_targets(fields)
    if scope == Scope.GLOBAL or not targets:
        return "outage:global"
    if scope == Scope.DISTRICT:
        return f"outage:{targets[0]}" if len(targets) == 1 else "outage:" + ",".join(targets)
    root = root_of(fields.get("id", "").removeprefix(RESTORED_PREFIX)) or targets[0]
    return f"outage:{district_of.get(root) or district_of.get(targets[0]) or root}"


def classify(
    stream_id: str, fields: Mapping[str, str], district_of: Mapping[str, str]
) -> Event | None:
    """The event a stream entry is for people, or None (switch states one by
    one, reboots, ... are not notified: their outages are)."""
    kind = fields.get("kind")
    at = _float(fields.get("at"))
    if kind == "drop":
        ident = fields.get("id")
        if fields.get("action") == "published" and ident:
            return Event(stream_id, "drop", ident, "published", at, fields)
        return Event(stream_id, "drop", f"drop:{stream_id}", "rejected", at, fields)
    if kind == "prompt-failed":
        return Event(stream_id, "prompt", f"prompt:{fields.get('id', '')}", "failed", at, fields)
    if kind != "announcement":
        return None
    action = fields.get("action", "")
    source = fields.get("source", "")
    ident = fields.get("id", "")
    if source == Source.RESTORED:
        if action != "opened" or ident.endswith("-part"):
            return None
        key = outage_key(fields, district_of)
        return Event(stream_id, "outage", key, "restored", at, fields, info=True)
    table: dict[str, tuple[str, dict[str, str]]] = {
        Source.AUTO.value: ("outage", OUTAGE_ACTIONS),
        Source.MAINTENANCE.value: ("maintenance", MAINTENANCE_ACTIONS),
        Source.STAFF.value: ("staff", STAFF_ACTIONS),
    }
    chosen = table.get(source)
    said = chosen[1].get(action) if chosen else None
    if chosen is None or said is None:
        return None
    if said == "withdrawn" and at >= _float(fields.get("expires")) - 1.0:
        said = "expired"
    key = outage_key(fields, district_of) if chosen[0] == "outage" else ident
    return Event(stream_id, chosen[0], key, said, at, fields)


def link_event(name: str, up: bool, reason: str, at: float) -> Event:
    fields = {"link": name, "reason": reason}
    return Event(None, "link", f"link:{name}", "regained" if up else "lost", at, fields)


@dataclass
class Group:
    """Events held together until ``due`` (the monotonic clock)."""

    key: str
    due: float
    events: list[Event] = field(default_factory=list)

    @property
    def kinds(self) -> set[str]:
        return {e.kind for e in self.events}

    @property
    def kind(self) -> str:
        """What the message is about: a staff announcement beats the drop it came from."""
        kinds = self.kinds
        return "staff" if "staff" in kinds else self.events[0].kind

    @property
    def stream_ids(self) -> list[str]:
        return [e.stream_id for e in self.events if e.stream_id is not None]

    @property
    def worth_a_message(self) -> bool:
        return any(not e.info for e in self.events)

    def by_announcement(self) -> dict[str, list[Event]]:
        """The announcement events of the group, by announcement id, in order."""
        out: dict[str, list[Event]] = {}
        for e in self.events:
            if e.fields.get("kind") == "announcement" and not e.info:
                out.setdefault(e.fields.get("id", ""), []).append(e)
        return out


class Debouncer:
    """Holds events by key for ``window_s`` from the first of each group."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._groups: dict[str, Group] = {}

    def add(self, event: Event, now: float) -> None:
        group = self._groups.get(event.key)
        if group is None:
            group = self._groups[event.key] = Group(event.key, now + self.window_s)
        group.events.append(event)

    def due(self, now: float) -> list[Group]:
        """The groups whose window has passed, oldest first, removed."""
        ready = sorted((g for g in self._groups.values() if g.due <= now), key=lambda g: g.due)
        for group in ready:
            del self._groups[group.key]
        return ready

    def next_due(self) -> float | None:
        return min((g.due for g in self._groups.values()), default=None)

    def forget_stream(self) -> None:
        """Drop the events read from the stream (the cursor still names them),
        keeping the in-process ones."""
        for key, group in list(self._groups.items()):
            group.events = [e for e in group.events if e.stream_id is None]
            if not group.events:
                del self._groups[key]

    def take_in_process(self) -> list[Group]:
        """Remove and return the groups of in-process events (links,
        prompts), whatever their window: only this process knows them."""
        taken = []
        for key, group in list(self._groups.items()):
            mine = [e for e in group.events if e.stream_id is None]
            if mine:
                taken.append(Group(key, group.due, mine))
                group.events = [e for e in group.events if e.stream_id is not None]
            if not group.events:
                del self._groups[key]
        return taken

    def held_ids(self) -> list[str]:
        return [i for g in self._groups.values() for i in g.stream_ids]

    def __len__(self) -> int:
        return len(self._groups)


def districts_of(group: Group, district_of: Mapping[str, str]) -> set[str] | None:
    """The districts a group concerns; None: every district (the whole network,
    a link, a drop that named none)."""
    out: set[str] = set()
    for e in group.events:
        if e.fields.get("kind") != "announcement":
            continue
        scope = e.fields.get("scope", "")
        targets = event_targets(e.fields)
        if scope == Scope.GLOBAL:
            return None
        if scope == Scope.DISTRICT:
            out.update(targets)
        else:
            out.update(district_of.get(s, "") for s in targets)
    out.discard("")
    return out or None


def resolve_districts(
    chosen: Iterable[str], names: Mapping[str, str]
) -> tuple[set[str], list[str]]:
    """District ids for a subscriber's ``districts`` (ids or names, spaces and
    case aside), and those the inventory does not know."""
    by_name = {" ".join(n.split()).casefold(): i for i, n in names.items()}
    by_id = {i.casefold(): i for i in names}
    found: set[str] = set()
    unknown: list[str] = []
    for entry in chosen:
        folded = " ".join(entry.split()).casefold()
        ident = by_id.get(folded) or by_name.get(folded)
        if ident is None:
            unknown.append(entry)
            found.add(entry)  # the inventory may gain it later
        else:
            found.add(ident)
    return found, unknown


def wanted_by(
    kinds: set[str],
    districts: set[str] | None,
    events: Sequence[str],
    chosen_districts: set[str],
) -> bool:
    """Whether a subscriber who chose ``events`` and ``chosen_districts``
    (empty: all) receives a message about ``kinds`` in ``districts``."""
    if events and not kinds & set(events):
        return False
    if not chosen_districts or districts is None:
        return True
    return bool(districts & chosen_districts)
