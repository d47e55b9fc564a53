"""The demo's live part: a fibre cut in the sample city, and what callers hear.

The sample switches live on loopback addresses, which all answer pings. The
poller and the publisher run for real; a firewall rule in a chain of the
demo's own drops the pings to the northern aggregation switch and everything
behind it (the cut), and removing it is the splice. Needs root (raw ICMP and
iptables); every rule is removed on the way out, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from announcer import staff
from announcer.announce_store import AnnouncementStore
from announcer.config import Settings
from announcer.demo.firewall import Firewall, missing
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from announcer.poller import Poller
from announcer.probes.icmp import IcmpProbe, IcmpUnavailable
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.store import StateStore

#: Callers the demo asks about: one behind the cut, one elsewhere.
NORTH_CALLER = "8 (916) 593-55-10"
SOUTH_CALLER = "9169211975"
WAIT_S = 60.0


def unavailable() -> str | None:
    """Why the live part cannot run here, or None."""
    if os.geteuid() != 0:
        return "it needs root for raw ICMP and a firewall rule: run sudo scripts/demo.sh"
    return missing()


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Seconds until ``check()`` holds; a clear error after WAIT_S."""
    started = time.monotonic()
    while time.monotonic() - started < WAIT_S:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what} did not happen within {WAIT_S:.0f} s")


class FibreCut:
    """The scene: cut, announce, splice; each step waits for the real thing."""

    def __init__(
        self, redis: Redis, keys: Keys, settings: Settings, say: Callable[[str], None]
    ) -> None:
        self.redis, self.keys, self.settings, self.say = redis, keys, settings, say
        self.lookup = Lookup(redis, keys, PhoneNormaliser(settings.phones.default_region))
        self.states = StateStore(redis, keys)
        self.store = AnnouncementStore(redis, keys)

    async def state_of(self, switch: str) -> str:
        return str((await self.states.states()).get(switch, {}).get("state", "unknown"))

    async def hears(self, caller: str) -> str:
        answer = await self.lookup(caller)
        if answer.prompt is None:
            return f"{caller}: nothing; straight to the queue"
        active = {a.id: a for a in await self.store.active()}
        heard = active.get(answer.announcement or "")
        text = f' "{heard.text}"' if heard else ""
        return f"{caller}: {answer.announcement}{text}\n      plays {answer.prompt}"

    async def cut(self, addresses: list[str]) -> None:
        say = self.say
        say("== The fibre behind agg-north is cut (a firewall rule drops its pings)")
        with Firewall() as firewall:
            firewall.drop_echo_requests(addresses)
            cut_at = time.monotonic()

            async def agg_down() -> bool:
                return await self.state_of("agg-north") == "down"

            await _until(agg_down, "agg-north going down")
            found = await self.states.states()
            behind = sorted(s for s, v in found.items() if v.get("root") == "agg-north")
            say(
                f"   {time.monotonic() - cut_at:4.1f} s: agg-north is down; unreachable"
                f" behind it: {', '.join(s for s in behind if s != 'agg-north')}"
            )

            async def announced() -> bool:
                return (await self.lookup(NORTH_CALLER)).announcement is not None

            await _until(announced, "the announcement")
            say(f"   {time.monotonic() - cut_at:4.1f} s: callers from Северный hear it:")
            say(f"   {await self.hears(NORTH_CALLER)}")
            say(f"   {await self.hears(SOUTH_CALLER)}")
            say("")
            await self.staff_message()
            say("")
            say("== The fibre is spliced (the rule is removed)")

    async def staff_message(self) -> None:
        self.say('== Tech support: announcer announce --district Южный --text "..." --ttl 1h')
        request = staff.StaffRequest(
            districts=("Южный",),
            text="В районе Южный ведутся работы на линии. Приносим извинения.",
            ttl_s=3600,
            author="демо",
        )
        made = await staff.publish(self.redis, self.keys, self.settings, request)
        if isinstance(made, staff.Refused):
            raise RuntimeError(made.reason)

        async def south_hears() -> bool:
            return (await self.lookup(SOUTH_CALLER)).announcement == made.id

        await _until(south_hears, "the staff announcement")
        self.say(f"   {await self.hears(SOUTH_CALLER)}")

    async def splice(self) -> None:
        spliced_at = time.monotonic()

        async def agg_up() -> bool:
            return await self.state_of("agg-north") == "up"

        await _until(agg_up, "agg-north coming back")
        took = time.monotonic() - spliced_at
        self.say(f"   {took:4.1f} s: agg-north is up, and the switches behind it")

        async def restored() -> bool:
            heard = (await self.lookup(NORTH_CALLER)).announcement
            return heard not in (None, "auto-district-north")

        await _until(restored, "the restored message")
        took = time.monotonic() - spliced_at
        self.say(f"   {took:4.1f} s: the outage prompt has stopped; for 30 minutes:")
        self.say(f"   {await self.hears(NORTH_CALLER)}")


async def play(
    redis: Redis, keys: Keys, settings: Settings, say: Callable[[str], None], work: Path
) -> None:
    """Run the poller and the publisher on the sample city, and play the scene."""
    prompts = settings.prompts.model_copy(
        update={"sounds_dir": work / "sounds", "cache_dir": work / "tts", "tts": "espeak"}
    )
    settings = settings.model_copy(update={"prompts": prompts})
    try:
        probe = IcmpProbe(settings.icmp)
    except IcmpUnavailable as exc:
        say(f"   skipped: {exc}")
        return
    _, switches = await InventoryStore(redis, keys).switches()
    north = [r["address"] for r in switches.values() if r["district"] == "north"]
    renderer = PromptRenderer(settings.prompts, settings.announcements.language)
    publisher = Publisher(redis, keys, settings, renderer)
    poller = Poller(redis, keys, settings, {"icmp": probe}, changed=publisher.wake)
    scene = FibreCut(redis, keys, settings, say)
    say(f"   {probe.description}; a sweep every {settings.icmp.interval_s:g} s")
    tasks = [asyncio.create_task(poller.run()), asyncio.create_task(publisher.run())]
    try:

        async def all_up() -> bool:
            found = await scene.states.states()
            return len(found) == len(switches) and all(v["state"] == "up" for v in found.values())

        await _until(all_up, "the first sweep")
        say(f"   all {len(switches)} switches answer")
        say("")
        await scene.cut(north)
        await scene.splice()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await probe.close()
