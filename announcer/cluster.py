"""Several instances on one Redis: who is alive, who polls what, who leads.

Every instance registers with a heartbeat in ``P:cluster:members``, a sorted
set scored by when each registration runs out (in Redis's clock, so the
instances' own clocks need not agree). The switches are split between the
live instances by rendezvous hashing of each switch's *branch* (the switch
just below the root of its uplink tree, see ``branches``): a branch and
everything behind it goes to one instance, so the uplink logic sees whole
subtrees, and when an instance dies only its branches move.

Exactly one instance leads: it holds ``P:cluster:leader`` (``SET NX PX``),
renews it every third of ``lease_s`` and runs the outage engine, the
publisher, the mirrors and the notifications. An instance that cannot renew
stops leading before its lease can have run out in Redis, so two leaders
never overlap; another takes over once the lease has lapsed: within two lease
periods of the leader's death.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping

from redis.asyncio import Redis
from redis.exceptions import RedisError

from announcer.cancel import pause, raise_if_cancelled
from announcer.config import ClusterSettings
from announcer.keys import Keys

logger = logging.getLogger(__name__)

#: Register (or refresh) one member and drop those whose time ran out, by
#: Redis's clock; returns the live members, oldest registration first.
_HEARTBEAT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
local known = redis.call('HKEYS', KEYS[2])
local alive = {}
for _, id in ipairs(live) do alive[id] = true end
for _, id in ipairs(known) do
  if not alive[id] then redis.call('HDEL', KEYS[2], id) redis.call('HDEL', KEYS[3], id) end
end
return live
"""

#: Take the lease when free, renew it when ours; returns the holder.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return holder
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('HSET', KEYS[2], 'leader', ARGV[1], 'since', ARGV[3])
  return ARGV[1]
end
return holder
"""

#: Give the lease up, only if it is still ours.
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def branches(parents: Mapping[str, str | None]) -> dict[str, str]:
    """Switch -> its branch: the ancestor just below the root of its tree
    (a root, or a switch whose parent is unknown, is its own branch)."""
    out: dict[str, str] = {}
    for switch in parents:
        chain = [switch]
        while True:
            parent = parents.get(chain[-1])
            if parent is None or parent not in parents or parent in chain:
                break
            chain.append(parent)
        # chain ends at the root; the branch is the one below it, when any
        out[switch] = chain[-2] if len(chain) >= 2 else chain[-1]
    return out


def owner(item: str, members: Iterable[str]) -> str | None:
    """The member that owns ``item`` (rendezvous hashing): every instance
    that knows the same members agrees, and only a departed member's items
    move when one leaves."""
    best, chosen = b"", None
    for member in members:
        score = hashlib.blake2b(f"{member}\0{item}".encode(), digest_size=8).digest()
        if score > best:
            best, chosen = score, member
    return chosen


def ancestors(switch: str, parents: Mapping[str, str | None]) -> list[str]:
    out: list[str] = []
    parent = parents.get(switch)
    while parent is not None and parent in parents and parent not in out and parent != switch:
        out.append(parent)
        parent = parents.get(parent)
    return out


class Cluster:
    """This instance's membership and leadership; ``run`` keeps both fresh.

    ``members`` is the live membership as last seen; ``leading`` is set while
    this instance holds the lease, and ``changed`` is called when the
    membership changes (the poller takes its new share); ``redis_seen``,
    when Redis stops or starts answering the heartbeat (notifications)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: ClusterSettings,
        changed: Callable[[], None] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.instance = settings.instance or default_instance()
        self.changed = changed
        self.members: tuple[str, ...] = (self.instance,)
        self.leading = asyncio.Event()
        self.following = asyncio.Event()
        self.following.set()
        self.leader: str | None = None
        self._renewed = -float("inf")
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._lead = redis.register_script(_LEAD)
        self._resign = redis.register_script(_RESIGN)
        self._healthy = True
        self.redis_seen: Callable[[bool], None] | None = None
        self.started = time.time()

    # -- the split of the switches -------------------------------------------

    def share(self, parents: Mapping[str, str | None]) -> set[str]:
        """The switches this instance polls and publishes, given the tree."""
        of = branches(parents)
        mine: dict[str, bool] = {}
        out = set()
        for switch, branch in of.items():
            if branch not in mine:
                mine[branch] = owner(branch, self.members) == self.instance
            if mine[branch]:
                out.add(switch)
        return out

    async def publish_share(self, switches: Iterable[str]) -> None:
        """Say which switches this instance polls (status, and the tests)."""
        await self.redis.hset(
            self.keys.cluster_shares,
            self.instance,
            json.dumps(sorted(switches), separators=(",", ":")),
        )

    # -- one round -----------------------------------------------------------

    async def beat(self) -> None:
        """Heartbeat, and take or renew the lease; raise RedisError when Redis
        cannot be asked (the caller decides what that means)."""
        s = self.settings
        about = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "started": round(self.started)}
        )
        live = await self._heartbeat(
            keys=[self.keys.cluster_members, self.keys.cluster_info, self.keys.cluster_shares],
            args=[self.instance, int(s.heartbeat_s * 3 * 1000), about],
        )
        members = tuple(sorted(live))
        if members != self.members:
            logger.info("cluster members: %s", ", ".join(members))
            self.members = members
            if self.changed is not None:
                self.changed()
        asked = time.monotonic()
        holder = await self._lead(
            keys=[self.keys.cluster_leader, self.keys.cluster_info],
            args=[self.instance, int(s.lease_s * 1000), f"{time.time():.3f}"],
        )
        self.leader = holder
        if holder == self.instance:
            self._renewed = asked
            if not self.leading.is_set():
                logger.info("this instance (%s) leads: it runs the engine and publishes", holder)
                self.following.clear()
                self.leading.set()
        else:
            self._follow(f"{holder} leads")

    def _follow(self, why: str) -> None:
        if self.leading.is_set():
            logger.warning("this instance no longer leads: %s", why)
            self.leading.clear()
            self.following.set()

    def _lease_at_risk(self) -> bool:
        """True once the lease may be about to lapse in Redis: stop leading
        first, so that two leaders never overlap."""
        margin = max(self.settings.heartbeat_s, self.settings.lease_s / 3)
        return time.monotonic() - self._renewed > self.settings.lease_s - margin

    async def run(self) -> None:
        """Heartbeat and lease renewal every ``heartbeat_s`` until cancelled;
        the lease is given up on the way out."""
        interval = min(self.settings.heartbeat_s, self.settings.lease_s / 3)
        try:
            while True:
                raise_if_cancelled()
                try:
                    await self.beat()
                    if not self._healthy:
                        logger.warning("Redis is reachable again; the cluster heartbeat goes on")
                        self._healthy = True
                        if self.redis_seen is not None:
                            self.redis_seen(True)
                except RedisError as exc:
                    if self._healthy:
                        logger.error("cluster heartbeat failed: %s; retrying", exc)
                        self._healthy = False
                        if self.redis_seen is not None:
                            self.redis_seen(False)
                if self.leading.is_set() and self._lease_at_risk():
                    self._follow("the lease could not be renewed in time")
                await pause(interval)
        finally:
            # give the lease up even when this instance had stepped down: a
            # renewal still in flight when Redis stalled may have kept it in
            # this instance's name, and the next leader would wait it out
            self.leading.clear()
            self.following.set()
            try:
                async with asyncio.timeout(2):
                    await self._resign(keys=[self.keys.cluster_leader], args=[self.instance])
            except (RedisError, TimeoutError):
                pass
            try:
                async with asyncio.timeout(2):
                    await self.redis.zrem(self.keys.cluster_members, self.instance)
            except (RedisError, TimeoutError):
                pass
