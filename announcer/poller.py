"""The sweep cadence: every switch probed on a fixed beat, states out to Redis.

One sweep probes every ICMP switch (``icmp`` and ``icmp+snmp``), and, every
``[snmp] interval_s``, every SNMP switch. For ``icmp+snmp`` SNMP is a second
opinion: a switch that ignores pings but answers SNMP is up; its SNMP answers
also carry sysUpTime, so its reboots are seen. The results go through the
pure rules in ``states`` and what changed is written to Redis.

The beat corrects for drift (the next sweep is due one interval after the
previous one was *due*, not after it finished) and sweeps never overlap: one
that overruns makes the next start late, and the ones it overlapped are
skipped with a warning.

With several instances (``announcer.cluster``) each polls its share: it
probes and judges its own switches and their uplinks, so the uplink logic
always sees the whole way up, but writes the states of its own switches
only. A switch taken over from another instance, or from the last run,
starts from the state Redis holds for it, so an outage that goes on is not
closed and opened again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer.cancel import pause, raise_if_cancelled
from announcer.cluster import Cluster, ancestors
from announcer.config import Settings
from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.probes.base import Probe, ProbeResult, Target, Verdict
from announcer.states import Fleet, Reboot, Rules, State, SwitchState, Track
from announcer.store import StateStore, SweepInfo

logger = logging.getLogger(__name__)

#: How many levels of a tree are re-checked at once when an uplink comes back.
MAX_RECHECK_ROUNDS = 16


def _target(record: Mapping[str, Any]) -> Target:
    return Target(
        switch=record["id"],
        address=record["address"],
        snmp_profile=record.get("snmp_profile"),
        uplink_ports=tuple(record.get("uplink_ports", ())),
    )


#: What a switch's own probes are taken to have said, from its stored state.
_VERDICT_OF = {
    State.UP: State.UP,
    State.DOWN: State.DOWN,
    State.FLAPPING: State.DOWN,
    State.UNREACHABLE: State.DOWN,
}


def resume(record: Mapping[str, Any]) -> tuple[Track, SwitchState] | None:
    """A switch's track and state picked up from its stored record; None
    when the record says nothing usable."""
    try:
        state = State(record["state"])
        since = float(record.get("since", 0.0))
    except (KeyError, ValueError, TypeError):
        return None
    reason = str(record.get("reason", ""))
    rtt = record.get("rtt_ms")
    rtt_ms = float(rtt) if isinstance(rtt, int | float) else None
    track = Track(
        verdict=_VERDICT_OF.get(state, State.UNKNOWN),
        flapping_since=since if state is State.FLAPPING else None,
        rtt_ms=rtt_ms,
        reason=reason,
    )
    root = record.get("root")
    return track, SwitchState(state, since, reason, str(root) if root else None, rtt_ms)


class Poller:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        probes: Mapping[str, Probe],
        clock: Callable[[], float] = time.time,
        changed: Callable[[], None] | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        """``changed`` is called when a sweep changed a state (to wake the
        publisher); with a ``cluster``, only this instance's share is polled."""
        self.changed = changed
        self.cluster = cluster
        self.owned: set[str] | None = None
        """the switches whose states this instance writes; None: all"""
        self._reshare = False
        self._loaded = False
        self.settings = settings
        self.probes = probes
        self.clock = clock
        self.inventory = InventoryStore(redis, keys)
        self.store = StateStore(redis, keys)
        self.rules = Rules.from_settings(settings.poller)
        self.fleet = Fleet({}, self.rules)
        self.generation: int | None = None
        self.targets: dict[str, Target] = {}
        """the switches this instance probes: its share and their uplinks"""
        self.methods: dict[str, str] = {}
        self._snmp_due = -math.inf
        self._redis_ok = True
        self.beat = time.monotonic()
        """when the last sweep ended, well or not (the watchdog's measure)"""

    def reshare(self) -> None:
        """The cluster's members changed: take the new share at the next sweep."""
        self._reshare = True

    @property
    def states(self) -> dict[str, SwitchState]:
        """The states this instance writes."""
        if self.owned is None:
            return self.fleet.states
        return {s: st for s, st in self.fleet.states.items() if s in self.owned}

    async def load(self) -> bool:
        """Follow the live inventory (and the cluster's split of it); True
        when what this instance polls changed since the last call."""
        current = await self.inventory.current()
        gen = current.gen if current is not None else None
        if self._loaded and gen == self.generation and not self._reshare:
            return False  # the same generation: the same switches
        self._loaded = True
        live, switches = await self.inventory.switches()
        gen = live.gen if live is not None else None
        self._reshare = False
        parents = {i: r.get("parent") for i, r in switches.items()}
        polled = set(parents)
        owned = None
        if self.cluster is not None:
            owned = self.cluster.share(parents)
            polled = set(owned)
            for switch in owned:
                polled.update(ancestors(switch, parents))
        fleet = Fleet(parents, self.rules)
        # a state without a track is only what resolve() said of a switch
        # nobody here probed: the one in Redis is better
        fleet.tracks = {s: t for s, t in self.fleet.tracks.items() if s in polled}
        fleet.states = {s: st for s, st in self.fleet.states.items() if s in fleet.tracks}
        new = [s for s in polled if s not in fleet.tracks]
        if new:
            stored = await self.store.states()
            for switch in new:
                picked = resume(stored.get(switch, {}))
                if picked is not None:
                    fleet.tracks[switch], fleet.states[switch] = picked
        self.fleet = fleet
        self.targets = {i: _target(r) for i, r in switches.items() if i in polled}
        self.methods = {i: r.get("probe", "icmp") for i, r in switches.items()}
        self.generation = gen
        self.owned = owned
        gone = await self.store.forget(parents)
        if self.cluster is not None and owned is not None:
            # what this instance wrote of a switch that was away may be stale
            self.store.forget_written()
            await self.cluster.publish_share(owned)
            logger.info(
                "following inventory generation %s: %d of %d switches are this instance's"
                " (%d probed with their uplinks; %d states dropped)",
                gen,
                len(owned),
                len(parents),
                len(polled),
                gone,
            )
        else:
            logger.info(
                "following inventory generation %s: %d switches (%d states dropped)",
                gen,
                len(parents),
                gone,
            )
        return True

    async def _probe(self, name: str, targets: Sequence[Target]) -> list[ProbeResult]:
        if not targets:
            return []
        probe = self.probes.get(name)
        if probe is None:
            reason = f"no {name} probe is running; check the [{name}] settings and the log"
            return [ProbeResult(t.switch, Verdict.FAILED, reason) for t in targets]
        return await probe.sweep(targets)

    async def _observe_all(
        self, switches: Sequence[str], snmp_round: bool
    ) -> tuple[list[ProbeResult], list[Reboot]]:
        """Probe ``switches`` and fold the results in; return what counted, and reboots."""
        ping = [self.targets[s] for s in switches if self.methods[s] in ("icmp", "icmp+snmp")]
        snmp_only = [self.targets[s] for s in switches if self.methods[s] == "snmp"]
        both = [self.targets[s] for s in switches if self.methods[s] == "icmp+snmp"]
        snmp = (snmp_only + both) if snmp_round else []
        icmp_results, snmp_results = await asyncio.gather(
            self._probe("icmp", ping), self._probe("snmp", snmp)
        )
        by_switch = {r.switch: r for r in snmp_results}
        second = [
            self.targets[r.switch]
            for r in icmp_results
            if r.verdict is not Verdict.ALIVE
            and self.methods[r.switch] == "icmp+snmp"
            and r.switch not in by_switch
        ]
        for r in await self._probe("snmp", second):
            by_switch[r.switch] = r
        counted: list[ProbeResult] = []
        for r in icmp_results:
            opinion = by_switch.get(r.switch) if self.methods[r.switch] == "icmp+snmp" else None
            if r.verdict is not Verdict.ALIVE and opinion is not None and opinion.alive:
                counted.append(opinion)
            else:
                counted.append(r)
        counted += [by_switch[t.switch] for t in snmp_only if t.switch in by_switch]
        now = self.clock()
        reboots = self.fleet.observe(counted, now)
        info = [by_switch[t.switch] for t in both if t.switch in by_switch]
        reboots += self.fleet.observe(info, now, counts=False)
        for reboot in reboots:
            logger.warning(
                "switch %s rebooted (uptime %.0f s -> %.0f s)",
                reboot.switch,
                reboot.uptime_before_s,
                reboot.uptime_now_s,
            )
        return counted, reboots

    async def sweep(self) -> SweepInfo:
        """One sweep over every switch; safe to call on its own (a 'run once')."""
        await self.load()
        started, begun = self.clock(), time.monotonic()
        snmp_round = begun >= self._snmp_due
        if snmp_round:
            self._snmp_due = begun + self.settings.snmp.interval_s
        return await self._round(list(self.targets), snmp_round, started, begun)

    async def confirm(self) -> SweepInfo | None:
        """Probe again, now, the switches whose verdict is pending; None when none is."""
        suspects = [s for s in self.fleet.suspects() if s in self.targets]
        if not suspects:
            return None
        return await self._round(suspects, True, self.clock(), time.monotonic(), main=False)

    async def _round(
        self,
        switches: list[str],
        snmp_round: bool,
        started: float,
        begun: float,
        main: bool = True,
    ) -> SweepInfo:
        results, reboots = await self._observe_all(switches, snmp_round)
        changes, recheck = self.fleet.resolve(self.clock())
        rounds = 0
        while recheck and rounds < MAX_RECHECK_ROUNDS:
            rounds += 1
            logger.info("re-checking %d switches whose uplink came back", len(recheck))
            reboots += (await self._observe_all(recheck, snmp_round=True))[1]
            more, recheck = self.fleet.resolve(self.clock())
            changes += more
        info = SweepInfo(
            at=started,
            duration_s=time.monotonic() - begun,
            probed=len(results),
            alive=sum(r.verdict is Verdict.ALIVE for r in results),
            silent=sum(r.verdict is Verdict.SILENT for r in results),
            failed=sum(r.verdict is Verdict.FAILED for r in results),
        )
        if self.owned is not None:
            owned = self.owned
            changes = [c for c in changes if c.switch in owned]
            reboots = [r for r in reboots if r.switch in owned]
        for change in changes:
            why = f" ({change.reason})" if change.reason else ""
            logger.info("switch %s: %s -> %s%s", change.switch, change.old, change.new, why)
        await self.store.publish(self.states, changes, reboots, info if main else None)
        if changes and self.changed is not None:
            self.changed()
        return info

    async def _confirm_until(self, due: float) -> None:
        """Confirmation rounds while there is time before the next sweep is due."""
        interval = self.settings.poller.confirm_interval_s
        if interval <= 0:
            return
        budget = self.settings.icmp.timeout_ms / 1000 + interval
        while self.fleet.suspects() and time.monotonic() + budget < due:
            await pause(interval)
            try:
                await self.confirm()
            except RedisError:
                return  # run() reports Redis trouble once, at the sweep

    async def run(self) -> None:
        """Sweep on the beat until cancelled; Redis outages are waited out."""
        interval = self.settings.icmp.interval_s
        due = time.monotonic()
        while True:
            raise_if_cancelled()
            try:
                await self.sweep()
                if not self._redis_ok:
                    logger.warning("Redis is reachable again; states are written in full")
                    self._redis_ok = True
            except RedisError as exc:
                if self._redis_ok:
                    logger.error("cannot write switch states to Redis: %s; retrying", exc)
                    self._redis_ok = False
                self.store.forget_written()
            self.beat = time.monotonic()
            due += interval
            await self._confirm_until(due)
            late = time.monotonic() - due
            if late > 0:
                skipped = math.ceil(late / interval)
                logger.warning(
                    "a sweep took longer than [icmp] interval_s (%.1f s); %d skipped",
                    interval,
                    skipped,
                )
                due += skipped * interval
            await pause(max(0.0, due - time.monotonic()))
