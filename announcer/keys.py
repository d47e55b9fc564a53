"""Every Redis key announcer uses, under one configurable prefix.

The inventory is stored in *generations*: an import writes a complete new
generation next to the live one, then flips ``inventory`` (a hash holding the
live generation number and its bucket count) in one command. Readers resolve
the generation and read its data inside one Lua script, so they see the old
inventory or the new one, never a mix.

Layout (``P`` is the prefix, ``G`` a generation number)::

    P:inventory                 hash  gen, buckets, imported_at, source, counts
    P:inventory:seq             int   last generation number handed out
    P:inventory:gens            set   generations that may still have keys
    P:inventory:lock            str   held by a running import (expires)
    P:inv:G:districts           hash  district id -> {"name": ...}
    P:inv:G:switches            hash  switch index -> {"id", "address", "district", ...}
    P:inv:G:switch-index        hash  switch id -> switch index
    P:inv:G:switch-subscribers  hash  switch id -> how many numbers are on it (district shares)
    P:inv:G:switch-phones       hash  switch id -> its numbers (inventory.store.pack_numbers)
    P:inv:G:phones:B            hash  E.164 digits -> switch index       (B = bucket)
    P:inv:G:details:B           hash  E.164 digits -> "account<US>port<US>address"
    P:state                     hash  switch id -> {"state", "since", "reason", "root", "rtt_ms"}
    P:state:version             int   goes up whenever P:state is written (readers cache)
    P:events                    stream every change: kind, switch, old, new, reason, root, at,
                                       silent_since (a state change's first missed probe)
    P:poller                    hash  the poller's last sweep: at, duration, counts
    P:staff                     hash  announcement id -> staff announcement (JSON)
    P:maintenance               hash  window id -> maintenance window (JSON)
    P:active                    hash  announcement id -> active announcement (JSON)
    P:active:heard              hash  announcement id -> what a lookup needs of it (small JSON)
    P:active:switch             hash  switch id -> id of the announcement its callers hear
    P:active:global             str   id of the announcement unknown callers hear
    P:heard                     stream matched lookups: announcement, phone, caller, scope, ...
    P:callers:<digits>          str   "UNTIL,PROMPT,ID,SCOPE" a number hears ([mirror] redis_keys)
    P:callers:global            str   the same, for everyone else; each expires after lease_s
    P:links                     hash  mirror name -> its link's state (JSON), for status
    P:notify:cursor             hash  read: last event read; pending: ids read, not yet notified
    P:cluster:members           zset  live instances, scored by when their heartbeat runs out
    P:cluster:info              hash  instance -> about it (JSON); leader, since
    P:cluster:shares            hash  instance -> the switches it polls (JSON list)
    P:cluster:leader            str   the instance holding the leader lease (expires)

Phone numbers are spread over ``buckets`` small hashes so that Redis keeps
each in its compact listpack encoding (about 16 bytes a number instead of
about 72 for one key per number; a subscriber's details add their own
length). ``bucket_of`` is the one definition of
which bucket a number lives in; ``lookup.lua`` computes the same.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Suffixes under a generation; substituted into lookup.lua so that the Lua
#: script and this module cannot disagree.
DISTRICTS = "districts"
SWITCHES = "switches"
SWITCH_INDEX = "switch-index"
SWITCH_LOAD = "switch-subscribers"
SWITCH_PHONES = "switch-phones"
PHONES = "phones"
DETAILS = "details"

#: Digits at the end of a number that choose its bucket.
BUCKET_DIGITS = 6
#: Average numbers per bucket. Redis keeps a hash in a listpack up to
#: ``hash-max-listpack-entries`` entries (128 in Redis 7's defaults, 512 in
#: some builds) of at most ``hash-max-listpack-value`` (64) bytes each; 64
#: on average leaves the fullest bucket of a million numbers (about 100)
#: below the smaller limit.
BUCKET_FILL = 64


def bucket_count(numbers: int) -> int:
    """How many phone buckets a generation of ``numbers`` numbers gets."""
    return max(1, -(-numbers // BUCKET_FILL))


def bucket_of(digits: str, buckets: int) -> int:
    """The bucket of an E.164 number given as digits without the plus."""
    return int(digits[-BUCKET_DIGITS:]) % buckets


@dataclass(frozen=True)
class Keys:
    """Key names under ``prefix``; the only place that spells a key."""

    prefix: str = "announcer"

    def _k(self, *parts: str | int) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    @property
    def inventory(self) -> str:
        return self._k("inventory")

    @property
    def inventory_seq(self) -> str:
        return self._k("inventory", "seq")

    @property
    def inventory_gens(self) -> str:
        return self._k("inventory", "gens")

    @property
    def inventory_lock(self) -> str:
        return self._k("inventory", "lock")

    @property
    def generations(self) -> str:
        """What every generation's keys start with, before the number."""
        return self._k("inv") + ":"

    @property
    def state(self) -> str:
        return self._k("state")

    @property
    def state_version(self) -> str:
        return self._k("state", "version")

    @property
    def events(self) -> str:
        return self._k("events")

    @property
    def poller(self) -> str:
        return self._k("poller")

    @property
    def staff(self) -> str:
        return self._k("staff")

    @property
    def maintenance(self) -> str:
        return self._k("maintenance")

    @property
    def active(self) -> str:
        return self._k("active")

    @property
    def active_heard(self) -> str:
        return self._k("active", "heard")

    @property
    def active_by_switch(self) -> str:
        return self._k("active", "switch")

    @property
    def active_global(self) -> str:
        return self._k("active", "global")

    @property
    def heard(self) -> str:
        return self._k("heard")

    def caller(self, name: str) -> str:
        """The func_redis key of one number (E.164 digits) or of ``global``."""
        return self._k("callers", name)

    @property
    def callers_pattern(self) -> str:
        return self._k("callers", "*")

    @property
    def links(self) -> str:
        return self._k("links")

    @property
    def notify_cursor(self) -> str:
        return self._k("notify", "cursor")

    @property
    def cluster_members(self) -> str:
        return self._k("cluster", "members")

    @property
    def cluster_info(self) -> str:
        return self._k("cluster", "info")

    @property
    def cluster_shares(self) -> str:
        return self._k("cluster", "shares")

    @property
    def cluster_leader(self) -> str:
        return self._k("cluster", "leader")

    def generation_prefix(self, gen: int | str) -> str:
        """Prefix of every key of one generation, ending in a colon."""
        return f"{self.generations}{gen}:"

    def generation_pattern(self, gen: int | str) -> str:
        return self.generation_prefix(gen) + "*"

    def districts(self, gen: int | str) -> str:
        return self.generation_prefix(gen) + DISTRICTS

    def switches(self, gen: int | str) -> str:
        return self.generation_prefix(gen) + SWITCHES

    def switch_index(self, gen: int | str) -> str:
        return self.generation_prefix(gen) + SWITCH_INDEX

    def switch_load(self, gen: int | str) -> str:
        return self.generation_prefix(gen) + SWITCH_LOAD

    def switch_phones(self, gen: int | str) -> str:
        return self.generation_prefix(gen) + SWITCH_PHONES

    def phones(self, gen: int | str, bucket: int) -> str:
        return f"{self.generation_prefix(gen)}{PHONES}:{bucket}"

    def details(self, gen: int | str, bucket: int) -> str:
        return f"{self.generation_prefix(gen)}{DETAILS}:{bucket}"
