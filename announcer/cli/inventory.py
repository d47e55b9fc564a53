"""Commands about the inventory: check-config, import, lookup."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

from redis.exceptions import RedisError
from tqdm import tqdm

from announcer import config
from announcer.cli.common import EXIT_FAILED, EXIT_OK, fail, settings_of
from announcer.config import ConfigError
from announcer.inventory.billing import BillingReader
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import ImportResult, run_import
from announcer.inventory.model import Row, Table, TableError
from announcer.inventory.store import ImportBusy
from announcer.keys import Keys
from announcer.lookup import Answer, Lookup
from announcer.phones import PhoneNormaliser
from announcer.redisconn import connect, unreachable


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        loaded = config.load(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    s = loaded.settings
    print(f"{loaded.source}: OK")
    print(f"  redis: {s.redis.url} (prefix {s.redis.prefix!r})")
    print(f"  phone numbers read as region {s.phones.default_region}")
    billing = s.billing.url.split("@")[-1] if s.billing.url else "not configured"
    print(f"  billing database: {billing}")
    return EXIT_OK


def _bar(rows: Iterator[Row], total: int | None, label: str) -> Iterator[Row]:
    with tqdm(total=total, desc=label, unit=" rows", unit_scale=True, file=sys.stderr) as bar:
        for row in rows:
            bar.update()
            yield row


def cmd_import(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    inv = settings.inventory
    paths = {
        "districts": args.districts or inv.districts_csv,
        "switches": args.switches or inv.switches_csv,
        "subscribers": args.subscribers or inv.subscribers_csv,
    }
    use_billing = args.billing or (not any(paths.values()) and settings.billing.url is not None)
    if not use_billing and not all(paths.values()):
        missing = ", ".join(f"--{k}" for k, v in paths.items() if not v)
        return fail(
            f"say where the inventory comes from: {missing} (or [inventory] *_csv in the"
            " config), or --billing with [billing] url set"
        )
    stack = ExitStack()

    def tables() -> tuple[Table, Table, Table]:
        if use_billing:
            reader = stack.enter_context(BillingReader(settings.billing))
            return reader.table("districts"), reader.table("switches"), reader.table("subscribers")
        enc = inv.csv_encoding
        return (
            read_table("districts", Path(str(paths["districts"])), enc),
            read_table("switches", Path(str(paths["switches"])), enc),
            read_table("subscribers", Path(str(paths["subscribers"])), enc),
        )

    source = (
        f"billing database {settings.billing.url.split('@')[-1]}"
        if use_billing and settings.billing.url
        else "CSV " + ", ".join(str(p) for p in paths.values())
    )
    show_progress = sys.stderr.isatty() and not args.quiet

    def rows(table: Table) -> Iterable[Row]:
        if show_progress and table.kind == "subscribers":
            return _bar(table.rows, table.expected_rows, "checking subscribers")
        return table.rows

    async def go() -> ImportResult:
        redis = None if args.dry_run else connect(settings.redis)
        try:
            with stack:
                return await run_import(
                    settings,
                    redis,
                    Keys(settings.redis.prefix),
                    tables,
                    source,
                    dry_run=args.dry_run,
                    progress=rows,
                )
        finally:
            if redis is not None:
                await redis.aclose()

    try:
        result = asyncio.run(go())
    except TableError as exc:
        return fail(f"nothing was imported: {exc}")
    except ImportBusy as exc:
        return fail(f"nothing was imported: {exc}")
    except RedisError as exc:
        return fail(f"nothing was imported: {unreachable(settings.redis, exc)}")
    for line in result.report(max_errors=args.max_errors):
        print(line, file=sys.stdout if result.ok else sys.stderr)
    if args.errors_file and result.outcome.errors:
        args.errors_file.write_text(
            "".join(f"{e}\n" for e in result.outcome.errors), encoding="utf-8"
        )
    return EXIT_OK if result.ok else EXIT_FAILED


def _render(answer: Answer) -> str:
    lines = [f"{answer.caller_id or '(withheld)'}:"]
    if answer.phone:
        lines.append(f"  phone     {answer.phone}")
    if answer.known:
        lines.append(f"  switch    {answer.switch}")
        lines.append(f"  district  {answer.district_name} ({answer.district})")
        state = answer.state or "unknown"
        if answer.state_since is not None:
            state += " since " + time.strftime("%H:%M:%S", time.localtime(answer.state_since))
        if answer.root_cause and answer.root_cause != answer.switch:
            state += f", root cause {answer.root_cause}"
        lines.append(f"  state     {state}")
        for label in ("account", "port", "address"):
            if value := getattr(answer, label):
                lines.append(f"  {label:<9} {value}")
    lines.append(f"  prompt    {answer.prompt or '(none: straight to the queue)'}")
    lines.append(f"  why       {answer.reason}")
    return "\n".join(lines)


def cmd_lookup(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def go() -> list[Answer]:
        redis = connect(settings.redis)
        try:
            lookup = Lookup(
                redis,
                Keys(settings.redis.prefix),
                PhoneNormaliser(settings.phones.default_region),
            )
            return [await lookup(phone) for phone in args.phones]
        finally:
            await redis.aclose()

    try:
        answers = asyncio.run(go())
    except RedisError as exc:
        return fail(unreachable(settings.redis, exc))
    if args.json:
        data = [a.as_dict() for a in answers]
        print(json.dumps(data[0] if len(data) == 1 else data, ensure_ascii=False, indent=2))
    else:
        print("\n".join(_render(a) for a in answers))
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("check-config", help="validate the config file and exit 0 or 1")
    c.set_defaults(func=cmd_check_config)

    i = sub.add_parser("import", help="load districts, switches and subscribers into Redis")
    i.add_argument("--districts", type=Path, help="districts.csv (id,name)")
    i.add_argument("--switches", type=Path, help="switches.csv (id,address,district,parent)")
    i.add_argument("--subscribers", type=Path, help="subscribers.csv (phone,switch)")
    i.add_argument("--billing", action="store_true", help="read the [billing] SQL queries")
    i.add_argument("--dry-run", action="store_true", help="check the rows, change nothing")
    i.add_argument("--errors-file", type=Path, help="write every rejected row to this file")
    i.add_argument("--max-errors", type=int, default=50, help="rejected rows to print")
    i.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    i.set_defaults(func=cmd_import)

    lk = sub.add_parser("lookup", help="what a caller would hear, and why")
    lk.add_argument("phones", nargs="+", metavar="PHONE", help="caller ID in any format")
    lk.add_argument("--json", action="store_true", help="machine-readable answer")
    lk.set_defaults(func=cmd_lookup)
