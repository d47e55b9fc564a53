"""What the NOC wants to see: counts per state, what is broken, the poller's pulse."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from redis.asyncio import Redis

from announcer.inventory.store import InventoryStore
from announcer.keys import Keys
from announcer.pbx.mirror import link_states
from announcer.prompts.renderer import is_fragment
from announcer.states import State
from announcer.store import StateStore


async def gather(redis: Redis, keys: Keys) -> dict[str, Any]:
    """Everything ``announcer status`` shows, as plain data (the --json form)."""
    inventory = InventoryStore(redis, keys)
    live, switches = await inventory.switches()
    names = await inventory.district_names()
    store = StateStore(redis, keys)
    states = await store.states()
    counts: Counter[str] = Counter({s.value: 0 for s in State})
    for switch in switches:
        counts[states.get(switch, {}).get("state", State.UNKNOWN.value)] += 1
    behind: Counter[str] = Counter(
        s["root"] for s in states.values() if s.get("state") == State.UNREACHABLE and "root" in s
    )

    def entry(switch: str) -> dict[str, Any]:
        state = states[switch]
        district = switches[switch]["district"]
        out: dict[str, Any] = {
            "switch": switch,
            "district": district,
            "district_name": names.get(district, district),
            "state": state["state"],
            "since": state.get("since"),
            "reason": state.get("reason", ""),
        }
        if state["state"] == State.UNREACHABLE:
            out["root_cause"] = state.get("root")
        else:
            out["behind"] = behind.get(switch, 0)
        return out

    broken = [s for s in switches if s in states]
    poller = await store.poller()
    links = await link_states(redis, keys)
    return {
        "at": time.time(),
        "inventory": None
        if live is None
        else {"generation": live.gen, "imported_at": live.imported_at, "source": live.source},
        "switches": len(switches),
        "counts": dict(counts),
        "down": sorted(
            (entry(s) for s in broken if states[s]["state"] in (State.DOWN, State.FLAPPING)),
            key=lambda e: e["since"] or 0,
        ),
        "unreachable": sorted(
            (entry(s) for s in broken if states[s]["state"] == State.UNREACHABLE),
            key=lambda e: (e["root_cause"] or "", e["switch"]),
        ),
        "poller": None
        if not poller
        else {
            "last_sweep_at": float(poller["at"]),
            "last_sweep_s": float(poller["duration_s"]),
            "probed": int(poller["probed"]),
            "alive": int(poller["alive"]),
            "silent": int(poller["silent"]),
            "failed": int(poller["failed"]),
        },
        "links": {name: asdict(link) for name, link in sorted(links.items())},
        "prompts": await _prompts(redis, keys),
        "cluster": await _cluster(redis, keys),
    }


async def _prompts(redis: Redis, keys: Keys) -> dict[str, list[str]]:
    """Active announcements playing a stand-in: a shipped fragment because
    their own prompt could not be rendered, or nothing at all."""
    active: dict[str, str] = await redis.hgetall(keys.active)  # type: ignore[assignment]
    fragment, silent = [], []
    for ident, raw in sorted(active.items()):
        prompt = json.loads(raw).get("prompt")
        if not prompt:
            silent.append(ident)
        elif is_fragment(prompt):
            fragment.append(ident)
    return {"fragment": fragment, "silent": silent}


async def _cluster(redis: Redis, keys: Keys) -> dict[str, Any] | None:
    """The instances sharing this Redis, when several run ([cluster])."""
    members: list[str] = await redis.zrange(keys.cluster_members, 0, -1)  # type: ignore[assignment]
    if not members:
        return None
    shares: dict[str, str] = await redis.hgetall(keys.cluster_shares)  # type: ignore[assignment]
    return {
        "leader": await redis.get(keys.cluster_leader),
        "members": {m: len(json.loads(shares[m])) if m in shares else None for m in members},
    }
