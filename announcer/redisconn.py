"""Connecting to the configured Redis, and saying plainly when that fails."""

from __future__ import annotations

from redis.asyncio import Redis

from announcer.config import RedisSettings


def connect(settings: RedisSettings, max_connections: int = 64) -> Redis:
    timeout = settings.timeout_ms / 1000
    return Redis.from_url(
        settings.url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max_connections,
    )


def unreachable(settings: RedisSettings, exc: BaseException) -> str:
    return (
        f"cannot reach Redis at {settings.url}: {exc}; check that it runs, and"
        " [redis] url in the config or $ANNOUNCER_REDIS_URL"
    )
