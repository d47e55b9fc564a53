"""The outage engine's rules, without any server."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.announcements import Announcement, Maintenance, Scope, Source, Topology
from announcer.engine import Result, Rules, SwitchView, evaluate

RULES = Rules(district_share=0.5, restored_s=1800, auto_hold_s=120)


def city() -> Topology:
    """core -> agg-n -> n1..n4 (north); core -> agg-s -> s1..s4 (south); c1 (centre)."""
    t = Topology()
    t.district_of = {"core": "centre", "c1": "centre", "agg-n": "north", "agg-s": "south"}
    t.parent_of = {"core": None, "c1": "core", "agg-n": "core", "agg-s": "core"}
    for d, agg in (("n", "agg-n"), ("s", "agg-s")):
        for i in range(1, 5):
            t.district_of[f"{d}{i}"] = "north" if d == "n" else "south"
            t.parent_of[f"{d}{i}"] = agg
    t.district_names = {"centre": "Центральный", "north": "Северный", "south": "Южный"}
    return t


def up(t: Topology) -> dict[str, SwitchView]:
    return {s: SwitchView("up", 0.0) for s in t.district_of}


def run(
    states: dict[str, SwitchView],
    staff: list[Announcement] | None = None,
    maintenance: list[Maintenance] | None = None,
    previous: list[Announcement] | None = None,
    now: float = 1000.0,
    rules: Rules = RULES,
    t: Topology | None = None,
) -> Result:
    return evaluate(
        t or city(), states, staff or [], maintenance or [], previous or [], now, rules,
        describe=lambda a: f"{a.source.value} {a.scope.value} {','.join(a.targets)}",
    )  # fmt: skip


def staff(id_: str, scope: Scope, targets: tuple[str, ...], created: float) -> Announcement:
    return Announcement(id_, scope, targets, Source.STAFF, "t", created, created + 3600)


def test_nothing_down_nothing_heard() -> None:
    result = run(up(city()))
    assert result.active == []
    assert result.by_switch == {}
    assert result.everyone is None


def test_dead_access_switch_is_heard_by_its_callers_only() -> None:
    states = up(city()) | {"n1": SwitchView("down", 900.0, "n1")}
    result = run(states)
    [a] = result.active
    assert (a.id, a.scope, a.targets, a.source) == (
        "auto-switch-n1",
        Scope.SWITCH,
        ("n1",),
        Source.AUTO,
    )
    assert a.expires == 1000.0 + RULES.auto_hold_s
    assert result.by_switch == {"n1": "auto-switch-n1"}
    assert a.text == "auto switch n1"


def test_root_cause_covers_every_switch_behind_it() -> None:
    states = up(city()) | {"n1": SwitchView("down", 900.0, "n1")}
    states |= {"agg-s": SwitchView("down", 900.0, "agg-s")}
    states |= {"s1": SwitchView("unreachable", 900.0, "agg-s")}
    result = run(states)
    ids = {a.id: a.targets for a in result.active}
    assert ids == {"auto-switch-n1": ("n1",), "auto-switch-agg-s": ("agg-s", "s1")}


def test_half_a_district_down_is_one_district_announcement() -> None:
    states = up(city()) | {"agg-n": SwitchView("down", 900.0, "agg-n")}
    states |= {f"n{i}": SwitchView("unreachable", 900.0, "agg-n") for i in range(1, 5)}
    result = run(states)
    [a] = result.active
    assert (a.id, a.scope, a.targets) == ("auto-district-north", Scope.DISTRICT, ("north",))
    assert {s for s, i in result.by_switch.items() if i == a.id} == {
        "agg-n",
        "n1",
        "n2",
        "n3",
        "n4",
    }


def test_a_few_switches_by_count_but_most_subscribers_is_a_district_outage() -> None:
    t = city()
    t.subscribers = {"n1": 900, "n2": 10, "n3": 10, "n4": 10, "agg-n": 0}
    states = up(t) | {"n1": SwitchView("down", 900.0, "n1")}
    [a] = run(states, t=t).active
    assert a.scope is Scope.DISTRICT


def test_core_router_dies_is_one_announcement_for_everyone() -> None:
    t = city()
    states = {s: SwitchView("unreachable", 900.0, "core") for s in t.district_of}
    states["core"] = SwitchView("down", 900.0, "core")
    result = run(states)
    [a] = result.active
    assert (a.scope, a.id) == (Scope.GLOBAL, "auto-global")
    assert result.everyone == "auto-global"
    assert set(result.by_switch.values()) == {"auto-global"}


def test_flapping_root_is_an_outage() -> None:
    states = up(city()) | {"n2": SwitchView("flapping", 900.0, "n2")}
    assert [a.id for a in run(states).active] == ["auto-switch-n2"]


def test_staff_override_automatic_in_their_scope() -> None:
    states = up(city()) | {
        "n1": SwitchView("down", 900.0, "n1"),
        "s1": SwitchView("down", 900.0, "s1"),
    }
    north = staff("staff-north", Scope.DISTRICT, ("north",), 950.0)
    result = run(states, staff=[north])
    assert result.by_switch["n1"] == "staff-north"
    assert result.by_switch["n2"] == "staff-north", "staff reach the whole district"
    assert result.by_switch["s1"] == "auto-switch-s1", "not outside its scope"


def test_most_specific_staff_announcement_wins_then_the_newest() -> None:
    everyone = staff("staff-all", Scope.GLOBAL, (), 990.0)
    north = staff("staff-north", Scope.DISTRICT, ("north",), 900.0)
    n1 = staff("staff-n1", Scope.SWITCH, ("n1",), 800.0)
    newer_north = staff("staff-north-2", Scope.DISTRICT, ("north",), 950.0)
    result = run(up(city()), staff=[everyone, north, n1, newer_north])
    assert result.by_switch["n1"] == "staff-n1"
    assert result.by_switch["n2"] == "staff-north-2"
    assert result.by_switch["s1"] == "staff-all"
    assert result.everyone == "staff-all"


def test_expired_staff_announcement_is_gone() -> None:
    old = staff("staff-old", Scope.GLOBAL, (), 0.0)  # expired at 3600
    assert run(up(city()), staff=[old], now=3600.0).active == []
    assert [a.id for a in run(up(city()), staff=[old], now=3599.0).active] == ["staff-old"]


def test_outage_keeps_its_id_and_start_across_evaluations() -> None:
    states = up(city()) | {"n1": SwitchView("down", 900.0, "n1")}
    first = run(states, now=1000.0)
    second = run(states, previous=first.active, now=1005.0)
    assert [a.created for a in second.active] == [1000.0]
    assert second.active[0] == first.active[0], "unchanged: nothing to write again"
    later = run(states, previous=second.active, now=1061.0)
    assert later.active[0].expires == 1061.0 + RULES.auto_hold_s, "renewed past half its hold"
    assert (first.opened, second.opened, second.updated, second.closed) == (
        first.active,
        [],
        [],
        [],
    )


def test_cleared_outage_says_restored_for_a_while() -> None:
    down = up(city()) | {"n1": SwitchView("down", 900.0, "n1")}
    during = run(down, now=1000.0)
    after = run(up(city()), previous=during.active, now=1010.0)
    [r] = after.active
    assert (r.source, r.targets, r.expires) == (Source.RESTORED, ("n1",), 1010.0 + 1800)
    assert [a.id for a in after.closed] == ["auto-switch-n1"]
    later = run(up(city()), previous=after.active, now=1010.0 + 1799)
    assert [a.id for a in later.active] == [r.id]
    gone = run(up(city()), previous=later.active, now=1010.0 + 1800)
    assert gone.active == []


def test_no_restored_message_when_switched_off() -> None:
    down = up(city()) | {"n1": SwitchView("down", 900.0, "n1")}
    during = run(down, now=1000.0)
    quiet = Rules(district_share=0.5, restored_s=0, auto_hold_s=120)
    assert run(up(city()), previous=during.active, now=1010.0, rules=quiet).active == []


def test_outage_returning_outranks_its_restored_message() -> None:
    down = up(city()) | {"n1": SwitchView("down", 900.0, "n1")}
    during = run(down, now=1000.0)
    after = run(up(city()), previous=during.active, now=1010.0)
    again = run(down, previous=after.active, now=1020.0)
    assert [a.source for a in again.active] == [Source.AUTO]
    assert again.by_switch == {"n1": "auto-switch-n1"}


def test_city_wide_restoration_is_one_announcement_for_everyone() -> None:
    t = city()
    states = {s: SwitchView("unreachable", 900.0, "core") for s in t.district_of}
    states["core"] = SwitchView("down", 900.0, "core")
    during = run(states, now=1000.0)
    [back] = run(up(t), previous=during.active, now=1010.0).active
    assert (back.scope, back.targets, back.source) == (Scope.GLOBAL, (), Source.RESTORED)


def test_district_restoration_keeps_its_scope() -> None:
    down = up(city()) | {f"n{i}": SwitchView("down", 900.0, f"n{i}") for i in range(1, 5)}
    during = run(down, now=1000.0)
    [back] = run(up(city()), previous=during.active, now=1010.0).active
    assert (back.scope, back.targets) == (Scope.DISTRICT, ("north",))


def test_escalating_to_a_district_is_not_a_restoration() -> None:
    one = up(city()) | {"n1": SwitchView("down", 900.0, "n1")}
    first = run(one, now=1000.0)
    many = one | {f"n{i}": SwitchView("down", 900.0, f"n{i}") for i in range(2, 5)}
    second = run(many, previous=first.active, now=1005.0)
    assert [a.id for a in second.active] == ["auto-district-north"]


def test_planned_works_are_heard_inside_the_window_and_silence_alarms() -> None:
    window = Maintenance("w1", ("north",), 2000.0, 5000.0, "Плановые работы")
    down = up(city()) | {"agg-n": SwitchView("down", 2100.0, "agg-n")}
    down |= {f"n{i}": SwitchView("unreachable", 2100.0, "agg-n") for i in range(1, 5)}
    before = run(up(city()), maintenance=[window], now=1999.0)
    assert before.active == []
    inside = run(down, maintenance=[window], now=2200.0)
    assert [a.id for a in inside.active] == ["maintenance-w1"]
    assert inside.suppressed == ["agg-n"], "the outage it causes raises no alarm"
    assert inside.by_switch["n3"] == "maintenance-w1"
    assert inside.active[0].eta == 5000.0
    after = run(up(city()), maintenance=[window], previous=inside.active, now=5000.0)
    assert after.active == []


def test_planned_works_without_a_text_are_worded_by_the_template() -> None:
    window = Maintenance("w1", ("north",), 0.0, 5000.0)
    [a] = run(up(city()), maintenance=[window]).active
    assert a.text == "maintenance district north"


@st.composite
def situations(draw: st.DrawFn) -> tuple[dict[str, SwitchView], list[Announcement]]:
    t = city()
    states = {}
    for s in t.district_of:
        kind = draw(st.sampled_from(["up", "up", "down", "flapping", "unreachable"]))
        root = s if kind in ("down", "flapping") else draw(st.sampled_from(sorted(t.district_of)))
        states[s] = SwitchView(kind, 0.0, root if kind != "up" else None)
    notes = []
    for i in range(draw(st.integers(0, 4))):
        scope = draw(st.sampled_from(list(Scope)))
        targets: tuple[str, ...] = ()
        if scope is Scope.DISTRICT:
            targets = (draw(st.sampled_from(["north", "south", "centre"])),)
        elif scope is Scope.SWITCH:
            targets = (draw(st.sampled_from(sorted(t.district_of))),)
        notes.append(staff(f"staff-{i}", scope, targets, float(draw(st.integers(0, 999)))))
    return states, notes


@settings(max_examples=300)
@given(situations())
def test_every_caller_hears_the_best_announcement_that_covers_them(
    case: tuple[dict[str, SwitchView], list[Announcement]],
) -> None:
    states, notes = case
    t = city()
    result = run(states, staff=notes)
    active = {a.id: a for a in result.active}

    def covers(a: Announcement, switch: str) -> bool:
        if a.scope is Scope.GLOBAL:
            return True
        if a.scope is Scope.DISTRICT:
            return t.district_of[switch] in a.targets
        return switch in a.targets

    for switch in t.district_of:
        covering = [a for a in active.values() if covers(a, switch)]
        if not covering:
            assert switch not in result.by_switch
            continue
        chosen = active[result.by_switch[switch]]
        assert covers(chosen, switch)
        assert not any(other.beats(chosen) for other in covering)
    cut = {s for s, v in states.items() if v.state in ("down", "flapping")}
    cut |= {s for s, v in states.items() if v.state == "unreachable" and v.root}
    for switch in cut:
        assert switch in result.by_switch, "every cut-off caller hears something"
