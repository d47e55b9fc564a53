"""The pure parts: which events make a message, how they group, who gets
them, what the message says, and that URLs keep their secrets."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from announcer.notify import urls
from announcer.notify.messages import Context, render, when
from announcer.notify.rules import (
    Debouncer,
    Event,
    Group,
    classify,
    districts_of,
    link_event,
    resolve_districts,
    wanted_by,
)

DISTRICT_OF = {"core": "north", "n1": "north", "n2": "north", "s1": "south"}
NAMES = {"north": "Северный", "south": "Южный"}
NOW = time.time()


def announcement(action: str, ident: str, scope: str, targets: str, **more: str) -> dict[str, str]:
    source = "auto" if ident.startswith("auto-") else more.pop("source", "staff")
    fields = {"kind": "announcement", "action": action, "id": ident, "scope": scope}
    fields |= {"source": source, "targets": targets, "text": "Текст", "expires": f"{NOW + 600}"}
    fields |= {"created": f"{NOW}", "at": f"{NOW}"}
    return fields | more


def group_of(*entries: Mapping[str, str]) -> Group:
    group = Group("g", 0.0)
    for number, fields in enumerate(entries):
        event = classify(f"1-{number}", fields, DISTRICT_OF)
        assert event is not None, fields
        group.events.append(event)
    return group


def context(language: str = "en", cut_off: set[str] | None = None) -> Context:
    return Context(
        language=language,
        now=NOW,
        district_of=DISTRICT_OF,
        district_names=NAMES,
        subscribers={"n1": 10, "n2": 5, "s1": 7},
        cut_off=cut_off or set(),
        restored_s=1800,
    )


# which events, grouped how ---------------------------------------------------


def test_switch_states_are_not_notified_one_by_one() -> None:
    state = {"kind": "state", "switch": "n1", "old": "up", "new": "down", "at": "1"}
    assert classify("1-0", state, DISTRICT_OF) is None
    assert classify("1-1", {"kind": "reboot", "switch": "n1"}, DISTRICT_OF) is None


def test_the_outages_of_one_district_share_a_key() -> None:
    switch = classify("1-0", announcement("opened", "auto-switch-n1", "switch", "n1"), DISTRICT_OF)
    whole = announcement("opened", "auto-district-north", "district", "north")
    district = classify("1-1", whole, DISTRICT_OF)
    other = classify("1-2", announcement("opened", "auto-switch-s1", "switch", "s1"), DISTRICT_OF)
    assert [e.key if e else None for e in (switch, district, other)] == [
        "outage:north",
        "outage:north",
        "outage:south",
    ]


def test_staff_announcements_say_published_withdrawn_or_expired() -> None:
    opened = classify("1-0", announcement("opened", "staff-1", "district", "north"), DISTRICT_OF)
    early = announcement("closed", "staff-1", "district", "north", at=f"{NOW}")
    late = announcement("closed", "staff-1", "district", "north", at=f"{NOW + 600}")
    withdrawn = classify("1-1", early, DISTRICT_OF)
    expired = classify("1-2", late, DISTRICT_OF)
    said = [e.action if e else None for e in (opened, withdrawn, expired)]
    assert said == ["published", "withdrawn", "expired"]


def test_a_published_drop_joins_its_staff_announcement() -> None:
    drop = {"kind": "drop", "action": "published", "file": "x", "id": "staff-1", "at": "1"}
    event = classify("1-0", drop, DISTRICT_OF)
    staff = classify("1-1", announcement("opened", "staff-1", "district", "north"), DISTRICT_OF)
    assert [e.key if e else None for e in (event, staff)] == ["staff-1", "staff-1"]


@given(st.lists(st.floats(min_value=0, max_value=120, allow_nan=False), min_size=1, max_size=60))
def test_one_key_gives_at_most_one_message_per_window(moments: list[float]) -> None:
    """However the events of one outage fall, its messages are a window apart."""
    window_s = 10.0
    debouncer = Debouncer(window_s)
    flushed: list[float] = []
    for moment in sorted(moments):
        flushed += [g.due for g in debouncer.due(moment)]
        debouncer.add(link_event("AMI", up=False, reason="", at=moment), moment)
    flushed += [g.due for g in debouncer.due(10_000)]
    assert all(b - a >= window_s for a, b in itertools.pairwise(flushed))
    assert len(flushed) <= 1 + (max(moments) - min(moments)) // window_s


def test_a_debounced_group_keeps_every_event_in_order() -> None:
    debouncer = Debouncer(10)
    for at, up in ((0, False), (1, True), (2, False)):
        debouncer.add(link_event("AMI", up, "refused", at), at)
    assert debouncer.due(9.9) == []
    [group] = debouncer.due(10)
    assert [e.action for e in group.events] == ["lost", "regained", "lost"]
    assert debouncer.next_due() is None


# who gets it -----------------------------------------------------------------


def test_districts_are_chosen_by_id_or_name_in_any_case() -> None:
    found, unknown = resolve_districts(["северный", " Южный ", "Nowhere"], NAMES)
    assert found >= {"north", "south"}
    assert unknown == ["Nowhere"]


def test_what_concerns_no_district_reaches_every_subscriber() -> None:
    whole = group_of(announcement("opened", "auto-global", "global", ""))
    north = group_of(announcement("opened", "auto-switch-n1", "switch", "n1"))
    assert districts_of(whole, DISTRICT_OF) is None
    assert districts_of(north, DISTRICT_OF) == {"north"}
    assert wanted_by({"outage"}, None, (), {"south"})
    assert not wanted_by({"outage"}, {"north"}, (), {"south"})
    assert wanted_by({"outage"}, {"north"}, (), set())
    assert not wanted_by({"outage"}, {"north"}, ("drop", "link"), set())
    assert wanted_by({"staff", "drop"}, None, ("drop",), set())


# what it says ----------------------------------------------------------------


def test_an_outage_message_says_where_how_many_since_when_and_what_callers_hear() -> None:
    group = group_of(announcement("opened", "auto-district-north", "district", "north"))
    message = render(group, context("ru", cut_off={"n1", "n2"}))
    assert message is not None
    assert message.title == "Авария: район Северный"
    assert "Отключено: коммутаторов: 2, абонентских номеров: 15: n1, n2" in message.body
    assert f"Начало: {when(NOW, NOW)}" in message.body
    assert "Абоненты слышат: «Текст»" in message.body
    assert message.payload["subscriber_count"] == 15


def test_an_outage_that_grew_beyond_its_district_is_not_said_cleared() -> None:
    group = group_of(
        announcement("opened", "auto-district-north", "district", "north"),
        announcement("closed", "auto-district-north", "district", "north"),
    )
    message = render(group, context(cut_off={"n1", "n2", "s1"}))
    assert message is not None
    assert message.title == "Outage grew beyond Северный district"
    assert message.payload["action"] == "grew"
    assert "Cleared" not in message.body


def test_a_staff_announcement_names_its_author_its_end_and_its_eta() -> None:
    eta = NOW + 3600
    group = group_of(
        announcement("opened", "staff-1", "district", "north,south", author="Иванова", eta=f"{eta}")
    )
    message = render(group, context())
    assert message is not None
    assert message.title == "Staff announcement: Северный, Южный districts"
    assert "Author: Иванова" in message.body
    assert f"Expected restoration: {when(eta, NOW)}" in message.body
    assert f"Until: {when(NOW + 600, NOW)}" in message.body


def test_times_of_another_day_carry_their_date() -> None:
    assert len(when(NOW, NOW)) == len("14:02:05")
    assert when(NOW - 3 * 86_400, NOW).count("-") == 2


def test_a_group_of_restorations_alone_says_nothing() -> None:
    restored = announcement("opened", "restored-auto-switch-n1", "switch", "n1", source="restored")
    event = classify("1-0", restored, DISTRICT_OF)
    assert event is not None
    assert event.info
    group = Group("g", 0.0, [event])
    assert render(group, context()) is None


def test_an_event_with_odd_fields_still_renders() -> None:
    odd = Event("1-0", "outage", "outage:x", "opened", NOW, {"kind": "announcement", "id": "?"})
    assert render(Group("g", 0.0, [odd]), context()) is not None


# secrets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("tgram://123456789:AAbbCCddEEffGGhhIIjj/-100123", "AAbbCCddEEffGGhhIIjj"),
        ("mailtos://noc:Secr3tPassw0rd@smtp.example.net?to=noc@example.net", "Secr3tPassw0rd"),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#x", "TIiajkdnlazkcOXrIdevi7FQ"),
    ],
)
def test_apprise_urls_are_shown_and_scrubbed_without_their_secret(url: str, secret: str) -> None:
    made = urls.instantiate(url)
    assert not isinstance(made, str), made
    shown = urls.shown_apprise(made)
    assert secret not in shown
    scrub = urls.Scrubber(url, shown)
    assert secret not in scrub(f"the server said: bad token {secret}")


def test_webhooks_are_shown_without_their_path() -> None:
    assert urls.shown_webhook("https://hooks.example.net:8443/T0K3N?x=1") == (
        "https://hooks.example.net:8443/…"
    )
    assert urls.webhook_problem("ftp://example.net/x") is not None
    assert urls.webhook_problem("https:///x") is not None
    assert urls.webhook_problem("https://hooks.example.net/x") is None


def test_a_prompt_that_could_not_be_rendered_is_said_with_what_to_check() -> None:
    failed = {
        "kind": "prompt-failed",
        "id": "staff-1a2b3c",
        "reason": "espeak: cannot install the prompt: [Errno 28] No space left on device",
        "at": f"{NOW}",
    }
    group = group_of(failed)
    assert group.events[0].kind == "prompt"
    message = render(group, context("en"))
    assert message is not None
    assert message.title == "Prompt not rendered: staff-1a2b3c"
    assert "Reason: espeak: cannot install the prompt: [Errno 28] No space left" in message.body
    assert "free space and permissions" in message.body
    assert message.payload["event"] == "prompt"
    assert wanted_by(group.kinds, None, ["prompt"], {"north"})  # concerns no district
    assert not wanted_by(group.kinds, None, ["outage"], set())
