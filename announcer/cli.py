"""The ``announcer`` command: one function per subcommand.

This is the only module that configures logging or prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from tqdm import tqdm

from announcer import __version__, config, probes, status
from announcer.config import ConfigError, Settings
from announcer.inventory.billing import BillingReader
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import ImportResult, run_import
from announcer.inventory.model import Row, Table, TableError
from announcer.inventory.store import ImportBusy, InventoryStore
from announcer.keys import Keys
from announcer.lookup import Answer, Lookup
from announcer.phones import PhoneNormaliser
from announcer.poller import Poller
from announcer.redisconn import connect, unreachable

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1


def _fail(message: str) -> int:
    print(f"announcer: {message}", file=sys.stderr)
    return EXIT_FAILED


def _settings(args: argparse.Namespace) -> Settings:
    return config.load(args.config).settings


# check-config ----------------------------------------------------------------


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


# import ----------------------------------------------------------------------


def _bar(rows: Iterator[Row], total: int | None, label: str) -> Iterator[Row]:
    with tqdm(total=total, desc=label, unit=" rows", unit_scale=True, file=sys.stderr) as bar:
        for row in rows:
            bar.update()
            yield row


def cmd_import(args: argparse.Namespace) -> int:
    settings = _settings(args)
    inv = settings.inventory
    paths = {
        "districts": args.districts or inv.districts_csv,
        "switches": args.switches or inv.switches_csv,
        "subscribers": args.subscribers or inv.subscribers_csv,
    }
    use_billing = args.billing or (not any(paths.values()) and settings.billing.url is not None)
    if not use_billing and not all(paths.values()):
        missing = ", ".join(f"--{k}" for k, v in paths.items() if not v)
        return _fail(
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
        return _fail(f"nothing was imported: {exc}")
    except ImportBusy as exc:
        return _fail(f"nothing was imported: {exc}")
    except RedisError as exc:
        return _fail(f"nothing was imported: {unreachable(settings.redis, exc)}")
    for line in result.report(max_errors=args.max_errors):
        print(line, file=sys.stdout if result.ok else sys.stderr)
    if args.errors_file and result.outcome.errors:
        args.errors_file.write_text(
            "".join(f"{e}\n" for e in result.outcome.errors), encoding="utf-8"
        )
    return EXIT_OK if result.ok else EXIT_FAILED


# lookup ----------------------------------------------------------------------


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
    settings = _settings(args)

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
        return _fail(unreachable(settings.redis, exc))
    if args.json:
        data = [a.as_dict() for a in answers]
        print(json.dumps(data[0] if len(data) == 1 else data, ensure_ascii=False, indent=2))
    else:
        print("\n".join(_render(a) for a in answers))
    return EXIT_OK


# status and poll -------------------------------------------------------------


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "?"
    seconds = max(0, int(now - at))
    clock = time.strftime("%H:%M:%S", time.localtime(at))
    if seconds < 120:
        return f"{clock} ({seconds} s ago)"
    if seconds < 7200:
        return f"{clock} ({seconds // 60} min ago)"
    return f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(at))} ({seconds // 3600} h ago)"


def _render_status(data: dict[str, Any]) -> str:
    now = data["at"]
    counts = data["counts"]
    out = [
        f"Switches: {data['switches']:,}: "
        + ", ".join(
            f"{counts[s]:,} {s}" for s in ("up", "down", "unreachable", "flapping", "unknown")
        )
    ]
    if data["inventory"] is None:
        out.append("No inventory has been imported yet: run announcer import.")
    if data["down"]:
        out.append("Down (each is the root cause of its outage):")
        for e in data["down"]:
            out.append(
                f"  {e['switch']:<16} {e['district_name']:<16} {e['state']} since"
                f" {_ago(e['since'], now)}; {e['behind']} unreachable behind it; {e['reason']}"
            )
    if data["unreachable"]:
        out.append(f"Unreachable ({len(data['unreachable']):,}), by root cause:")
        by_root: dict[str, list[str]] = {}
        for e in data["unreachable"]:
            by_root.setdefault(e["root_cause"] or "?", []).append(e["switch"])
        for root, switches in by_root.items():
            shown = ", ".join(switches[:8]) + (
                f" and {len(switches) - 8} more" if len(switches) > 8 else ""
            )
            out.append(f"  behind {root}: {shown}")
    poller = data["poller"]
    if poller is None:
        out.append("Poller: has not swept yet (announcer poll).")
    else:
        out.append(
            f"Poller: last sweep {_ago(poller['last_sweep_at'], now)}, took"
            f" {poller['last_sweep_s']:.2f} s; {poller['probed']:,} probed:"
            f" {poller['alive']:,} alive, {poller['silent']:,} silent, {poller['failed']:,} could"
            " not be probed"
        )
    return "\n".join(out)


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def go() -> dict[str, Any]:
        redis = connect(settings.redis)
        try:
            return await status.gather(redis, Keys(settings.redis.prefix))
        finally:
            await redis.aclose()

    try:
        data = asyncio.run(go())
    except RedisError as exc:
        return _fail(unreachable(settings.redis, exc))
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(_render_status(data))
    return EXIT_OK


def cmd_poll(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def go() -> int:
        redis = connect(settings.redis)
        keys = Keys(settings.redis.prefix)
        probe_map: dict[str, probes.Probe] = {}
        try:
            _, switches = await InventoryStore(redis, keys).switches()
            if not switches:
                return _fail("no inventory to poll: run announcer import first")
            for name in sorted(probes.needed(r.get("probe", "icmp") for r in switches.values())):
                try:
                    probe_map[name] = probes.create(name, settings)
                except RuntimeError as exc:
                    return _fail(str(exc))
                description = getattr(probe_map[name], "description", None)
                if description:
                    print(description, file=sys.stderr)
            poller = Poller(redis, keys, settings, probe_map)
            if args.once:
                info = await poller.sweep()
                print(
                    f"swept {info.probed:,} switches in {info.duration_s:.2f} s: {info.alive:,}"
                    f" alive, {info.silent:,} silent, {info.failed:,} could not be probed"
                )
                return EXIT_OK
            await poller.run()
            return EXIT_OK
        finally:
            for probe in probe_map.values():
                await probe.close()
            await redis.aclose()

    try:
        return asyncio.run(go())
    except RedisError as exc:
        return _fail(unreachable(settings.redis, exc))


# demo ------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from announcer import demo  # noqa: PLC0415  (only the demo needs it)

    return demo.run(args.inventory, args.redis_url)


# wiring ----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="announcer",
        description="Tells callers about network outages before their call is queued.",
    )
    p.add_argument("--version", action="version", version=f"announcer {__version__}")
    p.add_argument(
        "--config",
        type=Path,
        help=f"TOML config file (default: ${config.CONFIG_ENV}, else {config.DEFAULT_PATH})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    st = sub.add_parser("status", help="switch states, outages and the poller's last sweep")
    st.add_argument("--json", action="store_true", help="machine-readable status")
    st.set_defaults(func=cmd_status)

    po = sub.add_parser("poll", help="probe the switches on the beat, keep their states in Redis")
    po.add_argument("--once", action="store_true", help="one sweep, then exit")
    po.set_defaults(func=cmd_poll)

    d = sub.add_parser("demo", help="a private Redis, the sample inventory and a few lookups")
    d.add_argument(
        "--inventory",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "examples" / "inventory",
        help="folder with districts.csv, switches.csv, subscribers.csv",
    )
    d.add_argument("--redis-url", help="use this Redis instead of a private one")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return code
