"""Pure: a group of events -> the message people read, and the webhook's JSON.

No I/O. Messages are for support staff and the NOC, in the configured
language (ru or en): what happened, where (district names, switches and
subscriber numbers cut off where known), since when, until when or the
expected restoration where given, and the text callers hear. The webhook
gets the same as fields, with ``schema_version``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from announcer.announcements import Scope, event_targets
from announcer.notify.rules import ENDING, Event, Group, root_of
from announcer.notify.words import say

SCHEMA_VERSION = 1
#: Switches named in a message; the rest are counted.
NAMED_SWITCHES = 10
#: Switch states in which its subscribers are cut off.
CUT_OFF_STATES = frozenset({"down", "unreachable", "flapping"})

_SCOPE_RANK = {Scope.GLOBAL.value: 2, Scope.DISTRICT.value: 1, Scope.SWITCH.value: 0}


@dataclass
class Context:
    """What the inventory and the switch states say, read when the message is made."""

    language: str = "en"
    now: float = 0.0
    district_of: Mapping[str, str] = field(default_factory=dict)
    district_names: Mapping[str, str] = field(default_factory=dict)
    subscribers: Mapping[str, int] = field(default_factory=dict)
    """switch id -> subscriber numbers on it"""
    cut_off: set[str] = field(default_factory=set)
    """switches whose subscribers are cut off now"""
    remembered: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """announcement id -> the switches it cut off when last seen open"""
    restored_s: float = 0.0


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    payload: dict[str, Any]


def _w(ctx: Context, phrase: str, **values: object) -> str:
    return say(ctx.language, phrase, **values)


def when(moment: float, now: float) -> str:
    """14:02:05 today; 2026-11-30 14:02 on another day (the host's time zone)."""
    at, today = datetime.fromtimestamp(moment), datetime.fromtimestamp(now)
    return at.strftime("%H:%M:%S") if at.date() == today.date() else at.strftime("%Y-%m-%d %H:%M")


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")


def duration(ctx: Context, seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return _w(ctx, "h", h=s // 3600, m=s % 3600 // 60)
    if s >= 120:
        return _w(ctx, "min", m=s // 60)
    return _w(ctx, "s", s=s)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _listed(ctx: Context, names: Sequence[str]) -> str:
    if len(names) <= NAMED_SWITCHES:
        return ", ".join(names)
    return _w(
        ctx, "more", names=", ".join(names[:NAMED_SWITCHES]), more=len(names) - NAMED_SWITCHES
    )


def _district_names(ctx: Context, ids: Sequence[str]) -> str:
    names = ", ".join(ctx.district_names.get(d, d) for d in ids)
    return _w(ctx, "district" if len(ids) == 1 else "districts", names=names)


def where(ctx: Context, fields: Mapping[str, str], hears: bool = False) -> str:
    """The place an announcement covers, in words."""
    scope, targets = fields.get("scope", ""), event_targets(fields)
    if scope == Scope.GLOBAL or not targets:
        return _w(ctx, "everyone_hears" if hears else "everyone")
    if scope == Scope.DISTRICT:
        return _district_names(ctx, targets)
    root = root_of(fields.get("id", ""))
    if root is None or hears:
        return _w(ctx, "switches", names=_listed(ctx, targets))
    what = (
        _w(ctx, "switch", root=root)
        if len(targets) <= 1
        else _w(ctx, "switch_behind", root=root, behind=len(targets) - 1)
    )
    district = ctx.district_of.get(root)
    return _w(ctx, "in", what=what, where=_district_names(ctx, [district])) if district else what


def extent(ctx: Context, fields: Mapping[str, str]) -> list[str]:
    """The switches an outage announcement cuts off, as far as known now."""
    scope, targets = fields.get("scope", ""), event_targets(fields)
    if scope == Scope.SWITCH:
        return sorted(targets)
    if scope == Scope.DISTRICT:
        return sorted(s for s in ctx.cut_off if ctx.district_of.get(s) in targets)
    return sorted(ctx.cut_off)


def _districts(ctx: Context, fields: Mapping[str, str], switches: Sequence[str]) -> list[str]:
    if fields.get("scope") == Scope.DISTRICT:
        return event_targets(fields)
    return sorted({ctx.district_of[s] for s in switches if s in ctx.district_of})


def _base(group: Group, ctx: Context, fields: Mapping[str, str]) -> dict[str, Any]:
    """The webhook's fields every message has."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event": group.kind,
        "kinds": sorted(group.kinds),
        "actions": [
            {
                "action": e.action,
                "at": iso(e.at),
                **({"id": e.fields["id"]} if "id" in e.fields else {}),
            }
            for e in group.events
        ],
        "id": fields.get("id"),
        "scope": fields.get("scope"),
        "source": fields.get("source"),
        "language": ctx.language,
    }


def _message(
    title: str, lines: Sequence[tuple[str, str]], ctx: Context, payload: dict[str, Any]
) -> Message:
    body = "\n".join(f"{_w(ctx, label)}: {value}" if label else value for label, value in lines)
    payload.update(title=title, message=body)
    return Message(title, body, payload)


def render(group: Group, ctx: Context) -> Message | None:
    """The message for a group; None when it has nothing to tell."""
    if not group.worth_a_message:
        return None
    kind = group.kind
    if kind == "outage":
        return _outage(group, ctx)
    if kind in ("staff", "maintenance"):
        return _announcement(group, ctx)
    if kind == "drop":
        return _drop(group, ctx)
    if kind == "prompt":
        return _prompt(group, ctx)
    return _link(group, ctx)


def _prompt(group: Group, ctx: Context) -> Message:
    """An announcement whose own prompt could not be rendered."""
    event = group.events[-1]
    fields = event.fields
    ident = fields.get("id", "?")
    lines = [
        ("Since", when(group.events[0].at, ctx.now)),
        ("Reason", fields.get("reason", "")),
        ("", _w(ctx, "prompt_effect")),
    ]
    payload = _base(group, ctx, fields)
    payload.update(action="failed", ongoing=True, at=iso(event.at), reason=fields.get("reason"))
    return _message(_w(ctx, "prompt_failed", id=ident), lines, ctx, payload)


def _widest(events: Mapping[str, Event]) -> str:
    return max(
        events,
        key=lambda i: (
            _SCOPE_RANK.get(events[i].fields.get("scope", ""), 0),
            len(event_targets(events[i].fields)),
            i,
        ),
    )


def _start(e: Event) -> float:
    return _number(e.fields.get("created")) or e.at


@dataclass
class _Outage:
    """What a group of automatic outage events comes to."""

    by_id: dict[str, list[Event]]
    main: Event
    """the widest announcement still on, else the widest of the group"""
    ongoing: bool
    switches: list[str]
    superseded: list[Event]
    """ended because a wider outage took them in"""
    back: list[Event]
    """ended because their switches answer again"""
    moved: bool
    """nothing of the group goes on, but its switches are still cut off: the
    outage goes on under another key (grown to the whole network, or back)"""

    @classmethod
    def of(cls, group: Group, ctx: Context) -> _Outage:
        by_id = group.by_announcement()
        last = {i: events[-1] for i, events in by_id.items()}
        on = {i: e for i, e in last.items() if e.action not in ENDING}
        main_id = _widest(on or last)
        main = last[main_id]
        switches = extent(ctx, main.fields)
        if not on and not switches:
            switches = list(ctx.remembered.get(main_id, ()))
        superseded: list[Event] = []
        back: list[Event] = []
        for i, e in last.items():
            if i == main_id or e.action not in ENDING:
                continue
            was = extent(ctx, e.fields) or list(ctx.remembered.get(i, ()))
            still = [s for s in was if s in ctx.cut_off or s in switches]
            (superseded if still else back).append(e)
        moved = not on and any(s in ctx.cut_off for s in switches)
        return cls(by_id, main, bool(on), switches, superseded, back, moved)

    @property
    def since(self) -> float:
        return min(_start(e) for e in (self.main, *self.superseded))

    def count(self, action: str) -> int:
        return sum(e.action == action for e in self.by_id[self.main.fields.get("id", "")])


def _outage(group: Group, ctx: Context) -> Message:
    o = _Outage.of(group, ctx)
    fields = o.main.fields
    place = where(ctx, fields)
    opened, cleared = o.count("opened"), o.count("cleared")
    wider = fields.get("scope") != Scope.GLOBAL
    if o.ongoing:
        began = any(e.action == "opened" for events in o.by_id.values() for e in events)
        title = _w(ctx, "outage" if began else "outage_changed", where=place)
    elif o.moved:
        title = _w(ctx, "outage_grew" if wider else "outage_narrowed", where=place)
    else:
        title = _w(ctx, "outage_blip" if opened else "outage_cleared", where=place)
    lines: list[tuple[str, str]] = [("Where", place)]
    numbers = [ctx.subscribers[s] for s in o.switches if s in ctx.subscribers]
    if o.switches:
        count = (
            _w(ctx, "cut_off", switches=len(o.switches), numbers=sum(numbers))
            if numbers
            else _w(ctx, "cut_off_switches", switches=len(o.switches))
        )
        lines.append(("Cut off", f"{count}: {_listed(ctx, o.switches)}"))
    lines.append(("Since", when(o.since, ctx.now)))
    lines += [
        ("Grew from", f"{where(ctx, e.fields)}, {when(_start(e), ctx.now)}") for e in o.superseded
    ]
    ended_at = None if o.ongoing or o.moved else o.main.at
    if o.moved:
        moved = _w(ctx, "moved", wider=_w(ctx, "wider" if wider else "narrower"))
        lines.append(("Ended", f"{when(o.main.at, ctx.now)}, {moved}"))
    if ended_at is not None:
        took = duration(ctx, ended_at - o.since)
        lines.append(("Cleared", _w(ctx, "after", at=when(ended_at, ctx.now), duration=took)))
    lines += [("Also back", f"{where(ctx, e.fields)}, {when(e.at, ctx.now)}") for e in o.back]
    if opened + cleared > 2:
        moments = [e.at for e in o.by_id[fields.get("id", "")]]
        first, end = when(min(moments), ctx.now), when(max(moments), ctx.now)
        flaps = _w(ctx, "flapping", opened=opened, cleared=cleared, first=first, last=end)
        lines.append(("Unstable", flaps))
    eta = _number(fields.get("eta"))
    if eta is not None and o.ongoing:
        lines.append(("Expected restoration", when(eta, ctx.now)))
    restored = [e.fields.get("text", "") for e in group.events if e.info]
    text = fields.get("text", "")
    if o.ongoing and text:
        lines.append(("Callers hear", f"«{text}»"))
    elif restored and restored[-1]:
        said = _w(ctx, "hear_restored", duration=duration(ctx, ctx.restored_s))
        lines.append(("", f"{said}: «{restored[-1]}»"))
    lines.append(("Announcement", ", ".join(o.by_id)))
    payload = _base(group, ctx, fields)
    payload.update(
        action=("grew" if wider else "narrowed") if o.moved else o.main.action,
        ongoing=o.ongoing or o.moved,
        ids=list(o.by_id),
        districts=_named(ctx, _districts(ctx, fields, o.switches)),
        switches=o.switches,
        switch_count=len(o.switches),
        subscriber_count=sum(numbers) if numbers else None,
        started_at=iso(o.since),
        ended_at=iso(ended_at),
        eta=iso(eta),
        expires=iso(_number(fields.get("expires"))) if o.ongoing else None,
        text=text or None,
        restored_text=restored[-1] if restored else None,
    )
    return _message(title, lines, ctx, payload)


def _named(ctx: Context, districts: Sequence[str]) -> list[dict[str, str]]:
    return [{"id": d, "name": ctx.district_names.get(d, d)} for d in districts]


def _announcement(group: Group, ctx: Context) -> Message:
    """A staff announcement (with the drop it came from) or planned works."""
    by_id = group.by_announcement()
    drops = [e for e in group.events if e.kind == "drop"]
    if not by_id:
        return _drop(group, ctx)
    ident = next(iter(by_id))
    events = by_id[ident]
    main = events[-1]
    fields = main.fields
    kind = group.kind
    published = events[0].action in ("published", "started")
    title_key = f"{kind}_{main.action}"
    place = where(ctx, fields, hears=True)
    title = _w(ctx, title_key, where=place)
    lines: list[tuple[str, str]] = [("Where", place)]
    ongoing = main.action not in ENDING
    created = _number(fields.get("created")) or events[0].at
    expires = _number(fields.get("expires"))
    eta = _number(fields.get("eta"))
    lines.append(("Since", when(created, ctx.now)))
    if ongoing and expires is not None:
        lines.append(("Until", when(expires, ctx.now)))
    elif not ongoing:
        took = duration(ctx, main.at - created)
        lines.append(("Ended", _w(ctx, "after", at=when(main.at, ctx.now), duration=took)))
    if eta is not None and ongoing and kind == "staff":
        lines.append(("Expected restoration", when(eta, ctx.now)))
    if fields.get("author"):
        lines.append(("Author", fields["author"]))
    for d in drops:
        lines.append(("Drop", d.fields.get("file", "")))
    if ongoing:
        text = fields.get("text", "")
        lines.append(("Callers hear", f"«{text}»" if text else _w(ctx, "recording")))
    lines.append(("Announcement", ident))
    payload = _base(group, ctx, fields)
    targets = event_targets(fields)
    payload.update(
        action=main.action,
        ongoing=ongoing,
        published_in_this_message=published,
        ids=[ident],
        districts=_named(ctx, _districts(ctx, fields, targets)),
        switches=targets if fields.get("scope") == Scope.SWITCH else [],
        started_at=iso(created),
        ended_at=None if ongoing else iso(main.at),
        eta=iso(eta),
        expires=iso(expires),
        text=fields.get("text") or None,
        author=fields.get("author"),
        file=drops[0].fields.get("file") if drops else None,
    )
    return _message(title, lines, ctx, payload)


def _drop(group: Group, ctx: Context) -> Message:
    event = group.events[-1]
    fields = event.fields
    name = fields.get("file", "?")
    lines: list[tuple[str, str]] = []
    if event.action == "rejected":
        title = _w(ctx, "drop_rejected", file=name)
        lines.append(("Reason", fields.get("error", "")))
        lines.append(("Files", fields.get("files", name)))
        lines.append(("", _w(ctx, "rejected_where", key=name)))
    else:
        title = _w(ctx, "drop_published", file=name)
        lines.append(("Announcement", fields.get("id", "")))
    payload = _base(group, ctx, fields)
    payload.update(
        action=event.action,
        ongoing=False,
        at=iso(event.at),
        file=name,
        files=[f for f in fields.get("files", name).split(", ") if f],
        error=fields.get("error"),
        announcement=fields.get("id"),
    )
    return _message(title, lines, ctx, payload)


def _link(group: Group, ctx: Context) -> Message:
    events = group.events
    name = events[0].fields.get("link", "?")
    last = events[-1]
    lost = [e for e in events if e.action == "lost"]
    if last.action == "lost":
        title = _w(ctx, "link_lost", link=name)
    else:
        title = _w(ctx, "link_blip" if lost else "link_regained", link=name)
    lines: list[tuple[str, str]] = []
    if lost:
        reason = lost[-1].fields.get("reason", "")
        lines.append(("Lost", when(lost[0].at, ctx.now) + (f" ({reason})" if reason else "")))
    if last.action == "regained":
        took = f", {duration(ctx, last.at - lost[0].at)}" if lost else ""
        lines.append(("Back", when(last.at, ctx.now) + took))
    else:
        effect = "redis_effect" if name == "Redis" else "mirror_effect"
        lines.append(("", _w(ctx, effect)))
    payload = _base(group, ctx, last.fields)
    payload.update(
        action=last.action,
        ongoing=last.action == "lost",
        link=name,
        reason=lost[-1].fields.get("reason") if lost else None,
        started_at=iso(lost[0].at) if lost else None,
        ended_at=iso(last.at) if last.action == "regained" else None,
    )
    return _message(title, lines, ctx, payload)
