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
from announcer.announcements import Announcement, Maintenance, Scope, Source, Topology
from announcer.cancel import raise_if_cancelled
from announcer.config import Settings
from announcer.engine import Result, Rules, SwitchView, evaluate
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.prompts.renderer import PromptRenderer, is_fragment
from announcer.prompts.templates import text_for
from announcer.store import StateStore

logger = logging.getLogger(__name__)

#: A prompt that could not be rendered is tried again after this long.
RENDER_RETRY_S = 60.0

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
        "created": f"{a.created:.3f}",
        # for notifications: the expected restoration and who wrote it
        **({"eta": f"{a.eta:.3f}"} if a.eta is not None else {}),
        **({"author": a.author} if a.author else {}),
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
        self._views: tuple[int, dict[str, SwitchView]] = (0, {})
        self._quiet: tuple[object, float, Result] | None = None
        """the last evaluation's inputs, until when they hold, and its result"""
        self._suppressed: set[str] = set()
        self._failures: list[dict[str, str]] = []
        self._retry_at: dict[str, float] = {}
        self.render_retry_s = RENDER_RETRY_S
        """announcement id -> when its failed rendering may be tried again"""
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

    async def views(self) -> dict[str, SwitchView]:
        """Every switch's state, read again only when the poller wrote some:
        10,000 states decoded every second would cost more than the sweeps."""
        version = await self.states.version()
        if version != self._views[0] or not version:
            raw_states = await self.states.states()
            views = {
                s: SwitchView(v["state"], float(v.get("since", 0.0)), v.get("root"))
                for s, v in raw_states.items()
            }
            self._views = (version, views)
        return self._views[1]

    def describe(self, topology: Topology) -> Callable[[Announcement], str]:
        language = self.settings.announcements.language

        def words(a: Announcement) -> str:
            if a.scope is Scope.DISTRICT:
                names = [topology.district_names.get(d, d) for d in a.targets]
            else:
                names = []
            return text_for(a.source, language, names, a.eta, None)

        return words

    def _due(self, ident: str) -> bool:
        """May the prompt of ``ident`` be rendered now (not failed lately)?"""
        return time.monotonic() >= self._retry_at.get(ident, -math.inf)

    async def _sound(self, a: Announcement, before: Mapping[str, Announcement]) -> Announcement:
        """The announcement with its prompt; never worse than the prompt it had.

        A prompt that could not be rendered is tried again every
        ``RENDER_RETRY_S`` meanwhile a shipped fragment plays (or, when the
        sounds folder cannot even take that, nothing: the call goes on).
        """
        if a.audio:
            return replace(a, prompt=a.audio)
        old = before.get(a.id)
        kept = old.prompt if old is not None else None
        stand_in = kept is None or is_fragment(kept)
        if kept and old is not None and old.text == a.text and not (stand_in and self._due(a.id)):
            return replace(a, prompt=kept)
        if self.renderer is None:
            return a
        if not self._due(a.id):
            return replace(a, prompt=kept)
        rendered = await self.renderer.render(a.text)
        if rendered.path:
            if a.id in self._retry_at:
                logger.info("%s has its own prompt again", a.id)
                del self._retry_at[a.id]
            return replace(a, prompt=rendered.path)
        self._retry_at[a.id] = time.monotonic() + self.render_retry_s
        if kept:
            logger.warning(
                "could not render %s (%s); its previous prompt stays", a.id, rendered.error
            )
            return replace(a, prompt=kept)
        logger.warning("could not render %s (%s); a shipped fragment plays", a.id, rendered.error)
        failure = {"kind": "prompt-failed", "id": a.id, "reason": rendered.error or "unknown"}
        self._failures.append(failure)
        try:
            return replace(a, prompt=await self.renderer.fallback(a.source))
        except OSError as exc:
            failure["reason"] += f"; no fragment either: {exc}"
            logger.error(
                "%s plays nothing: the sounds folder %s cannot take even a shipped fragment"
                " (%s); check its free space and permissions",
                a.id,
                self.renderer.sounds_dir,
                exc,
            )
            return replace(a, prompt=None)

    async def prepare(self) -> None:
        """Install the shipped fragments now, while the sounds folder can
        take them, so they are there if it fills up or turns read-only."""
        if self.renderer is None:
            return
        for source in Source:
            try:
                await self.renderer.fallback(source)
            except (OSError, RuntimeError) as exc:
                logger.error(
                    "cannot install the shipped fragments into %s (%s); check its free space"
                    " and permissions: a prompt that cannot be rendered will play nothing",
                    self.renderer.sounds_dir,
                    exc,
                )
                return

    async def publish_once(self, now: float | None = None) -> Result:
        now = time.time() if now is None else now
        topology = await self.topology()
        views = await self.views()
        staff = await self.store.staff()
        windows = await self.store.maintenance()
        previous = await self.store.active()
        inputs = (self._views[0], self._topology[0], staff, windows, previous)
        quiet = self._quiet
        if (
            quiet is not None
            and quiet[0] == inputs
            and self._views[0]  # states nobody versioned (written by hand): always read
            and now < quiet[1]
            and not self._retry_due()
        ):
            return quiet[2]  # nothing the engine reads changed, and nothing falls due
        describe = self.describe(topology)
        result = evaluate(topology, views, staff, windows, previous, now, self.rules, describe)
        before = {a.id: a for a in previous}
        self._failures.clear()
        result.active = [await self._sound(a, before) for a in result.active]
        for gone in self._retry_at.keys() - {a.id for a in result.active}:
            del self._retry_at[gone]
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
        self._quiet = (inputs, self._next_due(now, staff, windows, result), result)
        for a in result.opened:
            logger.info("announcement %s opened (%s %s)", a.id, a.scope, ",".join(a.targets))
        for a in result.closed:
            logger.info("announcement %s closed", a.id)
        return result

    def _next_due(
        self, now: float, staff: list[Announcement], windows: list[Maintenance], result: Result
    ) -> float:
        """The next moment the engine's answer may change with nothing else
        changing: a window opens or closes, a staff announcement starts or
        ends, a "service restored" ends, an outage's expiry must be pushed on;
        and REWRITE_S at the latest."""
        hold = self.rules.auto_hold_s / 2
        moments = [now + REWRITE_S]
        moments += [m.starts for m in windows if m.starts > now] + [m.ends for m in windows]
        moments += [a.created for a in staff if a.created > now] + [a.expires for a in staff]
        moments += [a.expires - (hold if a.source is Source.AUTO else 0) for a in result.active]
        return min(moments)

    def _retry_due(self) -> bool:
        """Is a prompt that failed to render due to be tried again?"""
        return any(at <= time.monotonic() for at in self._retry_at.values())

    def forget_written(self) -> None:
        """Write the active set at the next evaluation even if it looks
        unchanged (another instance may have written it meanwhile)."""
        self._written, self._written_at = (), -math.inf
        self._quiet = None

    def wake(self) -> None:
        """Evaluate now rather than at the next beat: a state changed, a drop went live."""
        self._wake.set()

    async def run(self, interval_s: float = 1.0) -> None:
        """Evaluate when woken, and at least every ``interval_s`` (for expiries);
        until cancelled; Redis outages are waited out."""
        healthy = True
        await self.prepare()
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
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
