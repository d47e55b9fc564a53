"""End to end: a loopback switch silenced -> FastAGI serves its callers the outage prompt.

Starts ``announcer run`` as a real process (``tests/daemon.py``) with the
default settings, apart from what a test machine needs: a private Redis and
the benchmark prefix, sounds, cache and spool in a temporary folder,
``tts = "espeak"``, FastAGI and the metrics on free ports. The inventory is
a synthetic city (``bench.synthetic``: by default 1,000 switches on
127.1.0.1 .. 127.1.3.232, 50 districts, 100,000 subscribers) imported with
the real import path (not timed); the trials start once the daemon's first
sweep has written every state.

Each trial takes a fresh access switch (never twice, and never anyone's
parent, so no flapping hold and no uplink outage gets in the way), waits a
random moment of the sweep cycle, then drops echo requests to its address
with an iptables rule in chains of the benchmark's own
(``announcer/demo/firewall.py``, removed after each trial, even on Ctrl-C).
From the rule's insertion it asks the daemon's FastAGI server every
``POLL_S`` what a subscriber of that switch should hear, as Asterisk would
(``bench.fastagi``'s header block, the caller ID in a billing format, "200
result=1" to each command), until ``ANNOUNCER_ID`` names an automatic
announcement (``auto-...``, not ``restored-...``) with a prompt. Meanwhile
``P:state`` is read every ``STATE_POLL_S``, which splits the wait into
detection (until ``down``) and publication (until the prompt is served).
Then the rule is lifted and the next trial waits until the switch is up.

The references cannot run here and are given from their configured
defaults: Zabbix's "ICMP Ping" template (``icmpping`` every 60 s, trigger
"Unavailable by ICMP ping" on 3 failed checks in a row: 120-180 s from
silence to the problem, before anyone records a message) and the manual
standard of five minutes from the outage to the recorded message.

Needs root (raw ICMP and iptables), espeak-ng and ffmpeg. Only 127.0.0.0/8
addresses are probed.

    sudo .venv/bin/python -m bench.end_to_end [--trials N] [--switches N] [--subscribers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from announcer.config import IcmpSettings, PollerSettings, RedisSettings, Settings
from announcer.demo import firewall as netfilter
from announcer.keys import Keys
from announcer.redisconn import connect
from bench import synthetic
from bench.common import PREFIX, load_average, percentile, table, verdict, workspace
from bench.fastagi import header_block
from bench.inventory_import import generate_and_import
from tests.asterisk.sandbox import free_tcp_port
from tests.daemon import answers_tcp, daemon_config, start_daemon, stopped

TARGET_P95_S = 20.0
#: How often the benchmark asks FastAGI, as a caller would keep calling.
POLL_S = 0.1
#: How often it reads the switch's state, for the detection part.
STATE_POLL_S = 0.02
#: A trial that has not heard the prompt by then failed.
TRIAL_TIMEOUT_S = 120.0
#: How long the daemon may take from start to its first complete sweep.
START_TIMEOUT_S = 120.0
#: How long a switch may take to be up again once its rule is lifted.
UP_TIMEOUT_S = 60.0
#: Zabbix's "ICMP Ping" template: icmpping every 60 s; the trigger
#: "Unavailable by ICMP ping" is max(/ICMP Ping/icmpping,#3)=0.
ZABBIX_INTERVAL_S = 60.0
ZABBIX_FAILED_CHECKS = 3
#: The manual standard: the outage message recorded within five minutes.
MANUAL_S = 300.0
AUTOMATIC = "auto-"
_SET = "SET VARIABLE "


@dataclass(frozen=True)
class Victim:
    switch: str
    address: str
    caller: str
    """a subscriber on it, written the way billing writes numbers"""


@dataclass(frozen=True)
class Trial:
    down_s: float
    """silenced -> ``down`` in ``P:state``"""
    served_s: float
    """silenced -> the outage prompt served over FastAGI"""
    announcement: str
    sessions: int
    """FastAGI sessions asked meanwhile"""
    up_s: float
    """rule lifted -> ``up`` again (not in the figure)"""


def pick_victims(syn: synthetic.Synthetic, trials: int, seed: int) -> list[Victim]:
    """``trials`` distinct access switches that carry subscribers and are nobody's parent."""
    address: dict[str, str] = {}
    parents: set[str] = set()
    with syn.switches_csv.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            address[row["id"]] = row["address"]
            parents.add(row["parent"])
    rng = random.Random(seed)
    first: dict[int, int] = {}
    for i, switch in enumerate(syn.switch_of):
        first.setdefault(switch, i)
    leaves = sorted(s for s in first if syn.switch_ids[s] not in parents)
    if len(leaves) < trials:
        raise ValueError(
            f"only {len(leaves)} access switches carry subscribers; ask for fewer --trials"
            " or more --switches and --subscribers"
        )
    return [
        Victim(
            syn.switch_ids[s],
            address[syn.switch_ids[s]],
            synthetic.render(syn.numbers[first[s]], rng),
        )
        for s in rng.sample(leaves, trials)
    ]


async def agi_variables(port: int, caller: str, n: int) -> dict[str, str]:
    """One FastAGI session as Asterisk runs it: the headers, "200 result=1" to
    each command until the server closes; the variables it set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(header_block(port, caller, n))
        variables: dict[str, str] = {}
        while line := await reader.readline():
            command = line.decode("utf-8", "replace").strip()
            if command.startswith(_SET):
                name, _, value = command.removeprefix(_SET).partition(" ")
                variables[name] = value.strip('"')
            writer.write(b"200 result=1\n")
        return variables
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def state_of(client: Redis, keys: Keys, switch: str) -> str:
    """The switch's state as the poller wrote it ("none" before it did)."""
    raw = await client.hget(keys.state, switch)
    return "none" if raw is None else str(json.loads(raw)["state"])


async def wait_state(client: Redis, keys: Keys, switch: str, state: str, limit: float) -> float:
    """When (monotonic) ``switch`` is in ``state``; inf after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while (now := time.monotonic()) < deadline:
        if await state_of(client, keys, switch) == state:
            return now
        await asyncio.sleep(STATE_POLL_S)
    return float("inf")


class Daemon:
    """``announcer run`` and what the trials need of it."""

    def __init__(self, folder: Path, url: str, port: int) -> None:
        self.keys = Keys(PREFIX)
        self.settings = Settings(redis=RedisSettings(url=url, prefix=PREFIX))
        self.port = port
        self.config = folder / "announcer.toml"
        self.sounds = folder / "sounds"
        self.metrics_port = free_tcp_port()
        extra = f"[fastagi]\nport = {port}\n[metrics]\nport = {self.metrics_port}\n"
        daemon_config(self.config, self.settings, self.keys, folder, extra)
        self.client = connect(self.settings.redis)
        self.process: asyncio.subprocess.Process | None = None
        self.asked = 0

    def log_tail(self, lines: int = 20) -> str:
        log = self.config.with_suffix(".log")
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        if self.process is None or self.process.returncode is not None:
            raise RuntimeError(f"announcer run exited; the end of its log:\n{self.log_tail()}")

    async def start(self, switches: int) -> float:
        """Start it; seconds until FastAGI answers and every switch has a state."""
        began = time.monotonic()
        self.process = await start_daemon(self.config)
        while time.monotonic() < began + START_TIMEOUT_S:
            self.check_running()
            if await answers_tcp(self.port) and await self.client.hlen(self.keys.state) >= switches:
                return time.monotonic() - began
            await asyncio.sleep(0.2)
        raise RuntimeError(
            f"announcer run had not swept every switch after {START_TIMEOUT_S:g} s;"
            f" the end of its log:\n{self.log_tail()}"
        )

    async def ask(self, caller: str) -> dict[str, str]:
        self.asked += 1
        return await agi_variables(self.port, caller, self.asked)

    async def stop(self) -> None:
        try:
            if self.process is not None:
                # a Ctrl-C in the terminal reaches the daemon too: let it end first
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.process.wait()
                await stopped(self.process, self.config)
        except AssertionError:
            assert self.process is not None
            print(
                f"!! announcer run did not stop cleanly (exit status {self.process.returncode});"
                f" the end of its log:\n{self.log_tail()}",
                file=sys.stderr,
            )
        finally:
            await self.client.aclose()


async def served(daemon: Daemon, victim: Victim) -> tuple[float, str, str, int]:
    """When (monotonic) FastAGI first serves ``victim``'s caller an automatic
    announcement with a prompt; that announcement, its prompt; sessions asked."""
    deadline = time.monotonic() + TRIAL_TIMEOUT_S
    sessions = 0
    while time.monotonic() < deadline:
        daemon.check_running()
        got = await daemon.ask(victim.caller)
        sessions += 1
        ident = got.get("ANNOUNCER_ID", "")
        if ident.startswith(AUTOMATIC) and got.get("ANNOUNCER_PROMPT"):
            return time.monotonic(), ident, got["ANNOUNCER_PROMPT"], sessions
        await asyncio.sleep(POLL_S)
    return float("inf"), "", "", sessions


async def one_trial(daemon: Daemon, victim: Victim) -> Trial | str:
    """One silenced switch, timed; or why the trial failed."""
    before = await daemon.ask(victim.caller)
    if before.get("ANNOUNCER_ID", "").startswith(AUTOMATIC):
        return f"{victim.switch}: its caller hears {before['ANNOUNCER_ID']} before the silence"
    client, keys = daemon.client, daemon.keys
    with netfilter.Firewall() as firewall:
        firewall.drop_echo_requests([victim.address])
        silenced = time.monotonic()
        async with asyncio.TaskGroup() as group:
            down = group.create_task(
                wait_state(client, keys, victim.switch, "down", TRIAL_TIMEOUT_S)
            )
            heard = group.create_task(served(daemon, victim))
        served_at, ident, prompt, sessions = heard.result()
    lifted = time.monotonic()
    up_at = await wait_state(client, keys, victim.switch, "up", UP_TIMEOUT_S)
    if served_at == float("inf"):
        return f"{victim.switch}: no outage prompt after {TRIAL_TIMEOUT_S:g} s"
    sound = Path(prompt)
    if not any(sound.parent.glob(f"{sound.name}.*")):
        return f"{victim.switch}: {ident} was served with {prompt}, which has no sound file"
    if up_at == float("inf"):
        return f"{victim.switch}: not up {UP_TIMEOUT_S:g} s after the rule was lifted"
    return Trial(down.result() - silenced, served_at - silenced, ident, sessions, up_at - lifted)


async def run_trials(
    folder: Path, url: str, switches: int, victims: Sequence[Victim], seed: int
) -> tuple[list[Trial], list[str]]:
    """The daemon running; one trial per victim. Returns the trials and the failures."""
    daemon = Daemon(folder, url, free_tcp_port())
    trials: list[Trial] = []
    failures: list[str] = []
    cycle = IcmpSettings().interval_s
    rng = random.Random(seed + 1)
    try:
        started = await daemon.start(switches)
        print(
            f"announcer run: FastAGI on 127.0.0.1:{daemon.port}, every switch swept"
            f" {started:.1f} s after start (setup, not measured)\n",
            flush=True,
        )
        for n, victim in enumerate(victims, 1):
            await asyncio.sleep(rng.uniform(0, cycle))  # a random moment of the sweep cycle
            done = await one_trial(daemon, victim)
            if isinstance(done, str):
                failures.append(done)
                print(f"  trial {n:2}: {done}", flush=True)
                continue
            trials.append(done)
            print(
                f"  trial {n:2}: {done.served_s:5.2f} s (down {done.down_s:.2f},"
                f" then served {done.served_s - done.down_s:.2f}) {victim.switch}"
                f" {victim.address} caller {victim.caller!r}: {done.announcement},"
                f" {done.sessions} sessions; up again {done.up_s:.1f} s after the lift",
                flush=True,
            )
    finally:
        await daemon.stop()
    return trials, failures


def _row(label: str, values: Sequence[float]) -> list[str]:
    ordered = sorted(values)
    if not ordered:
        return [label, "-", "-", "-", "-"]
    cells = (ordered[0], percentile(ordered, 0.5), percentile(ordered, 0.95), ordered[-1])
    return [label, *(f"{x:.2f}" for x in cells)]


def report(trials: Sequence[Trial], failures: Sequence[str], wanted: int) -> list[str]:
    icmp, poller = IcmpSettings(), PollerSettings()
    # the first failed check falls 0-60 s after the silence, the third two intervals later
    zabbix = [
        (ZABBIX_FAILED_CHECKS - 1 + share) * ZABBIX_INTERVAL_S for share in (0.0, 0.5, 0.95, 1.0)
    ]
    totals = [t.served_s for t in trials]
    p95 = percentile(sorted(totals), 0.95)
    ok = not failures and len(trials) == wanted and p95 <= TARGET_P95_S
    rows = [
        [
            "reference: Zabbix ICMP Ping template, configured (not measured)",
            *(f"{x:.2f}" for x in zabbix),
        ],
        [
            "reference: manual standard, five minutes (not measured)",
            "-",
            "-",
            "-",
            f"{MANUAL_S:.2f}",
        ],
        _row("  silenced -> down in P:state (detection)", [t.down_s for t in trials]),
        _row(
            "  down -> prompt served by FastAGI (publication)",
            [t.served_s - t.down_s for t in trials],
        ),
        _row(f"measured: silenced -> prompt served, {len(trials)} trials", totals),
    ]
    timeout = icmp.timeout_ms / 1000
    low = timeout + (poller.down_after - 1) * (poller.confirm_interval_s + timeout)
    out = [
        "",
        *table(rows, ["", "min s", "p50 s", "p95 s", "max s"]),
        "",
        f"Zabbix: icmpping every {ZABBIX_INTERVAL_S:g} s, problem on {ZABBIX_FAILED_CHECKS}"
        f" failed checks in a row: {zabbix[0]:g}-{zabbix[-1]:g} s from silence to the problem"
        " (silence at a uniform moment of the check cycle), before anyone records a message;"
        " neither reference can run here",
        f"detection the settings allow: {low:.1f}-{low + icmp.interval_s:.1f} s ([icmp]"
        f" interval_s {icmp.interval_s:g}, timeout_ms {icmp.timeout_ms}, [poller] down_after"
        f" {poller.down_after}, confirm_interval_s {poller.confirm_interval_s:g});"
        f" FastAGI asked every {POLL_S:g} s (adds up to that much);"
        " the first trial also renders the prompt (espeak-ng, ffmpeg)",
    ]
    if failures:
        out += [f"!! {len(failures)} trials failed:", *(f"!!   {f}" for f in failures)]
    out.append(
        f"\ntarget: silenced -> prompt served p95 <= {TARGET_P95_S:g} s over {wanted} trials"
        f" (measured {p95:.2f} s): {verdict(ok)}"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.end_to_end", description=__doc__.split("\n\n")[0]
    )
    synthetic.add_size_arguments(parser)
    parser.set_defaults(switches=1_000, subscribers=100_000)
    parser.add_argument("--trials", type=int, default=20, metavar="N")
    args = parser.parse_args(argv)
    problem = synthetic.check_sizes(args.districts, args.switches, args.subscribers)
    if problem:
        parser.error(problem)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    if os.geteuid() != 0:
        print("needs root: raw ICMP and iptables; run it with sudo", file=sys.stderr)
        return 1
    reason = netfilter.missing()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    missing = [tool for tool in ("ffmpeg", "espeak-ng") if shutil.which(tool) is None]
    if missing:
        print(f"needs {', '.join(missing)}: apt-get install ffmpeg espeak-ng", file=sys.stderr)
        return 1

    with ExitStack() as stack:
        url, folder = workspace(stack, None)
        prepared = generate_and_import(url, folder / "inventory", args)
        if prepared is None:
            return 1
        syn, run = prepared
        try:
            victims = pick_victims(syn, args.trials, args.seed)
        except ValueError as exc:
            parser.error(str(exc))
        print(
            f"setup:   {len(syn.switch_ids):,} loopback switches ({len(syn.districts)} districts),"
            f" {run.subscribers:,} subscribers imported in {run.wall_s:.1f} s (not timed);"
            f" {args.trials} trials, one fresh access switch each; default settings,"
            " tts espeak",
            flush=True,
        )
        trials, failures = asyncio.run(
            run_trials(folder, url, len(syn.switch_ids), victims, args.seed)
        )
        for line in report(trials, failures, args.trials):
            print(line)
    print(f"load average {load_average()} at the end (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
