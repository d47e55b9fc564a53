"""The manager interface (AMI) as the dialplan tests use it, over panoramisk.

``Ami.originate`` places a call into the test dialplan and follows exactly
that call's events (``Newexten``, ``VarSet``, ``AGIExecEnd``, ``Hangup``)
until every channel of it hung up; ``Call`` is what the call did.
``Ami.dial`` places a call the test takes part in (``LiveCall``): it presses
keys from the phone, waits for the dialplan's variables, and hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from panoramisk import Manager  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from tests.asterisk.sandbox import Asterisk

AMI_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 15.0
#: How long an unanswered call's events may lag behind Originate's answer.
UNANSWERED_GRACE_S = 2.0


class AsteriskError(RuntimeError):
    """Asterisk did not do what the harness asked; carries the end of its log."""


@dataclass(frozen=True)
class Step:
    """One dialplan priority a channel executed (a ``Newexten`` event)."""

    context: str
    exten: str
    priority: int
    application: str
    data: str


@dataclass(frozen=True)
class AgiCommand:
    """One AGI command and Asterisk's answer (``AGIExecStart`` / ``AGIExecEnd``)."""

    command: str
    result_code: str
    result: str


@dataclass
class Call:
    """What one originated call did, from the AMI events of its channels.

    ``steps``, ``variables`` and ``agi`` are those of the channel that ran the
    dialplan (the ``;2`` half of the Local channel); ``events`` holds every
    event of both halves, in order, for anything else.
    """

    channel_id: str
    dialplan_channel_id: str
    steps: list[Step] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    agi: list[AgiCommand] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    answered: bool = False
    originate_reason: str = ""
    hangup_cause: str = ""

    @property
    def applications(self) -> list[str]:
        return [step.application for step in self.steps]

    def summary(self) -> str:
        steps = ", ".join(f"{s.application}({s.data})" for s in self.steps) or "none"
        return f"steps: {steps}; variables: {self.variables}; hangup: {self.hangup_cause!r}"


def _text(value: Any) -> str:
    """A header of a panoramisk message: a string, or a list when repeated."""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


class _CallWatch:
    """Collects the events of one originated call until all its channels hung up."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.ids = {call.channel_id, call.dialplan_channel_id}
        self.channels: set[str] = set()
        self.hung_up: set[str] = set()
        self.done = asyncio.Event()
        self.seen = asyncio.Event()
        """set at the call's first event"""

    def feed(self, event: Mapping[str, Any]) -> None:
        unique = _text(event.get("Uniqueid"))
        if unique not in self.ids and _text(event.get("Linkedid")) not in self.ids:
            return
        record = {str(k): _text(v) for k, v in event.items()}
        call = self.call
        call.events.append(record)
        name = record.get("Event", "")
        self.channels.add(unique)
        self.seen.set()
        on_dialplan = unique == call.dialplan_channel_id
        if name == "Newexten" and on_dialplan:
            call.steps.append(
                Step(
                    context=record.get("Context", ""),
                    exten=record.get("Exten", record.get("Extension", "")),
                    priority=int(record.get("Priority") or 0),
                    application=record.get("Application", ""),
                    data=record.get("AppData", ""),
                )
            )
        elif name == "VarSet" and on_dialplan:
            call.variables[record.get("Variable", "")] = record.get("Value", "")
        elif name == "AGIExecEnd" and on_dialplan:
            call.agi.append(
                AgiCommand(
                    command=record.get("Command", ""),
                    result_code=record.get("ResultCode", ""),
                    result=record.get("Result", ""),
                )
            )
        elif name == "Hangup":
            self.hung_up.add(unique)
            if on_dialplan:
                call.hangup_cause = record.get("Cause-txt", "")
        if self.channels and self.channels <= self.hung_up:
            self.done.set()


class Ami:
    """The AMI as the dialplan tests use it, over panoramisk's ``Manager``."""

    def __init__(self, asterisk: Asterisk) -> None:
        self.asterisk = asterisk
        self._manager: Any = None
        self._watches: list[_CallWatch] = []

    async def connect(self, timeout_s: float = AMI_TIMEOUT_S) -> None:
        asterisk = self.asterisk
        # panoramisk reconnects on its own after a lost connection; a test
        # wants to see the failure instead, so the retry is put far away.
        manager = Manager(
            host="127.0.0.1",
            port=asterisk.ami_port,
            username=asterisk.ami_user,
            secret=asterisk.ami_secret,
            loop=asyncio.get_running_loop(),
            reconnect_timeout=3600,
            ping_delay=3600,
        )
        manager.register_event("*", self._dispatch)
        self._manager = manager
        try:
            async with asyncio.timeout(timeout_s):
                await manager.connect()
                login = await manager.authenticated_future
        except TimeoutError:
            self.close()
            raise AsteriskError(
                f"AMI on 127.0.0.1:{asterisk.ami_port} did not answer the login within "
                f"{timeout_s:.0f} s\n{asterisk.log_tail()}"
            ) from None
        except OSError as exc:
            self.close()
            raise AsteriskError(
                f"cannot reach AMI on 127.0.0.1:{asterisk.ami_port}: {exc}\n{asterisk.log_tail()}"
            ) from exc
        if not login.success:
            self.close()
            raise AsteriskError(f"AMI login refused: {_text(login.get('Message'))}")

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def _dispatch(self, _manager: Any, event: Mapping[str, Any]) -> None:
        for watch in self._watches:
            watch.feed(event)

    async def action(
        self, action: Mapping[str, str], timeout_s: float = AMI_TIMEOUT_S
    ) -> list[dict[str, str]]:
        """Sends one action; its response and any events that answer it, in order."""
        if self._manager is None:
            raise AsteriskError("the AMI client is closed")
        async with asyncio.timeout(timeout_s):
            answer = await self._manager.send_action(dict(action))
        messages = answer if isinstance(answer, list) else [answer]
        return [{str(k): _text(v) for k, v in message.items()} for message in messages]

    async def originate(
        self,
        number: str,
        context: str,
        callerid: str,
        variables: Mapping[str, str] | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> Call:
        """Calls ``Local/<number>@<context>`` as ``callerid`` and waits until it hangs up.

        The originated half of the Local channel waits in ``Wait()``; the other
        half runs the dialplan under test. Returns what that one did.
        """
        call_id = uuid.uuid4().hex[:16]
        call = Call(channel_id=f"{call_id}-1", dialplan_channel_id=f"{call_id}-2")
        watch = _CallWatch(call)
        self._watches.append(watch)
        try:
            async with asyncio.timeout(timeout_s):
                action = {
                    "Action": "Originate",
                    "Channel": f"Local/{number}@{context}",
                    "Application": "Wait",
                    "Data": str(int(timeout_s)),
                    "CallerID": callerid,
                    "Timeout": str(int(timeout_s * 1000)),
                    "Async": "true",
                    "ChannelId": call.channel_id,
                    "OtherChannelId": call.dialplan_channel_id,
                }
                if variables:
                    action["Variable"] = ",".join(f"{k}={v}" for k, v in variables.items())
                answer = await self.action(action, timeout_s)
                first, last = answer[0], answer[-1]
                if first.get("Response") not in ("Success", None):
                    raise AsteriskError(f"Originate refused: {first.get('Message', first)}")
                call.answered = last.get("Response") == "Success"
                call.originate_reason = last.get("Reason", "")
                if not watch.channels and not call.answered:
                    # A call the dialplan never answers (early media) ends
                    # Originate with a failure that a busy Asterisk may send
                    # before the call's own events: give them a moment.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(watch.seen.wait(), UNANSWERED_GRACE_S)
                if watch.channels or call.answered:
                    await watch.done.wait()
        except TimeoutError:
            raise AsteriskError(
                f"the call to {number}@{context} did not end within {timeout_s:.0f} s; "
                f"{call.summary()}"
            ) from None
        finally:
            self._watches.remove(watch)
        return call

    async def db_put(self, family: str, key: str, value: str) -> None:
        """Writes ``value`` into AstDB (AMI ``DBPut``)."""
        answer = await self.action({"Action": "DBPut", "Family": family, "Key": key, "Val": value})
        if answer[0].get("Response") != "Success":
            raise AsteriskError(f"DBPut {family}/{key} refused: {answer[0].get('Message')}")

    async def db_get(self, family: str, key: str) -> str | None:
        """Reads AstDB (AMI ``DBGet``, answered by a ``DBGetResponse`` event); None if absent."""
        answer = await self.action({"Action": "DBGet", "Family": family, "Key": key})
        for message in answer:
            if message.get("Event") == "DBGetResponse":
                return message.get("Val", "")
        return None

    async def db_del(self, family: str, key: str) -> None:
        await self.action({"Action": "DBDel", "Family": family, "Key": key})

    @contextlib.asynccontextmanager
    async def dial(
        self,
        number: str,
        context: str,
        callerid: str,
        phone: tuple[str, str],
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> AsyncIterator[LiveCall]:
        """Calls ``Local/<number>@<context>`` as ``callerid`` from a phone whose
        half of the call runs ``phone`` (context, extension), and yields the
        call once the dialplan answered; on the way out the phone hangs up (if
        the dialplan has not) and the call is followed until it ended.

            async with ami.dial("*77", "staff-phones", "101", ("phone", "talk")) as call:
                assert await call.value("STEP") == "pin"
                await call.press("1234#")
        """
        call_id = uuid.uuid4().hex[:16]
        call = Call(channel_id=f"{call_id}-1", dialplan_channel_id=f"{call_id}-2")
        watch = _LiveWatch(call)
        live = LiveCall(self, watch, f"the call to {number}@{context}")
        self._watches.append(watch)
        try:
            phone_context, phone_exten = phone
            answer = await self.action(
                {
                    "Action": "Originate",
                    "Channel": f"Local/{number}@{context}",
                    "Context": phone_context,
                    "Exten": phone_exten,
                    "Priority": "1",
                    "CallerID": callerid,
                    "Timeout": str(int(timeout_s * 1000)),
                    "Async": "true",
                    "ChannelId": call.channel_id,
                    "OtherChannelId": call.dialplan_channel_id,
                },
                timeout_s,
            )
            first, last = answer[0], answer[-1]
            if first.get("Response") not in ("Success", None):
                raise AsteriskError(f"Originate refused: {first.get('Message', first)}")
            call.answered = last.get("Response") == "Success"
            call.originate_reason = last.get("Reason", "")
            if not call.answered:
                raise AsteriskError(f"{live.what} was not answered; {call.summary()}")
            try:
                yield live
            finally:
                await live.hang_up()
                await live.end()
        finally:
            self._watches.remove(watch)


# -- calls a test takes part in ------------------------------------------------


class _LiveWatch(_CallWatch):
    """A ``_CallWatch`` that also wakes whoever waits for the call's next event."""

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self.news = asyncio.Event()

    def feed(self, event: Mapping[str, Any]) -> None:
        super().feed(event)
        self.news.set()


class LiveCall:
    """A call in progress, driven by the test as the person on the phone would.

    The ``;1`` half of the Local channel is the phone: it runs the context the
    test gave (a ``Playback`` there is what the caller says); the ``;2`` half
    runs the dialplan under test. ``press`` sends keys from the phone, ``value``
    waits for the dialplan to set a variable, ``hang_up`` puts the phone down.
    """

    def __init__(self, ami: Ami, watch: _LiveWatch, what: str) -> None:
        self.ami = ami
        self.call = watch.call
        self.what = what
        self._watch = watch
        self._seen = 0
        """events of ``call.events`` already looked at by ``value``"""

    @property
    def ended(self) -> bool:
        return self._watch.done.is_set()

    async def value(self, variable: str, timeout_s: float = CALL_TIMEOUT_S) -> str:
        """The next value the dialplan sets ``variable`` to: the first ``VarSet``
        of the dialplan half after the last event an earlier ``value`` call
        looked at. Fails when the call ends first."""
        watch, call = self._watch, self.call
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    while self._seen < len(call.events):
                        event = call.events[self._seen]
                        self._seen += 1
                        if (
                            event.get("Event") == "VarSet"
                            and event.get("Uniqueid") == call.dialplan_channel_id
                            and event.get("Variable") == variable
                        ):
                            return event.get("Value", "")
                    if watch.done.is_set():
                        raise AsteriskError(
                            f"{self.what} ended before it set {variable}; {call.summary()}"
                        )
                    watch.news.clear()
                    await watch.news.wait()
        except TimeoutError:
            raise AsteriskError(
                f"{self.what} did not set {variable} within {timeout_s:.0f} s; {call.summary()}"
            ) from None

    async def press(self, keys: str, duration_ms: int = 100) -> None:
        """Presses ``keys`` (digits, * and #) on the phone, one after the other
        (AMI ``PlayDTMF`` on the phone's half: the dialplan half receives them).
        PlayDTMF comes with app_senddtmf: load it (``extra_modules``)."""
        for key in keys:
            answer = await self.ami.action(
                {
                    "Action": "PlayDTMF",
                    "Channel": self.call.channel_id,
                    "Digit": key,
                    "Duration": str(duration_ms),
                    # panoramisk reads an answer ending in "successfully queued"
                    # as Originate's and looks up this header; without it the
                    # connection breaks (KeyError: 'async').
                    "Async": "false",
                }
            )
            if answer[0].get("Response") != "Success":
                raise AsteriskError(
                    f"PlayDTMF {key!r} refused: {answer[0].get('Message')}; {self.call.summary()}"
                )

    async def hang_up(self) -> None:
        """Puts the phone down (AMI ``Hangup`` of the phone's half), if it is not already."""
        if not self.ended:
            await self.ami.action({"Action": "Hangup", "Channel": self.call.channel_id})

    async def end(self, timeout_s: float = CALL_TIMEOUT_S) -> Call:
        """Waits until every channel of the call hung up; returns what it did."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._watch.done.wait()
        except TimeoutError:
            raise AsteriskError(
                f"{self.what} did not end within {timeout_s:.0f} s; {self.call.summary()}"
            ) from None
        return self.call
