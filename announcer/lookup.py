"""What would this caller hear, and why: the one function every PBX mode calls.

``Lookup`` normalises the caller ID the same way the import normalised
billing's numbers, then asks Redis in one round trip (``lookup.lua``) for the
subscriber's switch and district. The CLI, the FastAGI server and the
benchmarks all call it; nothing here prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from importlib import resources
from string import Template
from typing import Any

from redis.asyncio import Redis

from announcer import keys as layout
from announcer.inventory.model import Details
from announcer.keys import Keys
from announcer.phones import PhoneNormaliser, Rejected, e164, is_withheld

_NO_DETAILS = Details()
_UNPROBED: dict[str, Any] = {"state": "unknown"}


def _live(raw: str | None, now: float) -> dict[str, Any] | None:
    """The announcement record, unless it has expired: an expired prompt is never
    played, even if nothing has cleaned it up yet."""
    if raw is None:
        return None
    record: dict[str, Any] = json.loads(raw)
    if float(record["expires"]) <= now or not record.get("prompt"):
        return None
    return record


def _describe_heard(heard: dict[str, Any] | None) -> str:
    if heard is None:
        return "nothing is active"
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
    def nobody(cls, caller_id: str, phone: str | None, reason: str) -> Answer:
        """The answer for a caller who is not a known subscriber."""
        return cls(caller_id, phone, False, None, None, None, None, None, reason)


class Lookup:
    def __init__(self, redis: Redis, keys: Keys, normaliser: PhoneNormaliser) -> None:
        self.keys = keys
        self.normaliser = normaliser
        self._script = redis.register_script(_script_source())
        # spelled once: building them per call cost a twentieth of a lookup
        k = keys
        self._keys = [k.inventory, k.state, k.active_heard, k.active_by_switch, k.active_global]
        self._generations = keys.generations

    async def __call__(self, caller_id: str | None, now: float | None = None) -> Answer:
        shown = caller_id or ""
        digits: str | Rejected = "" if is_withheld(caller_id) else self.normaliser.normalise(shown)
        asked = "" if isinstance(digits, Rejected) else digits
        gen, switch_raw, district_raw, details_raw, state_raw, heard_raw = await self._script(
            keys=self._keys, args=[asked, self._generations]
        )
        heard = _live(heard_raw, time.time() if now is None else now)
        prompt, announcement = (heard["prompt"], heard["id"]) if heard else (None, None)
        scope = heard["scope"] if heard else None
        if switch_raw is None:
            if not asked:
                why = digits.reason if isinstance(digits, Rejected) else "the caller ID is withheld"
                who = f"{why}: only announcements for everyone apply"
            elif gen is None:
                who = "no inventory has been imported yet"
            else:
                who = f"{e164(asked)} is not in the inventory"
            answer = Answer.nobody(shown, e164(asked) if asked else None, "")
            return replace(
                answer,
                prompt=prompt,
                announcement=announcement,
                scope=scope,
                reason=f"{who}; {_describe_heard(heard)}",
            )
        switch = json.loads(switch_raw)
        name = json.loads(district_raw)["name"] if district_raw else None
        details = Details.unpack(details_raw) if details_raw else _NO_DETAILS
        state: dict[str, Any] = json.loads(state_raw) if state_raw else _UNPROBED
        return Answer(
            caller_id=shown,
            phone=e164(asked),
            known=True,
            switch=switch["id"],
            district=switch["district"],
            district_name=name,
            prompt=prompt,
            announcement=announcement,
            scope=scope,
            reason=(
                f"known subscriber on switch {switch['id']} in {name};"
                f" {_describe_state(state)}; {_describe_heard(heard)}"
            ),
            state=state["state"],
            state_since=state.get("since"),
            root_cause=state.get("root"),
            account=details.account,
            port=details.port,
            address=details.address,
        )
