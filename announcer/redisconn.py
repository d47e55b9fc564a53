"""Connecting to the configured Redis, and saying plainly when that fails."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from announcer.config import SENTINEL_SCHEME, RedisSettings, SentinelUrl


class _SentinelRedis(Redis):
    """Closes the connections to the sentinels too."""

    watchers: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.watchers.sentinels:
            await client.aclose()


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to whichever server the sentinels name as master, with
    the blocking pool's queueing (see ``connect``)."""


def connect(settings: RedisSettings, max_connections: int = 64) -> Redis:
    """A client whose pool makes a burst of callers wait for a connection.

    redis-py's default pool raises "Too many connections" once
    ``max_connections`` are busy: in a call storm, exactly when lookups
    matter most. A blocking pool queues them instead, for at most the
    configured timeout. A ``redis+sentinel://`` URL asks the sentinels for
    the master, and again whenever it fails over.
    """
    timeout = settings.timeout_ms / 1000
    if settings.url.startswith(SENTINEL_SCHEME + "://"):
        return _sentinel_client(SentinelUrl.parse(settings.url), timeout, max_connections)
    pool = BlockingConnectionPool.from_url(
        settings.url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max_connections,
        timeout=timeout,
    )
    return Redis.from_pool(pool)


def _sentinel_client(url: SentinelUrl, timeout: float, max_connections: int) -> Redis:
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        url.sentinels,
        sentinel_kwargs={**common, "password": url.sentinel_password},
        **common,
    )
    pool = _BlockingSentinelPool(  # type: ignore[no-untyped-call]
        url.service,
        sentinel,
        db=url.db,
        username=url.username,
        password=url.password,
        decode_responses=True,
        max_connections=max_connections,
        timeout=timeout,
        **common,
    )
    client = _SentinelRedis(connection_pool=pool)
    client.auto_close_connection_pool = True
    client.watchers = sentinel
    return client


def unreachable(settings: RedisSettings, exc: BaseException) -> str:
    return (
        f"cannot reach Redis at {settings.url}: {exc}; check that it runs, and"
        " [redis] url in the config or $ANNOUNCER_REDIS_URL"
    )


async def send_bulk(
    redis: Redis,
    commands: Iterable[Sequence[str | int]],
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send many commands on one connection, packed by hiredis; return how many.

    redis-py packs commands in pure Python, which costs an import of a
    million subscribers several seconds; hiredis packs the same bytes in C.
    Replies are read after each batch, so an error surfaces within one batch.
    ``progress`` is told how many commands each batch held.
    """
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    sent = 0
    try:
        pending: list[bytes] = []

        async def flush() -> None:
            await connection.send_packed_command(b"".join(pending))
            for _ in pending:
                await connection.read_response()
            if progress:
                progress(len(pending))
            pending.clear()

        for command in commands:
            # the stub types the argument as a one-element tuple; any length works
            pending.append(hiredis.pack_command(tuple(command)))  # type: ignore[arg-type]
            sent += 1
            if len(pending) >= batch:
                await flush()
        if pending:
            await flush()
    except BaseException:
        await connection.disconnect()  # replies may be left unread: never reuse it
        raise
    finally:
        await pool.release(connection)
    return sent
