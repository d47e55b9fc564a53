"""Commands about the switches: status, poll."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from redis.exceptions import RedisError

from announcer import probes, status
from announcer.cli.common import EXIT_OK, ago, clock, fail, settings_of
from announcer.config import Settings
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.poller import Poller
from announcer.redisconn import connect, unreachable


def render_status(data: dict[str, Any]) -> str:
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
                f" {ago(e['since'], now)}; {e['behind']} unreachable behind it; {e['reason']}"
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
            f"Poller: last sweep {ago(poller['last_sweep_at'], now)}, took"
            f" {poller['last_sweep_s']:.2f} s; {poller['probed']:,} probed:"
            f" {poller['alive']:,} alive, {poller['silent']:,} silent, {poller['failed']:,} could"
            " not be probed"
        )
    for link in data.get("links", {}).values():
        out.append(_render_link(link, now))
    prompts = data.get("prompts", {})
    if prompts.get("fragment"):
        out.append(
            "Prompts: could not be rendered, a shipped fragment plays instead (see the log;"
            " check the sounds folder's free space and permissions, and espeak-ng or gTTS): "
            + ", ".join(prompts["fragment"])
        )
    if prompts.get("silent"):
        out.append(
            "Prompts: NOTHING plays for these, the sounds folder cannot be written"
            " (check its free space and permissions): " + ", ".join(prompts["silent"])
        )
    cluster = data.get("cluster")
    if cluster:
        members = ", ".join(
            f"{name}{' (leader)' if name == cluster['leader'] else ''}"
            f"{'' if count is None else f': {count:,} switches'}"
            for name, count in cluster["members"].items()
        )
        out.append(f"Instances: {members}")
        if cluster["leader"] is None:
            out.append("  no leader at the moment: nothing is published until one takes over")
    return "\n".join(out)


def _render_link(link: dict[str, Any], now: float) -> str:
    """One mirror's line: is it in sync, and until when its prompts may play."""
    lease = link["vouched_until"]
    if link["state"] == "down":
        line = f"{link['name']}: DOWN since {ago(link['since'], now)}: {link['detail']}"
    elif link["state"] == "syncing":
        line = (
            f"{link['name']}: catching up, {link['entries']:,} entries written,"
            f" {link['pending']:,} to go"
        )
    elif link["state"] == "starting":
        line = f"{link['name']}: starting"
    else:
        line = (
            f"{link['name']}: in sync since {ago(link['since'], now)}, {link['entries']:,} entries"
        )
    if not lease:
        return line + "; no prompt mirrored yet"
    if lease <= now:
        return (
            line + f"; its lease ran out at {clock(lease)}: no mirrored prompt plays"
            " (is announcer running?)"
        )
    return line + f"; mirrored prompts play until {clock(lease)} unless renewed"


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.watch is not None:
        if args.json:
            return fail("--watch redraws the screen; leave out --json")
        if not args.watch > 0:
            return fail(f"--watch takes a number of seconds above 0, not {args.watch:g}")
        return _watch(settings, args.watch)

    async def go() -> dict[str, Any]:
        redis = connect(settings.redis)
        try:
            return await status.gather(redis, Keys(settings.redis.prefix))
        finally:
            await redis.aclose()

    try:
        data = asyncio.run(go())
    except RedisError as exc:
        return fail(unreachable(settings.redis, exc))
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(render_status(data))
    return EXIT_OK


#: Clears a terminal and puts the cursor top left (ANSI, as every NOC screen speaks).
_CLEAR = "\033[H\033[2J"


def _watch(settings: Settings, every_s: float) -> int:
    """The status redrawn every ``every_s`` until Ctrl-C; a Redis that stops
    answering is said on the screen, and the view carries on."""

    async def go() -> None:
        redis = connect(settings.redis)
        keys = Keys(settings.redis.prefix)
        try:
            while True:
                try:
                    shown = render_status(await status.gather(redis, keys))
                except RedisError as exc:
                    shown = unreachable(settings.redis, exc)
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                screen = _CLEAR if sys.stdout.isatty() else ""
                print(f"{screen}announcer status at {stamp}, every {every_s:g} s (Ctrl-C ends)")
                print(shown, flush=True)
                await asyncio.sleep(every_s)
        finally:
            await redis.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return EXIT_OK


def cmd_poll(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def go() -> int:
        redis = connect(settings.redis)
        keys = Keys(settings.redis.prefix)
        probe_map: dict[str, probes.Probe] = {}
        try:
            _, switches = await InventoryStore(redis, keys).switches()
            if not switches:
                return fail("no inventory to poll: run announcer import first")
            for name in sorted(probes.needed(r.get("probe", "icmp") for r in switches.values())):
                try:
                    probe_map[name] = probes.create(name, settings)
                except RuntimeError as exc:
                    return fail(str(exc))
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
        return fail(unreachable(settings.redis, exc))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = sub.add_parser("status", help="switch states, outages and the poller's last sweep")
    st.add_argument("--json", action="store_true", help="machine-readable status")
    st.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="redraw every SECONDS (2 if not given) until Ctrl-C, for the NOC screen",
    )
    st.set_defaults(func=cmd_status)

    po = sub.add_parser("poll", help="probe the switches on the beat, keep their states in Redis")
    po.add_argument("--once", action="store_true", help="one sweep, then exit")
    po.set_defaults(func=cmd_poll)
