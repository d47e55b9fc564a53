"""AstDB over the Asterisk manager interface (AMI): the mirror's AstDB sink.

Entries go to ``<family>/<E.164 digits>`` and ``<family>/global`` with
``DBPut``, leave with ``DBDel``, are read back with ``DBGetTree``, and the
lease is ``<family>/lease`` (see ``announcer.pbx.mirror``). The AMI login
needs ``write = system`` (DB actions) and ``read = system,user`` in
manager.conf. Of the events it asks only for the user class, and of those
takes ``UserEvent(AnnouncerHeard, ...)``: the dialplan's word that a caller
was played a mirrored prompt, handed to ``heard`` (statistics). A login
without ``read = user`` mirrors all the same; only those calls go uncounted.

The protocol is panoramisk's; the connection's life is ours. panoramisk's
``Manager`` reconnects by itself at a fixed interval and queues actions sent
meanwhile, which would hide a lost link from the mirror; ``_Manager`` only
reports the loss, and ``AstDbSink`` connects again with back-off (the
mirror's loop) and reconciles afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from panoramisk import Manager  # type: ignore[import-untyped]

from announcer.config import AmiSettings
from announcer.pbx.mirror import LEASE, LinkDown

logger = logging.getLogger(__name__)

#: The UserEvent the AstDB dialplan sends for a caller played a prompt.
HEARD_EVENT = "AnnouncerHeard"
#: DBDel of an entry that is not there answers this; it is what was wanted.
_ABSENT = "database entry not found"
#: Actions written between two turns of the event loop. panoramisk spends
#: ~15 µs writing one; a whole batch at once would hold up everything else
#: in the daemon (FastAGI sessions, the poller) for ~10 ms at a time.
_SEND_CHUNK = 50


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager without its own reconnection."""

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        pinger = getattr(self, "pinger", None)
        if pinger is not None:
            pinger.cancel()
            self.pinger = None
        self.loop.call_soon(self.on_disconnect, self, exc)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


class AstDbSink:
    """One AMI login, used to keep the AstDB family equal to the mirror."""

    def __init__(self, settings: AmiSettings) -> None:
        self.settings = settings
        self.family = settings.family
        self.name = f"AstDB over AMI at {settings.host}:{settings.port}"
        self._manager: Any = None
        self._lost: str | None = None
        self.heard: Callable[[Mapping[str, str]], None] | None = None
        """told the fields of every AnnouncerHeard event"""

    @property
    def connected(self) -> bool:
        return self._manager is not None and self._lost is None

    async def connect(self) -> None:
        if self.connected:
            return
        await self.close()
        s = self.settings
        self._lost = None
        manager = _Manager(
            host=s.host,
            port=s.port,
            username=s.username,
            secret=s.secret,
            events="user",
            loop=asyncio.get_running_loop(),
            on_disconnect=self._on_disconnect,
            log=logger,
        )
        self._manager = manager
        manager.register_event("UserEvent", self._user_event)
        try:
            async with asyncio.timeout(s.timeout_s):
                await manager.connect()
                login = await manager.authenticated_future
        except TimeoutError:
            await self.close()
            raise LinkDown(
                f"AMI on {s.host}:{s.port} did not answer the login within {s.timeout_s:g} s"
            ) from None
        except OSError as exc:
            await self.close()
            raise LinkDown(
                f"cannot reach AMI on {s.host}:{s.port} ({exc.strerror or exc}): is Asterisk"
                " running, and manager.conf enabled with this port?"
            ) from exc
        if not login.success:
            await self.close()
            raise LinkDown(
                f"AMI refused the login as {s.username!r} ({_text(login.get('Message'))}):"
                " check [ami] username and secret against Asterisk's manager.conf"
            )
        logger.info("AMI: logged in to %s:%d as %s", s.host, s.port, s.username)

    def _user_event(self, _manager: Any, event: Mapping[str, Any]) -> None:
        if self.heard is not None and event.get("UserEvent") == HEARD_EVENT:
            self.heard({str(k): _text(v) for k, v in event.items()})

    def _on_disconnect(self, _manager: Any, exc: Exception | None) -> None:
        self._lost = f"the AMI connection was lost ({exc or 'closed by Asterisk'})"

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.close()

    async def _send(self, actions: Sequence[dict[str, str]]) -> list[Any]:
        """Sends ``actions`` at once and waits for every answer."""
        if self._manager is None or self._lost is not None:
            raise LinkDown(self._lost or "not connected to AMI")
        manager = self._manager
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                futures = []
                for start in range(0, len(actions), _SEND_CHUNK):
                    if start:
                        await asyncio.sleep(0)  # let the rest of the daemon run
                        if self._lost is not None:
                            raise LinkDown(self._lost)
                    chunk = actions[start : start + _SEND_CHUNK]
                    futures += [manager.send_action(dict(a)) for a in chunk]
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            raise LinkDown(
                self._lost
                or f"AMI did not answer {len(actions)} actions within {self.settings.timeout_s:g} s"
            ) from None

    async def read_all(self) -> dict[str, str]:
        if self._manager is None or self._lost is not None:
            raise LinkDown(self._lost or "not connected to AMI")
        try:
            async with asyncio.timeout(max(self.settings.timeout_s, 30.0)):
                answer = await self._manager.send_action(
                    {"Action": "DBGetTree", "Family": self.family}, as_list=True
                )
        except TimeoutError:
            raise LinkDown(self._lost or "AMI did not answer DBGetTree") from None
        messages = answer if isinstance(answer, list) else [answer]
        out: dict[str, str] = {}
        head = f"/{self.family}/"
        for message in messages:
            if message.get("Event") != "DBGetTreeResponse":
                if message.get("Response") == "Error":
                    text = _text(message.get("Message"))
                    if "not found" in text.lower():
                        return {}
                    raise LinkDown(f"AMI refused DBGetTree: {text}")
                continue
            key = _text(message.get("Key"))
            if key.startswith(head):
                name = key[len(head) :]
                if name != LEASE:
                    out[name] = _text(message.get("Val"))
        return out

    async def apply(self, puts: Mapping[str, str], deletes: Sequence[str]) -> dict[str, str]:
        family = self.family
        actions = [{"Action": "DBDel", "Family": family, "Key": k} for k in deletes]
        actions += [
            {"Action": "DBPut", "Family": family, "Key": k, "Val": v} for k, v in puts.items()
        ]
        refused: dict[str, str] = {}
        for action, reply in zip(actions, await self._send(actions), strict=True):
            if reply.get("Response") == "Success":
                continue
            message = _text(reply.get("Message"))
            if action["Action"] == "DBDel" and _ABSENT in message.lower():
                continue
            if "permission denied" in message.lower():
                raise LinkDown(
                    f"AMI refused {action['Action']} {family}/{action['Key']}: {message}"
                    " (the AMI login needs write = system in manager.conf)"
                )
            refused[action["Key"]] = f"{action['Action']} refused: {message or 'no reason given'}"
        return refused

    async def vouch(self, until: float, entries: Collection[str]) -> None:
        refused = await self.apply({LEASE: str(int(until))}, ())
        if refused:
            raise LinkDown(f"AMI refused to renew the lease: {refused[LEASE]}")
