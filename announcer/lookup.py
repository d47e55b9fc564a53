"""What would this caller hear, and why: the one function every PBX mode calls.

``Lookup`` normalises the caller ID the same way the import normalised
billing's numbers, then asks Redis in one round trip (``lookup.lua``) for the
subscriber's switch and district. Callers who ask while a round trip is in
flight share the next one (``announcer.coalesce``). The CLI, the FastAGI
server and the benchmarks all call it; nothing here prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from announcer import keys as layout
from announcer.coalesce import Coalescer
from announcer.inventory.model import Details
from announcer.keys import Keys
from announcer.phones import PhoneNormaliser, Rejected, e164, is_withheld

_NO_DETAILS = Details()


# Announcements and switch states are shared by many callers (in an outage, by
# all of them): each record's JSON is parsed and described once, not per call.
@lru_cache(maxsize=1024)
def _announcement(raw: str) -> tuple[dict[str, Any], str]:
    """An announcement record and the words for a caller who hears it."""
    record: dict[str, Any] = json.loads(raw)
    return record, _describe_heard(record)


@lru_cache(maxsize=4096)
def _switch_state(raw: str) -> tuple[dict[str, Any], str]:
    """A switch's state record and the words for it."""
    state: dict[str, Any] = json.loads(raw)
    return state, _describe_state(state)


_NOTHING = "nothing is active"


def _live(raw: str | None, now: float) -> tuple[dict[str, Any] | None, str]:
    """The announcement record, unless it has expired (an expired prompt is never
    played, even if nothing has cleaned it up yet), and the words for it."""
    if raw is None:
        return None, _NOTHING
    record, described = _announcement(raw)
    if float(record["expires"]) <= now or not record.get("prompt"):
        return None, _NOTHING
    return record, described


def _describe_heard(heard: dict[str, Any]) -> str:
    until = time.strftime("%H:%M", time.localtime(float(heard["expires"])))
    scope = heard["scope"]
    if scope != "global":
        named = list(heard.get("targets", ()))
        more = int(heard.get("count", len(named))) - len(named)
        scope += " " + ", ".join(named) + (f" and {more} more" if more > 0 else "")
    return f"hears {heard['source']} announcement {heard['id']} ({scope}, until {until})"


def _describe_state(state: dict[str, Any]) -> str:
    name = state["state"]
    if name == "unknown":
        return "the switch has not been probed yet"
    since = ""
    if "since" in state:
        since = " since " + time.strftime("%H:%M:%S", time.localtime(state["since"]))
    why = f" ({state['reason']})" if state.get("reason") and name != "up" else ""
    if name == "unreachable":
        return f"the switch is unreachable{since}{why}; root cause: switch {state.get('root')}"
    return f"the switch is {name}{since}{why}"


_UNPROBED_STATE: dict[str, Any] = {"state": "unknown"}
_UNPROBED = (_UNPROBED_STATE, _describe_state(_UNPROBED_STATE))


def _script_source() -> str:
    text = resources.files("announcer").joinpath("lookup.lua").read_text(encoding="utf-8")
    return Template(text).substitute(
        BUCKET_DIGITS=layout.BUCKET_DIGITS,
        PHONES=layout.PHONES,
        SWITCHES=layout.SWITCHES,
        DISTRICTS=layout.DISTRICTS,
        DETAILS=layout.DETAILS,
    )


@dataclass(frozen=True)
class Answer:
    """The lookup's verdict for one caller ID."""

    caller_id: str
    phone: str | None
    """E.164 with the plus, or None when withheld or not a number"""
    known: bool
    switch: str | None
    district: str | None
    district_name: str | None
    prompt: str | None
    """sound to play (relative to Asterisk's sounds directory, no extension)"""
    announcement: str | None
    reason: str
    scope: str | None = None
    """the heard announcement's scope: switch, district or global"""
    state: str | None = None
    """the switch's state: up, down, unreachable, flapping or unknown"""
    state_since: float | None = None
    root_cause: str | None = None
    """the switch whose failure explains this one's state"""
    account: str | None = None
    port: str | None = None
    address: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def nobody(
        cls,
        caller_id: str,
        phone: str | None,
        reason: str,
        *,
        prompt: str | None = None,
        announcement: str | None = None,
        scope: str | None = None,
    ) -> Answer:
        """The answer for a caller who is not a known subscriber (who may still
        hear the announcement for everyone)."""
        return cls(caller_id, phone, False, None, None, None, prompt, announcement, reason, scope)


#: One caller's share of the script's reply: switch id, district id, district
#: name, subscriber details, switch state, announcement (see lookup.lua).
_FIELDS = 6
_Row = list[Any]


class Lookup:
    """``await lookup(caller_id)``: the ``Answer`` for one caller.

    A lone caller's lookup goes out at once. Lookups asked while one is in
    flight go out together when it lands, as one EVALSHA that answers them
    all from the inventory generation it read: a call storm costs the client
    and Redis one command a batch instead of one a caller. A caller whose
    records are broken gets Redis's error, and the others of its batch their
    answers; an error of the round trip itself (Redis down) reaches every
    caller of the batch, as it would have reached each alone.
    """

    def __init__(self, redis: Redis, keys: Keys, normaliser: PhoneNormaliser) -> None:
        self.keys = keys
        self.normaliser = normaliser
        self._script = redis.register_script(_script_source())
        # spelled once: building them per call cost a twentieth of a lookup
        k = keys
        self._keys = [k.inventory, k.state, k.active_heard, k.active_by_switch, k.active_global]
        self._generations = keys.generations
        self._ask: Coalescer[str, tuple[str | None, _Row]] = Coalescer(self._send)

    @property
    def round_trips(self) -> int:
        """EVALSHAs sent so far: lookups per round trip shows the coalescing."""
        return self._ask.round_trips

    async def _send(self, asked: list[str]) -> list[tuple[str | None, _Row]]:
        reply = await self._script(keys=self._keys, args=[self._generations, *asked])
        gen = reply[0]
        return [(gen, reply[n : n + _FIELDS]) for n in range(1, len(reply), _FIELDS)]

    async def __call__(self, caller_id: str | None, now: float | None = None) -> Answer:
        shown = caller_id or ""
        digits: str | Rejected = "" if is_withheld(caller_id) else self.normaliser.normalise(shown)
        asked = "" if isinstance(digits, Rejected) else digits
        gen, row = await self._ask(asked)
        switch, district, name, details_raw, state_raw, heard_raw = row
        if isinstance(switch, ResponseError):
            raise switch  # this caller's records are broken (the others' answers stand)
        heard, heard_words = _live(heard_raw, time.time() if now is None else now)
        prompt, announcement = (heard["prompt"], heard["id"]) if heard else (None, None)
        scope = heard["scope"] if heard else None
        if switch is None:
            if not asked:
                why = digits.reason if isinstance(digits, Rejected) else "the caller ID is withheld"
                who = f"{why}: only announcements for everyone apply"
            elif gen is None:
                who = "no inventory has been imported yet"
            else:
                who = f"{e164(asked)} is not in the inventory"
            return Answer.nobody(
                shown,
                e164(asked) if asked else None,
                f"{who}; {heard_words}",
                prompt=prompt,
                announcement=announcement,
                scope=scope,
            )
        details = Details.unpack(details_raw) if details_raw else _NO_DETAILS
        state, state_words = _switch_state(state_raw) if state_raw else _UNPROBED
        return Answer(
            caller_id=shown,
            phone=e164(asked),
            known=True,
            switch=switch,
            district=district,
            district_name=name,
            prompt=prompt,
            announcement=announcement,
            scope=scope,
            reason=f"known subscriber on switch {switch} in {name}; {state_words}; {heard_words}",
            state=state["state"],
            state_since=state.get("since"),
            root_cause=state.get("root"),
            account=details.account,
            port=details.port,
            address=details.address,
        )
