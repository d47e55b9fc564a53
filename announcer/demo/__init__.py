"""The live demo: the sample city on simulated switches, the real daemon, until Ctrl-C.

``announcer demo`` needs no root and touches nothing outside a temporary
folder: a private Redis (``announcer.private_redis``; ``--redis-url`` names
one of your own, whose ``announcer-demo:`` keys it then uses and removes),
the sample inventory with every switch probed over SNMP, one simulated SNMP
agent per switch on its own loopback address (``agents``), the daemon, and
the scenes (``show``) until Ctrl-C, SIGTERM or ``--scenes N``.

The daemon is ``announcer run`` in a child process, on a configuration the
demo writes, in a session of its own (as is the private Redis). That makes
Ctrl-C clean: the terminal's SIGINT reaches only the demo, which then stops
the pieces in order - the scene, the daemon (SIGTERM, exactly how systemd
stops it, and it exits 0), the agents, Redis, the folder - so nothing ever
sees a peer vanish before it. ``serve()`` in this process would have to
share the signals: it installs its own SIGINT and SIGTERM handlers and
puts the defaults back when it returns, which leaves a moment where a
SIGTERM would kill the demo before it cleaned up. The child also keeps the
daemon's log in a file you can follow while the show runs, and runs the
daemon exactly as it is deployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer.config import Settings
from announcer.demo.agents import Agents, loopback
from announcer.demo.city import City
from announcer.demo.daemon import Daemon, demo_config
from announcer.demo.show import DemoFailed, Show
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import run_import
from announcer.inventory.model import Row, Table, TableError
from announcer.keys import Keys
from announcer.private_redis import NoRedisServer, PrivateRedis
from announcer.redisconn import connect, unreachable

EXIT_OK, EXIT_FAILED = 0, 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
COMMUNITY = b"announcer-demo"
DAY_S = 86_400.0


def _say(text: str = "") -> None:
    print(text, flush=True)


def _tables(inventory: Path) -> tuple[Table, Table, Table]:
    """The inventory's tables, every switch probed over SNMP with the demo's profile."""

    def snmp(rows: Table) -> Table:
        rows.rows = (
            Row(r.line, {**r.cells, "probe": "snmp", "snmp_profile": "demo"}, r.problem)
            for r in rows.rows
        )
        return rows

    return (
        read_table("districts", inventory / "districts.csv"),
        snmp(read_table("switches", inventory / "switches.csv")),
        read_table("subscribers", inventory / "subscribers.csv"),
    )


def _read_city(inventory: Path) -> tuple[City, dict[str, str]] | str:
    """The roles the scenes need and each switch's address; or what is wrong."""
    districts, switches, subscribers = _tables(inventory)
    names = {r.cells["id"]: r.cells["name"] for r in districts.rows}
    tree: dict[str, tuple[str, str | None]] = {}
    addresses: dict[str, str] = {}
    for row in switches.rows:
        switch, address = row.cells["id"], row.cells["address"].strip()
        why = loopback(address)
        if why:
            return (
                f"switch {switch}: {why}; the demo simulates switches on loopback addresses"
                " only: give it an inventory like examples/inventory"
            )
        tree[switch] = (row.cells["district"], row.cells.get("parent") or None)
        addresses[switch] = address
    number_on: dict[str, str] = {}
    for row in subscribers.rows:
        number_on.setdefault(row.cells["switch"], row.cells["phone"])
    city = City.of(tree, names, number_on)
    return city if isinstance(city, str) else (city, addresses)


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(inventory: Path, redis_url: str | None, scenes: int | None = None) -> int:
    """The demo; 0 once stopped (Ctrl-C, SIGTERM, or after ``scenes`` scenes)."""
    # Until the event loop takes the signals over, SIGTERM and SIGHUP stop
    # the demo the way Ctrl-C does; nothing is running yet that needs stopping.
    for number in STOP_SIGNALS[1:]:
        signal.signal(number, _interrupt)
    try:
        try:
            read = _read_city(inventory)
        except (TableError, KeyError, OSError) as exc:
            read = f"cannot read the inventory in {inventory}: {exc}; run it from a clone"
        if isinstance(read, str):
            print(f"announcer demo: {read}", file=sys.stderr)
            return EXIT_FAILED
        return asyncio.run(_until_stopped(read[0], read[1], inventory, redis_url, scenes))
    except KeyboardInterrupt:
        return EXIT_OK  # stopped before anything was started


async def _until_stopped(
    city: City,
    addresses: dict[str, str],
    inventory: Path,
    redis_url: str | None,
    scenes: int | None,
) -> int:
    """Run the demo until it ends or a stop signal comes; then clean up."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, stop.set)
    try:
        demo = asyncio.create_task(_demo(city, addresses, inventory, redis_url, scenes))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait((demo, stopped), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not demo.done():
            _say()
            _say("== Stopping: the daemon, the agents, Redis and the temporary folder")
            demo.cancel()
        await asyncio.wait((demo,))
        if demo.cancelled():
            _say("   everything the demo started is stopped and removed")
            return EXIT_OK
        status = demo.result()
        if status == EXIT_OK:
            shown = f"{scenes} scene{'' if scenes == 1 else 's'}"
            _say()
            _say(f"== {shown} shown; everything the demo started is stopped and removed")
        return status
    finally:
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)


async def _demo(
    city: City,
    addresses: dict[str, str],
    inventory: Path,
    redis_url: str | None,
    scenes: int | None,
) -> int:
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="announcer-demo-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        shared = redis_url is not None
        if redis_url is None:
            try:
                redis_url = stack.enter_context(PrivateRedis(own_session=True))
            except NoRedisServer as exc:
                print(f"announcer demo: {exc}", file=sys.stderr)
                return EXIT_FAILED
        uptimes = {s: DAY_S * (3 + i % 7) + 3_600 * i for i, s in enumerate(addresses)}
        async with await Agents.start(addresses, COMMUNITY, uptimes) as agents:
            settings = demo_config(work, redis_url, agents.port, COMMUNITY.decode())
            try:
                return await _live(settings, work, city, agents, inventory, scenes, shared)
            except RedisError as exc:
                print(f"announcer demo: {unreachable(settings.redis, exc)}", file=sys.stderr)
            except DemoFailed as exc:
                print(f"announcer demo: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_FAILED  # unreachable: the with block returns


async def _live(
    settings: Settings,
    work: Path,
    city: City,
    agents: Agents,
    inventory: Path,
    scenes: int | None,
    shared: bool,
) -> int:
    """Import, start the daemon, play the scenes; ``shared``: a Redis of the user's."""
    keys = Keys(settings.redis.prefix)
    redis = connect(settings.redis)
    try:
        if shared:
            await _forget(redis, keys)  # what an earlier demo left
        result = await run_import(
            settings, redis, keys, lambda: _tables(inventory), f"CSV in {inventory}"
        )
        if not result.ok:
            for line in result.report():
                print(line, file=sys.stderr)
            return EXIT_FAILED
        _say(f"== The sample city from {inventory}, every switch asked over SNMP")
        _say(f"   {result.report()[1].strip()}")
        config = work / "announcer.toml"
        _say(f"   Redis: {settings.redis.url} (keys under {keys.prefix}:)")
        _say(f"   watch it: {_command()} --config {config} status --watch")
        _say(
            f"   {len(agents)} simulated switches answer SNMP on UDP port {agents.port}"
            " of their loopback addresses"
        )
        async with Daemon(config, work / "announcer.log") as daemon:
            _say(f"   the daemon: announcer run (pid {daemon.pid}), its log: {daemon.log}")
            show = Show(redis, keys, city, agents, daemon, settings, _say)
            await show.until(daemon.listening, "the daemon's start")
            await show.until(
                lambda: show.all_in(list(agents), "up"), "the first answers of every switch"
            )
            _say(f"{show.at()} the daemon is up and every switch answers")
            for number, (title, scene) in enumerate(show.scenes(), start=1):
                if scenes is not None and number > scenes:
                    break
                _say()
                _say(f"== {number}. {title}")
                await scene()
        return EXIT_OK
    finally:
        with contextlib.suppress(RedisError):
            if shared:
                await _forget(redis, keys)
            await redis.aclose()


async def _forget(redis: Redis, keys: Keys) -> None:
    """Remove the keys under the demo's prefix (in a Redis of your own)."""
    stale = [k async for k in redis.scan_iter(f"{keys.prefix}:*", count=1000)]
    for start in range(0, len(stale), 1000):
        await redis.unlink(*stale[start : start + 1000])


def _command() -> str:
    """How to run announcer from another terminal, as this one was run."""
    beside = Path(sys.executable).parent / "announcer"
    if beside.exists():
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m announcer"
