"""Commands that run the service: run (with its signals and systemd), demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from announcer.cli.common import EXIT_FAILED, EXIT_OK, fail, settings_of
from announcer.config import ConfigError, Settings
from announcer.daemon import Parts
from announcer.keys import Keys
from announcer.redisconn import connect, unreachable
from announcer.sdnotify import Notifier, Watchdog

logger = logging.getLogger(__name__)


class _Control(Exception):
    """A signal's way through the task group: not a crash."""


class PartCrashed(Exception):
    """One part of the service raised: the whole service stops, non-zero."""

    def __init__(self, part: str, cause: Exception) -> None:
        super().__init__(f"{part}: {type(cause).__name__}: {cause}")
        self.part = part
        self.cause = cause


class _Reload(_Control):
    """A good new configuration arrived (SIGHUP): start over with it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("reload")
        self.settings = settings


class _Stop(_Control):
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
            crashed: list[PartCrashed] = []
            try:
                return await _serve_once(settings, notifier, stop, hangups, reload, first)
            except* _Reload as group:
                reloaded = group.exceptions[0]
                assert isinstance(reloaded, _Reload)
                settings, first = reloaded.settings, False
                logger.info("configuration reloaded: every part restarts with it")
            except* _Stop:
                stopping = True
            except* PartCrashed as group:
                crashed = [e for e in group.exceptions if isinstance(e, PartCrashed)]
            if crashed:
                for crash in crashed:
                    logger.critical(
                        "%s crashed; announcer stops rather than run without it (systemd"
                        " restarts it): %s",
                        crash.part,
                        crash,
                        exc_info=crash.cause,
                    )
                notifier.status(f"crashed: {crashed[0]}")
                return EXIT_FAILED
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
    parts = Parts(redis, keys, settings)
    try:
        try:
            await parts.assemble()
        except RuntimeError as exc:
            return fail(str(exc))
        services = dict(parts.services)
        services["systemd notifications"] = lambda: supervise(
            notifier, parts.watchdog(), parts.describe
        )
        services["signals"] = lambda: _await_signals(stop, hangups, reload, notifier)
        logger.info("announcer is running: %s", ", ".join(services))
        if first:
            notifier.ready("starting: " + ", ".join(services))
        else:
            notifier.send("READY=1", "STATUS=configuration reloaded")
        async with asyncio.TaskGroup() as group:
            for name, start in services.items():
                group.create_task(_part(name, start), name=name)
        return EXIT_OK  # every part returned: not reached while they run for ever
    finally:
        with contextlib.suppress(RedisError):
            await parts.close()
            await redis.aclose()


async def _part(name: str, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one part; its crash is named (a signal's exception goes through)."""
    try:
        await start()
    except _Control:
        raise
    except Exception as exc:
        raise PartCrashed(name, exc) from exc


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


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        return asyncio.run(serve(settings, reload=lambda: settings_of(args)))
    except RedisError as exc:
        return fail(unreachable(settings.redis, exc))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def cmd_demo(args: argparse.Namespace) -> int:
    from announcer import demo  # noqa: PLC0415  (only the demo needs it)

    return demo.run(args.inventory, args.redis_url, args.scenes)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("run", help="the service: poll the switches, publish announcements")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser(
        "demo", help="the daemon live on the sample city's simulated switches, until Ctrl-C"
    )
    d.add_argument(
        "--inventory",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "examples" / "inventory",
        help="folder with districts.csv, switches.csv, subscribers.csv",
    )
    d.add_argument("--redis-url", help="use this Redis instead of a private one")
    d.add_argument(
        "--scenes",
        type=_positive,
        metavar="N",
        help="stop after N scenes (default: until Ctrl-C)",
    )
    d.set_defaults(func=cmd_demo)
