"""Commands that run the service: run, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer import probes
from announcer.cli.common import EXIT_OK, fail, settings_of
from announcer.config import ConfigError, Settings
from announcer.dropbox import Dropbox
from announcer.heard import HeardLog
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.pbx.agi import AgiServer
from announcer.pbx.ami import AstDbSink
from announcer.pbx.mirror import Mirror, RedisKeysSink, Truth, status_writer
from announcer.phones import PhoneNormaliser
from announcer.poller import Poller
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.redisconn import connect, unreachable
from announcer.sdnotify import Beat, Notifier, Watchdog
from announcer.states import State

logger = logging.getLogger(__name__)


class _Reload(Exception):
    """A good new configuration arrived (SIGHUP): start over with it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("reload")
        self.settings = settings


class _Stop(Exception):
    """SIGTERM or SIGINT: stop every part and exit 0."""


async def serve(settings: Settings, reload: Callable[[], Settings] | None = None) -> int:
    """Every part of the service, until SIGTERM or SIGINT (exit 0).

    SIGHUP reads the configuration again with ``reload``: a bad one is
    reported and the one in force stays; a good one restarts every part with
    it, which also reads the inventory afresh. Signals only set flags that
    a task of the group turns into an exception, so every part is stopped by
    the task group the same way, whenever the signal comes.
    """
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hangups: asyncio.Queue[None] = asyncio.Queue()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangups.put_nowait, None)
    first = True
    try:
        while True:
            stopping = False
            try:
                return await _serve_once(settings, notifier, stop, hangups, reload, first)
            except* _Reload as group:
                reloaded = group.exceptions[0]
                assert isinstance(reloaded, _Reload)
                settings, first = reloaded.settings, False
                logger.info("configuration reloaded: every part restarts with it")
            except* _Stop:
                stopping = True
            if stopping:
                notifier.stopping()
                logger.info("stopped")
                return EXIT_OK
    finally:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(number)
        notifier.close()


async def _await_signals(
    stop: asyncio.Event,
    hangups: asyncio.Queue[None],
    reload: Callable[[], Settings] | None,
    notifier: Notifier,
) -> None:
    """Raise ``_Stop`` on SIGTERM/SIGINT, ``_Reload`` on SIGHUP with a
    configuration that loads; a bad one is logged and the wait goes on."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            hangup = asyncio.ensure_future(hangups.get())
            await asyncio.wait((stopped, hangup), return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                hangup.cancel()
                notifier.send("STOPPING=1", "STATUS=stopping")
                logger.info("stopping")
                raise _Stop()
            if reload is None:
                logger.warning("SIGHUP: nothing to reload from (no configuration file)")
                continue
            try:
                fresh = reload()
            except ConfigError as exc:
                logger.error(
                    "SIGHUP: the new configuration is refused, the one in force stays:\n%s", exc
                )
                notifier.status(f"configuration refused on reload: {exc.problems[0]}")
                continue
            notifier.send("RELOADING=1", "STATUS=reloading the configuration")
            raise _Reload(fresh)
    finally:
        stopped.cancel()


async def _serve_once(
    settings: Settings,
    notifier: Notifier,
    stop: asyncio.Event,
    hangups: asyncio.Queue[None],
    reload: Callable[[], Settings] | None,
    first: bool,
) -> int:
    redis = connect(settings.redis)
    keys = Keys(settings.redis.prefix)
    probe_map: dict[str, probes.Probe] = {}
    try:
        _, switches = await InventoryStore(redis, keys).switches()
        methods = {r.get("probe", "icmp") for r in switches.values()} or {"icmp"}
        for name in sorted(probes.needed(methods)):
            try:
                probe_map[name] = probes.create(name, settings)
            except RuntimeError as exc:
                return fail(str(exc))
            description = getattr(probe_map[name], "description", None)
            if description:
                logger.info("%s", description)
        renderer = PromptRenderer(settings.prompts, settings.announcements.language)
        mirrors = make_mirrors(redis, keys, settings)
        # what the last run reported is stale; a mirror switched off since
        # must not linger in status
        await redis.hdel(keys.links, *MIRRORS)

        def wake_mirrors() -> None:
            for mirror in mirrors:
                mirror.wake()

        publisher = Publisher(redis, keys, settings, renderer, changed=wake_mirrors)
        poller = Poller(redis, keys, settings, probe_map, changed=publisher.wake)
        services = {
            "poller": poller.run(),
            "publisher": publisher.run(),
            "drop folder": Dropbox(redis, keys, settings, published=publisher.wake).run(),
        }
        agi = settings.fastagi
        if agi.enabled:
            lookup = Lookup(redis, keys, PhoneNormaliser(settings.phones.default_region))
            server = AgiServer(
                lookup,
                agi.host,
                agi.port,
                header_timeout_s=agi.header_timeout_s,
                lookup_timeout_s=agi.lookup_timeout_s,
                max_sessions=agi.max_sessions,
                record=HeardLog(redis, keys).record,
                prompt_path=settings.prompts.for_asterisk,
            )
            await server.start()  # a port in use stops the start, before READY
            services[f"FastAGI on {agi.host}:{agi.port}"] = server.run()
        for mirror in mirrors:
            services[mirror.sink.name] = mirror.run()
        watchdog = Watchdog(
            [
                Beat("poller", max(60.0, 6 * settings.icmp.interval_s), lambda: poller.beat),
                Beat("publisher", 60.0, lambda: publisher.beat),
            ]
        )

        def describe() -> str:
            down = sum(s.state is not State.UP for s in poller.fleet.states.values())
            return (
                f"{len(poller.targets):,} switches watched, {down:,} not up;"
                f" {publisher.active:,} announcements active"
            )

        services["systemd notifications"] = supervise(notifier, watchdog, describe)
        services["signals"] = _await_signals(stop, hangups, reload, notifier)
        logger.info("announcer is running: %s", ", ".join(services))
        if first:
            notifier.ready("starting: " + ", ".join(services))
        else:
            notifier.send("READY=1", "STATUS=configuration reloaded")
        async with asyncio.TaskGroup() as group:
            for name, service in services.items():
                group.create_task(service, name=name)
        return EXIT_OK  # every part returned: not reached while they run for ever
    finally:
        with contextlib.suppress(RedisError):
            for probe in probe_map.values():
                await probe.close()
            await redis.aclose()


async def supervise(notifier: Notifier, watchdog: Watchdog, describe: Callable[[], str]) -> None:
    """Tell systemd how things are, and pet its watchdog while every part
    keeps moving; a part stuck is said in the status and the petting stops,
    so systemd restarts the service (WatchdogSec)."""
    interval = min(10.0, notifier.watchdog_s / 3) if notifier.watchdog_s else 10.0
    was_stuck: list[str] = []
    while True:
        await asyncio.sleep(interval)
        stuck = watchdog.stuck()
        if stuck:
            notifier.status("stuck: " + "; ".join(stuck))
            if not was_stuck:
                logger.error("stuck (%s): the watchdog is no longer petted", "; ".join(stuck))
        else:
            if notifier.watchdog_s:
                notifier.pet()
            notifier.status(describe())
        was_stuck = stuck


#: The mirrors by their field in ``P:links``.
ASTDB, REDIS_KEYS = "astdb", "redis-keys"
MIRRORS = (ASTDB, REDIS_KEYS)


def make_mirrors(redis: Redis, keys: Keys, settings: Settings) -> list[Mirror]:
    """The AstDB and Redis-key mirrors the configuration asks for."""
    truth = Truth(redis, keys, settings.prompts.for_asterisk)
    lease_s = settings.mirror.lease_s
    made = []
    if settings.ami.enabled:
        ami = settings.ami
        made.append(
            Mirror(
                AstDbSink(ami),
                truth,
                lease_s=lease_s,
                max_writes_per_s=ami.max_writes_per_s,
                max_backoff_s=ami.max_backoff_s,
                publish_status=status_writer(redis, keys, ASTDB),
            )
        )
    if settings.mirror.redis_keys:
        made.append(
            Mirror(
                RedisKeysSink(redis, keys, lease_s),
                truth,
                lease_s=lease_s,
                max_writes_per_s=100_000,
                publish_status=status_writer(redis, keys, REDIS_KEYS),
            )
        )
    return made


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        return asyncio.run(serve(settings, reload=lambda: settings_of(args)))
    except RedisError as exc:
        return fail(unreachable(settings.redis, exc))


def cmd_demo(args: argparse.Namespace) -> int:
    from announcer import demo  # noqa: PLC0415  (only the demo needs it)

    return demo.run(args.inventory, args.redis_url)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("run", help="the service: poll the switches, publish announcements")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="a private Redis, the sample inventory and a few lookups")
    d.add_argument(
        "--inventory",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "examples" / "inventory",
        help="folder with districts.csv, switches.csv, subscribers.csv",
    )
    d.add_argument("--redis-url", help="use this Redis instead of a private one")
    d.set_defaults(func=cmd_demo)
