"""Prometheus metrics: what ``GET /metrics`` shows (``metrics_http`` serves it).

What every instance shares is read from Redis at scrape time (at most once
a second, within ``REFRESH_TIMEOUT_S``): switch states, the poller's last
sweep, the active announcements, the mirrors' links, the calls heard. What
belongs to this process is read from its objects: the FastAGI server's
counters and the drop folder's. When Redis does not answer, the endpoint
still does: ``announcer_redis_up 0``, and the figures read from Redis are
left out rather than shown stale. Each ``Metrics`` has its own registry,
never prometheus_client's global one.

Metric names are listed in the README ("Statistics and metrics").
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import platform
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from announcer import __version__
from announcer.announcements import Scope, Source
from announcer.dropbox import Dropbox
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.metrics_http import REQUEST_TIMEOUT_S, MetricsHttp
from announcer.pbx.agi import AgiServer
from announcer.pbx.mirror import link_states
from announcer.prompts.renderer import is_fragment
from announcer.states import State
from announcer.store import StateStore

logger = logging.getLogger(__name__)

#: Reading Redis for one scrape takes at most this long; then redis_up is 0.
REFRESH_TIMEOUT_S = 3.0
#: Scrapes within this long of a reading share it.
FRESH_S = 1.0

_STATES = tuple(s.value for s in State)
_LINK_STATES = ("starting", "up", "syncing", "down")


@dataclass
class Snapshot:
    """What the metrics read from Redis, at one moment."""

    switches: Counter[str] = field(default_factory=Counter)
    """state -> switches of the inventory in it"""
    districts: dict[str, Counter[str]] = field(default_factory=dict)
    """district id -> state -> switches"""
    poller: dict[str, float] = field(default_factory=dict)
    active: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(source, scope) -> active announcements"""
    links: dict[str, tuple[str, int]] = field(default_factory=dict)
    """mirror -> (its link's state, entries mirrored)"""
    heard_total: int = 0
    stand_ins: Counter[str] = field(default_factory=Counter)
    """"fragment" or "nothing" -> active announcements playing it for want of their own prompt"""


_UNKNOWN = State.UNKNOWN.value
#: The state in a record as StateStore writes it (compact JSON, state first):
#: ten times cheaper than parsing the JSON, which remains the fallback.
_STATE = re.compile(r'\{\s*"state"\s*:\s*"([a-z]+)"')


def _state_of(record: str) -> str:
    found = _STATE.match(record)
    if found:
        return found.group(1)
    return str(json.loads(record).get("state", _UNKNOWN))


class Metrics:
    """The /metrics endpoint; ``run`` serves until cancelled."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        host: str = "127.0.0.1",
        port: int = 9105,
        *,
        agi: AgiServer | None = None,
        dropbox: Dropbox | None = None,
        fresh_s: float = FRESH_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.redis = redis
        self.fresh_s = fresh_s
        self.keys = keys
        self.agi = agi
        self.dropbox = dropbox
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.snapshot: Snapshot | None = None
        """the last reading of Redis; None while Redis does not answer"""
        self._read_at = -math.inf
        self._lock = asyncio.Lock()
        self._inventory = InventoryStore(redis, keys)
        self._districts: tuple[int | None, dict[str, str]] = (None, {})
        self._http = MetricsHttp(self.exposition, host, port, request_timeout_s)

    # life cycle ---------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (the one chosen once started, when asked for 0)."""
        return self._http.port

    async def start(self) -> int:
        """Listen; return the port. RuntimeError says which setting to change
        when the port is taken."""
        return await self._http.start()

    async def run(self) -> None:
        """Serve until cancelled; then stop listening and drop the clients."""
        await self._http.run()

    async def close(self) -> None:
        await self._http.close()

    # the figures --------------------------------------------------------------

    async def exposition(self) -> bytes:
        """The metrics in Prometheus's text format, Redis read afresh if due."""
        await self.refresh()
        return generate_latest(self.registry)

    async def refresh(self) -> None:
        """Read Redis, unless a reading less than ``fresh_s`` old is at hand;
        concurrent scrapes share one reading."""
        async with self._lock:
            if time.monotonic() - self._read_at < self.fresh_s:
                return
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT_S):
                    snapshot = await self._read()
            except (RedisError, OSError, TimeoutError) as exc:
                if self.snapshot is not None or self._read_at == -math.inf:
                    logger.error(
                        "metrics: cannot read Redis (%s); announcer_redis_up is 0 and the"
                        " figures kept there are left out until it answers: check that it runs",
                        str(exc) or type(exc).__name__,
                    )
                self.snapshot = None
            else:
                if self.snapshot is None and self._read_at > -math.inf:
                    logger.warning("metrics: Redis answers again")
                self.snapshot = snapshot
            self._read_at = time.monotonic()

    async def _read(self) -> Snapshot:
        store = StateStore(self.redis, self.keys)
        district_of = await self._district_of()
        states: dict[str, str] = await self.redis.hgetall(self.keys.state)  # type: ignore[assignment]
        counted: Counter[tuple[str, str]] = Counter()
        for switch, district in district_of.items():
            record = states.get(switch)
            counted[district, _UNKNOWN if record is None else _state_of(record)] += 1
        out = Snapshot()
        for (district, state), count in counted.items():
            out.switches[state] += count
            out.districts.setdefault(district, Counter())[state] += count
        out.poller = {name: float(value) for name, value in (await store.poller()).items()}
        heard: dict[str, str] = await self.redis.hgetall(self.keys.active_heard)  # type: ignore[assignment]
        for raw in heard.values():
            record = json.loads(raw)
            out.active[str(record.get("source", "")), str(record.get("scope", ""))] += 1
        active: dict[str, str] = await self.redis.hgetall(self.keys.active)  # type: ignore[assignment]
        for raw in active.values():
            prompt = json.loads(raw).get("prompt")
            if not prompt:
                out.stand_ins["nothing"] += 1
            elif is_fragment(prompt):
                out.stand_ins["fragment"] += 1
        for name, link in (await link_states(self.redis, self.keys)).items():
            out.links[name] = (link.state, link.entries)
        out.heard_total = await self._heard_total()
        return out

    async def _district_of(self) -> dict[str, str]:
        """Switch -> district of the live inventory, read again only when a
        new generation is live."""
        live = await self._inventory.current()
        gen = live.gen if live is not None else None
        if gen is None or gen != self._districts[0]:
            _, switches = await self._inventory.switches()
            self._districts = (gen, {s: str(r["district"]) for s, r in switches.items()})
        return self._districts[1]

    async def _heard_total(self) -> int:
        """Matched lookups recorded since the stream began (its cap aside)."""
        try:
            info = await self.redis.xinfo_stream(self.keys.heard)
        except ResponseError:  # no such key: none yet
            return 0
        added = info.get("entries-added")  # Redis 7 and later; before, what is kept
        return int(added if added is not None else info.get("length", 0))


class _Collector(Collector):
    """The figures of one ``Metrics``, built at every scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        info = GaugeMetricFamily(
            "announcer_build_info", "announcer's version", labels=["version", "python"]
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        snapshot = m.snapshot
        yield GaugeMetricFamily(
            "announcer_redis_up",
            "1 when Redis answered the last scrape's reads, else 0",
            value=int(snapshot is not None),
        )
        if snapshot is not None:
            yield from _from_redis(snapshot)
        if m.agi is not None:
            yield from _fastagi(m.agi)
        if m.dropbox is not None:
            drops = CounterMetricFamily(
                "announcer_drops",
                "drop-folder drops taken by this process, by result",
                labels=["result"],
            )
            for result, count in sorted(m.dropbox.taken.items()):
                drops.add_metric([result], count)
            yield drops


def _from_redis(s: Snapshot) -> Iterator[Metric]:
    switches = GaugeMetricFamily(
        "announcer_switches", "switches of the inventory by state", labels=["state"]
    )
    for state in _STATES:
        switches.add_metric([state], s.switches[state])
    yield switches
    districts = GaugeMetricFamily(
        "announcer_district_switches",
        "switches of the inventory by district and state",
        labels=["district", "state"],
    )
    for district, counts in sorted(s.districts.items()):
        for state in _STATES:
            districts.add_metric([district, state], counts[state])
    yield districts
    if s.poller:
        yield GaugeMetricFamily(
            "announcer_poller_last_sweep_timestamp_seconds",
            "when the poller's last sweep started",
            value=s.poller.get("at", 0.0),
        )
        yield GaugeMetricFamily(
            "announcer_poller_sweep_duration_seconds",
            "how long the poller's last sweep took",
            value=s.poller.get("duration_s", 0.0),
        )
        probes = GaugeMetricFamily(
            "announcer_poller_probes",
            "probes of the last sweep by result: alive, silent (a miss), failed (not asked)",
            labels=["result"],
        )
        for result in ("alive", "silent", "failed"):
            probes.add_metric([result], s.poller.get(result, 0.0))
        yield probes
    active = GaugeMetricFamily(
        "announcer_announcements_active",
        "announcements callers hear now, by source and scope",
        labels=["source", "scope"],
    )
    for source in Source:
        for scope in Scope:
            active.add_metric([source.value, scope.value], s.active[source.value, scope.value])
    yield active
    stand_ins = GaugeMetricFamily(
        "announcer_announcements_without_prompt",
        "active announcements whose own prompt could not be rendered: they play a shipped"
        " fragment, or nothing when the sounds folder cannot even take that",
        labels=["playing"],
    )
    for playing in ("fragment", "nothing"):
        stand_ins.add_metric([playing], s.stand_ins[playing])
    yield stand_ins
    links = GaugeMetricFamily(
        "announcer_mirror_link_state",
        "1 for the state each mirror's link is in (starting, up, syncing, down)",
        labels=["mirror", "state"],
    )
    entries = GaugeMetricFamily(
        "announcer_mirror_entries", "entries each mirror holds", labels=["mirror"]
    )
    for mirror, (state, held) in sorted(s.links.items()):
        for name in _LINK_STATES:
            links.add_metric([mirror, name], int(name == state))
        entries.add_metric([mirror], held)
    yield links
    yield entries
    yield CounterMetricFamily(
        "announcer_heard_calls",
        "calls that heard an announcement, as recorded in Redis by every instance",
        value=s.heard_total,
    )


def _fastagi(agi: AgiServer) -> Iterator[Metric]:
    c = agi.counters
    yield CounterMetricFamily(
        "announcer_fastagi_lookups",
        "FastAGI lookups answered by this process (fail-open answers included)",
        value=c.served + c.failed,
    )
    yield CounterMetricFamily(
        "announcer_fastagi_lookups_matched",
        "FastAGI lookups answered with a prompt to play",
        value=c.matched,
    )
    yield GaugeMetricFamily(
        "announcer_fastagi_sessions_active", "FastAGI sessions open now", value=agi.sessions_active
    )
    yield CounterMetricFamily(
        "announcer_fastagi_sessions_failed",
        "FastAGI sessions whose lookup failed: the caller heard nothing (fail open)",
        value=c.failed,
    )
    yield CounterMetricFamily(
        "announcer_fastagi_sessions_dropped",
        "FastAGI connections closed without a complete answer (bad, slow or vanished peers)",
        value=c.dropped,
    )
    yield CounterMetricFamily(
        "announcer_fastagi_sessions_refused",
        "FastAGI connections refused beyond [fastagi] max_sessions",
        value=c.refused,
    )
