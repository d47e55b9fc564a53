"""How long a full inventory import takes, and how much Redis memory it uses.

Generates a synthetic billing export (``bench.synthetic``; its generation is
timed but not part of any figure), starts a private Redis (unless
``--redis-url``), and runs the real import path, ``run_import`` on tables
from ``read_table``, as ``announcer import`` does. References measured in the
same run: parsing the same CSV files with nothing but the csv module (the
floor for reading), a dry run (read and check, no Redis), and a second import
of the identical data (the daily case: it reads the live generation back for
the diff, writes a new one and removes the old one).

    python -m bench.inventory_import [--subscribers N] [--switches N] [--districts N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import random
import resource
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis

from announcer.config import RedisSettings, Settings
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import ImportResult, run_import
from announcer.inventory.model import Table
from announcer.keys import Keys
from announcer.redisconn import connect
from bench import synthetic
from bench.common import (
    PREFIX,
    add_redis_argument,
    delete_prefix,
    info,
    load_average,
    sync_client,
    table,
    used_memory,
    verdict,
    workspace,
)

TARGET_IMPORT_S = 30.0
TARGET_MEMORY_B = 60_000_000
MB = 1_000_000
#: Phone bucket keys whose encoding is checked besides the fullest one.
SAMPLED_BUCKETS = 5


@dataclass
class Run:
    """One run_import call, reduced to what the report needs."""

    wall_s: float
    ok: bool
    refused: list[str]
    districts: int
    switches: int
    subscribers: int
    rejected: int
    first_errors: list[str]
    diff: list[str] = field(default_factory=list)


@dataclass
class Buckets:
    buckets: int
    fullest_phones: tuple[str, int]
    fullest_details: tuple[str, int]
    encodings: dict[str, str]
    """key -> OBJECT ENCODING"""
    max_entries: int
    max_value: int


def parse_floor(syn: synthetic.Synthetic) -> tuple[float, int]:
    """Seconds to split all three files into rows with the csv module, and the row count."""
    rows = 0
    start = time.perf_counter()
    for path in (syn.districts_csv, syn.switches_csv, syn.subscribers_csv):
        with path.open(encoding="utf-8", newline="") as f:
            for _ in csv.reader(f):
                rows += 1
    return time.perf_counter() - start, rows


def _summary(result: ImportResult, wall_s: float) -> Run:
    inv = result.outcome.inventory
    diff: list[str] = []
    if result.diff is not None:
        d = result.diff
        diff = [
            "no changes" if d.empty else "CHANGES",
            f"{d.subscribers_added:,} added, {d.subscribers_removed:,} removed,"
            f" {d.subscribers_moved:,} moved",
        ]
    return Run(
        wall_s=wall_s,
        ok=result.ok,
        refused=list(result.refused),
        districts=len(inv.districts),
        switches=len(inv.switches),
        subscribers=len(inv.phones),
        rejected=len(result.outcome.errors),
        first_errors=[str(e) for e in result.outcome.errors[:5]],
        diff=diff,
    )


async def timed_import(
    settings: Settings, keys: Keys, syn: synthetic.Synthetic, dry_run: bool
) -> Run:
    """One import exactly as the CLI runs it (minus the progress bar), timed."""

    def tables() -> tuple[Table, Table, Table]:
        return (
            read_table("districts", syn.districts_csv),
            read_table("switches", syn.switches_csv),
            read_table("subscribers", syn.subscribers_csv),
        )

    client = None if dry_run else connect(settings.redis)
    try:
        start = time.perf_counter()
        result = await run_import(
            settings, client, keys, tables, f"synthetic CSV in {syn.folder}", dry_run=dry_run
        )
        wall = time.perf_counter() - start
    finally:
        if client is not None:
            await client.aclose()
    run = _summary(result, wall)
    del result
    gc.collect()
    return run


def generate_and_import(
    url: str, folder: Path, args: argparse.Namespace
) -> tuple[synthetic.Synthetic, Run] | None:
    """The setup of the benchmarks that need a live inventory (not timed):
    generate ``args``' synthetic city into ``folder``, import it under
    ``PREFIX``; None, said why, when the import failed."""
    start = time.perf_counter()
    syn = synthetic.generate(folder, args.districts, args.switches, args.subscribers, args.seed)
    print(
        f"generated {len(syn.districts):,} districts, {len(syn.switch_ids):,} switches,"
        f" {len(syn.numbers):,} subscribers in {time.perf_counter() - start:.1f} s,"
        f" seed {args.seed}",
        flush=True,
    )
    settings = Settings(redis=RedisSettings(url=url, prefix=PREFIX))
    with sync_client(url) as admin:
        delete_prefix(admin)
    run = asyncio.run(timed_import(settings, Keys(PREFIX), syn, dry_run=False))
    if not run.ok or run.rejected:
        print(f"the import failed or rejected rows: {run.refused} {run.first_errors}")
        return None
    return syn, run


def inspect_buckets(client: redis.Redis, keys: Keys, seed: int) -> Buckets:
    live = cast(dict[str, str], client.hgetall(keys.inventory))
    gen, buckets = live["gen"], int(live["buckets"])
    phone_len: list[int] = []
    detail_len: list[int] = []
    for start in range(0, buckets, 2000):
        pipe = client.pipeline(transaction=False)
        for b in range(start, min(start + 2000, buckets)):
            pipe.hlen(keys.phones(gen, b))
            pipe.hlen(keys.details(gen, b))
        answers = pipe.execute()
        phone_len += answers[0::2]
        detail_len += answers[1::2]
    fullest = max(range(buckets), key=phone_len.__getitem__)
    fullest_d = max(range(buckets), key=detail_len.__getitem__)
    rng = random.Random(seed)
    chosen = {fullest, 0, buckets - 1}
    chosen.update(rng.randrange(buckets) for _ in range(SAMPLED_BUCKETS - 2))
    names = [keys.phones(gen, b) for b in sorted(chosen)] + [keys.details(gen, fullest_d)]
    encodings = {name: str(client.object("encoding", name)) for name in names}
    config = cast(dict[str, str], client.config_get("hash-max-listpack-*"))
    return Buckets(
        buckets=buckets,
        fullest_phones=(keys.phones(gen, fullest), phone_len[fullest]),
        fullest_details=(keys.details(gen, fullest_d), detail_len[fullest_d]),
        encodings=encodings,
        max_entries=int(config.get("hash-max-listpack-entries", 0)),
        max_value=int(config.get("hash-max-listpack-value", 0)),
    )


def _mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


def _check(run: Run, label: str) -> list[str]:
    out = []
    if not run.ok:
        out.append(f"!! {label} was refused: {'; '.join(run.refused)}")
    if run.rejected:
        out.append(f"!! {label} rejected {run.rejected:,} rows, e.g.:")
        out += [f"!!   {e}" for e in run.first_errors]
    return out


def bench(url: str, syn: synthetic.Synthetic, seed: int) -> list[str]:
    settings = Settings(redis=RedisSettings(url=url, prefix=PREFIX))
    keys = Keys(PREFIX)
    out: list[str] = []
    with sync_client(url) as client:
        delete_prefix(client)
        floor_s, floor_rows = parse_floor(syn)
        dry = asyncio.run(timed_import(settings, keys, syn, dry_run=True))
        before = used_memory(client)
        first = asyncio.run(timed_import(settings, keys, syn, dry_run=False))
        after = used_memory(client)
        buckets = inspect_buckets(client, keys, seed)
        second = asyncio.run(timed_import(settings, keys, syn, dry_run=False))
        memory = info(client, "memory")
        after_again, peak = int(memory["used_memory"]), int(memory["used_memory_peak"])
        removed = delete_prefix(client)

    for run, label in ((dry, "the dry run"), (first, "the import"), (second, "the re-import")):
        out += _check(run, label)
    share = after - before
    per_subscriber = share / first.subscribers if first.subscribers else float("nan")
    phone_enc = [e for k, e in buckets.encodings.items() if ":phones:" in k]
    detail_enc = [e for k, e in buckets.encodings.items() if ":details:" in k]
    phones_ok = all(e == "listpack" for e in phone_enc)
    details_ok = all(e == "listpack" for e in detail_enc)

    def encodings(found: list[str]) -> str:
        kinds = sorted(set(found))
        return ", ".join(f"{k} ({found.count(k)} of {len(found)})" for k in kinds)

    rows = [
        (
            "import: read+check+write, wall",
            f"{first.wall_s:.1f} s",
            f"csv module parse only {floor_s:.1f} s; dry run (read+check) {dry.wall_s:.1f} s",
            f"≤ {TARGET_IMPORT_S:.0f} s",
            verdict(first.ok and first.wall_s <= TARGET_IMPORT_S),
        ),
        (
            "re-import of identical data, wall",
            f"{second.wall_s:.1f} s",
            f"first import {first.wall_s:.1f} s; diff: {', '.join(second.diff)}",
            f"≤ {TARGET_IMPORT_S:.0f} s",
            verdict(second.ok and second.wall_s <= TARGET_IMPORT_S),
        ),
        (
            "inventory share of used_memory",
            _mb(share),
            f"used_memory before {_mb(before)}, after {_mb(after)}",
            f"≤ {TARGET_MEMORY_B / MB:.0f} MB",
            verdict(share <= TARGET_MEMORY_B),
        ),
        (
            "  per subscriber",
            f"{per_subscriber:.1f} B",
            f"after re-import {_mb(after_again)}; peak {_mb(peak)} (two generations)",
            f"≤ {TARGET_MEMORY_B / max(first.subscribers, 1):.1f} B",
            "",
        ),
        (
            "phone bucket encoding",
            encodings(phone_enc),
            f"fullest bucket {buckets.fullest_phones[1]} entries of"
            f" {buckets.max_entries} allowed; {buckets.buckets:,} buckets",
            "listpack",
            verdict(phones_ok),
        ),
        (
            "details bucket encoding (fullest)",
            encodings(detail_enc),
            f"{buckets.fullest_details[1]} entries; values ≤ {buckets.max_value} B stay listpack",
            "listpack",
            verdict(details_ok),
        ),
    ]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    out += [
        "",
        f"imported {first.districts:,} districts, {first.switches:,} switches,"
        f" {first.subscribers:,} subscribers; {first.rejected:,} rows rejected;"
        f" csv module saw {floor_rows:,} lines",
        "",
        *table(rows, ("figure", "measured", "reference (same run)", "target", "verdict")),
        "",
        f"fullest phone bucket: {buckets.fullest_phones[0]};"
        f" sampled: {', '.join(k.rsplit(':', 1)[1] for k in buckets.encodings if ':phones:' in k)}",
        f"benchmark process peak RSS {rss_mb:.0f} MB;"
        f" removed {removed:,} benchmark keys afterwards",
        "MB = 10^6 bytes; wall times include reading and checking in a worker thread,"
        " snapshot + diff (re-import) and the Redis writes",
    ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inventory_import", description=__doc__.split("\n\n")[0]
    )
    synthetic.add_size_arguments(parser)
    add_redis_argument(parser)
    args = parser.parse_args(argv)
    problem = synthetic.check_sizes(args.districts, args.switches, args.subscribers)
    if problem:
        parser.error(problem)

    with ExitStack() as stack:
        url, folder = workspace(stack, args.redis_url)
        start = time.perf_counter()
        syn = synthetic.generate(folder, args.districts, args.switches, args.subscribers, args.seed)
        print(
            f"generated {len(syn.districts):,} districts, {len(syn.switch_ids):,} switches,"
            f" {len(syn.numbers):,} subscribers ({syn.bytes_on_disk() / MB:.1f} MB of CSV)"
            f" in {time.perf_counter() - start:.1f} s (not part of any figure), seed {args.seed}",
            flush=True,
        )
        numbers = len(syn.numbers)
        syn.numbers.clear()
        syn.switch_of.clear()
        gc.collect()
        print(f"importing {numbers:,} subscribers three times (dry run, import, re-import) ...")
        for line in bench(url, syn, args.seed):
            print(line)
        print(f"load average {load_average()} at the end (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
