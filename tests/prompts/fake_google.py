"""A loopback stand-in for Google Translate's speech endpoint, in several moods.

gTTS is pointed at it (``conftest.point_gtts_at``) and runs its real code:
tokenising, the batchexecute request, requests' session, parsing the answer.
Only the far end is fake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from types import TracebackType
from typing import Literal

Mood = Literal["good", "silent", "trickle", "error", "html", "mangled"]


def batchexecute_answer(audio: bytes) -> bytes:
    """What Google answers: a JSON array whose string holds the base64 MP3."""
    compact = (",", ":")
    inner = json.dumps([base64.b64encode(audio).decode()], separators=compact)
    line = json.dumps(
        [["wrb.fr", "jQ1olc", inner, None, None, None, "generic"]], separators=compact
    )
    return f")]}}'\n\n{len(line)}\n{line}\n".encode()


class FakeGoogle:
    """``async with FakeGoogle("silent") as google: ... google.url``"""

    def __init__(self, mood: Mood, audio: bytes = b"") -> None:
        self.mood = mood
        self.audio = audio
        self.url = ""
        self.connections = 0
        self.requests: list[bytes] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeGoogle:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value)
            self.requests.append(head + await reader.readexactly(length))
            await self._answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        if self.mood == "silent":  # a black hole: accepted, never answered
            await asyncio.sleep(60)
            return
        if self.mood == "trickle":  # one byte at a time: no single read ever times out
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(1200):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)
            return
        status, body = {
            "good": ("200 OK", batchexecute_answer(self.audio)),
            "error": ("500 Internal Server Error", b"upstream trouble"),
            "html": ("200 OK", b"<html><body>Sorry, unusual traffic</body></html>"),
            "mangled": ("200 OK", b')]}\'\n\n[["wrb.fr","jQ1olc",null]]\n'),
        }[self.mood]
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
