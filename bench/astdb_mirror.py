"""AstDB mirror: a district's numbers appearing at once, into a real Asterisk's AstDB.

Imports a synthetic city (``bench.synthetic``: two districts of about
``--numbers`` subscribers each) into a private Redis (unless
``--redis-url``), starts Asterisk 22 in the sandbox the dialplan tests use
(``tests/asterisk/sandbox.py``; needs root, and builds the sandbox first if
it is missing) with the shipped ``announcer-common.conf`` and
``announcer-astdb.conf`` and func_db, and runs ``Mirror`` with
``AstDbSink`` as ``announcer run`` does, at ``[ami] max_writes_per_s``
(``--rate``).

A staff announcement for one district is published the way ``announcer
announce`` does. The clock starts when ``Publisher.publish_once()`` is
called (it makes the announcement active and wakes the mirror, as in the
daemon) and stops when the mirror reports every number of the district
written, each DBPut answered by Asterisk. AstDB is then counted (``database
show``) and a random sample read back with DBGet. The announcement is
removed and the clear timed the same way, until every entry is gone. Sync
and clear run four times: at the rate limit (1) with calls placed
meanwhile and (2) with nothing else going on; with the rate limit off (the
mirror's own machinery) (3) alone and (4) with calls. Each also shows the
CPU a write costs this process and Asterisk, and how late this process's
event loop ran meanwhile (in the daemon the FastAGI server and the poller
share it).

References measured in the same run: the rate limit's floor (numbers /
rate), and what AMI itself takes: the same DBPuts sent unthrottled on one
raw AMI connection, at most ``--window`` unanswered, into a family of their
own.

The calls: one at a time, back to back (AMI Originate of a Local channel),
through a context that stamps Asterisk's clock (``STRFTIME``, to the
microsecond) around a step without AstDB (the floor), a
``${DB(announcer/<digits>)}`` read of an affected number, and the whole
shipped check ``Gosub(announcer-astdb,s,1)`` for a subscriber of the other
district (lease, number, global: three reads, nothing to play), during
(1) and (4). The same calls on the idle Asterisk, before the sync (an empty
family) and after it (the district's entries in), are the reference.

    python -m bench.astdb_mirror [--numbers N] [--rate N] [--calls N] [--window N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from redis.asyncio import Redis

from announcer.announce_store import AnnouncementStore
from announcer.announcements import Announcement
from announcer.config import AmiSettings, PromptSettings, RedisSettings, Settings
from announcer.keys import Keys
from announcer.pbx.ami import AstDbSink
from announcer.pbx.mirror import LinkStatus, Mirror, Truth, status_writer
from announcer.publisher import Publisher
from announcer.redisconn import connect
from announcer.staff import StaffRequest, publish
from bench import synthetic
from bench.common import (
    PREFIX,
    add_redis_argument,
    delete_prefix,
    load_average,
    percentile,
    sync_client,
    table,
    verdict,
    workspace,
)
from bench.inventory_import import generate_and_import
from tests.asterisk.ami import Ami
from tests.asterisk.sandbox import (
    Asterisk,
    ready_sandbox,
)

TARGET_S = 10.0
DISTRICTS = 2
#: Access switches per district: about 100 numbers on each at the default size.
ACCESS_PER_DISTRICT = 500
FAMILY = AmiSettings().family
BURST_FAMILY = f"{FAMILY}-burst"
CONTEXT = "bench-astdb"
CLOCK = "${STRFTIME(,,%s.%6q)}"
#: Entries read back with DBGet after each sync.
SAMPLE = 200
WARMUP_CALLS = 20
EXIT_CANNOT_RUN = 2
#: The event loop watcher's tick.
TICK_S = 0.001


def dialplan() -> str:
    """The shipped files, and the measuring context."""
    shipped = Path(__file__).resolve().parents[1] / "asterisk"
    files = (shipped / f"announcer-{mode}.conf" for mode in ("common", "astdb"))
    return "\n".join(f.read_text() for f in files) + (
        f"\n[{CONTEXT}]\n"
        f"exten => s,1,Set(T0={CLOCK})\n"
        " same => n,Set(NOTHING=${EPOCH})  ; a step without AstDB: the floor\n"
        f" same => n,Set(T1={CLOCK})\n"
        f" same => n,Set(ENTRY=${{DB({FAMILY}/${{AFFECTED}})}})\n"
        f" same => n,Set(T2={CLOCK})\n"
        " same => n,Gosub(announcer-astdb,s,1)  ; the caller is not affected: nothing plays\n"
        f" same => n,Set(T3={CLOCK})\n"
        " same => n,Hangup()\n"
    )


# what AMI itself takes ---------------------------------------------------------------------


def _action(fields: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"


async def _response(reader: asyncio.StreamReader) -> bytes:
    """The next ``Response:`` message, skipping events (FullyBooted comes unasked)."""
    while True:
        message = await reader.readuntil(b"\r\n\r\n")
        if message.startswith(b"Response:"):
            return message


async def raw_burst(
    asterisk: Asterisk, items: Sequence[tuple[str, str]], window: int
) -> tuple[float, int]:
    """DBPuts of ``items`` into ``BURST_FAMILY`` on one raw AMI connection,
    unthrottled, at most ``window`` unanswered: seconds from the first sent
    to the last answered, and how many were refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", asterisk.ami_port)
    try:
        await reader.readline()  # Asterisk Call Manager/...
        login = {"Action": "Login", "Username": asterisk.ami_user, "Secret": asterisk.ami_secret}
        writer.write(_action(login | {"Events": "off"}))
        if not (await _response(reader)).startswith(b"Response: Success"):
            raise RuntimeError("the raw AMI login was refused")
        answered = refused = 0
        news = asyncio.Event()

        async def read() -> None:
            nonlocal answered, refused
            while answered < len(items):
                if not (await _response(reader)).startswith(b"Response: Success"):
                    refused += 1
                answered += 1
                news.set()

        start = time.perf_counter()
        reading = asyncio.create_task(read())
        try:
            sent = 0
            while sent < len(items):
                room = window - (sent - answered)
                if room < max(1, window // 4):
                    news.clear()
                    await news.wait()
                    continue
                chunk = items[sent : sent + room]
                actions = (
                    {"Action": "DBPut", "Family": BURST_FAMILY, "Key": k, "Val": v}
                    for k, v in chunk
                )
                writer.write(b"".join(_action(a) for a in actions))
                sent += len(chunk)
                await writer.drain()
            await reading
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        return time.perf_counter() - start, refused
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# the calls ---------------------------------------------------------------------------------


@dataclass
class Probes:
    """What the calls of one phase measured, in ms of Asterisk's clock."""

    floor_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    check_ms: list[float] = field(default_factory=list)
    hits: int = 0
    """reads that found the affected number's entry"""
    wrong: list[str] = field(default_factory=list)
    unfollowed: int = 0
    """calls whose events never reached the harness (see ``Caller.place``)"""


@dataclass
class Caller:
    """Places the measuring calls: an affected number's entry is read, and
    the whole check runs for a subscriber of the other district."""

    ami: Ami
    pairs: Sequence[tuple[str, str]]
    """(an affected number's E.164 digits, an unaffected caller as billing writes it)"""
    rng: random.Random

    async def place(self, count: int | None = None, until: asyncio.Event | None = None) -> Probes:
        """One call after the other: ``count`` of them, or until ``until`` is set."""
        probes = Probes()
        placed = 0
        while (count is None or placed < count) and (until is None or not until.is_set()):
            affected, caller = self.rng.choice(self.pairs)
            call = await self.ami.originate(
                "s", CONTEXT, callerid=caller, variables={"AFFECTED": affected}
            )
            placed += 1
            if not call.events:
                # Never answered, the call's Originate fails when it hangs up;
                # under load that answer can overtake every event of the call,
                # and the harness returns before it saw any.
                probes.unfollowed += 1
                continue
            v = call.variables
            if "T3" not in v or v.get("ANNOUNCER_RESULT") != "none":
                answer = f"answered {call.answered}, reason {call.originate_reason!r}"
                probes.wrong.append(f"{caller}: {answer}; {call.summary()}")
                continue
            t0, t1, t2, t3 = (float(v[f"T{i}"]) for i in range(4))
            probes.floor_ms.append((t1 - t0) * 1e3)
            probes.read_ms.append((t2 - t1) * 1e3)
            probes.check_ms.append((t3 - t2) * 1e3)
            probes.hits += bool(v.get("ENTRY"))
        return probes


# the mirror --------------------------------------------------------------------------------


class Progress:
    """Follows the mirror's status (its ``publish_status``): notes the moment
    it holds the expected number of entries, in sync."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.write_status = status_writer(redis, keys, "astdb")  # as the daemon does
        self.target = 0
        self.reached = asyncio.Event()
        self.at = math.nan

    def expect(self, entries: int) -> None:
        self.target = entries
        self.reached.clear()

    def __call__(self, status: LinkStatus) -> None:
        self.write_status(status)
        if (
            not self.reached.is_set()
            and status.state == "up"
            and status.pending == 0
            and status.entries == self.target
        ):
            self.at = time.perf_counter()
            self.reached.set()


def cpu_s() -> float:
    """CPU seconds this process has used."""
    used = os.times()
    return used.user + used.system


def cpu_of(pid: int | None) -> float:
    """CPU seconds process ``pid`` (all its threads) has used; NaN if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def watch_stalls(into: list[float]) -> None:
    """How late each tick of the event loop comes (a busy loop delays every
    task in the daemon: the FastAGI server shares it)."""
    while True:
        start = time.perf_counter()
        await asyncio.sleep(TICK_S)
        into.append(time.perf_counter() - start - TICK_S)


@dataclass
class Span:
    """One sync or clear: from ``publish_once`` until the mirror is in sync."""

    wall_s: float = math.nan
    cpu_s: float = math.nan
    """this process: publisher, mirror (and the calls, when placed)"""
    asterisk_cpu_s: float = math.nan
    late_ms: list[float] = field(default_factory=list)
    """how late each tick of the event loop came"""
    probes: Probes | None = None
    """the calls placed meanwhile"""


@dataclass
class Cycle:
    """One announcement mirrored in, then cleared."""

    label: str
    rate: float
    sync: Span
    clear: Span
    in_astdb: int
    """entries after the sync, the lease aside (database show)"""
    sample_right: int
    after_clear: int
    idle_after: Probes | None = None
    """calls between the sync and the clear"""


class Bench:
    def __init__(
        self, redis: Redis, keys: Keys, settings: Settings, asterisk: Asterisk, district: str
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.asterisk = asterisk
        self.district = district
        asterisk.write_silence("outage", 0.2)
        self.audio = str(asterisk.host_dir / "sounds" / "outage")
        self.truth = Truth(redis, keys, settings.prompts.for_asterisk)
        self.progress = Progress(redis, keys)
        self.publisher = Publisher(redis, keys, settings, None, changed=self._wake)
        self.mirror: Mirror | None = None

    def _wake(self) -> None:
        if self.mirror is not None:
            self.mirror.wake()

    @contextlib.asynccontextmanager
    async def running(self, rate: float) -> AsyncIterator[None]:
        """The mirror's loop as ``announcer run`` runs it; yields once it is
        connected and in sync with nothing active."""
        ami = AmiSettings(
            enabled=True,
            port=self.asterisk.ami_port,
            username=self.asterisk.ami_user,
            secret=self.asterisk.ami_secret,
        )
        self.mirror = Mirror(
            AstDbSink(ami),
            self.truth,
            lease_s=self.settings.mirror.lease_s,
            max_writes_per_s=rate,
            max_backoff_s=ami.max_backoff_s,
            publish_status=self.progress,
        )
        self.progress.expect(0)
        task = asyncio.create_task(self.mirror.run())
        try:
            async with asyncio.timeout(30):
                await self.progress.reached.wait()
            yield
        finally:
            self.mirror = None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def cycle(
        self, label: str, rate: float, numbers: int, caller: Caller | None, idle_calls: int = 0
    ) -> Cycle:
        wait_s = 60 + 3 * numbers / rate
        request = StaffRequest(districts=(self.district,), text="Авария", audio=self.audio)
        made = await publish(self.redis, self.keys, self.settings, request)
        if not isinstance(made, Announcement):
            raise RuntimeError(f"the announcement was refused: {made.reason}")
        sync = await self.span(numbers, caller, wait_s)
        in_astdb = await self.count(FAMILY)
        sample_right = await self.sample_right()
        idle_after = await caller.place(count=idle_calls) if caller and idle_calls else None
        await AnnouncementStore(self.redis, self.keys).remove_staff([made.id])
        clear = await self.span(0, caller, wait_s)
        after_clear = await self.count(FAMILY)
        return Cycle(label, rate, sync, clear, in_astdb, sample_right, after_clear, idle_after)

    async def span(self, entries: int, caller: Caller | None, wait_s: float) -> Span:
        """``publish_once`` (which wakes the mirror) until the mirror holds
        ``entries``, in sync; with ``caller``, calls are placed meanwhile."""
        self.progress.expect(entries)
        stop = asyncio.Event()
        calling = asyncio.create_task(caller.place(until=stop)) if caller is not None else None
        stalls: list[float] = []
        watching = asyncio.create_task(watch_stalls(stalls))
        span = Span()
        try:
            if calling is not None:
                await asyncio.sleep(0.1)  # the calls are under way
            stalls.clear()
            pid = self.asterisk.pid
            cpu, asterisk_cpu = cpu_s(), cpu_of(pid)
            start = time.perf_counter()
            await self.publisher.publish_once()
            async with asyncio.timeout(wait_s):
                await self.progress.reached.wait()
            span.wall_s = self.progress.at - start
            span.cpu_s, span.asterisk_cpu_s = cpu_s() - cpu, cpu_of(pid) - asterisk_cpu
            span.late_ms = [late * 1e3 for late in stalls]
        finally:
            watching.cancel()
            stop.set()
            span.probes = await calling if calling is not None else None
            await asyncio.gather(watching, return_exceptions=True)
        return span

    async def count(self, family: str) -> int:
        """Entries in ``family``, the lease aside, as the Asterisk CLI counts them."""
        out = await asyncio.to_thread(self.asterisk.rx, f"database show {family}", 60.0)
        found = re.search(r"(\d+) results? found", out)
        if found is None:
            raise RuntimeError(f"database show {family}: unexpected output {out[-200:]!r}")
        return int(found.group(1)) - (f"/{family}/lease " in out)

    async def sample_right(self) -> int:
        """How many of a random sample of the wanted entries DBGet reads back right."""
        wanted = await self.truth.wanted(time.time())
        sample = random.Random(1).sample(sorted(wanted), min(SAMPLE, len(wanted)))
        async with self.asterisk.ami() as ami:
            got = [await ami.db_get(FAMILY, key) for key in sample]
        return sum(g == wanted[k] for k, g in zip(sample, got, strict=True))


# the run -----------------------------------------------------------------------------------


@dataclass
class Results:
    burst: Span
    burst_refused: int
    burst_in: int
    """entries the burst left in its family (database show)"""
    idle_before: Probes
    cycles: list[Cycle]


async def measure(
    asterisk: Asterisk,
    url: str,
    district: str,
    pairs: Sequence[tuple[str, str]],
    items: Sequence[tuple[str, str]],
    args: argparse.Namespace,
) -> Results:
    redis = connect(RedisSettings(url=url, prefix=PREFIX))
    prompts = PromptSettings(
        sounds_dir=asterisk.host_dir / "sounds",
        asterisk_sounds_dir=Path(asterisk.root) / "sounds",
    )
    settings = Settings(redis=RedisSettings(url=url, prefix=PREFIX), prompts=prompts)
    bench = Bench(redis, Keys(PREFIX), settings, asterisk, district)
    numbers = len(items)
    try:
        async with asterisk.ami() as ami:
            caller = Caller(ami, pairs, random.Random(args.seed + 2))
            await caller.place(count=WARMUP_CALLS)
            cpu, asterisk_cpu = cpu_s(), cpu_of(asterisk.pid)
            burst_s, refused = await raw_burst(asterisk, items, args.window)
            burst = Span(burst_s, cpu_s() - cpu, cpu_of(asterisk.pid) - asterisk_cpu)
            burst_in = await bench.count(BURST_FAMILY)
            await ami.action({"Action": "DBDelTree", "Family": BURST_FAMILY})
            async with bench.running(args.rate):
                idle = await caller.place(count=args.calls)
                cycles = [
                    await bench.cycle(
                        "(1) calls meanwhile", args.rate, numbers, caller, args.calls
                    ),
                    await bench.cycle("(2) nothing else", args.rate, numbers, None),
                ]
            async with bench.running(math.inf):
                cycles += [
                    await bench.cycle("(3) no rate limit", math.inf, numbers, None),
                    await bench.cycle("(4) no rate limit, calls", math.inf, numbers, caller),
                ]
    finally:
        await redis.aclose()
    return Results(burst, refused, burst_in, idle, cycles)


def _rate(rate: float) -> str:
    return "none" if math.isinf(rate) else f"{rate:,.0f}/s"


def _span_cells(span: Span, numbers: int, what: str) -> list[str]:
    return [
        f"{span.wall_s:.2f} s",
        f"{numbers / span.wall_s:,.0f} {what}/s",
        f"{span.cpu_s / numbers * 1e6:.1f}",
        f"{span.asterisk_cpu_s / numbers * 1e6:.1f}",
        f"{percentile(sorted(span.late_ms), 0.99):.1f} / {max(span.late_ms):.1f}"
        if span.late_ms
        else "-",
    ]


def report(results: Results, numbers: int, rate: float, window: int) -> list[str]:
    burst = results.burst
    burst_ok = not results.burst_refused and results.burst_in == numbers
    rows = []
    for c in results.cycles:
        floor = f"floor {numbers / c.rate:.2f} s; " if math.isfinite(c.rate) else ""
        rows.append(
            [
                f"{c.label}: sync, limit {_rate(c.rate)}",
                *_span_cells(c.sync, numbers, "writes"),
                f"{floor}raw burst {burst.wall_s:.2f} s",
                f"≤ {TARGET_S:g} s",
                verdict(
                    c.sync.wall_s <= TARGET_S
                    and c.in_astdb == numbers
                    and c.sample_right == min(SAMPLE, numbers)
                ),
            ]
        )
        rows.append(
            [
                f"{c.label}: clear",
                *_span_cells(c.clear, numbers, "deletes"),
                floor.removesuffix("; "),
                "-",
                "-" if c.after_clear == 0 else f"!! {c.after_clear:,} left",
            ]
        )
    rows.append(
        [
            f"raw AMI: DBPut burst, ≤ {window:,} unanswered",
            *_span_cells(burst, numbers, "DBPuts"),
            "what AMI itself takes",
            "-",
            "-" if burst_ok else f"!! {results.burst_refused:,} refused, {results.burst_in:,} in",
        ]
    )
    head = ["phase", "wall", "rate", "CPU µs/write", "Asterisk µs/write", "loop late p99/max ms"]
    head += ["reference (same run)", "target", "verdict"]
    out = [
        f"{numbers:,} numbers of one district into AstDB, from publish_once until the mirror"
        " has every DBPut answered (clear: every DBDel); the rate limit's floor at the default"
        f" {_rate(rate)}: {numbers / rate:.2f} s",
        *table(rows, head),
        "CPU: this process (publisher, mirror); Asterisk: its"
        " process, every thread (both count the calls in (1) and (4)); loop late: how much a 1 ms"
        " sleep in this process's event loop overslept, p99 and the longest (what the FastAGI"
        " server and the poller, sharing the loop in the daemon, would wait)",
        "",
    ]
    for c in results.cycles:
        out.append(
            f"{c.label}: after the sync {c.in_astdb:,} entries in AstDB (database show, the"
            f" lease aside), {c.sample_right} of {min(SAMPLE, numbers)} sampled DBGets right;"
            f" after the clear {c.after_clear:,}"
        )
    first, unlimited = results.cycles[0], results.cycles[3]
    phases = [
        ("idle, before (family empty)", results.idle_before),
        (f"{first.label}: during the sync", first.sync.probes),
        (f"idle, after ({first.in_astdb:,} entries in)", first.idle_after),
        (f"{first.label}: during the clear", first.clear.probes),
        (f"{unlimited.label}: during the sync", unlimited.sync.probes),
        (f"{unlimited.label}: during the clear", unlimited.clear.probes),
    ]

    def ms(values: list[float], share: float) -> str:
        return f"{percentile(sorted(values), share):.3f}"

    rows = []
    for label, probes in phases:
        if probes is not None:
            rows.append(
                [
                    label,
                    f"{len(probes.read_ms):,}",
                    ms(probes.floor_ms, 0.5),
                    ms(probes.read_ms, 0.5),
                    ms(probes.read_ms, 0.99),
                    f"{max(probes.read_ms, default=math.nan):.3f}",
                    ms(probes.check_ms, 0.5),
                    ms(probes.check_ms, 0.99),
                    f"{max(probes.check_ms, default=math.nan):.3f}",
                    f"{probes.hits:,}",
                ]
            )
    head = ["calls", "n", "floor p50", "DB() p50", "p99", "max"]
    head += ["check p50", "p99", "max", "read hits"]
    out += [
        "",
        "${DB()} in the dialplan, ms of Asterisk's clock. floor: a step without AstDB;"
        " DB(): Set(ENTRY=${DB(announcer/<affected digits>)}); check:"
        " Gosub(announcer-astdb,s,1) for an unaffected caller (three DB reads, nothing to play)",
        *table(rows, head),
    ]
    unfollowed = sum(p.unfollowed for _, p in phases if p is not None)
    if unfollowed:
        out.append(
            f"{unfollowed:,} calls not counted: their Originate answer came before any of"
            " their events, and the harness stopped following them"
        )
    for label, probes in phases:
        if probes is not None and probes.wrong:
            out.append(f"!! {label}: {len(probes.wrong):,} calls went wrong, e.g.")
            out += [f"!!   {w}" for w in probes.wrong[:3]]
    return out


def split_city(
    syn: synthetic.Synthetic, expires: int, prompt: str, seed: int
) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """The announced district; (affected digits, unaffected caller) pairs for
    the calls; and (key, value) of each affected number, shaped like the
    mirror's entries, for the raw burst."""
    rng = random.Random(seed)
    district = syn.districts[0]
    affected: list[str] = []
    others: list[str] = []
    for national, switch in zip(syn.numbers, syn.switch_of, strict=True):
        if syn.switch_ids[switch].split("-")[1] == district:  # acc-d01-0001
            affected.append(synthetic.e164_digits(national))
        else:
            others.append(synthetic.render(national, rng))
    value = f"{expires},{prompt},staff-000000,district"
    pairs = [(rng.choice(affected), rng.choice(others)) for _ in range(1_000)]
    return district, pairs, [(number, value) for number in affected]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.astdb_mirror", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--numbers", type=int, default=50_000, metavar="N", help="numbers in the district, about"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=float(AmiSettings().max_writes_per_s),
        metavar="N",
        help="[ami] max_writes_per_s (default: its default)",
    )
    parser.add_argument(
        "--calls", type=int, default=300, metavar="N", help="calls on the idle Asterisk, each time"
    )
    parser.add_argument(
        "--window", type=int, default=1_000, metavar="N", help="unanswered DBPuts in the raw burst"
    )
    parser.add_argument("--seed", type=int, default=synthetic.DEFAULT_SEED)
    add_redis_argument(parser)
    args = parser.parse_args(argv)
    if min(args.numbers, args.calls, args.window) < 1 or args.rate <= 0:
        parser.error("--numbers, --rate, --calls and --window must be positive")
    sandbox = ready_sandbox("bench.astdb_mirror")
    if isinstance(sandbox, str):
        print(sandbox, file=sys.stderr)
        return EXIT_CANNOT_RUN
    args.districts = DISTRICTS
    args.switches = synthetic.CORE_SWITCHES + DISTRICTS * (1 + ACCESS_PER_DISTRICT)
    args.subscribers = DISTRICTS * args.numbers

    with ExitStack() as stack:
        url, folder = workspace(stack, args.redis_url)
        try:
            prepared = generate_and_import(url, folder, args)
            if prepared is None:
                return 1
            syn, _ = prepared
            asterisk = stack.enter_context(
                Asterisk(sandbox, extensions=dialplan(), extra_modules=["func_db"])
            )
            expires = int(time.time() + Settings().announcements.staff_ttl_s)
            district, pairs, items = split_city(
                syn, expires, f"{asterisk.root}/sounds/outage", args.seed + 1
            )
            gc.collect()
            gc.freeze()  # the benchmark's own data is no business of the collector
            release = asterisk.rx("core show version").split(" built ")[0].strip()
            print(
                f"asterisk: {release}, in {sandbox}; AMI client panoramisk"
                f" {version('panoramisk')}\n"
                f"staff announcement for district {district}: {len(items):,} numbers;"
                f" the other district's subscribers place the calls\n",
                flush=True,
            )
            results = asyncio.run(measure(asterisk, url, district, pairs, items, args))
        finally:
            with sync_client(url) as admin:
                delete_prefix(admin)
        for line in report(results, len(items), args.rate, args.window):
            print(line)
        print(
            f"calls one at a time, back to back, after {WARMUP_CALLS} warm-up calls; load"
            f" average {load_average()} at the end (other work on the machine skews figures)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
