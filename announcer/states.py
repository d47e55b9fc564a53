"""Pure: probe results in, switch states out. No I/O, no clock of its own.

Two layers:

* a ``Track`` per switch holds what its *own* probes say, with hysteresis
  (down after N misses in a row, up after M answers in a row) and flapping
  (K changes within a window hold it as ``flapping`` until it has been quiet
  for a while);
* ``Fleet.resolve`` adds the topology: a switch that does not answer while its
  uplink chain is broken is ``unreachable``, and the outage belongs to the one
  switch at the root of it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from announcer.config import PollerSettings
from announcer.probes.base import ProbeResult, Verdict


class State(enum.StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    UNREACHABLE = "unreachable"
    FLAPPING = "flapping"


#: States in which whatever hangs below a switch cannot be reached through it.
BROKEN = frozenset({State.DOWN, State.UNREACHABLE, State.FLAPPING})


@dataclass(frozen=True, slots=True)
class Rules:
    down_after: int = 3
    up_after: int = 2
    flap_changes: int = 4
    flap_window_s: float = 300.0
    flap_quiet_s: float = 300.0

    @classmethod
    def from_settings(cls, s: PollerSettings) -> Rules:
        return cls(s.down_after, s.up_after, s.flap_changes, s.flap_window_s, s.flap_quiet_s)


@dataclass(frozen=True, slots=True)
class Track:
    """What a switch's own probes say, before the topology is considered."""

    verdict: State = State.UNKNOWN
    """UNKNOWN, UP or DOWN: the hysteresis verdict"""
    misses: int = 0
    hits: int = 0
    changes: tuple[float, ...] = ()
    """times of UP<->DOWN changes inside the flapping window"""
    flapping_since: float | None = None
    rtt_ms: float | None = None
    reason: str = ""
    uptime_s: float | None = None
    silent_since: float | None = None
    """when the first of the misses in a row was seen (the outage's start);
    None once the switch answers"""

    @property
    def own(self) -> State:
        return State.FLAPPING if self.flapping_since is not None else self.verdict


@dataclass(frozen=True, slots=True)
class Reboot:
    """sysUpTime went backwards: the switch restarted (an event, not an outage)."""

    switch: str
    uptime_before_s: float
    uptime_now_s: float


def observe(
    track: Track, result: ProbeResult, now: float, rules: Rules, counts: bool = True
) -> tuple[Track, Reboot | None]:
    """Fold one probe result into a track.

    ``counts=False`` takes only the facts (uptime, RTT) without counting a
    hit or miss: for SNMP polled beside ICMP for reboot detection.
    """
    reboot = None
    uptime = track.uptime_s
    if result.uptime_s is not None:
        if uptime is not None and result.uptime_s < uptime:
            reboot = Reboot(result.switch, uptime, result.uptime_s)
        uptime = result.uptime_s
    if result.verdict is Verdict.FAILED or not counts:
        # We could not ask: nothing is learnt about the switch itself.
        return replace(track, uptime_s=uptime), reboot
    if result.verdict is Verdict.ALIVE:
        hits, misses, silent_since = track.hits + 1, 0, None
        needed = 1 if track.verdict is State.UNKNOWN else rules.up_after
        verdict = State.UP if track.verdict is State.UP or hits >= needed else track.verdict
    else:
        hits, misses = 0, track.misses + 1
        silent_since = now if track.silent_since is None else track.silent_since
        verdict = (
            State.DOWN
            if track.verdict is State.DOWN or misses >= rules.down_after
            else (track.verdict)
        )
    changes = tuple(t for t in track.changes if now - t < rules.flap_window_s)
    if verdict != track.verdict and track.verdict is not State.UNKNOWN:
        changes = (*changes, now)
    flapping_since = track.flapping_since
    if flapping_since is None and len(changes) >= rules.flap_changes:
        flapping_since = now
    new = Track(
        verdict=verdict,
        misses=misses,
        hits=hits,
        changes=changes,
        flapping_since=flapping_since,
        rtt_ms=result.rtt_ms if result.verdict is Verdict.ALIVE else track.rtt_ms,
        reason=result.reason,
        uptime_s=uptime,
        silent_since=silent_since,
    )
    return settle(new, now, rules), reboot


def settle(track: Track, now: float, rules: Rules) -> Track:
    """End flapping once the switch has not changed for ``flap_quiet_s``."""
    if track.flapping_since is None:
        return track
    last_change = max(track.changes, default=track.flapping_since)
    if now - last_change >= rules.flap_quiet_s:
        return replace(track, flapping_since=None, changes=())
    return track


@dataclass(frozen=True, slots=True)
class SwitchState:
    """A switch's state as the rest of announcer sees it."""

    state: State
    since: float
    reason: str = ""
    root_cause: str | None = None
    """the switch whose failure explains this one (itself when down)"""
    rtt_ms: float | None = None

    def record(self) -> dict[str, object]:
        out: dict[str, object] = {"state": self.state.value, "since": round(self.since, 3)}
        if self.reason:
            out["reason"] = self.reason
        if self.root_cause:
            out["root"] = self.root_cause
        if self.rtt_ms is not None:
            out["rtt_ms"] = round(self.rtt_ms, 3)
        return out


@dataclass(frozen=True, slots=True)
class Change:
    switch: str
    old: State
    new: State
    reason: str
    root_cause: str | None
    at: float
    silent_since: float | None = None
    """the switch's first miss of the run that led here (the outage's start)"""


def topological(parents: Mapping[str, str | None]) -> list[str]:
    """Switches ordered so that every parent comes before its children."""
    children: dict[str | None, list[str]] = {}
    for switch, parent in parents.items():
        children.setdefault(parent if parent in parents else None, []).append(switch)
    order: list[str] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        switch = stack.pop()
        order.append(switch)
        stack.extend(reversed(children.get(switch, [])))
    return order


@dataclass
class Fleet:
    """Every switch's track and state; the poller's memory between sweeps."""

    parents: Mapping[str, str | None]
    rules: Rules = field(default_factory=Rules)
    tracks: dict[str, Track] = field(default_factory=dict)
    states: dict[str, SwitchState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.order = topological(self.parents)
        self.children: dict[str, list[str]] = {}
        for switch, parent in self.parents.items():
            if parent is not None:
                self.children.setdefault(parent, []).append(switch)
        self._dirty = True
        """a track's own verdict changed since the last resolve"""
        self._flapping: set[str] = set()
        """switches held as flapping: their settling depends on the clock"""

    def observe(
        self, results: Iterable[ProbeResult], now: float, counts: bool = True
    ) -> list[Reboot]:
        reboots = []
        for result in results:
            switch = result.switch
            if switch not in self.parents:
                continue
            old = self.tracks.get(switch)
            track, reboot = observe(old or Track(), result, now, self.rules, counts)
            self.tracks[switch] = track
            if old is None or track.own is not old.own:
                self._dirty = True
            if track.flapping_since is not None:
                self._flapping.add(switch)
            else:
                self._flapping.discard(switch)
            if reboot is not None:
                reboots.append(reboot)
        return reboots

    def resolve(self, now: float) -> tuple[list[Change], list[str]]:
        """Recompute every state; return the changes and the switches to re-check now.

        A switch whose uplink has just come back is re-checked at once rather
        than at the next sweep: its own probes failed while it could not be
        reached, so its own verdict starts afresh.
        """
        if not self._dirty and not self._flapping and len(self.states) == len(self.order):
            # no switch's own verdict moved: every state stays as it is (the
            # round-trip times shown are those of the last change anywhere)
            return [], []
        self._dirty = False
        changes: list[Change] = []
        recheck: list[str] = []
        new_states: dict[str, SwitchState] = {}
        for switch in self.order:
            track = self.tracks.get(switch)
            if track is not None and track.flapping_since is not None:
                track = settle(track, now, self.rules)
                self.tracks[switch] = track
            own = track.own if track is not None else State.UNKNOWN
            parent = self.parents.get(switch)
            upstream = new_states.get(parent) if parent is not None else None
            if upstream is not None and upstream.state in BROKEN and own is not State.UP:
                state, root = State.UNREACHABLE, upstream.root_cause
                reason = f"uplink {parent} is {upstream.state.value}"
            elif own in (State.DOWN, State.FLAPPING):
                state, root = own, switch
                reason = track.reason if track is not None else ""
            else:
                state, root = own, None
                reason = track.reason if track is not None else ""
            before = self.states.get(switch)
            if (
                before is not None
                and before.state is State.UNREACHABLE
                and state is not (State.UNREACHABLE)
            ):
                # The way to it is open again: its own verdict starts afresh.
                if track is not None and track.verdict is State.DOWN:
                    self.tracks[switch] = replace(track, verdict=State.UNKNOWN, misses=0, hits=0)
                    state, root = State.UNKNOWN, None
                    reason = f"re-checking: uplink {parent} is back"
                recheck.append(switch)
            rtt = track.rtt_ms if track is not None else None
            since = before.since if before is not None and before.state is state else now
            new_states[switch] = SwitchState(state, since, reason, root, rtt)
            old = before.state if before is not None else State.UNKNOWN
            if old is not state:
                silent = track.silent_since if track is not None else None
                changes.append(Change(switch, old, state, reason, root, now, silent))
        self.states = new_states
        # tracks may have been handed in whole (a new inventory, a new share)
        self._flapping = {s for s, t in self.tracks.items() if t.flapping_since is not None}
        return changes, recheck

    def suspects(self) -> list[str]:
        """Switches whose verdict is pending: missed while up, or answered while down."""
        out = []
        for switch, track in self.tracks.items():
            state = self.states.get(switch)
            if state is not None and state.state is State.UNREACHABLE:
                continue  # its misses are explained by the uplink
            pending_down = track.verdict is not State.DOWN and track.misses > 0
            pending_up = track.verdict is State.DOWN and track.hits > 0
            if pending_down or pending_up:
                out.append(switch)
        return out

    def root_causes(self) -> list[str]:
        return sorted(
            s for s, st in self.states.items() if st.state in (State.DOWN, State.FLAPPING)
        )

    def subtree(self, switch: str) -> Sequence[str]:
        out, stack = [], [switch]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(self.children.get(current, []))
        return out
