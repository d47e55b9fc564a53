"""Pure: switch states + topology + staff + maintenance + clock -> what callers hear.

No I/O. ``evaluate`` is called again and again with the previous result; it
keeps ids stable for an outage that goes on (so statistics and notifications
see one outage, not one per sweep), pushes automatic expiries forward while
the facts last, and turns an outage that cleared into a "service restored"
announcement for a while.

Who hears what, when several announcements cover one caller: staff beat
maintenance beat automatic beat restored; within that, a switch beats a
district beats everyone; within that, the newest wins (``Announcement.beats``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from announcer.announcements import Announcement, Maintenance, Scope, Source, Topology
from announcer.config import AnnouncementSettings

#: States in which a root-cause switch cuts its subscribers off.
OUTAGE = frozenset({"down", "flapping"})


@dataclass(frozen=True)
class SwitchView:
    """What the engine needs of a switch's state."""

    state: str
    since: float
    root: str | None = None


@dataclass(frozen=True)
class Rules:
    district_share: float = 0.5
    restored_s: float = 1800.0
    auto_hold_s: float = 120.0

    @classmethod
    def from_settings(cls, s: AnnouncementSettings) -> Rules:
        return cls(s.district_share, s.restored_s, s.auto_hold_s)


@dataclass
class Result:
    active: list[Announcement]
    by_switch: dict[str, str]
    """switch id -> id of the announcement its callers hear"""
    everyone: str | None
    """id of the announcement callers not in the inventory hear"""
    opened: list[Announcement] = field(default_factory=list)
    updated: list[Announcement] = field(default_factory=list)
    closed: list[Announcement] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    """root-cause switches whose outage falls inside planned works: no alarm"""


def _affected(states: Mapping[str, SwitchView], topology: Topology) -> dict[str, set[str]]:
    """Root cause -> every switch cut off by it (itself included)."""
    roots: dict[str, set[str]] = {}
    for switch, view in states.items():
        if switch not in topology.district_of:
            continue
        if view.state in OUTAGE:
            roots.setdefault(switch, set()).add(switch)
        elif view.state == "unreachable" and view.root:
            roots.setdefault(view.root, set()).add(switch)
    return roots


def _share(
    switches: set[str], district: str, members: Mapping[str, list[str]], t: Topology
) -> float:
    everyone = members[district]
    by_count = len(switches) / len(everyone)
    total = sum(t.subscribers.get(s, 0) for s in everyone)
    if not total:
        return by_count
    return max(by_count, sum(t.subscribers.get(s, 0) for s in switches) / total)


def _automatic(
    roots: dict[str, set[str]],
    topology: Topology,
    rules: Rules,
    planned: set[str],
    now: float,
) -> tuple[list[Announcement], list[str]]:
    """Automatic announcements for the outages, and the roots inside planned works."""
    members: dict[str, list[str]] = {}
    for switch, district in topology.district_of.items():
        members.setdefault(district, []).append(switch)
    suppressed = sorted(
        root
        for root, cut in roots.items()
        if cut and all(topology.district_of[s] in planned for s in cut)
    )
    cut_off = {s for root, cut in roots.items() if root not in suppressed for s in cut}
    cut_off = {s for s in cut_off if topology.district_of[s] not in planned}
    expires = now + rules.auto_hold_s
    if not cut_off:
        return [], suppressed
    if len(cut_off) / len(topology.district_of) >= rules.district_share and len(members) > 1:
        everyone = Announcement("auto-global", Scope.GLOBAL, (), Source.AUTO, "", now, expires)
        return [everyone], suppressed
    by_district: dict[str, set[str]] = {}
    for switch in cut_off:
        by_district.setdefault(topology.district_of[switch], set()).add(switch)
    out: list[Announcement] = []
    whole = {
        d
        for d, cut in by_district.items()
        if _share(cut, d, members, topology) >= rules.district_share
    }
    for district in sorted(whole):
        out.append(
            Announcement(
                f"auto-district-{district}",
                Scope.DISTRICT,
                (district,),
                Source.AUTO,
                "",
                now,
                expires,
            )
        )
    for root in sorted(roots):
        targets = sorted(
            s for s in roots[root] if s in cut_off and topology.district_of[s] not in whole
        )
        if targets:
            out.append(
                Announcement(
                    f"auto-switch-{root}",
                    Scope.SWITCH,
                    tuple(targets),
                    Source.AUTO,
                    "",
                    now,
                    expires,
                    root_cause=root,
                )
            )
    return out, suppressed


def _restored(
    previous: Sequence[Announcement],
    current_ids: set[str],
    cut_off: set[str],
    topology: Topology,
    rules: Rules,
    now: float,
) -> list[Announcement]:
    """'Service restored' for what an outage that has just ended covered.

    It keeps the outage's scope where the whole of it is back (a district, or
    everyone), so a city-wide restoration is one small record rather than a
    list of every switch; the switches still cut off hear their outage, which
    outranks it anyway.
    """
    if rules.restored_s <= 0:
        return []
    out = [a for a in previous if a.source is Source.RESTORED and a.expires > now]
    for old in previous:
        if old.source is not Source.AUTO or old.id in current_ids:
            continue
        made = replace(
            old,
            id=f"restored-{old.id}",
            source=Source.RESTORED,
            text="",
            created=now,
            expires=now + rules.restored_s,
            eta=None,
        )
        if old.scope is Scope.SWITCH:
            back = tuple(s for s in old.targets if s not in cut_off)
            if back:
                out.append(replace(made, targets=back))
        elif old.scope is Scope.DISTRICT:
            still = {topology.district_of[s] for s in cut_off if s in topology.district_of}
            whole = tuple(d for d in old.targets if d not in still)
            if whole:
                out.append(replace(made, targets=whole))
            partly = tuple(
                s
                for s, d in topology.district_of.items()
                if d in old.targets and d in still and s not in cut_off
            )
            if partly:
                out.append(replace(made, id=f"{made.id}-part", scope=Scope.SWITCH, targets=partly))
        elif not cut_off:
            out.append(made)
        else:
            back = tuple(s for s in topology.district_of if s not in cut_off)
            out.append(replace(made, scope=Scope.SWITCH, targets=back))
    # a switch whose outage is back hears that, not that it was restored
    kept = []
    for r in out:
        if r.scope is not Scope.SWITCH:
            kept.append(r)
        elif any(s not in cut_off for s in r.targets):
            kept.append(replace(r, targets=tuple(s for s in r.targets if s not in cut_off)))
    return kept


def _winners(
    active: Sequence[Announcement], topology: Topology
) -> tuple[dict[str, str], str | None]:
    best_global: Announcement | None = None
    best_district: dict[str, Announcement] = {}
    best_switch: dict[str, Announcement] = {}
    for a in active:
        if a.scope is Scope.GLOBAL:
            if best_global is None or a.beats(best_global):
                best_global = a
            continue
        table = best_district if a.scope is Scope.DISTRICT else best_switch
        for target in a.targets:
            held = table.get(target)
            if held is None or a.beats(held):
                table[target] = a
    by_switch: dict[str, str] = {}
    for switch, district in topology.district_of.items():
        candidates = [
            c
            for c in (best_switch.get(switch), best_district.get(district), best_global)
            if c is not None
        ]
        if candidates:
            winner = candidates[0]
            for c in candidates[1:]:
                if c.beats(winner):
                    winner = c
            by_switch[switch] = winner.id
    return by_switch, best_global.id if best_global else None


def evaluate(
    topology: Topology,
    states: Mapping[str, SwitchView],
    staff: Sequence[Announcement],
    maintenance: Sequence[Maintenance],
    previous: Sequence[Announcement],
    now: float,
    rules: Rules,
    describe: Callable[[Announcement], str] = lambda a: a.text,
) -> Result:
    """The active announcements at ``now``, and how they differ from ``previous``.

    ``describe`` words the announcements announcer makes itself (automatic,
    restored, and planned works given without a text): a pure function of
    the announcement, such as a template in the configured language.
    """
    windows = [m for m in maintenance if m.starts <= now < m.ends]
    planned = {d for m in windows for d in m.districts}
    roots = _affected(states, topology)
    automatic, suppressed = _automatic(roots, topology, rules, planned, now)
    before = {a.id: a for a in previous}
    # an outage that goes on keeps its id and its start; its expiry is pushed on
    # only once half of the hold has passed, so its record stays the same from
    # one evaluation to the next and need not be written again
    automatic = [_goes_on(a, before.get(a.id), now, rules) for a in automatic]
    cut_off = {s for a in automatic for s in _covered(a, topology)}
    restored = _restored(previous, {a.id for a in automatic}, cut_off, topology, rules, now)
    planned_works = [
        Announcement(
            f"maintenance-{m.id}",
            Scope.DISTRICT,
            m.districts,
            Source.MAINTENANCE,
            m.text,
            m.starts,
            m.ends,
            eta=m.ends,
            author=m.author,
        )
        for m in windows
    ]
    live_staff = [a for a in staff if a.created <= now < a.expires]
    made = [*planned_works, *automatic, *restored]
    made = [a if a.text else replace(a, text=describe(a)) for a in made]
    active = [*live_staff, *made]
    by_switch, everyone = _winners(active, topology)
    result = Result(active, by_switch, everyone, suppressed=suppressed)
    for a in active:
        old = before.get(a.id)
        if old is None:
            result.opened.append(a)
        elif (old.targets, old.text, old.eta, old.audio) != (a.targets, a.text, a.eta, a.audio):
            result.updated.append(a)
    current = {a.id for a in active}
    result.closed = [a for a in previous if a.id not in current]
    return result


def _goes_on(a: Announcement, old: Announcement | None, now: float, rules: Rules) -> Announcement:
    if old is None:
        return a
    expires = old.expires if old.expires - now > rules.auto_hold_s / 2 else a.expires
    return replace(a, created=old.created, expires=expires)


def _covered(a: Announcement, topology: Topology) -> set[str]:
    if a.scope is Scope.SWITCH:
        return set(a.targets)
    if a.scope is Scope.DISTRICT:
        return {s for s, d in topology.district_of.items() if d in a.targets}
    return set(topology.district_of)
