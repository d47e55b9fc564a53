"""Drop to live: a 60-second mp3 and its sidecar in incoming/ -> callers hear it.

Runs the drop folder (``announcer.dropbox.Dropbox``) and the publisher
(``announcer.publisher.Publisher``, woken by the drop folder when a drop goes
live, else on its one-second beat) as ``announcer run`` does, with the
default ``[dropbox]`` settings, against a private Redis holding a small
inventory (two districts). Each drop copies the same 60-second mp3 into
``incoming/`` as ``dropN.mp3`` (not timed), then writes ``dropN.toml``
(``districts = ["Северный"]``, ``ttl = "1h"``); the clock starts when the
sidecar is closed and stops when ``Lookup`` answers a caller in Северный with
the new announcement (it beats the earlier drops: the newest staff
announcement wins). The wait splits into the settle time (until the pair
leaves ``incoming/``), conversion and ``staff.publish`` (until it is in the
staff hash) and the publisher (until it is in the active set).

References measured in the same run: ``install_recording`` alone on the same
mp3 (median of a few), and ``[dropbox] settle_s`` with the publisher's beat,
which the design adds to any drop.

    python -m bench.drop_to_live [--drops N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from announcer.config import (
    DropboxSettings,
    PromptSettings,
    RedisSettings,
    Settings,
)
from announcer.dropbox import BURST_S, Dropbox
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import run_import
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from announcer.private_redis import PrivateRedis
from announcer.prompts.audio import AudioProblem, install_recording
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.redisconn import connect
from bench.common import PREFIX, load_average, machine_lines, percentile, table, verdict

TARGET_P95_S = 3.0
RECORDING_S = 60.0
#: The publisher's beat as ``announcer run`` starts it (``Publisher.run``'s default).
PUBLISHER_BEAT_S = 1.0
POLL_S = 0.005
DROP_TIMEOUT_S = 30.0
INSTALL_REPEATS = 3
#: A caller on switch n1 in Северный, written the way a trunk might send it.
CALLER = "8 (916) 123-45-67"
DISTRICTS = (("north", "Северный"), ("south", "Южный"))
SWITCHES = (
    ("core", "127.0.0.10", "north", ""),
    ("agg-north", "127.0.0.11", "north", "core"),
    ("n1", "127.0.0.12", "north", "agg-north"),
    ("n2", "127.0.0.13", "north", "agg-north"),
    ("agg-south", "127.0.0.14", "south", "core"),
    ("s1", "127.0.0.15", "south", "agg-south"),
    ("s2", "127.0.0.16", "south", "agg-south"),
)
SUBSCRIBERS = (
    ("8 (916) 123-45-67", "n1"),
    ("+7 926 000-00-01", "n2"),
    ("+7 926 000-00-02", "s1"),
    ("89260000003", "s2"),
)
SIDECAR = 'districts = ["Северный"]\nttl = "1h"\n'
SPEECH = (
    "Уважаемые абоненты. В районе Северный ведутся аварийные работы на сети. "
    "Инженеры уже выехали на место. Ориентировочное время восстановления связи "
    "четырнадцать часов тридцать минут. Приносим извинения за неудобства."
)


@dataclass(frozen=True)
class Drop:
    total_s: float
    """sidecar closed -> the lookup hears the new announcement"""
    settle_s: float
    """sidecar closed -> the pair has left incoming/"""
    publish_s: float
    """left incoming/ -> in the staff hash (conversion, checks, staff.publish)"""
    beat_s: float
    """in the staff hash -> in the active set (the publisher's next evaluation)"""
    ident: str


def _csv(path: Path, head: str, rows: Sequence[Sequence[str]]) -> None:
    path.write_text(head + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")


def make_recording(folder: Path) -> Path:
    """A speech-like 60-second mp3: espeak-ng's Russian, looped, with its pauses."""
    speech = folder / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-v", "ru", "-s", "150", "-w", str(speech), SPEECH],
        check=True,
        timeout=60,
        capture_output=True,
    )
    mp3 = folder / "message.mp3"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(speech),
            "-af", "apad=pad_dur=0.6", "-t", f"{RECORDING_S:g}", "-ac", "1", "-ar", "22050",
            "-c:a", "libmp3lame", "-b:a", "64k", str(mp3),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )  # fmt: skip
    return mp3


async def import_inventory(settings: Settings, client: Redis, keys: Keys, folder: Path) -> None:
    _csv(folder / "districts.csv", "id,name", DISTRICTS)
    _csv(folder / "switches.csv", "id,address,district,parent", SWITCHES)
    _csv(folder / "subscribers.csv", "phone,switch", SUBSCRIBERS)
    tables = (
        read_table("districts", folder / "districts.csv"),
        read_table("switches", folder / "switches.csv"),
        read_table("subscribers", folder / "subscribers.csv"),
    )
    result = await run_import(settings, client, keys, lambda: tables, "bench")
    if not result.ok:
        raise RuntimeError(f"the benchmark inventory was refused: {result.refused}")


async def time_install(mp3: Path, folder: Path) -> tuple[list[float], float]:
    """Seconds per ``install_recording`` of ``mp3`` alone, and the sound's duration."""
    seconds: list[float] = []
    duration = 0.0
    for i in range(INSTALL_REPEATS):
        start = time.perf_counter()
        sound = await install_recording(
            mp3, folder, name=f"reference-{i}", max_seconds=DropboxSettings().max_recording_s
        )
        seconds.append(time.perf_counter() - start)
        if isinstance(sound, AudioProblem):
            raise RuntimeError(f"the benchmark recording was refused: {sound.reason}")
        duration = sound.duration_s
    return seconds, duration


async def staff_ids(client: Redis, keys: Keys) -> set[str]:
    ids: list[str] = await client.hkeys(keys.staff)  # type: ignore[assignment]
    return set(ids)


def write_sidecar(path: Path) -> float:
    """Write and close the sidecar; the monotonic time of the close."""
    with path.open("w", encoding="utf-8") as f:
        f.write(SIDECAR)
    return time.monotonic()


async def one_drop(
    n: int, mp3: Path, box: Dropbox, client: Redis, keys: Keys, lookup: Lookup, heard: set[str]
) -> Drop | str:
    """One timed drop, or why it failed."""
    await asyncio.to_thread(shutil.copyfile, mp3, box.incoming / f"drop{n}.mp3")
    sidecar = box.incoming / f"drop{n}.toml"
    before = await staff_ids(client, keys)
    closed = await asyncio.to_thread(write_sidecar, sidecar)
    taken = published = None
    while (now := time.monotonic()) < closed + DROP_TIMEOUT_S:
        if taken is None and not sidecar.exists():
            taken = now
        if published is None and await staff_ids(client, keys) - before:
            published = time.monotonic()
        answer = await lookup(CALLER)
        if answer.announcement is not None and answer.announcement not in heard:
            live = time.monotonic()
            taken = live if taken is None else taken
            published = live if published is None else published
            heard.add(answer.announcement)
            receipt = box.done / f"drop{n}.receipt.json"
            for _ in range(int(DROP_TIMEOUT_S / POLL_S)):
                if receipt.exists():
                    break
                await asyncio.sleep(POLL_S)
            else:
                return f"drop{n}: live as {answer.announcement} but no receipt in done/"
            filed = json.loads(receipt.read_text(encoding="utf-8"))["announcement"]
            if filed != answer.announcement:
                return f"drop{n}: the lookup heard {answer.announcement}, the receipt says {filed}"
            return Drop(live - closed, taken - closed, published - taken, live - published, filed)
        await asyncio.sleep(POLL_S)
    rejected = sorted(p.name for p in box.rejected.glob(f"drop{n}*"))
    return f"drop{n}: not live after {DROP_TIMEOUT_S:g} s; in rejected/: {rejected or 'nothing'}"


async def run_drops(
    settings: Settings, keys: Keys, mp3: Path, drops: int, seed: int
) -> tuple[list[Drop], list[str], list[str]]:
    """The drop folder and the publisher running; ``drops`` timed drops.

    Returns the drops that went live, the failures, and what was left in incoming/."""
    client = connect(settings.redis)
    poller = connect(settings.redis)
    results: list[Drop] = []
    failures: list[str] = []
    try:
        await import_inventory(settings, client, keys, settings.dropbox.spool.parent)
        publisher = Publisher(client, keys, settings, PromptRenderer(settings.prompts, "ru"))
        box = Dropbox(client, keys, settings, published=publisher.wake)
        lookup = Lookup(poller, keys, PhoneNormaliser(settings.phones.default_region))
        async with asyncio.TaskGroup() as group:
            services = [
                group.create_task(box.run(), name="drop folder"),
                group.create_task(publisher.run(PUBLISHER_BEAT_S), name="publisher"),
            ]
            try:
                await asyncio.sleep(1.0)  # the start-up scan and the first evaluation
                rng = random.Random(seed)
                heard: set[str] = set()
                for n in range(1, drops + 1):
                    await asyncio.sleep(rng.uniform(0, PUBLISHER_BEAT_S))
                    done = await one_drop(n, mp3, box, poller, keys, lookup, heard)
                    if isinstance(done, str):
                        failures.append(done)
                        print(f"  {done}", flush=True)
                        continue
                    results.append(done)
                    print(
                        f"  drop {n:2}: {done.total_s:.2f} s (settle {done.settle_s:.2f},"
                        f" convert+publish {done.publish_s:.2f}, beat {done.beat_s:.2f})"
                        f" {done.ident}",
                        flush=True,
                    )
            finally:
                for task in services:
                    task.cancel()
        left = sorted(p.name for p in box.incoming.iterdir())
    finally:
        async for key in client.scan_iter(f"{PREFIX}:*"):
            await client.unlink(key)
        await client.aclose()
        await poller.aclose()
    return results, failures, left


def _row(label: str, values: Sequence[float]) -> list[str]:
    ordered = sorted(values)
    if not ordered:
        return [label, "-", "-", "-"]
    return [
        label,
        f"{percentile(ordered, 0.5):.2f}",
        f"{percentile(ordered, 0.95):.2f}",
        f"{ordered[-1]:.2f}",
    ]


async def bench(url: str, drops: int, seed: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="announcer-bench-drop-") as scratch:
        root = Path(scratch)
        settings = Settings(
            redis=RedisSettings(url=url, prefix=PREFIX),
            prompts=PromptSettings(
                sounds_dir=root / "sounds", cache_dir=root / "tts", tts="espeak"
            ),
            dropbox=DropboxSettings(spool=root / "spool"),
        )
        mp3 = await asyncio.to_thread(make_recording, root)
        installs, duration = await time_install(mp3, root / "reference-sounds")
        results, failures, left = await run_drops(settings, Keys(PREFIX), mp3, drops, seed)

    install_s = statistics.median(installs)
    settle_s = settings.dropbox.settle_s
    totals = [d.total_s for d in results]
    p95 = percentile(sorted(totals), 0.95)
    ok = not failures and len(results) == drops and p95 <= TARGET_P95_S
    rows = [
        [f"reference: [dropbox] settle_s (default {DropboxSettings().settle_s:g})"]
        + [f"{settle_s:.2f}"] * 3,
        _row(f"reference: install_recording alone, {INSTALL_REPEATS} runs", installs),
        [
            f"reference: publisher beat, waits 0-{PUBLISHER_BEAT_S:g} s (Publisher.run)",
            "-",
            "-",
            f"{PUBLISHER_BEAT_S:.2f}",
        ],
        _row("  sidecar closed -> taken from incoming/", [d.settle_s for d in results]),
        _row("  taken -> in the staff hash (convert + publish)", [d.publish_s for d in results]),
        _row("  staff hash -> active (publisher beat)", [d.beat_s for d in results]),
        _row(f"measured: sidecar closed -> lookup hears it, {len(results)} drops", totals),
    ]
    out = [
        "",
        *table(rows, ["", "p50 s", "p95 s", "max s"]),
        "",
        f"floor by design: settle_s {settle_s:g} s + install_recording {install_s:.2f} s"
        f" = {settle_s + install_s:.2f} s, plus 0-{PUBLISHER_BEAT_S:g} s for the publisher's"
        f" beat (and {BURST_S:g} s of inotify burst wait)",
        f"the recording: {RECORDING_S:g} s mp3, {duration:.1f} s once installed;"
        f" left in incoming/: {', '.join(left) or 'nothing'}",
    ]
    if failures:
        out += [f"!! {len(failures)} drops failed:", *(f"!!   {f}" for f in failures)]
    out.append(
        f"\ntarget: drop -> live p95 <= {TARGET_P95_S:g} s over {drops} drops"
        f" (measured {p95:.2f} s): {verdict(ok)}"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drop_to_live", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--drops", type=int, default=20, metavar="N")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.drops < 1:
        parser.error("--drops must be at least 1")
    missing = [tool for tool in ("ffmpeg", "ffprobe", "espeak-ng") if shutil.which(tool) is None]
    if missing:
        print(f"needs {', '.join(missing)}: apt-get install ffmpeg espeak-ng", file=sys.stderr)
        return 1
    with PrivateRedis() as url:
        for line in machine_lines(url):
            print(line)
        print(
            f"setup:   {len(DISTRICTS)} districts, {len(SWITCHES)} switches,"
            f" {len(SUBSCRIBERS)} subscribers; {args.drops} drops of a {RECORDING_S:g}-s mp3"
            f" into incoming/; default [dropbox] settings; publisher beat {PUBLISHER_BEAT_S:g} s\n",
            flush=True,
        )
        for line in asyncio.run(bench(url, args.drops, args.seed)):
            print(line)
    print(f"load average {load_average()} at the end (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
