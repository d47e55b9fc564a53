"""The state rules without any network: hysteresis, flapping, topology."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.probes.base import ProbeResult, Verdict
from announcer.states import Fleet, Rules, State, Track, observe, topological

RULES = Rules(down_after=3, up_after=2, flap_changes=4, flap_window_s=300, flap_quiet_s=300)
ALIVE, SILENT, FAILED = Verdict.ALIVE, Verdict.SILENT, Verdict.FAILED


def feed(verdicts: Sequence[Verdict], step_s: float = 5.0, rules: Rules = RULES) -> list[State]:
    """Own state after each probe of one switch, probed every ``step_s``."""
    track, out = Track(), []
    for i, verdict in enumerate(verdicts):
        track, _ = observe(track, ProbeResult("sw", verdict, "r"), i * step_s, rules)
        out.append(track.own)
    return out


def test_first_answer_makes_a_switch_up() -> None:
    assert feed([ALIVE]) == [State.UP]


def test_down_after_three_misses_up_after_two_answers() -> None:
    states = feed([ALIVE, SILENT, SILENT, SILENT, ALIVE, ALIVE])
    assert states == [State.UP, State.UP, State.UP, State.DOWN, State.DOWN, State.UP]


def test_never_answered_switch_goes_down_after_three_misses() -> None:
    assert feed([SILENT, SILENT, SILENT]) == [State.UNKNOWN, State.UNKNOWN, State.DOWN]


@settings(max_examples=500)
@given(st.lists(st.sampled_from([ALIVE, SILENT, FAILED]), min_size=1, max_size=60))
def test_one_lost_probe_in_three_never_announces(tail: list[Verdict]) -> None:
    """No run of down_after misses in a row: never down, never flapping."""
    verdicts = [ALIVE, *tail]
    counted = [v for v in verdicts if v is not FAILED]
    runs = "".join("x" if v is SILENT else "." for v in counted)
    if "x" * RULES.down_after in runs:
        return
    assert set(feed(verdicts)) == {State.UP}


@settings(max_examples=300)
@given(st.lists(st.sampled_from([ALIVE, SILENT]), min_size=1, max_size=40))
def test_failed_sends_never_change_anything(verdicts: list[Verdict]) -> None:
    with_failures = [v for verdict in verdicts for v in (verdict, FAILED, FAILED)]
    plain = feed(verdicts, step_s=15)
    noisy = feed(with_failures, step_s=5)
    assert noisy[2::3] == plain


def test_flapping_uplink_is_held_as_flapping_then_settles() -> None:
    """Down/up every 20 s for an hour (scenario 3), then steady."""
    cycle = [SILENT] * 4 + [ALIVE] * 4  # probed every 5 s: 20 s silent, 20 s answering
    states = feed([ALIVE] + cycle * 90 + [ALIVE] * 80)
    first_flap = states.index(State.FLAPPING)
    during = states[first_flap : 1 + len(cycle) * 90]
    assert set(during) == {State.FLAPPING}, "held, not toggling"
    assert first_flap < 40, "recognised within a few cycles"
    assert states[-1] is State.UP, "settles after flap_quiet_s without changes"
    pairs = list(itertools.pairwise(states))
    transitions = [(a, b) for a, b in pairs if a is not b]
    bad = {State.DOWN, State.FLAPPING}
    outages = [(a, b) for a, b in transitions if a not in bad and b in bad]
    assert len(transitions) <= 5, "a handful of changes in an hour, not sixty"
    assert len(outages) == 2, "down once, then flapping: held from then on"


def test_reboot_is_an_event_not_an_outage() -> None:
    """Two missed pings and a smaller sysUpTime (scenario 2)."""
    track = Track()
    seen = []
    for i, (verdict, uptime) in enumerate(
        [(ALIVE, 9000.0), (ALIVE, 9005.0), (SILENT, None), (SILENT, None), (ALIVE, 3.0)]
    ):
        track, reboot = observe(
            track, ProbeResult("sw", verdict, "", uptime_s=uptime), i * 5, RULES
        )
        seen.append((track.own, reboot))
    assert [s for s, _ in seen] == [State.UP] * 5
    reboots = [r for _, r in seen if r is not None]
    assert len(reboots) == 1
    assert (reboots[0].uptime_before_s, reboots[0].uptime_now_s) == (9005.0, 3.0)


# --- topology -------------------------------------------------------------


def fleet_with(parents: dict[str, str | None], silent: set[str], rounds: int = 3) -> Fleet:
    fleet = Fleet(parents, RULES)
    for i in range(rounds):
        fleet.observe(
            [ProbeResult(s, SILENT if s in silent else ALIVE, "x") for s in parents], i * 5.0
        )
        fleet.resolve(i * 5.0)
    return fleet


@st.composite
def trees(draw: st.DrawFn) -> dict[str, str | None]:
    size = draw(st.integers(1, 60))
    parents: dict[str, str | None] = {"s0": None}
    for i in range(1, size):
        parent = draw(st.one_of(st.none(), st.integers(0, i - 1)))
        parents[f"s{i}"] = None if parent is None else f"s{parent}"
    return parents


@settings(max_examples=300)
@given(trees(), st.data())
def test_every_outage_has_exactly_one_root_cause(
    parents: dict[str, str | None], data: st.DataObject
) -> None:
    dead = data.draw(st.sets(st.sampled_from(sorted(parents))))
    fleet = fleet_with(parents, dead)

    def chain(switch: str) -> list[str]:
        out = []
        parent = parents[switch]
        while parent is not None:
            out.append(parent)
            parent = parents[parent]
        return out

    for switch, state in fleet.states.items():
        if switch not in dead:
            assert state.state is State.UP
            continue
        dead_above = [p for p in chain(switch) if p in dead]
        # the outermost dead switch of an unbroken run of dead uplinks is the root
        run_top = switch
        for p in chain(switch):
            if p not in dead:
                break
            run_top = p
        if parents[switch] in dead:
            assert state.state is State.UNREACHABLE
            assert state.root_cause == run_top
            assert dead_above
        else:
            assert state.state is State.DOWN
            assert state.root_cause == switch


def test_fibre_cut_behind_aggregation_is_one_outage() -> None:
    """Scenario 1: 40 access switches behind one aggregation switch."""
    parents: dict[str, str | None] = {"core": None, "agg": "core"}
    parents |= {f"acc{i}": "agg" for i in range(40)}
    parents |= {f"deep{i}": f"acc{i}" for i in range(40)}
    dead = {s for s in parents if s != "core"}
    fleet = fleet_with(parents, dead)
    assert fleet.root_causes() == ["agg"]
    assert {fleet.states[f"deep{i}"].root_cause for i in range(40)} == {"agg"}
    assert fleet.states["acc7"].reason == "uplink agg is down"


def state_of(fleet: Fleet, switch: str) -> State:
    return fleet.states[switch].state


def test_uplink_back_rechecks_its_subtree_at_once() -> None:
    parents: dict[str, str | None] = {"agg": None, "a1": "agg", "a2": "agg"}
    fleet = fleet_with(parents, {"agg", "a1", "a2"})
    assert state_of(fleet, "a1") is State.UNREACHABLE
    # agg answers twice: up again
    for t in (20.0, 25.0):
        fleet.observe([ProbeResult("agg", ALIVE, "")], t)
    changes, recheck = fleet.resolve(25.0)
    assert fleet.states["agg"].state is State.UP
    assert sorted(recheck) == ["a1", "a2"]
    assert state_of(fleet, "a1") is State.UNKNOWN, "not blamed on itself before re-checking"
    assert State.DOWN not in {c.new for c in changes}
    # the immediate re-check: a1 answers, a2 stays silent
    fleet.observe([ProbeResult("a1", ALIVE, ""), ProbeResult("a2", SILENT, "")], 25.5)
    fleet.resolve(25.5)
    assert fleet.states["a1"].state is State.UP
    assert fleet.states["a2"].state is State.UNKNOWN


def test_changes_report_old_and_new_once() -> None:
    fleet = Fleet({"sw": None}, RULES)
    states = []
    for i, verdict in enumerate([ALIVE, SILENT, SILENT, SILENT, SILENT]):
        fleet.observe([ProbeResult("sw", verdict, "no echo reply within 1000 ms")], i * 5.0)
        changes, _ = fleet.resolve(i * 5.0)
        states += [(c.old, c.new, c.reason) for c in changes]
    assert [(old, new) for old, new, _ in states] == [
        (State.UNKNOWN, State.UP),
        (State.UP, State.DOWN),
    ]
    assert states[1][2] == "no echo reply within 1000 ms"
    assert fleet.states["sw"].since == 15.0


def test_topological_order_puts_parents_first() -> None:
    parents: dict[str, str | None] = {"c": "b", "b": "a", "a": None, "d": "a"}
    order = topological(parents)
    assert order.index("a") < order.index("b") < order.index("c")
    assert sorted(order) == ["a", "b", "c", "d"]


def test_the_first_miss_of_an_outage_is_kept_until_an_answer() -> None:
    """What ``announcer report`` shows as an outage's start: the first miss of
    the run, not the third (when it was declared); a probe that could not be
    sent neither starts nor ends it."""
    fleet = Fleet({"sw": None}, RULES)
    seen = []
    for at, verdict in [(0, ALIVE), (5, SILENT), (10, FAILED), (15, SILENT), (20, SILENT)]:
        fleet.observe([ProbeResult("sw", verdict, "no echo reply within 1000 ms")], at)
        changes, _ = fleet.resolve(at)
        seen += [(c.new, c.at, c.silent_since) for c in changes]
    assert seen == [(State.UP, 0, None), (State.DOWN, 20, 5)]
    assert fleet.tracks["sw"].silent_since == 5
    for at in (25, 30):
        fleet.observe([ProbeResult("sw", ALIVE, "")], at)
        changes, _ = fleet.resolve(at)
        seen += [(c.new, c.at, c.silent_since) for c in changes]
    assert seen[-1] == (State.UP, 30, None)
    assert fleet.tracks["sw"].silent_since is None


def test_a_flapping_switch_handed_to_a_new_fleet_still_settles() -> None:
    """A new inventory or a new share hands the tracks over whole; a switch
    held as flapping must still settle once quiet, probed or not."""
    flapping = Track(verdict=State.UP, flapping_since=0.0, changes=(0.0,))
    fleet = Fleet({"sw": None}, RULES)
    fleet.tracks = {"sw": flapping}
    assert fleet.resolve(10.0)[0][0].new is State.FLAPPING
    assert fleet.resolve(20.0) == ([], [])  # nothing new meanwhile
    changes, _ = fleet.resolve(RULES.flap_quiet_s + 1)
    assert [(c.old, c.new) for c in changes] == [(State.FLAPPING, State.UP)]
