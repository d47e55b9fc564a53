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
        self._written: dict[str, dict[str, object]] = {}

    async def publish(
        self,
        states: Mapping[str, SwitchState],
        changes: Sequence[Change] = (),
        reboots: Sequence[Reboot] = (),
        sweep: SweepInfo | None = None,
    ) -> None:
        """Write what changed since the last call, and the events, in one transaction."""
        dirty: dict[str, str] = {}
        for switch, state in states.items():
            record = state.record()
            if self._written.get(switch) != record:
                dirty[switch] = _json(record)
                self._written[switch] = record
        async with self.redis.pipeline(transaction=True) as pipe:
            if dirty:
                pipe.hset(self.keys.state, mapping=dirty)  # type: ignore[arg-type]
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
            await self.redis.hdel(self.keys.state, *gone)
        return len(gone)

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
