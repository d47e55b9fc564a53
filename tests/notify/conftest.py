"""Real receivers for notifications, on loopback: an SMTP server (aiosmtpd),
an HTTP listener that records JSON posts (or fails on purpose), and a small
AMI that accepts a login; plus a city in Redis and the service running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from announcer.config import NotifySettings, NotifySubscriber, Settings
from announcer.keys import Keys
from announcer.notify.service import Notifications
from announcer.publisher import Publisher
from announcer.states import State, SwitchState
from announcer.store import StateStore
from tests.asterisk.sandbox import free_tcp_port
from tests.conftest import InventoryFiles

CITY = (
    ("core", "127.0.0.10", "north", ""),
    ("n1", "127.0.0.11", "north", "core"),
    ("n2", "127.0.0.12", "north", "core"),
    ("n3", "127.0.0.13", "north", "core"),
    ("s1", "127.0.0.21", "south", "core"),
    ("s2", "127.0.0.22", "south", "core"),
    ("s3", "127.0.0.23", "south", "core"),
    ("s4", "127.0.0.24", "south", "core"),
)
PHONES = (
    ("+79161234567", "n1"),
    ("+79160000002", "n2"),
    ("+79160000012", "n2"),
    ("+79160000003", "n3"),
    ("+79260000001", "s1"),
    ("+79260000002", "s2"),
    ("+79260000003", "s3"),
    ("+79260000004", "s4"),
)


# receivers ------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    to: tuple[str, ...]
    subject: str
    body: str


class Inbox:
    """What an aiosmtpd server on 127.0.0.1 received (handler of its thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mails: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        part = message.get_body(("plain", "html"))
        body = part.get_content() if part is not None else ""
        self.mails.append(Mail(tuple(envelope.rcpt_tos), str(message["subject"]), str(body)))
        return "250 OK"

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if address in m.to]

    def url(self, to: str) -> str:
        """apprise's form for a plain local SMTP server: no TLS, no login."""
        return f"mailto://127.0.0.1:{self.port}?mode=insecure&from=announcer@example.net&to={to}"


@pytest.fixture
def smtp() -> Iterator[Inbox]:
    inbox = Inbox(free_tcp_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


class Hooks:
    """An HTTP listener: records every POST by path; paths under /fail answer 500."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                hooks.posts.append((self.path, json.loads(self.rfile.read(length))))
                status = 500 if self.path.startswith("/fail") else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.posts if p == path]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        receiver.thread.join(10)


class FakeAmi:
    """Just enough of Asterisk's manager interface for the AstDB mirror to log
    in and find its family empty; every other action succeeds."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.sessions: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for writer in self.sessions.values():
            writer.close()
        await asyncio.gather(*self.sessions, return_exceptions=True)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = asyncio.current_task()
        assert session is not None
        self.sessions[session] = writer
        session.add_done_callback(lambda done: self.sessions.pop(done, None))
        writer.write(b"Asterisk Call Manager/5.0.1\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                block = (await reader.readuntil(b"\r\n\r\n")).decode()
                fields = dict(
                    line.split(": ", 1) for line in block.strip().splitlines() if ": " in line
                )
                ident = f"ActionID: {fields.get('ActionID', '')}\r\n"
                if fields.get("Action", "").lower() == "dbgettree":  # an empty family
                    reply = (
                        f"Response: Success\r\n{ident}EventList: start\r\n"
                        "Message: Result will follow\r\n\r\n"
                        f"Event: DBGetTreeComplete\r\n{ident}EventList: Complete\r\n"
                        "ListItems: 0\r\n\r\n"
                    )
                else:
                    reply = f"Response: Success\r\n{ident}Message: OK\r\n\r\n"
                writer.write(reply.encode())
                await writer.drain()
        writer.close()


# the city and the service -----------------------------------------------------


@pytest.fixture
async def city(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> Settings:
    """Северный (core, n1, n2, n3) and Южный (s1 to s4): two switches of
    the north are a district outage, one of the south a switch outage."""
    files.write(switches=CITY, subscribers=PHONES)
    assert (await files.load_into(settings, redis, keys)).ok
    return settings


def with_subscribers(
    settings: Settings, *subscribers: NotifySubscriber, language: str = "en", **notify: Any
) -> Settings:
    chosen = {"debounce_s": 0.3, "timeout_s": 5.0, "attempts": 3, "retry_backoff_s": 0.05}
    section = NotifySettings(subscribers=subscribers, **(chosen | notify))
    announcements = settings.announcements.model_copy(update={"language": language})
    return settings.model_copy(update={"notify": section, "announcements": announcements})


async def set_states(redis: Redis, keys: Keys, **states: State) -> None:
    """What the poller would write for these switches."""
    await StateStore(redis, keys).publish(
        {s: SwitchState(st, 100.0, "no echo reply", s if st is State.DOWN else None)
         for s, st in states.items()}
    )  # fmt: skip


async def evaluate(redis: Redis, keys: Keys, settings: Settings, **states: State) -> None:
    """Switch states changed, and the publisher evaluated them (no prompts rendered)."""
    await set_states(redis, keys, **states)
    await Publisher(redis, keys, settings, None).publish_once()


async def eventually(check: Callable[[], object], what: str, within_s: float = 20.0) -> None:
    """Poll ``check`` (a function, or a coroutine function) until it holds."""
    for _ in range(int(within_s / 0.05)):
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"waited {within_s:g} s for {what}")


async def stream(redis: Redis, keys: Keys) -> list[dict[str, str]]:
    """Every event on the stream, oldest first."""
    entries: list[tuple[str, dict[str, str]]] = await redis.xrange(keys.events)  # type: ignore[assignment]
    return [fields for _, fields in entries]


async def reading(service: Notifications, redis: Redis, keys: Keys) -> None:
    """The service has found its place on the stream."""
    await eventually(lambda: redis.exists(keys.notify_cursor), "the cursor")


async def settled(service: Notifications, redis: Redis, keys: Keys) -> None:
    """Every event on the stream read, grouped, and each message delivered or given up."""

    async def done() -> bool:
        newest = await redis.xrevrange(keys.events, count=1)
        read, left = await redis.hmget(keys.notify_cursor, ["read", "pending"])
        caught_up = (not newest or read == newest[0][0]) and left == ""
        return caught_up and service.held == 0 and service.pending == 0

    await eventually(done, "the notifications to be sent")


@contextlib.asynccontextmanager
async def running(service: Notifications) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(service.run())
    try:
        yield task
    finally:
        await stopped(task)


async def stopped(task: asyncio.Task[None]) -> None:
    """Cancel a service's task; it must end by that cancellation."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def subscriber(
    name: str,
    urls: Sequence[str] = (),
    webhooks: Sequence[str] = (),
    districts: Sequence[str] = (),
    events: Sequence[str] = (),
) -> NotifySubscriber:
    return NotifySubscriber(
        name=name,
        urls=tuple(urls),
        webhooks=tuple(webhooks),
        districts=tuple(districts),
        events=tuple(events),
    )


class RedisProxy:
    """A TCP door to the test's Redis on 127.0.0.1 that the test can shut
    (every connection dropped, new ones refused) and open again."""

    def __init__(self, target_url: str) -> None:
        self.target = urlsplit(target_url)
        self.port = free_tcp_port()
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.StreamWriter] = set()
        self.sessions: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        db = "0" if self.target.scheme == "unix" else self.target.path.lstrip("/") or "0"
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._pass, "127.0.0.1", self.port)

    async def shut(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in list(self.pipes):
            writer.close()
        await asyncio.gather(*self.sessions, return_exceptions=True)

    async def _pass(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = asyncio.current_task()
        assert session is not None
        self.sessions.add(session)
        session.add_done_callback(self.sessions.discard)
        if self.target.scheme == "unix":
            up_reader, up_writer = await asyncio.open_unix_connection(self.target.path)
        else:
            host, port = self.target.hostname or "127.0.0.1", self.target.port or 6379
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self.pipes |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self.pipes -= {writer, up_writer}
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await w.wait_closed()
