"""Switch states, the event stream and the poller's status in Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from announcer.keys import Keys
from announcer.states import Change, Reboot, SwitchState

#: Events kept on the stream (approximately: Redis trims in whole nodes).
EVENTS_MAXLEN = 100_000


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


#: A round-trip time is written again only when it moved by more than this
#: share (and at least RTT_NOISE_MS): rewriting 10,000 states every sweep for
#: microseconds of jitter cost more than the sweep itself.
RTT_SHARE = 0.5
RTT_NOISE_MS = 1.0


def _differs(written: SwitchState | None, state: SwitchState) -> bool:
    """Is ``state`` news beside what was last ``written``?"""
    if written is None:
        return True
    if written is state:
        return False
    if (written.state, written.since, written.reason, written.root_cause) != (
        state.state,
        state.since,
        state.reason,
        state.root_cause,
    ):
        return True
    old, new = written.rtt_ms, state.rtt_ms
    if old is not None and new is not None:
        return abs(new - old) > max(RTT_NOISE_MS, RTT_SHARE * old)
    return old != new


@dataclass(frozen=True)
class SweepInfo:
    at: float
    duration_s: float
    probed: int
    alive: int
    silent: int
    failed: int


class StateStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._written: dict[str, SwitchState] = {}

    async def publish(
        self,
        states: Mapping[str, SwitchState],
        changes: Sequence[Change] = (),
        reboots: Sequence[Reboot] = (),
        sweep: SweepInfo | None = None,
    ) -> None:
        """Write what changed since the last call, and the events, in one transaction."""
        dirty: dict[str, str] = {}
        written = self._written
        for switch, state in states.items():
            if _differs(written.get(switch), state):
                dirty[switch] = _json(state.record())
                written[switch] = state
        async with self.redis.pipeline(transaction=True) as pipe:
            if dirty:
                pipe.hset(self.keys.state, mapping=dirty)  # type: ignore[arg-type]
                pipe.incr(self.keys.state_version)
            for c in changes:
                pipe.xadd(
                    self.keys.events,
                    {
                        "kind": "state",
                        "switch": c.switch,
                        "old": c.old.value,
                        "new": c.new.value,
                        "reason": c.reason,
                        "root": c.root_cause or "",
                        "at": f"{c.at:.3f}",
                        "silent_since": "" if c.silent_since is None else f"{c.silent_since:.3f}",
                    },
                    maxlen=EVENTS_MAXLEN,
                    approximate=True,
                )
            for r in reboots:
                pipe.xadd(
                    self.keys.events,
                    {
                        "kind": "reboot",
                        "switch": r.switch,
                        "uptime_before_s": f"{r.uptime_before_s:.2f}",
                        "uptime_now_s": f"{r.uptime_now_s:.2f}",
                        "at": f"{time.time():.3f}",
                    },
                    maxlen=EVENTS_MAXLEN,
                    approximate=True,
                )
            if sweep is not None:
                pipe.hset(
                    self.keys.poller,
                    mapping={
                        "at": f"{sweep.at:.3f}",
                        "duration_s": f"{sweep.duration_s:.3f}",
                        "probed": sweep.probed,
                        "alive": sweep.alive,
                        "silent": sweep.silent,
                        "failed": sweep.failed,
                    },
                )
            await pipe.execute()

    def forget_written(self) -> None:
        """Write every state in full next time (after Redis may have lost them)."""
        self._written.clear()

    async def forget(self, keep: Iterable[str]) -> int:
        """Drop the states of switches no longer in the inventory."""
        wanted = set(keep)
        known: list[str] = await self.redis.hkeys(self.keys.state)  # type: ignore[assignment]
        gone = [s for s in known if s not in wanted]
        for switch in gone:
            self._written.pop(switch, None)
        if gone:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.state, *gone)
                pipe.incr(self.keys.state_version)
                await pipe.execute()
        return len(gone)

    async def version(self) -> int:
        """Goes up whenever a state is written or dropped (never down)."""
        return int(await self.redis.get(self.keys.state_version) or 0)

    async def states(self) -> dict[str, dict[str, Any]]:
        raw: dict[str, str] = await self.redis.hgetall(self.keys.state)  # type: ignore[assignment]
        return {switch: json.loads(value) for switch, value in raw.items()}

    async def poller(self) -> dict[str, str]:
        info: dict[str, str] = await self.redis.hgetall(self.keys.poller)  # type: ignore[assignment]
        return info

    async def events(self, count: int = 100) -> list[dict[str, str]]:
        """The newest events, oldest first."""
        entries: list[tuple[str, dict[str, str]]] = await self.redis.xrevrange(  # type: ignore[assignment]
            self.keys.events, count=count
        )
        return [{"id": entry_id, **fields} for entry_id, fields in reversed(entries)]
