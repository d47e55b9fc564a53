"""How fast ``Lookup`` answers, one caller at a time and with many at once.

Imports a synthetic inventory (``bench.synthetic``) into a private Redis
(unless ``--redis-url``) with the real import path, then times
``announcer.lookup.Lookup`` on random known subscribers in the mixed formats
billing writes, plus a share of unknown numbers: (a) one caller at a time,
(b) ``--concurrency`` callers at once, back to back (asyncio tasks sharing
one client and its pool, as the daemon does): a saturation test, where one
Python process's throughput sets the latency; (c) the same callers arriving
at ``--rate`` lookups a second in all, as calls reach a PBX. The floor,
measured the same way in the same run, is a plain ``GET`` of one small key
through the same client: one command a caller. Lookups asked while one is in
flight share the next round trip (``announcer.coalesce``), so at 50 callers
they can beat that floor; each phase says how many lookups a round trip
carried.

Each phase uses a fresh ``Lookup`` (so a fresh phone normaliser, as right
after a daemon restart) and its own random callers. Latency is taken around
each ``await``, so at 50 callers it includes waiting for the event loop,
which is what a caller would wait for too.

    python -m bench.lookup [--count N] [--concurrency N] [--rate N] [--subscribers N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TypeVar

from announcer.config import RedisSettings
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from announcer.redisconn import connect
from bench import synthetic
from bench.common import (
    PREFIX,
    Timing,
    add_redis_argument,
    delete_prefix,
    load_average,
    sync_client,
    table,
    verdict,
    workspace,
)
from bench.inventory_import import generate_and_import

TARGET_SINGLE_P99_MS = 0.5
TARGET_CONCURRENT_P99_MS = 3.0
WARMUP_CALLS = 2_000
#: What the floor GET reads: about the size of a switch record.
FLOOR_VALUE = '{"id":"acc-d01-0001","address":"127.1.0.53","district":"d01","probe":"icmp"}'

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    caller: str
    expected: str | None
    """the switch id the answer must name, or None for an unknown number"""


def make_calls(
    syn: synthetic.Synthetic, known: set[int], count: int, unknown_share: float, rng: random.Random
) -> list[Call]:
    calls = []
    for _ in range(count):
        if rng.random() < unknown_share:
            national = synthetic.random_national(rng)
            while national in known:
                national = synthetic.random_national(rng)
            calls.append(Call(synthetic.render(national, rng), None))
        else:
            i = rng.randrange(len(syn.numbers))
            switch = syn.switch_ids[syn.switch_of[i]]
            calls.append(Call(synthetic.render(syn.numbers[i], rng), switch))
    return calls


async def run_calls(
    fn: Callable[[str], Awaitable[T]],
    callers: Sequence[str],
    concurrency: int,
    rate: float = 0.0,
) -> tuple[Timing, list[T | None]]:
    """Call ``fn`` on every caller with ``concurrency`` tasks; time each call.

    With ``rate`` (calls a second, all tasks together) each task waits for its
    next turn instead of calling back to back, like callers arriving at a PBX.
    A call that raises is counted by exception name and left out of the
    latencies; the others go on.
    """
    latencies: list[int] = []
    results: list[T | None] = [None] * len(callers)
    errors: Counter[str] = Counter()
    clock = time.perf_counter_ns

    begun = time.perf_counter()

    async def worker(first: int) -> None:
        for i in range(first, len(callers), concurrency):
            if rate:
                await asyncio.sleep(max(0.0, begun + i / rate - time.perf_counter()))
            start = clock()
            try:
                results[i] = await fn(callers[i])
            except Exception as exc:  # counted and reported, the others go on
                errors[f"{type(exc).__name__}: {exc}"] += 1
                continue
            latencies.append(clock() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(min(concurrency, len(callers)))))
    return Timing(latencies, time.perf_counter() - start, errors), results


def switch_only(lookup: Lookup) -> Callable[[str], Awaitable[str]]:
    """``lookup`` answering with the switch id ("" when unknown) and nothing else.

    Keeping 100,000 ``Answer`` objects alive would make the garbage
    collector's full passes, and so the lookups' tail, slower than a daemon's.
    """

    async def ask(caller: str) -> str:
        answer = await lookup(caller)
        return (answer.switch or "?") if answer.known else ""

    return ask


def check_answers(calls: Sequence[Call], answers: Sequence[str | None]) -> tuple[int, list[str]]:
    wrong: list[str] = []
    for call, answer in zip(calls, answers, strict=True):
        if answer is None:
            continue  # the call raised; counted as an error
        if answer != (call.expected or ""):
            wrong.append(
                f"{call.caller!r}: expected {call.expected or 'unknown'}, got {answer or 'unknown'}"
            )
    return len(wrong), wrong[:5]


def _row(label: str, timing: Timing, floor: Timing | None, target: float, ok: bool) -> list[str]:
    floor_cells = (
        [
            f"{floor.ms(0.50):.3f}",
            f"{floor.ms(0.99):.3f}",
            f"{floor.max_ms:.2f}",
            f"{floor.rate:,.0f}",
        ]
        if floor is not None
        else ["", "", "", ""]
    )
    return [
        label,
        f"{timing.ms(0.50):.3f}",
        f"{timing.ms(0.99):.3f}",
        f"{timing.max_ms:.2f}",
        f"{timing.rate:,.0f}",
        *floor_cells,
        f"≤ {target:g} ms",
        verdict(ok and timing.ms(0.99) <= target) if floor is not None else "(ref)",
    ]


async def measure(
    url: str, phases: list[tuple[str, int, list[Call], float]], warmup: list[Call]
) -> list[str]:
    client = connect(RedisSettings(url=url, prefix=PREFIX))
    keys = Keys(PREFIX)
    floor_key = f"{PREFIX}:bench-floor"
    out: list[str] = []
    rows: list[list[str]] = []
    notes: list[str] = []
    try:
        await client.set(floor_key, FLOOR_VALUE)

        async def get(_: str) -> object:
            return await client.get(floor_key)

        # load the script, open the pool's connections; not measured
        concurrency_max = max(c for _, c, _, _ in phases)
        warm = Lookup(client, keys, PhoneNormaliser("RU"))
        await run_calls(switch_only(warm), [c.caller for c in warmup], concurrency_max)
        await run_calls(get, [c.caller for c in warmup], concurrency_max)
        gc.collect()

        for label, concurrency, calls, rate in phases:
            lookup = Lookup(client, keys, PhoneNormaliser("RU"))
            callers = [c.caller for c in calls]
            timing, answers = await run_calls(switch_only(lookup), callers, concurrency, rate)
            parsed = len(lookup.normaliser._narrow)
            trips = lookup.round_trips
            floor, values = await run_calls(get, callers, concurrency, rate)
            wrong, examples = check_answers(calls, answers)
            bad_floor = sum(v != FLOOR_VALUE for v in values if v is not None)
            target = TARGET_SINGLE_P99_MS if concurrency == 1 else TARGET_CONCURRENT_P99_MS
            unknown = sum(c.expected is None for c in calls)
            ok = not (wrong or bad_floor or timing.errors or floor.errors)
            rows.append(_row(label, timing, floor, target, ok))
            out.append(
                f"{label}: {len(calls):,} lookups ({unknown:,} of unknown numbers),"
                f" {wrong:,} wrong answers, in {trips:,} round trips"
                f" ({len(calls) / max(trips, 1):.1f} lookups each); a cold normaliser sent"
                f" {parsed:,} of them to phonenumbers (new number shapes)"
            )
            out += [f"!!   {e}" for e in examples]
            if timing.errors:
                out.append(f"!!   lookups that raised: {timing.failures()}")
            if floor.errors or bad_floor:
                out.append(f"!!   floor GETs that raised: {floor.failures()}; wrong: {bad_floor}")
            if concurrency == 1:
                # the same callers again: every number shape is known now
                again, _ = await run_calls(switch_only(lookup), callers, concurrency)
                rows.append(_row("  ref: (a) again, warm normaliser", again, None, target, True))
            elif not rate:
                bound = concurrency / floor.rate * 1e3 if floor.rate else math.nan
                shared = concurrency / timing.rate * 1e3 if timing.rate else math.nan
                notes.append(
                    f"{concurrency} callers back to back: at the floor's {floor.rate:,.0f} GET/s"
                    f" Little's law puts even a GET's mean latency at {bound:.1f} ms"
                    " (one Python process, one command a caller; the client, not Redis, is"
                    f" the limit); lookups sharing round trips ({timing.rate:,.0f}/s) put"
                    f" theirs at {shared:.1f} ms"
                )
    finally:
        await client.delete(floor_key)
        await client.aclose()
    head = [
        "lookup",
        "p50 ms",
        "p99 ms",
        "max ms",
        "calls/s",
        "GET p50",
        "GET p99",
        "GET max",
        "GET/s",
        "target p99",
        "verdict",
    ]
    return [*out, "", *table(rows, head), "", *notes]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lookup", description=__doc__.split("\n\n")[0]
    )
    synthetic.add_size_arguments(parser)
    add_redis_argument(parser)
    parser.add_argument("--count", type=int, default=100_000, help="lookups per phase")
    parser.add_argument("--concurrency", type=int, default=50, help="callers at once in (b), (c)")
    parser.add_argument(
        "--rate",
        type=float,
        default=2000.0,
        help="lookups a second in (c): a PBX answering a burst of calls (scenario 10 is 500"
        " calls in a minute)",
    )
    parser.add_argument(
        "--unknown-share", type=float, default=0.05, help="share of numbers not in the inventory"
    )
    args = parser.parse_args(argv)
    problem = synthetic.check_sizes(args.districts, args.switches, args.subscribers)
    if problem:
        parser.error(problem)
    if args.subscribers < 1 or args.count < 1 or args.concurrency < 1:
        parser.error("--subscribers, --count and --concurrency must be at least 1")
    if not 0 <= args.unknown_share <= 1:
        parser.error("--unknown-share must be between 0 and 1")

    with ExitStack() as stack:
        url, folder = workspace(stack, args.redis_url)
        prepared = generate_and_import(url, folder, args)
        if prepared is None:
            return 1
        syn, run = prepared
        print(
            f"imported {run.subscribers:,} subscribers in {run.wall_s:.1f} s (setup, not measured)",
            flush=True,
        )

        rng = random.Random(args.seed + 1)
        known = set(syn.numbers)
        warmup = make_calls(syn, known, min(WARMUP_CALLS, args.count), args.unknown_share, rng)
        phases = [
            ("(a) 1 caller", 1, make_calls(syn, known, args.count, args.unknown_share, rng), 0.0),
            (
                f"(b) {args.concurrency} callers, back to back",
                args.concurrency,
                make_calls(syn, known, args.count, args.unknown_share, rng),
                0.0,
            ),
            (
                f"(c) {args.concurrency} callers, {args.rate:,.0f} lookups/s in all",
                args.concurrency,
                make_calls(
                    syn, known, min(args.count, int(args.rate * 20)), args.unknown_share, rng
                ),
                args.rate,
            ),
        ]
        del known, syn
        gc.collect()
        gc.freeze()  # the benchmark's own data is no business of the collector
        try:
            lines = asyncio.run(measure(url, phases, warmup))
        finally:
            with sync_client(url) as admin:
                delete_prefix(admin)
        for line in lines:
            print(line)
        print(
            "times in ms, per call, taken around each await; floor = GET of one"
            f" {len(FLOOR_VALUE)}-byte key through the same client at the same concurrency;"
            f" load average {load_average()} at the end (other work on the machine skews figures)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
