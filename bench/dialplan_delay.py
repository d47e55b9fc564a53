"""How long announcer's check holds a call before the queue, on a real Asterisk.

Starts Asterisk 22 in the sandbox the dialplan tests use
(``tests/asterisk/sandbox.py``; needs root, and builds the sandbox first if it
is missing), loads the shipped ``asterisk/`` files the way an admin includes
them, and places ``--calls`` calls through each mode (AMI Originate of a
Local channel, one call at a time), the modes taking turns call by call so
that whatever else the machine does hits them alike:

(a) no check: the first step, then the queue step (the reference);
(b) ``Gosub(announcer-fastagi,s,1)``, announcer's FastAGI server up (in a
    subprocess of its own, as ``bench.fastagi`` runs it, over a synthetic
    inventory imported into a private Redis with a staff announcement live
    for half the districts), the caller a known subscriber of the other
    half: the whole lookup, and nothing to play;
(c) the same check with announcer down: nothing listens on the port, so the
    connection is refused;
(d) ``Gosub(announcer-astdb,s,1)`` with the mirror's lease in force and no
    entry for the caller (three ``${DB()}`` reads), and (e) with nobody
    vouching (announcer gone: one read, then straight on);
(f) ``Gosub(announcer-redis,s,1)`` reading a Redis on loopback through
    ``SHELL(redis-cli)`` (func_redis is not packaged for Debian; its
    ``REDIS()`` would be an in-process read), no key for the caller, and
    (g) with nothing listening on the Redis port.

Each mode's context stamps Asterisk's clock (``STRFTIME``, to the
microsecond) on its first step and on its queue step; the Originate is
stamped by this process just before it is sent (both read the host's
real-time clock). Printed: p50/p95/p99 of Originate -> queue step, and of
first step -> queue step (the check alone, Asterisk's clock only), with the
delay each mode adds over (a), percentile by percentile. Every call is
checked: it reached the queue step, played nothing, and ended its AGI as the
mode expects. Targets: a check that answers adds at most 5 ms (the FastAGI
target), one whose other end is down at most 3 ms ("no delay beyond a few
milliseconds").

A mode is one entry in ``MODES``: its dialplan check, the shipped files it
includes, how to bring up (or take down) what it talks to, and what a call
must show.

    python -m bench.dialplan_delay [--calls N] [--subscribers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from announcer.private_redis import PrivateRedis
from bench import synthetic
from bench.common import (
    add_redis_argument,
    delete_prefix,
    load_average,
    percentile,
    sync_client,
    table,
    verdict,
    workspace,
)
from bench.fastagi import Server, announce
from bench.inventory_import import generate_and_import
from tests.asterisk.ami import Ami, AsteriskError, Call
from tests.asterisk.sandbox import (
    Asterisk,
    free_tcp_port,
    ready_sandbox,
)

SHIPPED = Path(__file__).resolve().parents[1] / "asterisk"
#: The FastAGI server's own target (bench.fastagi), for what (b) adds.
TARGET_UP_MS = 5.0
#: "No added delay beyond a few milliseconds", for (c).
TARGET_DOWN_MS = 3.0
WARMUP_CALLS = 20
SHARES = (0.50, 0.95, 0.99)
CLOCK = "${STRFTIME(,,%s.%6q)}"


@dataclass(frozen=True)
class Env:
    """What a mode may use: the Redis holding the inventory, and the Asterisk
    (for a mode that talks to it over AMI, as an AstDB mirror does)."""

    redis_url: str
    asterisk: Asterisk


@dataclass
class Served:
    """What a mode brought up: the channel variables its calls carry, and
    what to say about its server side afterwards."""

    variables: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Mode:
    key: str
    """names its dialplan context, bench-KEY"""
    label: str
    check: tuple[str, ...]
    """the dialplan an admin puts before Queue(): one application per line"""
    includes: tuple[str, ...]
    """the shipped files it needs"""
    serve: Callable[[Env], AbstractAsyncContextManager[Served]]
    """brings up what its calls talk to (or makes sure nothing answers)"""
    wrong: Callable[[Call], str | None]
    """why a call did not do what it must, or None"""
    target_ms: float | None = None
    """largest delay it may add over the reference at p50, p95 and p99"""


def context(mode: Mode) -> str:
    return f"bench-{mode.key}"


# the modes ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def nothing(env: Env) -> AsyncIterator[Served]:
    yield Served()


@contextlib.asynccontextmanager
async def announcer_up(env: Env) -> AsyncIterator[Served]:
    """announcer's FastAGI server in a subprocess; its counters are reported."""
    server = Server(env.redis_url, in_process=False)
    try:
        port = await server.start()
        served = Served({"ANNOUNCER_AGI": f"agi://127.0.0.1:{port}"})
        before = await server.counters()
        yield served
        after = await server.counters()
        served.lines.append(
            "announcer's counters over the run, warm-up included: "
            + ", ".join(f"{k} {after[k] - before[k]:,}" for k in after if not k.endswith("_ms"))
        )
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def announcer_down(env: Env) -> AsyncIterator[Served]:
    """A loopback port nothing listens on: the AGI's connect is refused."""
    yield Served({"ANNOUNCER_AGI": f"agi://127.0.0.1:{free_tcp_port()}"})


def reached_the_queue(call: Call) -> str | None:
    if "QUEUED" not in call.variables:
        return f"did not reach the queue step: {call.summary()}"
    if any(s.application in ("Playback", "Read", "Answer") for s in call.steps):
        return f"played something: {call.summary()}"
    return None


def agi_ended(status: str) -> Callable[[Call], str | None]:
    def wrong(call: Call) -> str | None:
        if problem := reached_the_queue(call):
            return problem
        got = call.variables.get("AGISTATUS"), call.variables.get("ANNOUNCER_RESULT")
        if got != (status, "none"):
            return f"AGISTATUS, ANNOUNCER_RESULT: expected ({status}, none), got {got}"
        if call.variables.get("ANNOUNCER_PROMPT"):
            return f"told to play {call.variables['ANNOUNCER_PROMPT']!r}"
        return None

    return wrong


@contextlib.asynccontextmanager
async def astdb_vouched(env: Env) -> AsyncIterator[Served]:
    """A lease in force in the AstDB family, as the mirror keeps it while
    announcer is up; the caller has no entry, and there is no global one."""
    family = "bench-astdb-up"
    async with env.asterisk.ami() as ami:
        await ami.db_put(family, "lease", str(int(time.time()) + 3600))
        try:
            yield Served({"ANNOUNCER_FAMILY": family})
        finally:
            await ami.action({"Action": "DBDelTree", "Family": family})


@contextlib.asynccontextmanager
async def astdb_gone(env: Env) -> AsyncIterator[Served]:
    """A family nobody vouches for: announcer stopped, its lease long over."""
    yield Served({"ANNOUNCER_FAMILY": "bench-astdb-down"})


@contextlib.asynccontextmanager
async def redis_up(env: Env) -> AsyncIterator[Served]:
    """A Redis on a loopback port for redis-cli in the chroot; the caller has
    no key, and there is no global one."""
    with PrivateRedis(tcp=True) as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        yield Served(
            {"ANNOUNCER_REDIS_READER": "redis-cli", "ANNOUNCER_REDIS_PORT": port},
            ["(f) reads with SHELL(redis-cli): func_redis is not packaged for Debian"],
        )


@contextlib.asynccontextmanager
async def redis_down(env: Env) -> AsyncIterator[Served]:
    """No Redis on the port: redis-cli's connection is refused."""
    yield Served(
        {"ANNOUNCER_REDIS_READER": "redis-cli", "ANNOUNCER_REDIS_PORT": str(free_tcp_port())}
    )


def nothing_played(call: Call) -> str | None:
    if problem := reached_the_queue(call):
        return problem
    if call.variables.get("ANNOUNCER_RESULT") != "none" or call.variables.get("ANNOUNCER_PROMPT"):
        return f"expected nothing to play: {call.summary()}"
    return None


FASTAGI = ("Gosub(announcer-fastagi,s,1)",)
FASTAGI_FILES = ("announcer-common.conf", "announcer-fastagi.conf")
ASTDB = ("Gosub(announcer-astdb,s,1)",)
ASTDB_FILES = ("announcer-common.conf", "announcer-astdb.conf")
REDIS = ("Gosub(announcer-redis,s,1)",)
REDIS_FILES = ("announcer-common.conf", "announcer-redis.conf")

MODES: list[Mode] = [
    Mode(
        key="none",
        label="(a) no check (reference)",
        check=(),
        includes=(),
        serve=nothing,
        wrong=reached_the_queue,
    ),
    Mode(
        key="fastagi-up",
        label="(b) FastAGI, announcer up, caller unaffected",
        check=FASTAGI,
        includes=FASTAGI_FILES,
        serve=announcer_up,
        wrong=agi_ended("SUCCESS"),
        target_ms=TARGET_UP_MS,
    ),
    Mode(
        key="fastagi-down",
        label="(c) FastAGI, announcer down (refused)",
        check=FASTAGI,
        includes=FASTAGI_FILES,
        serve=announcer_down,
        wrong=agi_ended("FAILURE"),
        target_ms=TARGET_DOWN_MS,
    ),
    Mode(
        key="astdb-up",
        label="(d) AstDB, lease in force, caller unaffected",
        check=ASTDB,
        includes=ASTDB_FILES,
        serve=astdb_vouched,
        wrong=nothing_played,
        target_ms=TARGET_UP_MS,
    ),
    Mode(
        key="astdb-down",
        label="(e) AstDB, announcer gone (lease over)",
        check=ASTDB,
        includes=ASTDB_FILES,
        serve=astdb_gone,
        wrong=nothing_played,
        target_ms=TARGET_DOWN_MS,
    ),
    Mode(
        key="redis-up",
        label="(f) Redis keys, caller unaffected",
        check=REDIS,
        includes=REDIS_FILES,
        serve=redis_up,
        wrong=nothing_played,
        target_ms=TARGET_UP_MS,
    ),
    Mode(
        key="redis-down",
        label="(g) Redis keys, Redis down (refused)",
        check=REDIS,
        includes=REDIS_FILES,
        serve=redis_down,
        wrong=nothing_played,
        target_ms=TARGET_DOWN_MS,
    ),
]


def dialplan(modes: Sequence[Mode]) -> str:
    """extensions.conf: the shipped files, and one context per mode."""
    included = dict.fromkeys(name for mode in modes for name in mode.includes)
    lines = [f"#include {name}" for name in included]
    for mode in modes:
        lines += [
            "",
            f"[{context(mode)}]",
            f"exten => s,1,Set(ENTERED={CLOCK})",
            *(f" same => n,{application}" for application in mode.check),
            f" same => n,Set(QUEUED={CLOCK})  ; the queue step: Queue(support) in production",
            " same => n,Hangup()",
        ]
    return "\n".join(lines) + "\n"


# the run -----------------------------------------------------------------------------------


@dataclass
class Timings:
    to_queue_ms: list[float] = field(default_factory=list)
    """Originate sent -> queue step"""
    check_ms: list[float] = field(default_factory=list)
    """first step -> queue step"""
    wrong: list[str] = field(default_factory=list)


async def place(ami: Ami, mode: Mode, served: Served, caller: str, into: Timings | None) -> None:
    sent = time.time()
    call = await ami.originate("s", context(mode), callerid=caller, variables=served.variables)
    problem = mode.wrong(call)
    if into is None:
        if problem:
            raise AsteriskError(f"{mode.label}: a warm-up call went wrong: {problem}")
        return
    if problem:
        into.wrong.append(f"{caller}: {problem}")
        return
    queued, entered = float(call.variables["QUEUED"]), float(call.variables["ENTERED"])
    into.to_queue_ms.append((queued - sent) * 1e3)
    into.check_ms.append((queued - entered) * 1e3)


async def measure(
    env: Env, modes: Sequence[Mode], callers: Sequence[str]
) -> dict[str, tuple[Timings, Served]]:
    """Every caller through every mode, the modes taking turns; warm-up first."""
    timings = {mode.key: Timings() for mode in modes}
    async with contextlib.AsyncExitStack() as stack:
        served = {mode.key: await stack.enter_async_context(mode.serve(env)) for mode in modes}
        ami = await stack.enter_async_context(env.asterisk.ami())
        for caller in callers[:WARMUP_CALLS]:
            for mode in modes:
                await place(ami, mode, served[mode.key], caller, None)
        for caller in callers[WARMUP_CALLS:]:
            for mode in modes:
                await place(ami, mode, served[mode.key], caller, timings[mode.key])
    return {mode.key: (timings[mode.key], served[mode.key]) for mode in modes}


def _ms(values: Sequence[float], share: float) -> float:
    return percentile(sorted(values), share)


def report(modes: Sequence[Mode], results: dict[str, tuple[Timings, Served]]) -> list[str]:
    reference, _ = results[modes[0].key]
    out: list[str] = []
    for column, title in (
        ("to_queue_ms", "Originate -> queue step (what a caller waits before the queue)"),
        ("check_ms", "first step -> queue step (Asterisk's clock; the check alone)"),
    ):
        rows = []
        ref_values: list[float] = getattr(reference, column)
        for mode in modes:
            timing, _ = results[mode.key]
            values: list[float] = getattr(timing, column)
            own = [_ms(values, share) for share in SHARES]
            added = [o - _ms(ref_values, share) for o, share in zip(own, SHARES, strict=True)]
            is_reference = mode is modes[0]
            ok = not timing.wrong and (mode.target_ms is None or max(added) <= mode.target_ms)
            rows.append(
                [
                    mode.label,
                    f"{len(values):,}",
                    *(f"{v:.2f}" for v in own),
                    *(("-",) * 3 if is_reference else (f"{a:+.2f}" for a in added)),
                    f"≤ {mode.target_ms:g} ms" if mode.target_ms is not None else "-",
                    verdict(ok) if mode.target_ms is not None or timing.wrong else "-",
                ]
            )
        head = ["mode", "calls", "p50 ms", "p95 ms", "p99 ms"]
        head += ["added p50", "added p95", "added p99", "target added", "verdict"]
        out += [title, *table(rows, head), ""]
    for mode in modes:
        timing, served = results[mode.key]
        out += [f"{mode.label}: {line}" for line in served.lines]
        if timing.wrong:
            out.append(f"!! {mode.label}: {len(timing.wrong):,} calls went wrong")
            out += [f"!!   {problem}" for problem in timing.wrong[:5]]
    return out


def unaffected_callers(
    syn: synthetic.Synthetic, announced: set[str], count: int, seed: int
) -> list[str]:
    """``count`` known subscribers of districts nobody announces to, in billing's formats."""
    rng = random.Random(seed)
    quiet = [
        number
        for number, switch in zip(syn.numbers, syn.switch_of, strict=True)
        if syn.switch_ids[switch].split("-")[1] not in announced  # acc-d01-0001
    ]
    if not quiet:
        raise ValueError("every subscriber's district is announced; give more districts")
    return [synthetic.render(rng.choice(quiet), rng) for _ in range(count)]


def start_asterisk(sandbox: Path, modes: Sequence[Mode]) -> Asterisk:
    asterisk = Asterisk(sandbox, extra_modules=("func_db", "func_shell"))
    asterisk.start()
    try:
        for name in {name for mode in modes for name in mode.includes}:
            shutil.copy(SHIPPED / name, asterisk.host_dir / "etc" / name)
        asterisk.set_dialplan(dialplan(modes))
    except BaseException:
        asterisk.stop()
        raise
    return asterisk


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dialplan_delay", description=__doc__.split("\n\n")[0]
    )
    synthetic.add_size_arguments(parser)
    parser.set_defaults(districts=20, switches=2_000, subscribers=100_000)
    add_redis_argument(parser)
    parser.add_argument("--calls", type=int, default=200, metavar="N", help="calls per mode")
    args = parser.parse_args(argv)
    problem = synthetic.check_sizes(args.districts, args.switches, args.subscribers)
    if problem:
        parser.error(problem)
    if args.calls < 1 or args.subscribers < 1 or args.districts < 2:
        parser.error("--calls and --subscribers must be positive, --districts at least 2")
    sandbox = ready_sandbox("bench.dialplan_delay")
    if isinstance(sandbox, str):
        print(sandbox, file=sys.stderr)
        return 1

    with ExitStack() as stack:
        url, folder = workspace(stack, args.redis_url)
        try:
            prepared = generate_and_import(url, folder, args)
            if prepared is None:
                return 1
            syn, _ = prepared
            announced = syn.districts[: len(syn.districts) // 2]
            ident = asyncio.run(announce(url, announced))
            callers = unaffected_callers(
                syn, set(announced), WARMUP_CALLS + args.calls, args.seed + 1
            )
            asterisk = start_asterisk(sandbox, MODES)
            stack.callback(asterisk.stop)
            version = asterisk.rx("core show version").split(" built ")[0].strip()
            print(
                f"asterisk: {version}, in {sandbox}\n"
                f"staff announcement {ident} for {len(announced)} of {len(syn.districts)}"
                f" districts; {args.calls} calls per mode from subscribers of the others"
                f" (after {WARMUP_CALLS} warm-up calls each), one at a time, the modes taking"
                " turns\n",
                flush=True,
            )
            results = asyncio.run(measure(Env(url, asterisk), MODES, callers))
        finally:
            with sync_client(url) as admin:
                delete_prefix(admin)
        for line in report(MODES, results):
            print(line)
        print(
            "times in ms; added: the mode's percentile minus the reference's; load average"
            f" {load_average()} at the end (other work on the machine skews figures)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
