"""announcer report: callers who heard each announcement, and how each outage went.

The rules are tested on stream entries written here (no Redis); the command
on what the real poller, publisher, FastAGI server and heard log recorded
in a real Redis.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.announce_store import AnnouncementStore
from announcer.cli import main
from announcer.cli.report import span
from announcer.config import IcmpSettings, PromptSettings, Settings
from announcer.demo import firewall as netfilter
from announcer.heard import HeardLog
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.pbx.agi import AgiServer
from announcer.phones import PhoneNormaliser
from announcer.poller import Poller
from announcer.probes.icmp import IcmpProbe
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.report import Entry, Kept, Report, build, parse_moment
from announcer.staff import StaffRequest
from announcer.states import Change, State, SwitchState
from announcer.store import StateStore
from tests.conftest import InventoryFiles, announce
from tests.pbx.test_agi import agi_call, settled

T0 = 1_764_496_200.0
DISTRICT_OF = {"core": "north", "n1": "north", "n2": "north", "s1": "south"}
NAMES = {"north": "Северный", "south": "Южный"}


def state(at: float, switch: str, old: str, new: str, silent_since: float | None = None) -> Entry:
    """A kind=state event as StateStore writes it, declared at ``at``."""
    root = switch if new in ("down", "flapping") else ""
    fields = {"kind": "state", "switch": switch, "old": old, "new": new, "root": root}
    fields |= {"at": f"{at:.3f}", "silent_since": "" if silent_since is None else f"{silent_since}"}
    return Entry(at, fields)


def announcement(at: float, action: str, ident: str, scope: str, targets: str = "") -> Entry:
    source = ident.split("-", maxsplit=1)[0]
    fields = {"kind": "announcement", "action": action, "id": ident, "scope": scope}
    return Entry(at, fields | {"source": source, "targets": targets, "at": f"{at:.3f}"})


def heard(at: float, ident: str, phone: str, district: str = "north") -> Entry:
    fields = {"announcement": ident, "phone": phone, "caller": phone, "scope": "district"}
    return Entry(at, fields | {"switch": "n1", "district": district})


NORTH_OUTAGE = [
    state(T0 - 100, "n1", "unknown", "up"),
    state(T0 + 15, "n1", "up", "down", silent_since=T0 + 5),
    announcement(T0 + 16, "opened", "auto-district-north", "district", "north"),
    state(T0 + 300, "n1", "down", "up"),
    announcement(T0 + 301, "closed", "auto-district-north", "district", "north"),
    announcement(T0 + 301, "opened", "restored-auto-district-north", "district", "north"),
]
THREE_CALLS = [
    heard(T0 + 20, "auto-district-north", "+79161234567"),
    heard(T0 + 30, "auto-district-north", "+79161234567"),
    heard(T0 + 40, "auto-district-north", "+79160000002"),
]


def report(
    events: list[Entry], calls: list[Entry], since: float = T0 - 3600, until: float = T0 + 3600
) -> Report:
    return build(events, calls, since, until, DISTRICT_OF, NAMES)


# the rules, without Redis ------------------------------------------------------------


def test_an_outage_from_its_first_miss_to_its_end() -> None:
    made = report(NORTH_OUTAGE, THREE_CALLS)
    outage, restored = made.announcements
    assert (outage.id, outage.source, outage.districts) == (
        "auto-district-north",
        "auto",
        ["north"],
    )
    assert (outage.calls, outage.numbers, outage.first_heard) == (3, 2, T0 + 20)
    assert (outage.outage_start, outage.declared_down, outage.detection_s) == (T0 + 5, T0 + 15, 10)
    assert (outage.published, outage.cleared, outage.closed) == (T0 + 16, T0 + 300, T0 + 301)
    assert outage.duration_s == 295
    assert outage.roots == ["n1"]
    assert (restored.source, restored.calls, restored.outage_start) == ("restored", 0, None)
    [north] = made.districts
    assert (north.name, north.calls, north.numbers, north.announcements, north.outages) == (
        "Северный", 3, 2, 1, 1,
    )  # fmt: skip
    assert (made.calls, made.numbers, made.notes) == (3, 2, [])


def test_an_id_that_comes_back_is_a_new_outage_with_its_own_callers() -> None:
    second = [
        state(T0 + 1000, "n1", "up", "down", silent_since=T0 + 990),
        announcement(T0 + 1001, "opened", "auto-district-north", "district", "north"),
    ]
    calls = [*THREE_CALLS, heard(T0 + 1010, "auto-district-north", "+79160000009")]
    first, _, again = report(NORTH_OUTAGE + second, calls).announcements
    assert (first.calls, first.numbers, first.duration_s) == (3, 2, 295)
    assert (again.calls, again.numbers, again.detection_s) == (1, 1, 10)
    assert (again.cleared, again.closed, again.duration_s) == (None, None, None), "still on"


def test_the_root_behind_unreachable_switches_is_the_outage() -> None:
    """core dies: n1 and s1 behind it are unreachable; the outage is core's."""
    events = [
        state(T0, "core", "up", "down", silent_since=T0 - 12),
        Entry(T0, {"kind": "state", "switch": "n1", "old": "up", "new": "unreachable",
                   "root": "core", "at": f"{T0}", "silent_since": f"{T0 - 11}"}),
        announcement(T0 + 1, "opened", "auto-global", "global"),
        state(T0 + 60, "core", "down", "up"),
        announcement(T0 + 61, "closed", "auto-global", "global"),
    ]  # fmt: skip
    [outage] = report(events, []).announcements
    assert (outage.roots, outage.detection_s, outage.duration_s) == (["core"], 12, 72)
    assert outage.districts == ["north", "south"]


def test_the_period_bounds_the_announcements_and_the_calls() -> None:
    calls = [*THREE_CALLS, heard(T0 + 400, "staff-1a2b3c", "+79260000001", "south")]
    events = [*NORTH_OUTAGE, announcement(T0 + 350, "opened", "staff-1a2b3c", "global")]
    later = report(events, calls, since=T0 + 302)
    assert [(a.id, a.calls) for a in later.announcements] == [
        ("restored-auto-district-north", 0),
        ("staff-1a2b3c", 1),
    ], "the outage ended before the period"
    assert [(d.district, d.calls, d.outages) for d in later.districts] == [("south", 1, 0)]
    middle = report(events, calls, since=T0 + 25, until=T0 + 302)
    assert [(a.id, a.calls) for a in middle.announcements] == [
        ("auto-district-north", 2),
        ("restored-auto-district-north", 0),
    ]
    assert report([], [], since=T0, until=T0 + 60).empty


def test_calls_whose_announcement_opened_before_the_records_still_count() -> None:
    made = build(
        [], THREE_CALLS, T0, T0 + 60, DISTRICT_OF, NAMES, heard_kept=Kept(T0 - 100, True, 5)
    )
    [row] = made.announcements
    assert (row.id, row.source, row.published, row.calls) == (
        "auto-district-north",
        "auto",
        None,
        3,
    )
    assert made.notes == []
    earlier = build([], THREE_CALLS, T0 - 60, T0 + 60, DISTRICT_OF, NAMES, Kept(T0, True, 100_000))
    assert len(earlier.notes) == 1
    assert "oldest event still kept" in earlier.notes[0]
    assert "about the last 100,000 are kept" in earlier.notes[0]
    untrimmed = build([], [], T0 - 60, T0 + 60, DISTRICT_OF, NAMES, Kept(T0, False, 100_000))
    assert untrimmed.notes == [], "nothing was dropped: the records simply start later"


@pytest.mark.parametrize(
    ("text", "seconds_ago"),
    [("30m", 1800), ("12h", 43_200), ("7d", 604_800), ("2w", 1_209_600), ("1.5h", 5400)],
)
def test_since_as_a_span(text: str, seconds_ago: float) -> None:
    assert parse_moment(text, T0) == T0 - seconds_ago


def test_since_as_a_date() -> None:
    midnight = datetime(2025, 11, 30).astimezone().timestamp()
    assert parse_moment("2025-11-30", T0) == midnight
    assert parse_moment("2025-11-30 14:00", T0) == midnight + 14 * 3600
    assert parse_moment("2025-11-30T14:00:00+00:00", T0) == 1_764_511_200
    problem = parse_moment("yesterday", T0)
    assert isinstance(problem, str)
    assert "write it like 30m, 12h, 7d, 2025-11-30" in problem


def test_durations_read_as_staff_say_them() -> None:
    assert [span(s) for s in (2.46, 10, 252, 3900, 90_000)] == [
        "2.5 s", "10 s", "4 min 12 s", "1 h 5 min", "1 d 1 h",
    ]  # fmt: skip


# the command, on what the real parts recorded ------------------------------------------

SWITCHES = (
    ("core", "127.79.0.1", "north", ""),
    ("n1", "127.79.0.2", "north", "core"),
    ("s1", "127.79.0.3", "south", "core"),
)
SUBSCRIBERS = (("89161234567", "n1"), ("+79160000002", "n1"), ("+79260000001", "s1"))
#: Three calls from the two numbers on n1: the first number in two forms.
NORTH_CALLS = ("89161234567", "+7 916 123-45-67", "+79160000002")


class Cli:
    """``announcer report`` in this process, on the test's Redis and prefix."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, ["--config", str(self.config), "report", *args])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(settings: Settings, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    config = tmp_path / "announcer.toml"
    config.write_text(f'[redis]\nurl = "{settings.redis.url}"\nprefix = "{keys.prefix}"\n')
    return Cli(config, capsys)


@pytest.fixture
async def city(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> Settings:
    files.write(switches=SWITCHES, subscribers=SUBSCRIBERS)
    assert (await files.load_into(settings, redis, keys)).ok
    return settings


def publisher(settings: Settings, redis: Redis, keys: Keys, tmp_path: Path) -> Publisher:
    prompts = PromptSettings(
        sounds_dir=tmp_path / "sounds", cache_dir=tmp_path / "cache", tts="espeak"
    )
    renderer = PromptRenderer(prompts, settings.announcements.language)
    return Publisher(redis, keys, settings, renderer)


def table_row(table: str, ident: str) -> list[str]:
    """The cells of the table's line for ``ident`` (every cell filled)."""
    [line] = [line for line in table.splitlines() if f"  {ident}  " in line]
    return re.split(r"\s{2,}", line.strip())


async def drive_outage(
    settings: Settings, redis: Redis, keys: Keys, tmp_path: Path, firewall: netfilter.Firewall
) -> tuple[float, float, float]:
    """n1 stops answering real pings: the poller declares it down at the
    third miss, the publisher opens the north announcement, three calls from
    two numbers hear it over FastAGI, n1 answers again and it closes. The
    poller's clock runs from ten minutes ago; its first miss, when it was
    declared down and when it was declared up again, by that clock."""
    fast = settings.model_copy(
        update={"icmp": IcmpSettings(timeout_ms=300, rate_pps=100_000, interval_s=1)}
    )
    clock = [time.time() - 600]
    probe = IcmpProbe(fast.icmp)
    poller = Poller(redis, keys, fast, {"icmp": probe}, clock=lambda: clock[0])
    speaker = publisher(settings, redis, keys, tmp_path)
    lookup = Lookup(redis, keys, PhoneNormaliser("RU"))
    agi = AgiServer(lookup, port=0, record=HeardLog(redis, keys).record)
    await agi.start()
    serving = asyncio.create_task(agi.run())
    try:
        first_miss = clock[0] + 5
        for step in range(4):  # every 5 s by the poller's clock: up, then three misses
            await poller.sweep()
            if step == 0:
                firewall.drop_echo_requests(["127.79.0.2"])
            clock[0] += 5
        declared = clock[0] - 5
        assert (await StateStore(redis, keys).states())["n1"]["state"] == "down"
        await speaker.publish_once()
        for caller in NORTH_CALLS:
            assert (await agi_call(agi.port, caller)).heard[1] == "auto-district-north"
        assert (await agi_call(agi.port, "+79260000001")).heard == ("", "", "")
        await settled(agi)
        firewall.remove()
        clock[0] = time.time()
        await poller.sweep()
        clock[0] += 1
        await poller.sweep()  # the second answer: up
        await speaker.publish_once()
        return first_miss, declared, clock[0]
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await probe.close()


async def test_a_real_outage_reported(
    city: Settings,
    redis: Redis,
    keys: Keys,
    tmp_path: Path,
    firewall: netfilter.Firewall,
    cli: Cli,
) -> None:
    first_miss, declared, cleared = await drive_outage(city, redis, keys, tmp_path, firewall)
    code, out, err = await cli("--json")
    assert code == 0, err
    data = json.loads(out)
    outage = next(a for a in data["announcements"] if a["id"] == "auto-district-north")
    assert (outage["calls"], outage["numbers"], outage["root_switches"]) == (3, 2, ["n1"])
    assert outage["outage_start"] == pytest.approx(first_miss, abs=0.001)
    assert outage["detection_s"] == pytest.approx(declared - first_miss, abs=0.002)
    assert outage["detection_s"] == pytest.approx(10, abs=0.002)
    assert outage["cleared"] == pytest.approx(cleared, abs=0.001)
    assert outage["duration_s"] == pytest.approx(cleared - first_miss, abs=0.002)
    assert outage["published"] <= outage["first_heard"] <= outage["ended"]
    [north] = [d for d in data["districts"] if d["district"] == "north"]
    assert (north["name"], north["calls"], north["numbers"], north["outages"]) == (
        "Северный", 3, 2, 1,
    )  # fmt: skip
    assert (data["calls"], data["numbers"]) == (3, 2)

    code, table, _ = await cli()
    assert code == 0
    cells = table_row(table, "auto-district-north")
    assert cells[1:6] == ["auto-district-north", "automatic", "Северный", "3", "2"]
    assert cells[8] == "10 s"
    assert cells[10] == span(outage["duration_s"])
    assert "3 calls from 2 numbers heard an announcement" in table

    code, out, _ = await cli("--csv")
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(out))}
    row = rows["auto-district-north"]
    assert (row["calls"], row["numbers"], row["root_switches"]) == ("3", "2", "n1")
    assert float(row["detection_s"]) == outage["detection_s"]
    assert float(row["duration_s"]) == outage["duration_s"]
    assert datetime.fromisoformat(row["outage_start"]).timestamp() == int(first_miss)
    code, out, _ = await cli("--csv", "districts")
    districts = {r["district"]: r for r in csv.DictReader(io.StringIO(out))}
    assert (districts["north"]["calls"], districts["north"]["numbers"]) == ("3", "2")


async def outage_recorded(settings: Settings, redis: Redis, keys: Keys, tmp_path: Path) -> float:
    """n1 down (its first miss 10 s before), announced, heard three times,
    then up: recorded through the state store, publisher and heard log; the
    first miss."""
    store = StateStore(redis, keys)
    speaker = publisher(settings, redis, keys, tmp_path)
    log = HeardLog(redis, keys)
    lookup = Lookup(redis, keys, PhoneNormaliser("RU"))
    now = time.time()
    up = {s: SwitchState(State.UP, now - 100) for s in ("core", "n1", "s1")}
    await store.publish(up)
    down = SwitchState(State.DOWN, now, "no echo reply within 1000 ms", "n1")
    change = Change("n1", State.UP, State.DOWN, down.reason, "n1", now, silent_since=now - 10)
    await store.publish(up | {"n1": down}, [change])
    await speaker.publish_once()
    for caller in NORTH_CALLS:
        await log.record(await lookup(caller), caller)
    back = Change("n1", State.DOWN, State.UP, "", None, time.time())
    await store.publish(up, [back])
    await speaker.publish_once()
    return now - 10


async def test_json_csv_and_table_agree(
    city: Settings, redis: Redis, keys: Keys, tmp_path: Path, cli: Cli
) -> None:
    await outage_recorded(city, redis, keys, tmp_path)
    _, out, _ = await cli("--json", "--since", "30m")
    data = json.loads(out)
    _, table, _ = await cli("--since", "30m")
    _, text, _ = await cli("--csv", "--since", "30m")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in rows] == [a["id"] for a in data["announcements"]]
    for a, r in zip(data["announcements"], rows, strict=True):
        assert (int(r["calls"]), int(r["numbers"])) == (a["calls"], a["numbers"])
        assert f"  {a['id']}  " in table
    outage = table_row(table, "auto-district-north")
    assert outage[4:6] == ["3", "2"]
    assert outage[8] == "10 s"
    assert data["announcements"][0]["detection_s"] == 10


async def test_since_and_until_divide_the_records(
    city: Settings, redis: Redis, keys: Keys, tmp_path: Path, cli: Cli
) -> None:
    everyone = StaffRequest(everyone=True, text="Авария", audio="/var/lib/announcer/sounds/a")
    first = await announce(redis, keys, city, everyone)
    await HeardLog(redis, keys).record(
        await Lookup(redis, keys, PhoneNormaliser("RU"))("+79260000001"), "+79260000001"
    )
    await AnnouncementStore(redis, keys).remove_staff([first])
    await Publisher(redis, keys, city, None).publish_once()
    await asyncio.sleep(0.01)
    middle = datetime.now().astimezone().isoformat()
    await asyncio.sleep(0.01)
    await outage_recorded(city, redis, keys, tmp_path)

    async def ids(*period: str) -> dict[str, int]:
        code, out, err = await cli("--json", *period)
        assert code == 0, err
        return {a["id"]: a["calls"] for a in json.loads(out)["announcements"]}

    assert await ids() == {
        first: 1,
        "auto-district-north": 3,
        "restored-auto-district-north": 0,
    }
    assert await ids("--since", middle) == {
        "auto-district-north": 3,
        "restored-auto-district-north": 0,
    }, "the staff announcement ended before"
    assert await ids("--until", middle) == {first: 1}


async def test_an_empty_period_says_so(redis: Redis, keys: Keys, cli: Cli) -> None:
    code, out, _ = await cli()
    assert code == 0
    assert "Nothing to report for this period" in out
    code, out, _ = await cli("--json")
    assert (json.loads(out)["announcements"], json.loads(out)["calls"]) == ([], 0)


async def test_a_bad_period_is_a_clear_error(cli: Cli) -> None:
    code, out, err = await cli("--since", "yesterday")
    assert (code, out) == (1, "")
    assert "--since: 'yesterday' is neither a time span nor a date" in err
    assert "write it like 30m, 12h, 7d" in err
    code, _, err = await cli("--since", "1h", "--until", "2h")
    assert code == 1
    assert "give an earlier --since or a later --until" in err


async def test_the_report_says_when_older_calls_were_dropped(
    city: Settings, redis: Redis, keys: Keys, cli: Cli
) -> None:
    """A small cap, so that Redis trims: the report names the oldest call kept."""
    log = HeardLog(redis, keys, maxlen=5)
    answer = await Lookup(redis, keys, PhoneNormaliser("RU"))("+79260000001")
    for _ in range(250):
        await log.record(answer, "+79260000001")
    code, out, _ = await cli("--since", "7d")
    assert code == 0
    assert "The period starts before the oldest call still kept, at " in out
    assert "earlier calls are not counted" in out
