"""Runs the engine on what Redis holds and publishes the result with its prompts.

Every evaluation reads the switch states, staff announcements and planned
works, asks ``engine.evaluate`` what callers should hear, gives every
announcement a sound (a staff recording, rendered text-to-speech, or a
shipped fragment when rendering fails, never replacing a prompt that worked),
and writes the active set and its index in one transaction, with an event for
every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer.announce_store import AnnouncementStore
from announcer.announcements import Announcement, Scope, Topology
from announcer.cancel import raise_if_cancelled
from announcer.config import Settings
from announcer.engine import Result, Rules, SwitchView, evaluate
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.prompts.renderer import PromptRenderer
from announcer.prompts.templates import text_for
from announcer.store import StateStore

logger = logging.getLogger(__name__)

#: Write the active set again after this long even if it did not change, in
#: case something else changed it in Redis.
REWRITE_S = 30.0


def _event(action: str, a: Announcement) -> dict[str, str]:
    return {
        "kind": "announcement",
        "action": action,
        "id": a.id,
        "scope": a.scope.value,
        "source": a.source.value,
        "targets": ",".join(a.targets),
        "text": a.text,
        "expires": f"{a.expires:.3f}",
    }


class Publisher:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        renderer: PromptRenderer | None,
        changed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.changed = changed
        """called after the active set was written with a change (the mirrors)"""
        self.renderer = renderer
        self.inventory = InventoryStore(redis, keys)
        self.states = StateStore(redis, keys)
        self.store = AnnouncementStore(redis, keys)
        self.rules = Rules.from_settings(settings.announcements)
        self._topology: tuple[int | None, Topology] = (None, Topology())
        self._suppressed: set[str] = set()
        self._failures: list[dict[str, str]] = []
        self._wake = asyncio.Event()
        self._written: tuple[object, ...] = ()
        """what this publisher last wrote: nothing is written while it stays so"""
        self._written_at = -math.inf
        self.beat = time.monotonic()
        """when the last evaluation ended, well or not (the watchdog's measure)"""
        self.active = 0
        """announcements active after the last evaluation"""

    async def topology(self) -> Topology:
        live = await self.inventory.current()
        gen = live.gen if live is not None else None
        if gen is not None and gen == self._topology[0]:
            return self._topology[1]
        _, switches = await self.inventory.switches()
        topology = Topology(
            district_of={i: r["district"] for i, r in switches.items()},
            parent_of={i: r.get("parent") for i, r in switches.items()},
            district_names=await self.inventory.district_names(),
            subscribers=await self.inventory.subscriber_counts(),
        )
        self._topology = (gen, topology)
        return topology

    def describe(self, topology: Topology) -> Callable[[Announcement], str]:
        language = self.settings.announcements.language

        def words(a: Announcement) -> str:
            if a.scope is Scope.DISTRICT:
                names = [topology.district_names.get(d, d) for d in a.targets]
            else:
                names = []
            return text_for(a.source, language, names, a.eta, None)

        return words

    async def _sound(self, a: Announcement, before: Mapping[str, Announcement]) -> Announcement:
        """The announcement with its prompt; never worse than the prompt it had."""
        if a.audio:
            return replace(a, prompt=a.audio)
        old = before.get(a.id)
        if old is not None and old.prompt and old.text == a.text:
            return replace(a, prompt=old.prompt)
        if self.renderer is None:
            return a
        rendered = await self.renderer.render(a.text)
        if rendered.path:
            return replace(a, prompt=rendered.path)
        if old is not None and old.prompt:
            logger.warning(
                "could not render %s (%s); its previous prompt stays", a.id, rendered.error
            )
            return replace(a, prompt=old.prompt)
        logger.warning("could not render %s (%s); a shipped fragment plays", a.id, rendered.error)
        self._failures.append(
            {"kind": "prompt-failed", "id": a.id, "reason": rendered.error or "unknown"}
        )
        return replace(a, prompt=await self.renderer.fallback(a.source))

    async def publish_once(self, now: float | None = None) -> Result:
        now = time.time() if now is None else now
        topology = await self.topology()
        raw_states = await self.states.states()
        views = {
            s: SwitchView(v["state"], float(v.get("since", 0.0)), v.get("root"))
            for s, v in raw_states.items()
        }
        staff = await self.store.staff()
        windows = await self.store.maintenance()
        previous = await self.store.active()
        describe = self.describe(topology)
        result = evaluate(topology, views, staff, windows, previous, now, self.rules, describe)
        before = {a.id: a for a in previous}
        self._failures.clear()
        result.active = [await self._sound(a, before) for a in result.active]
        events = [
            *(_event("opened", a) for a in result.opened),
            *(_event("updated", a) for a in result.updated),
            *(_event("closed", a) for a in result.closed),
            *self._failures,
        ]
        for root in sorted(set(result.suppressed) - self._suppressed):
            events.append({"kind": "outage-in-maintenance", "switch": root})
        self._suppressed = set(result.suppressed)
        written = (
            [a.record() for a in result.active],
            dict(result.by_switch),
            result.everyone,
        )
        stale = time.monotonic() - self._written_at > REWRITE_S
        if events or written != self._written or stale:
            await self.store.write_active(result.active, result.by_switch, result.everyone, events)
            news = events or written != self._written
            self._written, self._written_at = written, time.monotonic()
            if news and self.changed is not None:
                self.changed()
        expired = [a.id for a in staff if a.expires <= now]
        if expired:
            await self.store.remove_staff(expired)
        over = [m.id for m in windows if m.ends <= now]
        if over:
            await self.store.remove_maintenance(over)
        self.active = len(result.active)
        for a in result.opened:
            logger.info("announcement %s opened (%s %s)", a.id, a.scope, ",".join(a.targets))
        for a in result.closed:
            logger.info("announcement %s closed", a.id)
        return result

    def wake(self) -> None:
        """Evaluate now rather than at the next beat: a state changed, a drop went live."""
        self._wake.set()

    async def run(self, interval_s: float = 1.0) -> None:
        """Evaluate when woken, and at least every ``interval_s`` (for expiries);
        until cancelled; Redis outages are waited out."""
        healthy = True
        while True:
            raise_if_cancelled()
            self._wake.clear()
            try:
                await self.publish_once()
                if not healthy:
                    logger.warning("Redis is reachable again; announcements are published")
                    healthy = True
            except RedisError as exc:
                if healthy:
                    logger.error("cannot publish announcements: %s; retrying", exc)
                    healthy = False
            self.beat = time.monotonic()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a
            # cancellation that lands as the wake-up does, and the task group
            # stopping the service would then wait on this task for ever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
