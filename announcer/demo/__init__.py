"""The live demo: a private Redis, the sample city, a fibre cut, what callers hear.

Runs on nothing but loopback and a throwaway Redis, so it is safe to try on
any machine; ``--redis-url`` points it at a Redis of your own instead. As
root, the poller and the publisher run for real and a firewall rule cuts a
district off (``fibre_cut``); without root that part is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import ExitStack
from pathlib import Path

from announcer.config import RedisSettings, Settings
from announcer.demo import fibre_cut
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import run_import
from announcer.inventory.model import Table
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from announcer.private_redis import NoRedisServer, PrivateRedis
from announcer.redisconn import connect

#: Callers to show: the same subscriber as billing wrote the number and as
#: the trunk presents it, a stranger, a withheld number, and nonsense.
CALLERS = ("8 (916) 123-45-67", "+79161234567", "+7 999 000-00-00", "anonymous", "12")


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _show(settings: Settings, inventory: Path) -> None:
    redis = connect(settings.redis)
    keys = Keys("announcer-demo")
    try:

        def tables() -> tuple[Table, Table, Table]:
            return (
                read_table("districts", inventory / "districts.csv"),
                read_table("switches", inventory / "switches.csv"),
                read_table("subscribers", inventory / "subscribers.csv"),
            )

        _say(f"== Importing the sample inventory from {inventory}")
        result = await run_import(settings, redis, keys, tables, f"CSV in {inventory}")
        for line in result.report():
            _say(line)
        _say()
        _say("== What callers would hear (no outage yet, so nobody hears a prompt)")
        lookup = Lookup(redis, keys, PhoneNormaliser(settings.phones.default_region))
        for caller in CALLERS:
            answer = await lookup(caller)
            where = (
                f"switch {answer.switch}, {answer.district_name}"
                if answer.known
                else "not a subscriber"
            )
            _say(f"  {caller!r:>22} -> {answer.phone or '-':<13} {where}")
            _say(f"  {'':>22}    {answer.reason}")
        _say()
        _say("== Watching the switches (the sample city lives on loopback addresses)")
        why_not = fibre_cut.unavailable()
        if why_not:
            _say(f"   skipped: {why_not}")
            return
        with tempfile.TemporaryDirectory(prefix="announcer-demo-") as work:
            await fibre_cut.play(redis, keys, settings, _say, Path(work))
    finally:
        await redis.aclose()


def run(inventory: Path, redis_url: str | None) -> int:
    if not (inventory / "subscribers.csv").exists():
        print(f"announcer demo: no sample inventory in {inventory}; run it from a clone")
        return 1
    with ExitStack() as stack:
        if redis_url is None:
            try:
                redis_url = stack.enter_context(PrivateRedis())
            except NoRedisServer as exc:
                print(f"announcer demo: {exc}")
                return 1
            _say(f"== A private Redis is running at {redis_url}")
        settings = Settings(redis=RedisSettings(url=redis_url))
        asyncio.run(_show(settings, inventory))
    return 0
