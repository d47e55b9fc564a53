"""Commands for tech support: announce, clear, list, maintenance."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer import staff
from announcer.announce_store import AnnouncementStore
from announcer.announcements import Announcement, Maintenance, new_id
from announcer.cli.common import EXIT_OK, fail, settings_of
from announcer.config import Settings
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.prompts.audio import AudioProblem, install_recording
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.redisconn import connect, unreachable

T = TypeVar("T")


def _with_redis(settings: Settings, work: Callable[[Redis, Keys], Awaitable[T]]) -> T | int:
    async def go() -> T:
        redis = connect(settings.redis)
        try:
            return await work(redis, Keys(settings.redis.prefix))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(go())
    except RedisError as exc:
        return fail(unreachable(settings.redis, exc))


async def _publish(redis: Redis, keys: Keys, settings: Settings) -> None:
    """Make the change live now, whether or not `announcer run` is running."""
    renderer = PromptRenderer(settings.prompts, settings.announcements.language)
    await Publisher(redis, keys, settings, renderer).publish_once()


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def cmd_announce(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    now = time.time()
    ttl = until = eta = None
    if args.ttl:
        ttl = staff.parse_duration(args.ttl)
    if args.until:
        until = staff.parse_moment(args.until, now)
    if args.eta:
        eta = staff.parse_moment(args.eta, now)
    for value in (ttl, until, eta):
        if isinstance(value, staff.Refused):
            return fail(value.reason)

    async def work(redis: Redis, keys: Keys) -> Announcement | staff.Refused:
        audio = None
        ident = None
        if args.audio:
            ident = new_id("staff")
            installed = await install_recording(
                args.audio,
                settings.prompts.sounds_dir,
                ident,
                settings.dropbox.max_recording_s,
            )
            if isinstance(installed, AudioProblem):
                return staff.Refused(f"{args.audio}: {installed.reason}")
            audio = installed.path
        request = staff.StaffRequest(
            districts=tuple(args.district or ()),
            switches=tuple(args.switch or ()),
            everyone=args.all,
            text=args.text or "",
            audio=audio,
            ttl_s=ttl if isinstance(ttl, float) else None,
            until=until if isinstance(until, float) else None,
            eta=eta if isinstance(eta, float) else None,
            author=args.author,
        )
        result = await staff.publish(redis, keys, settings, request, now, ident)
        if isinstance(result, Announcement):
            await _publish(redis, keys, settings)
        return result

    result = _with_redis(settings, work)
    if isinstance(result, int):
        return result
    if isinstance(result, staff.Refused):
        return fail(f"not announced: {result.reason}")
    print(result.id)
    return EXIT_OK


def cmd_clear(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def work(redis: Redis, keys: Keys) -> str | None:
        store = AnnouncementStore(redis, keys)
        mine = {a.id for a in await store.staff()}
        ids = sorted(mine) if args.all else args.ids
        unknown = [i for i in ids if i not in mine]
        if unknown:
            active = {a.id for a in await store.active()}
            automatic = [i for i in unknown if i in active]
            if automatic:
                return (
                    f"{', '.join(automatic)} is automatic: it ends when the switches are back;"
                    " to say something else meanwhile, announce for that scope"
                )
            return f"no staff announcement {', '.join(unknown)}; see announcer list"
        await store.remove_staff(ids)
        await _publish(redis, keys, settings)
        return None

    result = _with_redis(settings, work)
    if isinstance(result, int):
        return result
    if result is not None:
        return fail(result)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def work(redis: Redis, keys: Keys) -> dict[str, Any]:
        store = AnnouncementStore(redis, keys)
        return {
            "active": [a.record() for a in await store.active()],
            "maintenance": [m.record() for m in await store.maintenance()],
            "districts": await InventoryStore(redis, keys).district_names(),
        }

    data = _with_redis(settings, work)
    if isinstance(data, int):
        return data
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    names = data["districts"]
    active = sorted(data["active"], key=lambda a: (a["source"], a["created"]))
    if not active:
        print("Nothing is announced.")
    for a in active:
        where = a["scope"]
        if a["scope"] == "district":
            where = ", ".join(names.get(d, d) for d in a["targets"])
        elif a["scope"] == "switch":
            shown = a["targets"][:6]
            more = len(a["targets"]) - len(shown)
            where = "switches " + ", ".join(shown) + (f" and {more} more" if more else "")
        print(f"{a['id']:<28} {a['source']:<11} {where}")
        print(f"{'':<28} until {_when(a['expires'])}; plays {a.get('prompt') or '(no sound)'}")
        if a.get("text"):
            print(f"{'':<28} {a['text']}")
    upcoming = [m for m in data["maintenance"] if m["starts"] > time.time()]
    for m in upcoming:
        where = ", ".join(names.get(d, d) for d in m["districts"])
        print(f"planned: {m['id']} {where} {_when(m['starts'])} - {_when(m['ends'])}")
    return EXIT_OK


def cmd_maintenance_add(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    now = time.time()
    starts, ends = staff.parse_moment(args.start, now), staff.parse_moment(args.end, now)
    if isinstance(starts, staff.Refused):
        return fail(starts.reason)
    if isinstance(ends, staff.Refused):
        return fail(ends.reason)
    if ends <= starts:
        return fail("the works must end after they start; check --from and --to")

    async def work(redis: Redis, keys: Keys) -> Maintenance | staff.Refused:
        checked = await staff.resolve(
            redis,
            keys,
            settings,
            staff.StaffRequest(districts=tuple(args.district), text=args.text or "-"),
            now,
        )
        if isinstance(checked, staff.Refused):
            return checked
        window = Maintenance(
            new_id("works"), checked.targets, starts, ends, args.text or "", args.author, now
        )
        await AnnouncementStore(redis, keys).add_maintenance(window)
        await _publish(redis, keys, settings)
        return window

    result = _with_redis(settings, work)
    if isinstance(result, int):
        return result
    if isinstance(result, staff.Refused):
        return fail(f"not planned: {result.reason}")
    print(result.id)
    return EXIT_OK


def cmd_maintenance_remove(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def work(redis: Redis, keys: Keys) -> str | None:
        store = AnnouncementStore(redis, keys)
        planned = {m.id for m in await store.maintenance()}
        unknown = [i for i in args.ids if i not in planned]
        if unknown:
            return f"no planned works {', '.join(unknown)}; see announcer list"
        await store.remove_maintenance(args.ids)
        await _publish(redis, keys, settings)
        return None

    result = _with_redis(settings, work)
    if isinstance(result, int):
        return result
    if result is not None:
        return fail(result)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("announce", help="publish a staff announcement; prints its id")
    who = a.add_mutually_exclusive_group(required=True)
    who.add_argument("--district", action="append", help="district id or name (repeatable)")
    who.add_argument("--switch", action="append", help="switch id (repeatable)")
    who.add_argument("--all", action="store_true", help="everyone who calls")
    what = a.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="spoken by text-to-speech")
    what.add_argument("--audio", type=Path, help="a recording: wav, mp3, ogg, m4a, webm, flac")
    how_long = a.add_mutually_exclusive_group()
    how_long.add_argument("--ttl", help="how long: 45m, 2h, 1d (default [announcements])")
    how_long.add_argument("--until", help="until when: 14:30 or 2026-12-01 09:00")
    a.add_argument("--eta", help="expected restoration, spoken: 14:30")
    a.add_argument("--author", help="who is announcing (shown in lists and receipts)")
    a.set_defaults(func=cmd_announce)

    c = sub.add_parser("clear", help="end staff announcements now")
    ids = c.add_mutually_exclusive_group(required=True)
    ids.add_argument("ids", nargs="*", default=[], metavar="ID")
    ids.add_argument("--all", action="store_true", help="every staff announcement")
    c.set_defaults(func=cmd_clear)

    ls = sub.add_parser("list", help="what callers hear now, and planned works")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    m = sub.add_parser("maintenance", help="planned works")
    msub = m.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = msub.add_parser("add", help="plan works in some districts; prints the id")
    add.add_argument("--district", action="append", required=True, help="id or name")
    add.add_argument("--from", dest="start", required=True, help="01:00 or 2026-12-01 01:00")
    add.add_argument("--to", dest="end", required=True, help="05:00 or 2026-12-01 05:00")
    add.add_argument("--text", help="what callers hear (default: the planned-works template)")
    add.add_argument("--author")
    add.set_defaults(func=cmd_maintenance_add)
    rm = msub.add_parser("remove", help="cancel planned works")
    rm.add_argument("ids", nargs="+", metavar="ID")
    rm.set_defaults(func=cmd_maintenance_remove)
