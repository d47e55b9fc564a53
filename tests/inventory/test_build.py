"""Row checks and assembly, without any server: every kind of bad row."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from announcer.inventory.build import Outcome, build
from announcer.inventory.model import Row, Table
from announcer.phones import PhoneNormaliser

DISTRICTS = [("north", "Северный"), ("south", "Южный")]
SWITCHES = [
    ("core", "127.0.0.10", "north", ""),
    ("n1", "127.0.0.11", "north", "core"),
    ("s1", "127.0.0.12", "south", "core"),
]
SUBSCRIBERS = [("8 (916) 123-45-67", "n1"), ("+7 926 000-00-01", "s1")]


def table(kind: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    return Table(
        kind=kind,
        source=f"{kind}.csv",
        rows=iter([Row(i + 2, dict(zip(header, r, strict=True))) for i, r in enumerate(rows)]),
    )


def run(
    districts: Sequence[Sequence[str]] = DISTRICTS,
    switches: Sequence[Sequence[str]] = SWITCHES,
    subscribers: Sequence[Sequence[str]] = SUBSCRIBERS,
    switch_header: Sequence[str] = ("id", "address", "district", "parent"),
    subscriber_header: Sequence[str] = ("phone", "switch"),
) -> Outcome:
    return build(
        table("districts", ("id", "name"), districts),
        table("switches", switch_header, switches),
        table("subscribers", subscriber_header, subscribers),
        PhoneNormaliser("RU"),
    )


def errors(outcome: Outcome) -> list[str]:
    return [str(e) for e in outcome.errors]


def test_good_inventory_is_assembled() -> None:
    out = run()
    assert out.errors == []
    assert set(out.inventory.districts) == {"north", "south"}
    assert out.inventory.switches["n1"].parent == "core"
    assert out.inventory.switches["core"].parent is None
    assert out.inventory.phones == {"79161234567": "n1", "79260000001": "s1"}
    assert out.totals == {"districts": 2, "switches": 3, "subscribers": 2}


def test_duplicate_district_keeps_the_first() -> None:
    out = run(districts=[*DISTRICTS, ("north", "Другой")])
    assert errors(out) == [
        "districts.csv, line 4: duplicate district id 'north', first on districts.csv, line 2"
    ]
    assert out.inventory.districts["north"].name == "Северный"


def test_district_without_a_name_is_rejected() -> None:
    out = run(districts=[*DISTRICTS, ("east", "")])
    assert errors(out) == [
        "districts.csv, line 4: district 'east' has an empty name; prompts speak the name"
    ]


def test_switch_in_unknown_district_and_its_subscribers() -> None:
    switches = [*SWITCHES, ("x1", "127.0.0.13", "Северный ", "core")]
    out = run(switches=switches, subscribers=[*SUBSCRIBERS, ("89160000009", "x1")])
    assert errors(out) == [
        "switches.csv, line 5: switch 'x1': unknown district 'Северный '; add it to the"
        " districts first",
        "subscribers.csv, line 4: +79160000009: switch 'x1' was rejected (switches.csv, line 5)",
    ]
    assert "x1" not in out.inventory.switches


def test_switch_with_bad_address() -> None:
    out = run(switches=[*SWITCHES, ("x1", "10.0.0.300", "north", "")])
    assert errors(out) == [
        "switches.csv, line 5: switch 'x1': address '10.0.0.300' is not an IPv4 or IPv6 address"
    ]


def test_ipv6_address_is_fine() -> None:
    out = run(switches=[*SWITCHES, ("v6", "::1", "north", "")])
    assert out.errors == []
    assert out.inventory.switches["v6"].address == "::1"


def test_duplicate_switch_id_and_duplicate_address() -> None:
    out = run(
        switches=[
            *SWITCHES,
            ("n1", "127.0.0.20", "north", "core"),
            ("n2", "127.0.0.11", "north", "core"),
        ]
    )
    assert errors(out) == [
        "switches.csv, line 5: duplicate switch id 'n1', first on switches.csv, line 3",
        "switches.csv, line 6: switch 'n2': address 127.0.0.11 already belongs to switch 'n1'"
        " (switches.csv, line 3)",
    ]


def test_unknown_parent() -> None:
    out = run(switches=[*SWITCHES, ("x1", "127.0.0.13", "north", "agg-9")])
    assert errors(out) == [
        "switches.csv, line 5: switch 'x1': parent switch 'agg-9' is not in the switch list"
    ]


def test_parent_cycle_rejects_the_cycle_and_what_hangs_below_it() -> None:
    switches = [
        *SWITCHES,
        ("a", "127.0.0.21", "north", "b"),
        ("b", "127.0.0.22", "north", "c"),
        ("c", "127.0.0.23", "north", "a"),
        ("leaf", "127.0.0.24", "north", "c"),
    ]
    out = run(switches=switches)
    got = errors(out)
    assert len(got) == 4
    assert got[0].startswith("switches.csv, line 5: switch 'a': parent cycle: ")
    assert {"a", "b", "c"} <= set(got[0].split("parent cycle: ")[1].split(" -> "))
    assert got[3] == "switches.csv, line 8: switch 'leaf': behind rejected switch 'c'"
    assert set(out.inventory.switches) == {"core", "n1", "s1"}


def test_switch_that_is_its_own_parent() -> None:
    out = run(switches=[*SWITCHES, ("x", "127.0.0.21", "north", "x")])
    assert errors(out) == ["switches.csv, line 5: switch 'x': parent cycle: x -> x"]


def test_rejected_parent_takes_its_whole_subtree_with_it() -> None:
    switches = [
        ("agg", "127.0.0.30", "nowhere", ""),
        ("acc1", "127.0.0.31", "north", "agg"),
        ("acc2", "127.0.0.32", "north", "acc1"),
        ("ok", "127.0.0.33", "north", ""),
    ]
    out = run(switches=switches, subscribers=[("89160000001", "acc2"), ("89160000002", "ok")])
    assert errors(out) == [
        "switches.csv, line 2: switch 'agg': unknown district 'nowhere'; add it to the"
        " districts first",
        "switches.csv, line 3: switch 'acc1': parent switch 'agg' was rejected"
        " (switches.csv, line 2)",
        "switches.csv, line 4: switch 'acc2': behind rejected switch 'acc1'",
        "subscribers.csv, line 2: +79160000001: switch 'acc2' was rejected (switches.csv, line 4)",
    ]
    assert out.inventory.phones == {"79160000002": "ok"}


def test_deep_chain_resolves() -> None:
    chain = [("sw0", "127.0.1.0", "north", "")]
    chain += [(f"sw{i}", f"127.0.1.{i}", "north", f"sw{i - 1}") for i in range(1, 200)]
    out = run(switches=chain, subscribers=[("89160000001", "sw199")])
    assert out.errors == []
    assert len(out.inventory.switches) == 200


def test_probe_and_uplink_columns() -> None:
    header = ("id", "address", "district", "parent", "probe", "uplink_ports", "snmp_profile")
    switches = [
        ("a", "127.0.0.2", "north", "", "snmp", "25 26", "v3-noc"),
        ("b", "127.0.0.3", "north", "a", "", "", ""),
        ("c", "127.0.0.4", "north", "a", "ping", "", ""),
        ("d", "127.0.0.5", "north", "a", "icmp", "uplink", ""),
    ]
    out = run(switches=switches, subscribers=[], switch_header=header)
    assert out.inventory.switches["a"].probe == "snmp"
    assert out.inventory.switches["a"].uplink_ports == (25, 26)
    assert out.inventory.switches["a"].snmp_profile == "v3-noc"
    assert out.inventory.switches["b"].probe == "icmp"
    assert errors(out) == [
        "switches.csv, line 4: switch 'c': probe 'ping' is not one of icmp, snmp, icmp+snmp",
        "switches.csv, line 5: switch 'd': uplink_ports must be interface numbers (ifIndex)"
        " like '25 26'",
    ]


def test_unparsable_numbers_and_unknown_switch() -> None:
    subscribers = [*SUBSCRIBERS, ("12-34", "n1"), ("", "n1"), ("89160000003", "zz")]
    out = run(subscribers=subscribers)
    assert errors(out) == [
        "subscribers.csv, line 4: '12-34' has the wrong number of digits for a phone number in"
        " region RU or with its country code",
        "subscribers.csv, line 5: empty phone number",
        "subscribers.csv, line 6: +79160000003: unknown switch 'zz'",
    ]


def test_same_number_in_two_formats_on_two_switches() -> None:
    out = run(subscribers=[*SUBSCRIBERS, ("+7 916 123 45 67", "s1"), ("79161234567", "n1")])
    assert errors(out) == [
        "subscribers.csv, line 4: +79161234567 ('+7 916 123 45 67'): already on switch 'n1';"
        " a number has one switch",
        "subscribers.csv, line 5: +79161234567 ('79161234567'): listed twice; a number has one"
        " switch",
    ]
    assert out.inventory.phones["79161234567"] == "n1"


def test_a_subscriber_may_have_several_numbers() -> None:
    header = ("phone", "switch", "account")
    rows = [("89161234567", "n1", "1001"), ("84951234567", "n1", "1001")]
    out = run(subscribers=rows, subscriber_header=header)
    assert out.errors == []
    assert {d.account for d in out.inventory.details.values()} == {"1001"}
    assert len(out.inventory.phones) == 2


def test_rows_that_could_not_be_split_are_counted_bad() -> None:
    rows = iter([Row(2, {"phone": "89161234567", "switch": "n1"}), Row(3, {}, "not valid utf-8")])
    out = build(
        table("districts", ("id", "name"), DISTRICTS),
        table("switches", ("id", "address", "district", "parent"), SWITCHES),
        Table("subscribers", "subscribers.csv", rows),
        PhoneNormaliser("RU"),
    )
    assert errors(out) == ["subscribers.csv, line 3: not valid utf-8"]
    assert out.bad["subscribers"] == 1
    assert out.totals["subscribers"] == 2


@pytest.mark.parametrize(("bad", "limit", "refused"), [(1, 0.05, False), (6, 0.05, True)])
def test_share_of_bad_rows_decides(bad: int, limit: float, refused: bool) -> None:
    good = [(f"8916000{i:04d}", "n1") for i in range(100 - bad)]
    broken = [("123", "n1")] * bad
    out = run(subscribers=good + broken)
    reasons = out.over_limit(limit)
    assert bool(reasons) is refused
    if refused:
        assert reasons == [
            "6 of 100 rows of subscribers.csv are bad (6.0%, more than the 5.0% allowed by"
            " [inventory] max_bad_share)"
        ]


def test_bad_share_is_per_table() -> None:
    # one bad district of three is a third of that table, though few rows overall
    out = run(districts=[*DISTRICTS, ("", "x")], subscribers=[*SUBSCRIBERS] * 1)
    assert out.over_limit(0.05)[0].startswith("1 of 3 rows of districts.csv are bad")
