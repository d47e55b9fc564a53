"""FastAGI: the dialplan asks "what should this caller hear?" over TCP.

``AGI(agi://127.0.0.1:4573/outage)`` connects, sends its header block
(``agi_name: value`` lines ended by an empty line), and the server answers
with three commands::

    SET VARIABLE ANNOUNCER_PROMPT "/var/lib/announcer/sounds/tts-ru-..."
    SET VARIABLE ANNOUNCER_ID "auto-district-north"
    SET VARIABLE ANNOUNCER_SCOPE "district"

one at a time, each acknowledged by Asterisk with ``200 result=1``, then
closes the connection, which ends the AGI and lets the dialplan go on. (Not
all three at once: Asterisk 22 reads the socket through a buffered stream
but waits for the next command by polling the descriptor, so a second
command already in its buffer is never seen and the call stalls.) Empty
values mean "nothing to play": an unaffected caller, or a lookup that failed
(Redis down), since the dialplan must fail open, straight to the queue.

The headers are read here rather than by panoramisk's FastAGI ``Application``:
in panoramisk 1.4 a client that connects and closes before its headers spins
the event loop forever, so one port scan would freeze the daemon. Each
connection is a protocol object fed by the event loop: it gets
``header_timeout_s`` and ``max_header_bytes`` for its whole header block and
is dropped past either, and only complete headers start a task (the lookup,
then ``record``), so a scan or a slow client costs a few objects and a timer.
At most ``max_sessions`` are open at once; further connections are closed on
arrival.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from announcer.lookup import Answer, Lookup

logger = logging.getLogger(__name__)

#: The one route served: ``agi://host:port/outage``.
ROUTE = "outage"
PROMPT, ID, SCOPE = "ANNOUNCER_PROMPT", "ANNOUNCER_ID", "ANNOUNCER_SCOPE"
#: Longest value sent; Asterisk reads a command into a 2 KiB buffer.
MAX_VALUE_CHARS = 1024
#: How long ``close`` lets sessions in progress finish before cancelling them.
CLOSE_GRACE_S = 1.0
#: Distinct unknown routes and odd replies worth a log line each; beyond
#: this many, a misbehaving peer cannot fill the log.
_MAX_NOTED = 100
#: Where a session is: reading headers, looking up, sending commands, over.
_HEADERS, _LOOKUP, _COMMANDS, _DONE = range(4)

Record = Callable[[Answer, str], Awaitable[None]]


@dataclass
class AgiCounters:
    """What the server has done since it started, for metrics."""

    served: int = 0
    """sessions answered with the lookup's verdict"""
    matched: int = 0
    """of those, the ones told a prompt to play"""
    failed: int = 0
    """sessions answered with empty values because the lookup failed (fail open)"""
    dropped: int = 0
    """connections closed without a complete answer: closed at once, malformed,
    oversized or too slow headers, or a peer that vanished during the commands"""
    refused: int = 0
    """connections beyond ``max_sessions``, closed on arrival (not in ``dropped``)"""
    other_routes: int = 0
    """sessions for a script other than ``outage``: closed with nothing set"""
    record_failures: int = 0
    """matched lookups the ``record`` callback failed on"""


def agi_quote(value: str) -> str:
    """``value`` as one double-quoted AGI argument.

    Control characters (a newline would end the command and start another)
    are removed, backslashes and quotes escaped the way Asterisk's argument
    parser unescapes them, and the length capped.
    """
    printable = "".join(ch for ch in value[:MAX_VALUE_CHARS] if ch.isprintable())
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_headers(block: bytes) -> dict[str, str] | str:
    """``agi_name: value`` lines (without the empty line ending them), or
    why they are not AGI headers."""
    headers: dict[str, str] = {}
    for line in block.split(b"\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name.startswith(b"agi_"):
            return f"not an AGI header line: {line[:60]!r}"
        headers[name.decode("ascii", "replace")] = value.strip().decode("utf-8", "replace")
    return headers


def route_of(headers: dict[str, str]) -> str | None:
    """The script asked for (``outage``), from ``agi_network_script`` or else
    ``agi_request``; None when the headers name neither."""
    script = headers.get("agi_network_script")
    if script is None:
        request = headers.get("agi_request")
        if request is None:
            return None
        script = urlsplit(request).path
    return script.partition("?")[0].strip("/")


class AgiServer:
    """The FastAGI server; ``run`` serves until cancelled."""

    def __init__(
        self,
        lookup: Lookup,
        host: str = "127.0.0.1",
        port: int = 4573,
        *,
        header_timeout_s: float = 2.0,
        max_header_bytes: int = 16384,
        max_sessions: int = 1000,
        reply_timeout_s: float = 2.0,
        lookup_timeout_s: float = 1.0,
        record: Record | None = None,
        prompt_path: Callable[[str], str] | None = None,
    ) -> None:
        self.lookup = lookup
        self.prompt_path = prompt_path
        """how Asterisk names a prompt (``PromptSettings.for_asterisk``)"""
        self.host = host
        self.port = port
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.max_sessions = max_sessions
        self.reply_timeout_s = reply_timeout_s
        self.lookup_timeout_s = lookup_timeout_s
        self.record = record
        self.counters = AgiCounters()
        self._server: asyncio.Server | None = None
        self._live: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lookup_failing = False
        self._record_failing = False
        self._full = False
        self._noted: set[str] = set()

    # counters, by the names metrics will use -----------------------------------

    @property
    def sessions_served(self) -> int:
        return self.counters.served

    @property
    def sessions_failed(self) -> int:
        return self.counters.failed

    @property
    def sessions_dropped(self) -> int:
        return self.counters.dropped

    @property
    def sessions_active(self) -> int:
        """Connections open, and sessions still recording after closing theirs."""
        return len(self._live)

    # life cycle ---------------------------------------------------------------

    async def start(self) -> int:
        """Listen; return the port (the one chosen when constructed with 0)."""
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: _Session(self, loop),
                self.host,
                self.port,
                backlog=min(max(self.max_sessions, 128), 4096),
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
            logger.info("FastAGI listening on %s:%d", self.host, self.port)
        return self.port

    async def run(self) -> None:
        """Serve until cancelled; then stop listening and end the sessions."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening; give sessions past their headers a moment to finish,
        then cancel them and close every connection left."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for session in list(self._live):
            if session.phase == _HEADERS:
                session.drop("the server is closing")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for session in list(self._live):
            session.drop("the server is closing")
        if server is not None:
            await server.wait_closed()

    # what sessions call -------------------------------------------------------

    def _admit(self, session: _Session) -> bool:
        if len(self._live) >= self.max_sessions:
            self.counters.refused += 1
            if not self._full:
                self._full = True
                logger.warning(
                    "FastAGI: %d sessions at once; closing further connections until one"
                    " ends (those calls go to the queue unannounced)",
                    self.max_sessions,
                )
            return False
        if self._full:
            self._full = False
            logger.warning("FastAGI: under %d sessions again; serving calls", self.max_sessions)
        self._live.add(session)
        return True

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _other_route(self, route: str | None) -> None:
        self.counters.other_routes += 1
        self._note(
            f"route {route}",
            "FastAGI: asked for script %r; only %r is served, nothing set: check the"
            " dialplan's AGI(agi://host:port/outage)",
            route,
            ROUTE,
        )

    async def _ask(self, caller: str) -> tuple[Answer | None, str]:
        """The lookup's answer and its announcement's scope; (None, "") when it failed."""
        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                answer = await self.lookup(caller)
                scope = (answer.scope or "") if answer.prompt else ""
        except Exception as exc:
            if not self._lookup_failing:
                self._lookup_failing = True
                logger.error(
                    "FastAGI lookups fail (%s: %s); callers hear nothing and go straight to"
                    " the queue until Redis answers again",
                    type(exc).__name__,
                    exc,
                )
            return None, ""
        if self._lookup_failing:
            self._lookup_failing = False
            logger.warning("FastAGI lookups work again")
        return answer, scope

    async def _record(self, answer: Answer, caller: str) -> None:
        assert self.record is not None
        try:
            await self.record(answer, caller)
        except Exception:
            self.counters.record_failures += 1
            if not self._record_failing:
                self._record_failing = True
                logger.exception("FastAGI: recording a matched lookup failed; calls go on")
            return
        if self._record_failing:
            self._record_failing = False
            logger.warning("FastAGI: recording matched lookups works again")

    def _note(self, what: str, message: str, *args: object) -> None:
        """Log ``message`` the first time ``what`` happens, then stay quiet."""
        if what in self._noted or len(self._noted) >= _MAX_NOTED:
            return
        self._noted.add(what)
        logger.warning(message, *args)


class _Session(asyncio.Protocol):
    """One FastAGI connection, driven by the event loop's callbacks.

    Headers and replies are parsed as their bytes arrive, without a task or
    stream objects; a task runs only from complete headers to the end of the
    session (the lookup, the commands' replies, then ``record``).
    """

    def __init__(self, server: AgiServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.phase = _HEADERS
        self.buffer = b""
        self.why = "closed before the end of its headers"
        self.watchdog: asyncio.TimerHandle | None = None
        self.commands: list[bytes] = []
        self.finished: asyncio.Future[bool] | None = None

    # the event loop's calls ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not isinstance: uvloop's transports are not asyncio's classes
        self.transport = cast(asyncio.Transport, transport)
        if not self.server._admit(self):
            self.phase = _DONE
            self.transport.abort()
            return
        timeout = self.server.header_timeout_s
        self.watchdog = self.loop.call_later(
            timeout, self.drop, f"headers incomplete after {timeout:g} s"
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.phase == _HEADERS:
            self._headers()
        elif self.phase == _COMMANDS:
            self._replies()
        if len(self.buffer) > self.server.max_header_bytes and self.phase != _DONE:
            self.drop(f"more than {self.server.max_header_bytes} bytes unread")

    def eof_received(self) -> bool:
        return False  # the peer is done writing: close, whatever the phase

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.phase == _HEADERS:
            self.server.counters.dropped += 1
            if logger.isEnabledFor(logging.DEBUG):
                peer = self.transport.get_extra_info("peername") if self.transport else None
                logger.debug("FastAGI: dropped %s: %s", peer, self.why)
        self.phase = _DONE
        if self.finished is None:
            self.server._live.discard(self)
        elif not self.finished.done():
            self.finished.set_result(False)

    # reading ------------------------------------------------------------------

    def _headers(self) -> None:
        end = self.buffer.find(b"\n\n")
        if end < 0:
            return
        assert self.watchdog is not None
        self.watchdog.cancel()
        if end + 2 > self.server.max_header_bytes:
            self.drop(f"headers longer than {self.server.max_header_bytes} bytes")
            return
        block, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        headers = parse_headers(block)
        if isinstance(headers, str):
            self.drop(headers)
            return
        route = route_of(headers)
        if route != ROUTE:
            self.server._other_route(route)
            self._close()
            return
        self.phase = _LOOKUP
        self.finished = self.loop.create_future()
        self.server._spawn(self._answer(headers.get("agi_callerid", "")))

    def _replies(self) -> None:
        while self.phase == _COMMANDS and (end := self.buffer.find(b"\n")) >= 0:
            reply, self.buffer = self.buffer[:end].strip(), self.buffer[end + 1 :]
            # "HANGUP" is Asterisk telling us the caller left; a "520-"
            # line starts a multi-line reply ended by "520 ..."
            if reply == b"HANGUP" or reply[3:4] == b"-":
                continue
            if not reply.startswith(b"200"):
                self.server._note(
                    f"reply {reply[:40]!r}",
                    "FastAGI: Asterisk answered %r to a SET VARIABLE",
                    reply[:200].decode("utf-8", "replace"),
                )
            self._send_next()

    # writing ------------------------------------------------------------------

    def _send_next(self) -> None:
        assert self.transport is not None
        if self.watchdog is not None:
            self.watchdog.cancel()
        if not self.commands:
            self._close()
            assert self.finished is not None
            self.finished.set_result(True)
            return
        self.transport.write(self.commands.pop())
        self.watchdog = self.loop.call_later(
            self.server.reply_timeout_s, self.drop, "no reply to a command"
        )

    def _close(self) -> None:
        assert self.transport is not None
        self.phase = _DONE
        self.transport.close()

    def drop(self, why: str) -> None:
        """Close the connection at once, for ``why``."""
        self.why = why
        if self.transport is not None:
            self.transport.abort()

    # the task -----------------------------------------------------------------

    async def _answer(self, caller: str) -> None:
        server = self.server
        assert self.finished is not None
        try:
            answer, scope = await server._ask(caller)
            prompt = answer.prompt if answer is not None else None
            ident = answer.announcement if answer is not None and prompt else None
            if prompt and server.prompt_path is not None:
                prompt = server.prompt_path(prompt)
            values = ((PROMPT, prompt or ""), (ID, ident or ""), (SCOPE, scope if ident else ""))
            self.commands = [
                f"SET VARIABLE {name} {agi_quote(value)}\n".encode() for name, value in values
            ][::-1]
            if not self.finished.done():
                # lines before the first command are no replies (a HANGUP at most)
                self.buffer = self.buffer[self.buffer.rfind(b"\n") + 1 :]
                self.phase = _COMMANDS
                self._send_next()
            if not await self.finished:
                server.counters.dropped += 1
                return
            if answer is None:
                server.counters.failed += 1
                return
            server.counters.served += 1
            if prompt:
                server.counters.matched += 1
            if prompt and server.record is not None:
                await server._record(answer, caller)
        except Exception:
            server.counters.dropped += 1
            logger.exception("FastAGI session failed; a bug: please report it")
        finally:
            if self.phase != _DONE:
                self.drop("the session ended early")
            server._live.discard(self)
