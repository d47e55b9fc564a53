"""The demo's scenes: switches fail and recover, and what callers hear meanwhile.

Each scene does one thing to the simulated switches (``agents``) or drops a
file for the daemon, then waits for the real consequence, read back from the
running daemon: the switch states it wrote to Redis, and what it answers over
FastAGI when asked exactly as Asterisk asks (``ask_fastagi``: the AGI
headers with the caller's number, then ``200 result=1`` to each SET
VARIABLE). Nothing is computed by the demo itself. A loop is six scenes,
and each loop takes the next districts in turn:

1. an access switch loses power; its callers hear a switch outage, a caller
   elsewhere hears nothing;
2. it comes back rebooted (sysUpTime starts again): "service restored";
3. the fibre to a district's aggregation switch is cut: everything behind it
   is unreachable, one district announcement;
4. tech support drop a text message for another district into the drop folder;
5. the fibre is spliced: the district is back, "service restored";
6. tech support withdraw their message (what ``announcer clear`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

from redis.asyncio import Redis

from announcer.announce_store import AnnouncementStore
from announcer.config import Settings
from announcer.demo.agents import Agents
from announcer.demo.caller import Heard, ask_fastagi
from announcer.demo.city import City
from announcer.demo.daemon import Daemon
from announcer.keys import Keys
from announcer.store import StateStore

#: How long one step may take before the demo gives up and says so.
WAIT_S = 60.0
T = TypeVar("T")


class DemoFailed(RuntimeError):
    """Something the demo waited for did not happen; the message says what to look at."""


Scene = tuple[str, Callable[[], Awaitable[None]]]


class Show:
    """The scenes, played against a running daemon; see the module docstring."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        city: City,
        agents: Agents,
        daemon: Daemon,
        settings: Settings,
        say: Callable[[str], None],
    ) -> None:
        self.city, self.agents, self.daemon, self.say = city, agents, daemon, say
        self.agi_port = settings.fastagi.port
        self.incoming = settings.dropbox.spool / "incoming"
        self.states = StateStore(redis, keys)
        self.store = AnnouncementStore(redis, keys)
        self.started = time.monotonic()
        self.staff_id = ""
        self.drops = 0

    # waiting and telling -------------------------------------------------------

    def at(self) -> str:
        """The seconds since the scene's action, for the start of a line."""
        return f"{time.monotonic() - self.started:6.1f} s:"

    async def until(self, check: Callable[[], Awaitable[T | None]], what: str) -> T:
        """The first truthy ``check()``; a DemoFailed after WAIT_S or when the daemon died."""
        deadline = time.monotonic() + WAIT_S
        while True:
            found = await check()
            if found:
                return found
            gone = self.daemon.gone()
            if gone:
                raise DemoFailed(f"{what} did not happen: {gone}")
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"{what} did not happen within {WAIT_S:.0f} s; the end of the daemon's"
                    f" log:\n{self.daemon.tail()}"
                )
            await asyncio.sleep(0.2)

    async def state(self, switch: str) -> dict[str, str]:
        return dict((await self.states.states()).get(switch, {}))

    async def all_in(self, switches: list[str], state: str) -> bool:
        found = await self.states.states()
        return all(found.get(s, {}).get("state") == state for s in switches)

    async def heard_by(self, switch: str, wanted: Callable[[str], bool], what: str) -> Heard:
        number = self.city.number_on[switch]

        async def check() -> Heard | None:
            heard = await ask_fastagi(self.agi_port, number)
            return heard if wanted(heard.id) else None

        return await self.until(check, what)

    async def tell(self, switch: str, heard: Heard | None = None, at: bool = True) -> None:
        """One line: what a caller on ``switch`` hears (asked now unless given)."""
        number = self.city.number_on[switch]
        heard = heard or await ask_fastagi(self.agi_port, number)
        lead = self.at() if at else " " * 8
        who = f"{lead} {number} on {switch}"
        if not heard.id:
            self.say(f"{who} hears nothing: straight to the queue")
            return
        texts = {a.id: a.text for a in await self.store.active()}
        self.say(f'{who} hears {heard.id} "{texts.get(heard.id, "")}"')
        self.say(f"{' ' * 12}plays {heard.prompt}")

    # the scenes ------------------------------------------------------------------

    def scenes(self) -> Iterator[Scene]:
        """Loop after loop of six scenes, each loop on the next districts."""
        aggregation = self.city.aggregation
        loop = 0
        while True:
            a, b, c, d = (aggregation[(loop + i) % len(aggregation)] for i in range(4))
            spare = self.city.access[a][:-1]  # the last one's callers are the bystanders
            switch = spare[(loop // len(aggregation)) % len(spare)]
            bystander = self.city.access[d][-1]
            district = self.city.district_of[c]
            listener = self.city.access[c][-1]
            yield (
                f"{switch} loses power (its agent closes its socket)",
                partial(self.power_cut, switch, bystander),
            )
            yield f"{switch} has power again (sysUpTime restarts)", partial(self.power_back, switch)
            yield (
                f"the fibre to {b} is cut (it and the switches behind it fall silent)",
                partial(self.fibre_cut, b, bystander),
            )
            yield (
                f"tech support drop a message for {self.city.names[district]} into the spool",
                partial(self.staff_drop, district, listener),
            )
            yield f"the fibre to {b} is spliced", partial(self.splice, b)
            yield (
                "tech support withdraw their message (announcer clear)",
                partial(self.withdraw, listener),
            )
            loop += 1

    async def power_cut(self, switch: str, bystander: str) -> None:
        await self.agents[switch].power_off()
        self.started = time.monotonic()
        state = await self.until(lambda: self._state_if(switch, "down"), f"{switch} going down")
        self.say(f"{self.at()} {switch} is down: {state.get('reason', '')}")
        heard = await self.heard_by(switch, lambda i: i.startswith("auto-"), "the announcement")
        await self.tell(switch, heard)
        await self.tell(bystander, at=False)

    async def power_back(self, switch: str) -> None:
        outage = (await ask_fastagi(self.agi_port, self.city.number_on[switch])).id
        await self.agents[switch].power_on(reboot=True)
        self.started = time.monotonic()
        await self.until(lambda: self._state_if(switch, "up"), f"{switch} coming back")
        reboots = [
            e
            for e in await self.states.events(50)
            if e.get("kind") == "reboot" and e.get("switch") == switch
        ]
        rebooted = ""
        if reboots:
            before, now = (float(reboots[-1][k]) for k in ("uptime_before_s", "uptime_now_s"))
            rebooted = f"; it rebooted (sysUpTime {_span(before)} -> {_span(now)})"
        self.say(f"{self.at()} {switch} is up{rebooted}")
        heard = await self.heard_by(
            switch, lambda i: i == f"restored-{outage}", '"service restored"'
        )
        await self.tell(switch, heard)

    async def fibre_cut(self, aggregation: str, bystander: str) -> None:
        cut = [aggregation, *self.city.children[aggregation]]
        for switch in cut:
            self.agents[switch].silence()
        self.started = time.monotonic()
        await self.until(lambda: self._state_if(aggregation, "down"), f"{aggregation} going down")
        await self.until(
            lambda: self.all_in(cut[1:], "unreachable"), f"the switches behind {aggregation}"
        )
        self.say(f"{self.at()} {aggregation} is down; unreachable behind it: {', '.join(cut[1:])}")
        caller = self.city.access[aggregation][-1]
        heard = await self.heard_by(caller, lambda i: i.startswith("auto-"), "the announcement")
        await self.tell(caller, heard)
        await self.tell(bystander, at=False)

    async def staff_drop(self, district: str, caller: str) -> None:
        self.drops += 1
        name = f"note-{district}-{self.drops}"  # a new name each time: done/ keeps them all
        sidecar = (
            f"districts = [{json.dumps(self.city.names[district], ensure_ascii=False)}]\n"
            'text = "Ведутся плановые работы на линии. Приносим извинения."\n'
            'ttl = "1h"\nauthor = "demo"\n'
        )
        self.incoming.mkdir(parents=True, exist_ok=True)
        unfinished = self.incoming / f".{name}.toml"  # a dot name is left alone
        unfinished.write_text(sidecar, encoding="utf-8")
        unfinished.rename(self.incoming / f"{name}.toml")  # complete at once: never half-read
        self.say(f"{' ' * 8} {self.incoming / name}.toml: {sidecar.splitlines()[1]}")
        self.started = time.monotonic()
        spool = self.incoming.parent
        receipt = await self.until(lambda: _note(spool, name), f"taking {name}.toml")
        self.staff_id = receipt["announcement"]
        self.say(f"{self.at()} taken: done/{name}.receipt.json names {self.staff_id}")
        heard = await self.heard_by(caller, lambda i: i == self.staff_id, "the staff message")
        await self.tell(caller, heard)

    async def splice(self, aggregation: str) -> None:
        caller = self.city.access[aggregation][-1]
        outage = (await ask_fastagi(self.agi_port, self.city.number_on[caller])).id
        cut = [aggregation, *self.city.children[aggregation]]
        for switch in cut:
            self.agents[switch].resume()
        self.started = time.monotonic()
        await self.until(lambda: self.all_in(cut, "up"), f"{aggregation} and its switches")
        self.say(f"{self.at()} {aggregation} is up, and the {len(cut) - 1} switches behind it")
        heard = await self.heard_by(
            caller, lambda i: i == f"restored-{outage}", '"service restored"'
        )
        await self.tell(caller, heard)

    async def withdraw(self, caller: str) -> None:
        await self.store.remove_staff([self.staff_id])
        self.started = time.monotonic()
        staff_id = self.staff_id
        heard = await self.heard_by(caller, lambda i: i != staff_id, "the withdrawal")
        await self.tell(caller, heard)

    # helpers -----------------------------------------------------------------------

    async def _state_if(self, switch: str, wanted: str) -> dict[str, str] | None:
        state = await self.state(switch)
        return state if state.get("state") == wanted else None


async def _note(spool: Path, name: str) -> dict[str, str] | None:
    """The drop's receipt once it is in done/; DemoFailed when it was rejected."""
    rejected = spool / "rejected" / f"{name}.error.txt"
    if rejected.exists():
        raise DemoFailed(f"the drop was rejected: {rejected.read_text(encoding='utf-8')}")
    receipt = spool / "done" / f"{name}.receipt.json"
    if not receipt.exists():
        return None
    with contextlib.suppress(ValueError):  # still being written
        found: dict[str, str] = json.loads(receipt.read_text(encoding="utf-8"))
        return found
    return None


def _span(seconds: float) -> str:
    """3 d 4 h, 2 h 5 min, 7 s."""
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {rest // 60} min"
    if rest >= 60:
        return f"{rest // 60} min"
    return f"{whole} s"
