"""How fast the FastAGI server answers a burst of calls, beside the bare lookup.

Imports a synthetic inventory (``bench.synthetic``) into a private Redis
(unless ``--redis-url``) with the real import path, publishes a staff
announcement for a share of the districts (``--announced-share``) the way
``announcer announce`` does, then starts ``AgiServer`` **in a subprocess**
(``--in-process`` runs it in the benchmark's own event loop instead): the
server and the load client are separate processes, so on two cores each can
have one and neither's Python time shows up in the other's latencies (Redis
shares the cores with them). The server process reports its CPU time, so
each phase also shows the CPU a session costs it.

The load client speaks AGI as Asterisk does: per session a new TCP
connection, the ~500-byte header block Asterisk sends, "200 result=1" to each
command, until the server closes. A session's latency is connect to close.
Callers are random known subscribers in the mixed formats billing writes,
plus ``--unknown-share`` numbers not in the inventory; every session's
``ANNOUNCER_PROMPT`` is checked against the expected one.

Phases: (a) ``--concurrency`` sessions at once, back to back, ``--sessions``
in all: saturation, where throughput sets latency (Little's law); (b) as
many callers, paced at ``--rate`` sessions a second in all, as calls reach a
PBX in a storm. The reference, measured in the same run with the same
callers, concurrency and pacing: ``Lookup`` awaited directly in this process
(what the server does inside each session).

    python -m bench.fastagi [--sessions N] [--concurrency N] [--rate N] [--subscribers N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from announcer.announcements import Announcement
from announcer.config import RedisSettings, Settings
from announcer.keys import Keys
from announcer.lookup import Answer, Lookup
from announcer.pbx.agi import AgiServer
from announcer.phones import PhoneNormaliser
from announcer.publisher import Publisher
from announcer.redisconn import connect
from announcer.staff import StaffRequest, publish
from bench import synthetic
from bench.common import (
    PREFIX,
    Timing,
    add_redis_argument,
    delete_prefix,
    load_average,
    loopback_url,
    sync_client,
    table,
    verdict,
    workspace,
)
from bench.inventory_import import generate_and_import

TARGET_P99_MS = 5.0
WARMUP_SESSIONS = 2_000
PACED_SECONDS = 20
PROMPT = "/var/lib/announcer/sounds/staff-bench"
_PROMPT_COMMAND = b"SET VARIABLE ANNOUNCER_PROMPT "


@dataclass(frozen=True)
class Call:
    caller: str
    expected: str
    """the prompt the session must set ("" for none)"""


class Used:
    """CPU seconds between two ``os.times()``."""

    def __init__(self, end: os.times_result, start: os.times_result) -> None:
        self.user = end.user - start.user
        self.system = end.system - start.system


def make_calls(
    syn: synthetic.Synthetic,
    known: set[int],
    announced: set[str],
    count: int,
    unknown_share: float,
    rng: random.Random,
) -> list[Call]:
    calls = []
    for _ in range(count):
        if rng.random() < unknown_share:
            national = synthetic.random_national(rng)
            while national in known:
                national = synthetic.random_national(rng)
            calls.append(Call(synthetic.render(national, rng), ""))
        else:
            i = rng.randrange(len(syn.numbers))
            district = syn.switch_ids[syn.switch_of[i]].split("-")[1]  # acc-d01-0001
            heard = PROMPT if district in announced else ""
            calls.append(Call(synthetic.render(syn.numbers[i], rng), heard))
    return calls


def header_block(port: int, caller: str, n: int) -> bytes:
    """What Asterisk 20 sends for ``AGI(agi://127.0.0.1:PORT/outage)``."""
    return (
        "agi_network: yes\n"
        "agi_network_script: outage\n"
        f"agi_request: agi://127.0.0.1:{port}/outage\n"
        f"agi_channel: PJSIP/trunk-{n:08x}\n"
        "agi_language: ru\n"
        "agi_type: PJSIP\n"
        f"agi_uniqueid: 1764496200.{n}\n"
        "agi_version: 20.5.0\n"
        f"agi_callerid: {caller}\n"
        "agi_calleridname: unknown\n"
        "agi_callingpres: 0\n"
        "agi_callingani2: 0\n"
        "agi_callington: 0\n"
        "agi_callingtns: 0\n"
        "agi_dnid: 4951234567\n"
        "agi_rdnis: unknown\n"
        "agi_context: from-trunk\n"
        "agi_extension: 4951234567\n"
        "agi_priority: 3\n"
        "agi_enhanced: 0.0\n"
        "agi_accountcode: \n"
        "agi_threadid: 140230000000000\n"
        "\n"
    ).encode()


class _AgiClient(asyncio.Protocol):
    """Asterisk's side of one session: the headers, then "200 result=1" to each
    command; ``done`` is the ANNOUNCER_PROMPT set when the server closes.

    A protocol rather than streams: the load client must cost less than the
    server it loads, and on two cores they compete.
    """

    def __init__(self, headers: bytes, done: asyncio.Future[str]) -> None:
        self.headers = headers
        self.done = done
        self.prompt = "?"
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's
        self.transport.write(self.headers)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
            if line.startswith(_PROMPT_COMMAND):
                self.prompt = line[len(_PROMPT_COMMAND) :].strip(b'"').decode()
            self.transport.write(b"200 result=1\n")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(self.prompt)
            else:
                self.done.set_exception(exc)


async def agi_session(port: int, caller: str, n: int) -> str:
    """One session, as Asterisk runs it; the ANNOUNCER_PROMPT it set."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    headers = header_block(port, caller, n)
    transport, _ = await loop.create_connection(
        lambda: _AgiClient(headers, done), "127.0.0.1", port
    )
    try:
        return await done
    finally:
        transport.close()


async def run_calls(
    fn: Callable[[int], Awaitable[str]], count: int, concurrency: int, rate: float
) -> tuple[Timing, list[str | None]]:
    """``fn(i)`` for every i with ``concurrency`` workers, each call timed; at
    ``rate`` calls a second in all when given, else back to back."""
    latencies: list[int] = []
    results: list[str | None] = [None] * count
    errors: Counter[str] = Counter()
    clock = time.perf_counter_ns
    begun = time.perf_counter()

    async def worker(first: int) -> None:
        for i in range(first, count, concurrency):
            if rate:
                await asyncio.sleep(max(0.0, begun + i / rate - time.perf_counter()))
            start = clock()
            try:
                results[i] = await fn(i)
            except Exception as exc:  # counted and reported; the others go on
                errors[f"{type(exc).__name__}: {exc}"] += 1
                continue
            latencies.append(clock() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(min(concurrency, count))))
    return Timing(latencies, time.perf_counter() - start, errors), results


def wrong_answers(calls: Sequence[Call], got: Sequence[str | None]) -> list[str]:
    return [
        f"{c.caller!r}: expected {c.expected or 'nothing'!r}, got {g!r}"
        for c, g in zip(calls, got, strict=True)
        if g is not None and g != c.expected
    ]


# the server, in a subprocess or in this process --------------------------------------------


async def serve(url: str) -> None:
    """``--serve``: the FastAGI server on a free port; reads commands on stdin
    ("counters", "stop") and answers on stdout."""
    client = connect(RedisSettings(url=url, prefix=PREFIX), max_connections=64)
    recorded = 0

    async def record(answer: Answer, caller_id: str) -> None:
        nonlocal recorded
        recorded += 1

    server = AgiServer(Lookup(client, Keys(PREFIX), PhoneNormaliser("RU")), port=0, record=record)
    port = await server.start()
    task = asyncio.create_task(server.run())
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    gc.collect()
    gc.freeze()
    print(f"port {port}", flush=True)
    try:
        while (line := (await stdin.readline()).strip()) not in (b"", b"stop"):
            if line == b"counters":
                used = os.times()
                reply = {**asdict(server.counters), "recorded": recorded}
                reply |= {"user_ms": round(used.user * 1e3), "system_ms": round(used.system * 1e3)}
                print(json.dumps(reply), flush=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


class Server:
    """The server under test: a subprocess by default, or in this event loop."""

    def __init__(self, url: str, in_process: bool) -> None:
        self.url = url
        self.in_process = in_process
        self.proc: asyncio.subprocess.Process | None = None
        self.local: AgiServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._client = connect(RedisSettings(url=url, prefix=PREFIX))
        self._recorded = 0

    async def start(self) -> int:
        if self.in_process:

            async def record(answer: Answer, caller_id: str) -> None:
                self._recorded += 1

            lookup = Lookup(self._client, Keys(PREFIX), PhoneNormaliser("RU"))
            self.local = AgiServer(lookup, port=0, record=record)
            port = await self.local.start()
            self._task = asyncio.create_task(self.local.run())
            return port
        self.proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.fastagi", "--serve", "--redis-url", self.url),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        first = await self._stdout().readline()
        if not first.startswith(b"port "):
            raise RuntimeError(f"the server subprocess did not start: {first!r}")
        return int(first.split()[1])

    def _stdin(self) -> asyncio.StreamWriter:
        assert self.proc is not None
        assert self.proc.stdin is not None
        return self.proc.stdin

    def _stdout(self) -> asyncio.StreamReader:
        assert self.proc is not None
        assert self.proc.stdout is not None
        return self.proc.stdout

    async def counters(self) -> dict[str, int]:
        if self.local is not None:
            return {**asdict(self.local.counters), "recorded": self._recorded}
        self._stdin().write(b"counters\n")
        await self._stdin().drain()
        reply: dict[str, int] = json.loads(await self._stdout().readline())
        return reply

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.proc is not None:
            self._stdin().write(b"stop\n")
            self._stdin().close()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._client.aclose()


# the run ---------------------------------------------------------------------------------


def _row(label: str, agi: Timing, ref: Timing, ok: bool) -> list[str]:
    return [
        label,
        f"{agi.ms(0.50):.2f}",
        f"{agi.ms(0.99):.2f}",
        f"{agi.max_ms:.1f}",
        f"{agi.rate:,.0f}",
        f"{ref.ms(0.50):.2f}",
        f"{ref.ms(0.99):.2f}",
        f"{ref.max_ms:.1f}",
        f"{ref.rate:,.0f}",
        f"≤ {TARGET_P99_MS:g} ms",
        verdict(ok and agi.ms(0.99) <= TARGET_P99_MS),
    ]


async def measure(
    url: str,
    in_process: bool,
    phases: list[tuple[str, list[Call], float]],
    warmup: list[Call],
    concurrency: int,
) -> list[str]:
    server = Server(url, in_process)
    reference = connect(RedisSettings(url=url, prefix=PREFIX))
    out: list[str] = []
    rows: list[list[str]] = []
    notes: list[str] = []
    try:
        port = await server.start()

        def sessions(calls: list[Call]) -> Callable[[int], Awaitable[str]]:
            return lambda i: agi_session(port, calls[i].caller, i)

        def lookups(calls: list[Call], lookup: Lookup) -> Callable[[int], Awaitable[str]]:
            async def ask(i: int) -> str:
                return (await lookup(calls[i].caller)).prompt or ""

            return ask

        # load the script, open the pools' connections, learn the number shapes
        await run_calls(sessions(warmup), len(warmup), concurrency, 0.0)
        warm = Lookup(reference, Keys(PREFIX), PhoneNormaliser("RU"))
        await run_calls(lookups(warmup, warm), len(warmup), concurrency, 0.0)
        before = await server.counters()
        gc.collect()

        for label, calls, rate in phases:
            start = await server.counters()
            agi, got = await run_calls(sessions(calls), len(calls), concurrency, rate)
            end = await server.counters()
            lookup = Lookup(reference, Keys(PREFIX), PhoneNormaliser("RU"))
            await run_calls(lookups(warmup, lookup), len(warmup), concurrency, 0.0)
            before_ref = os.times()
            ref, ref_got = await run_calls(lookups(calls, lookup), len(calls), concurrency, rate)
            cpu = Used(os.times(), before_ref)
            wrong = wrong_answers(calls, got)
            ref_wrong = wrong_answers(calls, ref_got)
            matched = sum(bool(c.expected) for c in calls)
            ok = not (wrong or ref_wrong or agi.errors or ref.errors)
            rows.append(_row(label, agi, ref, ok))
            out.append(
                f"{label}: {len(calls):,} sessions ({matched:,} hear the prompt),"
                f" {len(wrong):,} wrong answers; reference: {len(ref_wrong):,} wrong"
            )
            if not in_process:
                user, system = (end[k] - start[k] for k in ("user_ms", "system_ms"))
                out.append(
                    f"    CPU a session in the server process: {user / len(calls) * 1e3:,.0f} µs"
                    f" user + {system / len(calls) * 1e3:,.0f} µs system; a lookup in this"
                    f" process: {cpu.user / len(calls) * 1e6:,.0f} µs user +"
                    f" {cpu.system / len(calls) * 1e6:,.0f} µs system (with the load loop);"
                    f" so one server process does at most {len(calls) / (user + system) * 1e3:,.0f}"
                    " sessions/s on a core of its own"
                )
            out += [f"!!   {e}" for e in (wrong + ref_wrong)[:5]]
            if agi.errors:
                out.append(f"!!   sessions that failed: {agi.failures()}")
            if ref.errors:
                out.append(f"!!   lookups that raised: {ref.failures()}")
            if not rate:
                notes.append(
                    f"{label.split(':')[0]}: Little's law: {concurrency} sessions at"
                    f" {agi.rate:,.0f}/s wait {concurrency / agi.rate * 1e3:.1f} ms on average;"
                    f" a p99 of {TARGET_P99_MS:g} ms at this concurrency needs"
                    f" {concurrency / TARGET_P99_MS * 1e3:,.0f} sessions/s, and the bare lookup"
                    f" alone does {ref.rate:,.0f}/s in one process"
                )
        after = await server.counters()
        delta = {k: after[k] - before[k] for k in after if not k.endswith("_ms")}
        out.append(
            "server counters over the measured phases: "
            + ", ".join(f"{k} {v:,}" for k, v in delta.items())
        )
    finally:
        await server.stop()
        await reference.aclose()
    head = [
        "phase",
        "p50 ms",
        "p99 ms",
        "max ms",
        "sessions/s",
        "ref p50",
        "ref p99",
        "ref max",
        "lookups/s",
        "target p99",
        "verdict",
    ]
    return [*out, "", *table(rows, head), "", *notes]


async def announce(url: str, districts: Sequence[str]) -> str:
    client = connect(RedisSettings(url=url, prefix=PREFIX))
    settings = Settings(redis=RedisSettings(url=url, prefix=PREFIX))
    keys = Keys(PREFIX)
    try:
        request = StaffRequest(districts=tuple(districts), text="Авария", audio=PROMPT)
        made = await publish(client, keys, settings, request)
        if not isinstance(made, Announcement):
            raise RuntimeError(f"the announcement was refused: {made.reason}")
        await Publisher(client, keys, settings, None).publish_once()
        return made.id
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fastagi", description=__doc__.split("\n\n")[0]
    )
    synthetic.add_size_arguments(parser)
    add_redis_argument(parser)
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions in (a)")
    parser.add_argument("--concurrency", type=int, default=200, help="sessions at once")
    parser.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help=f"sessions a second in (b), for {PACED_SECONDS} s: a storm far beyond scenario"
        " 10's 500 calls in a minute, within one server process's capacity",
    )
    parser.add_argument(
        "--unknown-share", type=float, default=0.05, help="share of numbers not in the inventory"
    )
    parser.add_argument(
        "--announced-share",
        type=float,
        default=0.2,
        help="share of the districts hearing a staff announcement",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the server in the load client's event loop instead of a subprocess",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(loopback_url(args.redis_url)))
        return 0
    problem = synthetic.check_sizes(args.districts, args.switches, args.subscribers)
    if problem:
        parser.error(problem)
    if args.subscribers < 1 or args.sessions < 1 or args.concurrency < 1 or args.rate <= 0:
        parser.error("--subscribers, --sessions, --concurrency and --rate must be positive")
    if not 0 <= args.unknown_share <= 1 or not 0 <= args.announced_share <= 1:
        parser.error("--unknown-share and --announced-share must be between 0 and 1")

    with ExitStack() as stack:
        url, folder = workspace(stack, args.redis_url)
        try:
            prepared = prepare(args, url, folder)
            if prepared is None:
                return 1
            phases, warmup = prepared
            gc.collect()
            gc.freeze()  # the benchmark's own data is no business of the collector
            where = "in this process" if args.in_process else "in a subprocess"
            print(
                f"FastAGI server {where}; load client and reference lookups in this process",
                flush=True,
            )
            lines = asyncio.run(measure(url, args.in_process, phases, warmup, args.concurrency))
        finally:
            with sync_client(url) as admin:
                delete_prefix(admin)
        for line in lines:
            print(line)
        print(
            "times in ms per session, connect to close (ref: per awaited Lookup call), taken"
            f" by the load client; load average {load_average()} at the end (other work on"
            " the machine skews figures)"
        )
    return 0


def prepare(
    args: argparse.Namespace, url: str, folder: Path
) -> tuple[list[tuple[str, list[Call], float]], list[Call]] | None:
    """Generate and import the inventory, announce, draw the callers; None if the
    import failed."""
    prepared = generate_and_import(url, folder, args)
    if prepared is None:
        return None
    syn, run = prepared
    announced = syn.districts[: round(len(syn.districts) * args.announced_share)]
    ident = asyncio.run(announce(url, announced)) if announced else "none"
    print(
        f"imported {run.subscribers:,} subscribers in {run.wall_s:.1f} s; staff"
        f" announcement {ident} for {len(announced)} of {len(syn.districts)} districts"
        " (setup, not measured)",
        flush=True,
    )
    rng = random.Random(args.seed + 1)
    known = set(syn.numbers)
    heard = set(announced)

    def calls(count: int) -> list[Call]:
        return make_calls(syn, known, heard, count, args.unknown_share, rng)

    concurrency = args.concurrency
    warmup = calls(min(WARMUP_SESSIONS, args.sessions))
    paced = min(args.sessions, int(args.rate * PACED_SECONDS))
    return [
        (f"(a) {concurrency} at once, back to back", calls(args.sessions), 0.0),
        (f"(b) {concurrency} callers, {args.rate:,.0f}/s in all", calls(paced), args.rate),
    ], warmup


if __name__ == "__main__":
    sys.exit(main())
