"""Redis Sentinel: a ``redis+sentinel://`` URL finds the master through a
real sentinel, and follows it when the sentinel fails over to the replica."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis
from redis.exceptions import RedisError

from announcer.config import ConfigError, RedisSettings, SentinelUrl, parse
from announcer.keys import Keys
from announcer.redisconn import connect
from tests import redis_server
from tests.asterisk.sandbox import free_tcp_port


@dataclass
class Servers:
    master: int
    replica: int
    sentinel: int


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """A master, its replica and one sentinel watching them, on loopback."""
    ports = Servers(free_tcp_port(), free_tcp_port(), free_tcp_port())
    procs: list[subprocess.Popen[bytes]] = []
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {ports.sentinel}\nbind 127.0.0.1\n"
        f"sentinel monitor announcer 127.0.0.1 {ports.master} 1\n"
        "sentinel down-after-milliseconds announcer 1000\n"
        "sentinel failover-timeout announcer 5000\n"
    )
    try:
        procs.append(redis_server.spawn(["--port", str(ports.master), *common], ports.master))
        replica = [
            "--port",
            str(ports.replica),
            *common,
            "--replicaof",
            "127.0.0.1",
            str(ports.master),
        ]
        procs.append(redis_server.spawn(replica, ports.replica))
        procs.append(redis_server.spawn([str(conf), "--sentinel"], ports.sentinel))
        yield ports
    finally:
        for proc in procs:
            redis_server.stop(proc)


def test_a_sentinel_url_is_read_whole() -> None:
    url = SentinelUrl.parse(
        "redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380/main/2?sentinel_password=x"
    )
    assert url.sentinels == [("10.0.0.1", 26379), ("::1", 26380)]
    assert (url.service, url.db, url.password, url.sentinel_password) == ("main", 2, "s3cret", "x")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://127.0.0.1/main", "host:port"),
        ("redis+sentinel://127.0.0.1:26379", "/SERVICE"),
        ("redis+sentinel://127.0.0.1:26379/main/zero", "/SERVICE or /SERVICE/DB"),
        ("sentinel://127.0.0.1:26379/main", "redis+sentinel://"),
    ],
)
def test_a_bad_sentinel_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f'[redis]\nurl = "{url}"\n', "announcer.toml", env={})
    assert caught.value.problems[0].startswith("[redis] url:")
    assert says in caught.value.problems[0]


async def test_the_client_follows_the_master_through_a_failover(servers: Servers) -> None:
    keys = Keys("sentinel-test")
    client = connect(
        RedisSettings(
            url=f"redis+sentinel://127.0.0.1:{servers.sentinel}/announcer", timeout_ms=500
        )
    )
    try:
        await client.set(keys.poller, "before")
        with sync_redis.Redis(port=servers.master, decode_responses=True) as master:
            assert master.get(keys.poller) == "before"

        with sync_redis.Redis(port=servers.sentinel, decode_responses=True) as sentinel:
            # the replica must have caught up before it can be promoted
            async with asyncio.timeout(20):
                while True:
                    try:
                        sentinel.execute_command("SENTINEL", "FAILOVER", "announcer")
                        break
                    except RedisError:
                        await asyncio.sleep(0.3)
            async with asyncio.timeout(30):
                while True:
                    _, port = sentinel.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "announcer"
                    )
                    if int(port) == servers.replica:
                        break
                    await asyncio.sleep(0.2)

        # a write may still meet the old master before the sentinel demotes
        # it (and Redis then drops it, as asynchronous replication does);
        # soon every write reaches the new master
        with sync_redis.Redis(port=servers.replica, decode_responses=True) as promoted:
            async with asyncio.timeout(30):
                while promoted.get(keys.poller) != "after":
                    with contextlib.suppress(RedisError):
                        await client.set(keys.poller, "after")
                    await asyncio.sleep(0.2)
            assert promoted.role()[0] == "master"
    finally:
        await client.aclose()
