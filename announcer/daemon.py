"""The wiring: every part of ``announcer run``, built from the settings.

The only module that knows every service. ``Parts.assemble`` makes the
probes, the poller, the publisher, the mirrors, the notifications, the
drop-folder watcher, the FastAGI server and the metrics endpoint, and says
which of them run on every instance and which only on the leader;
``announcer.cli.service`` runs them under one task group and handles the
signals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from redis.asyncio import Redis

from announcer import probes
from announcer.cluster import Cluster
from announcer.config import Settings
from announcer.dropbox import Dropbox
from announcer.heard import HeardLog, HeardOverAmi
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.metrics import Metrics
from announcer.notify.service import REDIS_LINK, Notifications
from announcer.pbx.agi import AgiServer
from announcer.pbx.ami import AstDbSink
from announcer.pbx.mirror import LinkStatus, Mirror, RedisKeysSink, Truth, status_writer
from announcer.phones import PhoneNormaliser
from announcer.poller import Poller
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.sdnotify import Beat, Watchdog
from announcer.states import State

logger = logging.getLogger(__name__)

#: A service: called once per start, runs until cancelled.
Start = Callable[[], Coroutine[Any, Any, None]]

#: The mirrors by their field in ``P:links``.
ASTDB, REDIS_KEYS = "astdb", "redis-keys"
MIRRORS = (ASTDB, REDIS_KEYS)


class Parts:
    """Every part of one run of the service, on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.probes: dict[str, probes.Probe] = {}
        self.services: dict[str, Start] = {}
        """what runs on every instance, by name"""
        self.leading: dict[str, Start] = {}
        """what runs on one instance at a time (alone: this one)"""
        self.cluster: Cluster | None = None
        self.agi: AgiServer | None = None
        self.metrics: Metrics | None = None
        self.notifications: Notifications | None = None

    async def assemble(self) -> None:
        """Build every part; RuntimeError says why one cannot start (a probe
        that cannot run, a port in use)."""
        redis, keys, settings = self.redis, self.keys, self.settings
        _, switches = await InventoryStore(redis, keys).switches()
        methods = {r.get("probe", "icmp") for r in switches.values()} or {"icmp"}
        for name in sorted(probes.needed(methods)):
            self.probes[name] = probes.create(name, settings)
            description = getattr(self.probes[name], "description", None)
            if description:
                logger.info("%s", description)
        renderer = PromptRenderer(settings.prompts, settings.announcements.language)
        if settings.notify.enabled and settings.notify.subscribers:
            self.notifications = Notifications(redis, keys, settings)
        told = self.notifications.link_changed if self.notifications else None
        self.mirrors = make_mirrors(redis, keys, settings, link_changed=told)
        # what the last run reported is stale; a mirror switched off since
        # must not linger in status
        await redis.hdel(keys.links, *MIRRORS)
        self.publisher = Publisher(redis, keys, settings, renderer, changed=self.wake_mirrors)
        if settings.cluster.enabled:
            self.cluster = Cluster(redis, keys, settings.cluster)
            await self.cluster.beat()  # the first share is taken knowing the others
        self.poller = Poller(
            redis, keys, settings, self.probes, changed=self.publisher.wake, cluster=self.cluster
        )
        self.dropbox = Dropbox(redis, keys, settings, published=self.publisher.wake)
        self.services = {"poller": self.poller.run, "drop folder": self.dropbox.run}
        self.leading = {
            "publisher": self.publisher.run,
            **{mirror.sink.name: mirror.run for mirror in self.mirrors},
        }
        if self.notifications is not None:
            self.leading["notifications"] = self.notifications.run
        if settings.fastagi.enabled:
            self.agi = await start_fastagi(redis, keys, settings)
            agi = settings.fastagi
            self.services[f"FastAGI on {agi.host}:{agi.port}"] = self.agi.run
        if settings.metrics.enabled:
            metrics = settings.metrics
            self.metrics = Metrics(
                redis, keys, metrics.host, metrics.port, agi=self.agi, dropbox=self.dropbox
            )
            await self.metrics.start()  # a port in use stops the start, before READY
            self.services[f"metrics on {metrics.host}:{metrics.port}"] = self.metrics.run
        if self.cluster is None:
            self.services |= self.leading
        else:
            cluster = self.cluster
            cluster.changed = self.poller.reshare
            if self.notifications is not None:
                cluster.redis_seen = self.notifications.redis_seen
            self.services[f"cluster member {cluster.instance}"] = cluster.run
            self.services["leadership"] = lambda: lead(cluster, self.publisher, self.leading)

    def wake_mirrors(self) -> None:
        for mirror in self.mirrors:
            mirror.wake()

    @property
    def leads(self) -> bool:
        return self.cluster is None or self.cluster.leading.is_set()

    def watchdog(self) -> Watchdog:
        """Petted while the sweeps and (on the leader) the evaluations move."""

        def publisher_beat() -> float:
            # a follower publishes nothing: its publisher cannot be stuck
            return self.publisher.beat if self.leads else time.monotonic()

        poller = self.poller
        return Watchdog(
            [
                Beat("poller", max(60.0, 6 * self.settings.icmp.interval_s), lambda: poller.beat),
                Beat("publisher", 60.0, publisher_beat),
            ]
        )

    def describe(self) -> str:
        """One line for systemd's status."""
        poller = self.poller
        down = sum(s.state is not State.UP for s in poller.states.values())
        watched = len(poller.targets) if poller.owned is None else len(poller.owned)
        said = (
            f"{watched:,} switches watched, {down:,} not up;"
            f" {self.publisher.active:,} announcements active"
        )
        if self.cluster is None:
            return said
        cluster = self.cluster
        role = "leads" if cluster.leading.is_set() else f"follows {cluster.leader or '?'}"
        return f"{said}; {len(cluster.members)} instances, this one {role}"

    async def close(self) -> None:
        """Release what ``assemble`` opened, also when a later part failed to
        start (the services close their own on the way out as well)."""
        for server in (self.agi, self.metrics):
            if server is not None:
                await server.close()
        for probe in self.probes.values():
            await probe.close()


async def start_fastagi(
    redis: Redis, keys: Keys, settings: Settings, port: int | None = None
) -> AgiServer:
    """The FastAGI server, listening: a port in use stops the start, before
    READY. ``port`` overrides ``[fastagi] port`` (0: any free one)."""
    agi = settings.fastagi
    lookup = Lookup(redis, keys, PhoneNormaliser(settings.phones.default_region))
    server = AgiServer(
        lookup,
        agi.host,
        agi.port if port is None else port,
        header_timeout_s=agi.header_timeout_s,
        lookup_timeout_s=agi.lookup_timeout_s,
        max_sessions=agi.max_sessions,
        record=HeardLog(redis, keys).record,
        prompt_path=settings.prompts.for_asterisk,
    )
    await server.start()
    return server


class _Deposed(Exception):
    """This instance no longer leads: its leader parts stop."""


async def lead(cluster: Cluster, publisher: Publisher, parts: Mapping[str, Start]) -> None:
    """Run ``parts`` (the publisher, the mirrors) while this instance leads,
    stop them when it no longer does, and start them again if it leads
    again. A part that crashes crashes the service, as it would alone."""

    async def deposed() -> None:
        await cluster.following.wait()
        raise _Deposed()

    while True:
        await cluster.leading.wait()
        publisher.forget_written()
        publisher.beat = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                for name, start in parts.items():
                    group.create_task(start(), name=name)
                group.create_task(deposed(), name="leadership")
        except* _Deposed:
            logger.info("the leader's parts are stopped: %s", ", ".join(parts))


def make_mirrors(
    redis: Redis,
    keys: Keys,
    settings: Settings,
    link_changed: Callable[[str, bool, str, str], None] | None = None,
) -> list[Mirror]:
    """The AstDB and Redis-key mirrors the configuration asks for;
    ``link_changed`` (notifications) hears whenever one goes down or up.
    The Redis-key mirror's link is Redis itself, so it is told as one of
    Redis's observers: one outage of Redis is one message."""
    truth = Truth(redis, keys, settings.prompts.for_asterisk)

    def status(field_name: str, link: str, seen_by: str = "") -> Callable[[LinkStatus], object]:
        write = status_writer(redis, keys, field_name)
        if link_changed is None:
            return write

        def publish(state: LinkStatus) -> object:
            link_changed(link, state.state != "down", state.detail, seen_by)
            return write(state)

        return publish

    lease_s = settings.mirror.lease_s
    made = []
    if settings.ami.enabled:
        ami = settings.ami
        sink = AstDbSink(ami)
        phones = PhoneNormaliser(settings.phones.default_region)
        sink.heard = HeardOverAmi(HeardLog(redis, keys), Lookup(redis, keys, phones))
        made.append(
            Mirror(
                sink,
                truth,
                lease_s=lease_s,
                max_writes_per_s=ami.max_writes_per_s,
                max_backoff_s=ami.max_backoff_s,
                publish_status=status(ASTDB, sink.name),
            )
        )
    if settings.mirror.redis_keys:
        made.append(
            Mirror(
                RedisKeysSink(redis, keys, lease_s),
                truth,
                lease_s=lease_s,
                max_writes_per_s=100_000,
                publish_status=status(REDIS_KEYS, REDIS_LINK, RedisKeysSink.name),
            )
        )
    return made
