"""The HTTP side of the metrics: ``GET /metrics`` on the daemon's own loop.

The server answers one request per connection and closes it. A request must
arrive whole within ``request_timeout_s`` and ``MAX_REQUEST_BYTES``, and the
answer be taken within the same time; past either, the client is dropped
(one that sends something other than HTTP is told 400 first). At most
``MAX_CLIENTS`` are served at once. What it serves comes from an
``exposition`` coroutine (``Metrics.exposition``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

#: The text format every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
MAX_CLIENTS = 32

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class MetricsHttp:
    """Serves what ``exposition`` returns at /metrics; ``run`` until cancelled."""

    def __init__(
        self,
        exposition: Callable[[], Awaitable[bytes]],
        host: str = "127.0.0.1",
        port: int = 9105,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.exposition = exposition
        self.host = host
        self.port = port
        self.request_timeout_s = request_timeout_s
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[object]] = set()

    async def start(self) -> int:
        """Listen; return the port (the one chosen when constructed with 0).
        RuntimeError says which setting to change when the port is taken."""
        if self._server is None:
            try:
                self._server = await asyncio.start_server(
                    self._client, self.host, self.port, limit=MAX_REQUEST_BYTES
                )
            except OSError as exc:
                raise RuntimeError(
                    f"cannot serve metrics on {self.host}:{self.port}"
                    f" ({exc.strerror or exc}): set [metrics] port to a free port and host to"
                    " an address of this machine, or [metrics] enabled = false"
                ) from None
            self.port = int(self._server.sockets[0].getsockname()[1])
            logger.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    async def run(self) -> None:
        """Serve until cancelled; then stop listening and drop the clients."""
        await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= MAX_CLIENTS:
            writer.transport.abort()
            return
        self._clients.add(task)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, extra = await self._answer(head)  # Redis read within its own limit
            headers = [
                f"HTTP/1.1 {status} {_REASONS[status]}",
                f"Content-Type: {CONTENT_TYPE if status == 200 else 'text/plain'}",
                f"Content-Length: {len(body)}",
                "Connection: close",
                *extra,
            ]
            if head.startswith(b"HEAD "):
                body = b""
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + body)
            async with asyncio.timeout(self.request_timeout_s):
                await writer.drain()
            writer.close()
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            logger.debug("metrics: dropped a client: %r", exc)
        except Exception:
            logger.exception("metrics: answering a scrape failed; a bug: please report it")
        finally:
            self._clients.discard(task)
            if not writer.is_closing():
                writer.transport.abort()

    async def _answer(self, head: bytes) -> tuple[int, bytes, list[str]]:
        """Status, body and extra headers for one request head."""
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, b"not an HTTP/1 request\n", []
        method, target = parts[0], parts[1]
        if target.partition("?")[0] != "/metrics":
            return 404, b"only /metrics is served here\n", []
        if method not in ("GET", "HEAD"):
            return 405, b"GET /metrics\n", ["Allow: GET, HEAD"]
        return 200, await self.exposition(), []
