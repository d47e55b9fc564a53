"""Mass outage: a district's switch states in Redis -> its callers hear the announcement.

Imports a synthetic inventory (``bench.synthetic``: by default 10,000
switches, 20 districts, 1,000,000 subscribers, so that the largest district
holds at least 50,000) into a private Redis with the real import path (not
timed), writes every switch ``up`` with ``StateStore.publish`` as the poller
does, then takes the largest district down the way the poller reports it: its
aggregation switch ``down`` (the root cause), every access switch behind it
``unreachable`` with that root, each change an event. From the moment those
states are in Redis it times ``Publisher.publish_once()`` (``tts = "espeak"``)
and a ``Lookup`` of a subscriber in the district hearing the district
announcement:

- cold: the first outage, whose prompt text espeak-ng renders and ffmpeg
  converts inside ``publish_once``;
- a new outage with the prompt already rendered (the district recovered, then
  failed again);
- steady state: ``publish_once`` again while the outage lasts;
- the running daemon: ``Publisher.run`` on its one-second beat, as
  ``announcer run`` starts it, with the states written at random moments of
  the beat.

Then the same for the whole city: both core switches down, every other switch
unreachable behind them (scenario 10), heard as one announcement for everyone.
References measured in the same run: ``publish_once`` with nothing down (the
floor: reading states and staff, writing an empty set), an HGETALL of the
state hash, and one lookup.

    python -m bench.mass_outage [--districts N] [--switches N] [--subscribers N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from redis.asyncio import Redis

from announcer.config import PromptSettings, RedisSettings, Settings
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.redisconn import connect
from announcer.states import Change, State, SwitchState
from announcer.store import StateStore
from bench import synthetic
from bench.common import PREFIX, load_average, percentile, table, verdict, workspace
from bench.inventory_import import timed_import

TARGET_S = 1.0
#: 1,000,000 subscribers over 20 districts: the largest holds at least 50,000.
DEFAULT_DISTRICTS = 20
WANTED_SUBSCRIBERS = 50_000
#: The publisher's beat as ``announcer run`` starts it (``Publisher.run``'s default).
PUBLISHER_BEAT_S = 1.0
POLL_S = 0.005
WAIT_S = 20.0
MS = 1000.0


@dataclass
class City:
    """What the benchmark needs of the synthetic inventory."""

    parent_of: dict[str, str | None]
    district_of: dict[str, str]
    names: dict[str, str]
    subscribers: Counter[str]
    """district id -> subscriber numbers"""
    caller: dict[str, str]
    """district id -> a subscriber's number there, as billing writes it"""

    def switches_in(self, district: str) -> list[str]:
        return [s for s, d in self.district_of.items() if d == district]


@dataclass
class Case:
    """One outage, measured every way."""

    label: str
    """short, for the table"""
    title: str
    roots: set[str]
    expected: str
    """the announcement id a caller must hear"""
    caller: str
    cold_publish: list[float] = field(default_factory=list)
    cold_heard: list[float] = field(default_factory=list)
    warm_publish: list[float] = field(default_factory=list)
    warm_heard: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)
    daemon: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def read_city(syn: synthetic.Synthetic, seed: int) -> City:
    parent_of: dict[str, str | None] = {}
    district_of: dict[str, str] = {}
    with syn.switches_csv.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            parent_of[row["id"]] = row["parent"] or None
            district_of[row["id"]] = row["district"]
    with syn.districts_csv.open(encoding="utf-8", newline="") as f:
        names = {row["id"]: row["name"] for row in csv.DictReader(f)}
    counts: Counter[str] = Counter()
    caller: dict[str, str] = {}
    rng = random.Random(seed)
    for national, switch in zip(syn.numbers, syn.switch_of, strict=True):
        district = district_of[syn.switch_ids[switch]]
        counts[district] += 1
        if district not in caller:
            caller[district] = synthetic.render(national, rng)
    return City(parent_of, district_of, names, counts, caller)


def states_for(city: City, roots: set[str], now: float) -> dict[str, SwitchState]:
    """Every switch's state as the poller reports it with ``roots`` dead."""
    cause: dict[str, str | None] = {}

    def root_of(switch: str) -> str | None:
        if switch not in cause:
            parent = city.parent_of[switch]
            cause[switch] = (
                switch if switch in roots else root_of(parent) if parent is not None else None
            )
        return cause[switch]

    out = {}
    for switch, parent in city.parent_of.items():
        root = root_of(switch)
        if root is None:
            out[switch] = SwitchState(State.UP, now, rtt_ms=0.4)
        elif root == switch:
            out[switch] = SwitchState(State.DOWN, now, "no echo reply within 1000 ms", switch)
        else:
            upstream = "down" if parent == root else "unreachable"
            out[switch] = SwitchState(
                State.UNREACHABLE, now, f"uplink {parent} is {upstream}", root
            )
    return out


class Bench:
    def __init__(self, client: Redis, keys: Keys, settings: Settings, city: City) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self.city = city
        self.store = StateStore(client, keys)
        self.renderer = PromptRenderer(settings.prompts, settings.announcements.language)
        self.publisher = Publisher(client, keys, settings, self.renderer)
        self.lookup = Lookup(client, keys, PhoneNormaliser(settings.phones.default_region))
        self.current: dict[str, SwitchState] = {}

    async def write_states(self, roots: set[str]) -> float:
        """Publish the states for ``roots`` dead, changes as events; when they are in Redis."""
        now = time.time()
        new = states_for(self.city, roots, now)
        changes = []
        for switch, state in new.items():
            old = self.current.get(switch)
            if old is not None and old.state is state.state:
                new[switch] = old  # unchanged: keeps its since, as the poller does
            else:
                old_state = old.state if old is not None else State.UNKNOWN
                changes.append(
                    Change(switch, old_state, state.state, state.reason, state.root_cause, now)
                )
        self.current = new
        await self.store.publish(new, changes)
        return time.perf_counter()

    async def heard(self, caller: str) -> str | None:
        return (await self.lookup(caller)).announcement

    async def publish_and_hear(self, case: Case) -> tuple[float, float, str | None]:
        """From states in Redis: seconds to publish_once, to the lookup's answer, and it."""
        started = await self.write_states(case.roots)
        await self.publisher.publish_once()
        published = time.perf_counter()
        heard = await self.heard(case.caller)
        return published - started, time.perf_counter() - started, heard

    async def recover(self) -> None:
        """Everything up again, evaluated (a 'service restored' opens; not timed)."""
        await self.write_states(set())
        await self.publisher.publish_once()

    async def measure(self, case: Case, repeats: int, trials: int, rng: random.Random) -> None:
        publish_s, heard_s, heard = await self.publish_and_hear(case)
        case.cold_publish.append(publish_s)
        case.cold_heard.append(heard_s)
        self._check(case, heard, "cold")
        for _ in range(repeats):
            start = time.perf_counter()
            await self.publisher.publish_once()
            case.steady.append(time.perf_counter() - start)
        for _ in range(repeats):
            await self.recover()
            publish_s, heard_s, heard = await self.publish_and_hear(case)
            case.warm_publish.append(publish_s)
            case.warm_heard.append(heard_s)
            self._check(case, heard, "new outage")
        await self.recover()
        await self.in_daemon(case, trials, rng)
        await self.recover()

    async def in_daemon(self, case: Case, trials: int, rng: random.Random) -> None:
        """``Publisher.run`` as ``announcer run`` runs it: woken by the poller when a
        sweep changes a state (here: by the writer of the states), else on its
        beat; states written at random moments of that beat.

        The wait is watched on the caller's switch in the active index (a cheap
        HGET every few milliseconds, so the watching does not slow the daemon
        down), then one lookup confirms what the caller hears; its time counts."""
        switch = (await self.lookup(case.caller)).switch or ""
        daemon = Publisher(self.client, self.keys, self.settings, self.renderer)
        running = asyncio.create_task(daemon.run(PUBLISHER_BEAT_S), name="publisher")

        async def indexed() -> str | None:
            found: str | None = await self.client.hget(self.keys.active_by_switch, switch)  # type: ignore[assignment]
            return found

        try:
            for trial in range(1, trials + 1):
                await self.write_states(set())
                daemon.wake()  # as the poller does when a sweep changed a state
                if not await self._until(indexed, lambda x: x != case.expected):
                    case.wrong.append(f"daemon trial {trial}: the outage never cleared")
                    continue
                await asyncio.sleep(rng.uniform(0, PUBLISHER_BEAT_S))
                started = await self.write_states(case.roots)
                daemon.wake()
                if not await self._until(indexed, lambda x: x == case.expected):
                    case.wrong.append(f"daemon trial {trial}: not active within {WAIT_S:g} s")
                    continue
                heard = await self.heard(case.caller)
                case.daemon.append(time.perf_counter() - started)
                self._check(case, heard, f"daemon trial {trial}")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    @staticmethod
    async def _until(
        read: Callable[[], Awaitable[str | None]], wanted: Callable[[str | None], bool]
    ) -> bool:
        deadline = time.perf_counter() + WAIT_S
        while time.perf_counter() < deadline:
            if wanted(await read()):
                return True
            await asyncio.sleep(POLL_S)
        return False

    def _check(self, case: Case, heard: str | None, what: str) -> None:
        if heard != case.expected:
            case.wrong.append(f"{what}: the caller heard {heard}, not {case.expected}")


async def timed(fn: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        await fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def _cells(values: Sequence[float]) -> list[str]:
    ordered = sorted(values)
    if not ordered:
        return ["0", "-", "-", "-"]
    return [
        str(len(ordered)),
        f"{statistics.median(ordered) * MS:.1f}",
        f"{percentile(ordered, 0.95) * MS:.1f}",
        f"{ordered[-1] * MS:.1f}",
    ]


def _reference(label: str, values: Sequence[float]) -> list[str]:
    return [label, *_cells(values), "", "(ref)"]


def _measured(label: str, values: Sequence[float]) -> list[str]:
    ok = bool(values) and max(values) <= TARGET_S
    return [label, *_cells(values), f"≤ {TARGET_S * MS:.0f}", verdict(ok)]


def case_rows(case: Case) -> list[list[str]]:
    return [
        [f"{case.label}:", "", "", "", "", "", ""],
        _measured("  cold: publish_once (espeak-ng renders)", case.cold_publish),
        _measured("  cold: states -> lookup hears it", case.cold_heard),
        _measured("  prompt rendered: publish_once", case.warm_publish),
        _measured("  prompt rendered: states -> lookup hears it", case.warm_heard),
        _measured("  steady state: publish_once", case.steady),
        _measured("  daemon (Publisher.run, woken): states -> heard", case.daemon),
    ]


async def bench(
    settings: Settings, city: City, district: str, repeats: int, trials: int, seed: int
) -> list[str]:
    client = connect(settings.redis)
    keys = Keys(settings.redis.prefix)
    b = Bench(client, keys, settings, city)
    rng = random.Random(seed)
    cores = {s for s, p in city.parent_of.items() if p is None}
    aggregation = next(s for s in city.switches_in(district) if city.parent_of[s] in cores)
    local = Case(
        f"district {district}",
        f"district {district} ({city.names[district]}): {aggregation} down,"
        f" {len(city.switches_in(district)) - 1:,} unreachable behind it,"
        f" {city.subscribers[district]:,} subscribers",
        {aggregation},
        f"auto-district-{district}",
        city.caller[district],
    )
    elsewhere = next(d for d in city.names if d != district)
    everyone = Case(
        "city-wide",
        f"city-wide (scenario 10): {', '.join(sorted(cores))} down,"
        f" {len(city.parent_of) - len(cores):,} unreachable behind them,"
        f" {sum(city.subscribers.values()):,} subscribers",
        cores,
        "auto-global",
        city.caller[elsewhere],
    )
    try:
        await b.write_states(set())
        first = await timed(b.publisher.publish_once, 1)
        floor = await timed(b.publisher.publish_once, repeats)
        hgetall = await timed(lambda: client.hgetall(keys.state), repeats)
        parsed = await timed(b.store.states, repeats)
        lookups = await timed(lambda: b.heard(local.caller), repeats)
        for case in (local, everyone):
            print(f"measuring: {case.title} ...", flush=True)
            await b.measure(case, repeats, trials, rng)
        # after the city-wide outage: everyone hears 'service restored' for restored_s
        restored: dict[str, str] = await client.hgetall(keys.active)  # type: ignore[assignment]
        after = await timed(lambda: b.heard(everyone.caller), repeats)
    finally:
        async for key in client.scan_iter(f"{PREFIX}:*"):
            await client.unlink(key)
        await client.aclose()

    rows = [
        _reference(f"HGETALL state hash ({len(city.parent_of):,} fields)", hgetall),
        _reference("StateStore.states(): HGETALL + JSON", parsed),
        _reference("publish_once, nothing down, 1st call", first),
        _reference("publish_once, nothing down (floor)", floor),
        _reference("one lookup", lookups),
        *case_rows(local),
        *case_rows(everyone),
        _reference("one lookup, hearing 'restored' afterwards", after),
    ]
    out = [
        "",
        *(c.title for c in (local, everyone)),
        "",
        *table(rows, ["", "n", "p50 ms", "p95 ms", "max ms", "target", "verdict"]),
        "",
        "1st call: a new Publisher loads the topology (switches, districts, subscriber"
        " counts); cold: the prompt text is rendered for the first time; prompt rendered:"
        " the outage cleared and came back; steady state: evaluated again while it lasts",
        "verdicts judge the slowest run; in the daemon the poller wakes the publisher when a"
        f" sweep changed a state (its {PUBLISHER_BEAT_S:g}-s beat is for expiries)",
        "active at the end: "
        + ", ".join(f"{i} ({len(v.encode()):,} bytes of JSON)" for i, v in restored.items())
        + "; every lookup hearing it reads and parses that record",
    ]
    for case in (local, everyone):
        out += [f"!! {case.label}: {w}" for w in case.wrong]
    ok = all(
        not c.wrong and max(c.cold_heard + c.warm_heard + c.daemon, default=math.inf) <= TARGET_S
        for c in (local, everyone)
    )
    out.append(
        f"\ntarget: states in Redis -> active set in Redis (and heard) <= {TARGET_S:g} s,"
        f" every case above: {verdict(ok)}"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mass_outage", description=__doc__.split("\n\n")[0]
    )
    synthetic.add_size_arguments(parser)
    parser.set_defaults(districts=DEFAULT_DISTRICTS)
    parser.add_argument("--repeats", type=int, default=10, help="runs of each direct timing")
    parser.add_argument("--trials", type=int, default=10, help="outages in the running daemon")
    args = parser.parse_args(argv)
    problem = synthetic.check_sizes(args.districts, args.switches, args.subscribers)
    if problem:
        parser.error(problem)
    if args.repeats < 1 or args.trials < 1 or args.subscribers < 1:
        parser.error("--repeats, --trials and --subscribers must be at least 1")

    with ExitStack() as stack:
        url, folder = workspace(stack, None)
        settings = Settings(
            redis=RedisSettings(url=url, prefix=PREFIX),
            prompts=PromptSettings(
                sounds_dir=folder / "sounds", cache_dir=folder / "tts", tts="espeak"
            ),
        )
        syn = synthetic.generate(
            folder / "csv", args.districts, args.switches, args.subscribers, args.seed
        )
        city = read_city(syn, args.seed)
        syn.numbers.clear()
        syn.switch_of.clear()
        gc.collect()
        run = asyncio.run(timed_import(settings, Keys(PREFIX), syn, dry_run=False))
        if not run.ok or run.rejected:
            print(f"the import failed: {run.refused} {run.first_errors}", file=sys.stderr)
            return 1
        district, held = city.subscribers.most_common(1)[0]
        print(
            f"setup:   {len(city.names):,} districts, {len(city.parent_of):,} switches,"
            f" {sum(city.subscribers.values()):,} subscribers, imported in {run.wall_s:.1f} s"
            f" (not timed); the largest district {district} holds {held:,} subscribers"
            f" on {len(city.switches_in(district)):,} switches; tts espeak;"
            f" {args.repeats} runs per direct timing, {args.trials} daemon trials per case\n",
            flush=True,
        )
        if held < WANTED_SUBSCRIBERS:
            print(f"!! the largest district holds fewer than {WANTED_SUBSCRIBERS:,} subscribers")
        for line in asyncio.run(
            bench(settings, city, district, args.repeats, args.trials, args.seed)
        ):
            print(line)
    print(f"load average {load_average()} at the end (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
