"""GET /metrics: real HTTP on loopback, a real Redis, the real FastAGI server
and drop folder, parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import pytest
import redis as sync_redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from announcer import __version__
from announcer.config import DropboxSettings, PromptSettings, RedisSettings, Settings
from announcer.dropbox import Dropbox
from announcer.heard import HeardLog
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.metrics import Metrics
from announcer.pbx.agi import AgiServer
from announcer.pbx.mirror import LinkStatus
from announcer.phones import PhoneNormaliser
from announcer.private_redis import PrivateRedis
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from announcer.redisconn import connect
from announcer.states import State, SwitchState
from announcer.store import StateStore, SweepInfo
from tests.asterisk.sandbox import free_tcp_port
from tests.conftest import InventoryFiles
from tests.daemon import daemon_config, start_daemon, stopped
from tests.pbx.test_agi import agi_call, settled

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def get(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, str]:
    """A real HTTP request from another thread, as Prometheus would make it."""

    def fetch() -> tuple[int, str]:
        url = f"http://127.0.0.1:{port}{path}"
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, method=method), timeout=10
            ) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()

    return await asyncio.to_thread(fetch)


async def scrape(port: int) -> Samples:
    status, text = await get(port)
    assert status == 200, text
    return parse(text)


@contextlib.asynccontextmanager
async def serving(metrics: Metrics) -> AsyncIterator[int]:
    port = await metrics.start()
    task = asyncio.create_task(metrics.run())
    try:
        yield port
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def city(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles, tmp_path: Path
) -> Settings:
    """core, n1 (north) and s1 (south); a caller on n1 and one on s1."""
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    return settings.model_copy(
        update={
            "dropbox": DropboxSettings(spool=tmp_path / "spool", settle_s=0),
            "prompts": PromptSettings(
                sounds_dir=tmp_path / "sounds", cache_dir=tmp_path / "cache", tts="espeak"
            ),
        }
    )


async def outage_heard_and_a_drop_refused(
    settings: Settings, redis: Redis, keys: Keys, agi: AgiServer, dropbox: Dropbox
) -> None:
    """n1 goes down and the publisher opens the north announcement; a caller
    on n1 hears it, one on s1 hears nothing; a drop with a broken sidecar."""
    up = {s: SwitchState(State.UP, 100.0) for s in ("core", "s1")}
    down = SwitchState(State.DOWN, 200.0, "no echo reply within 1000 ms", "n1")
    sweep = SweepInfo(at=1000.0, duration_s=0.25, probed=3, alive=2, silent=1, failed=0)
    await StateStore(redis, keys).publish(up | {"n1": down}, sweep=sweep)
    renderer = PromptRenderer(settings.prompts, settings.announcements.language)
    await Publisher(redis, keys, settings, renderer).publish_once()
    assert (await agi_call(agi.port, "89161234567")).heard[1] == "auto-district-north"
    assert (await agi_call(agi.port, "+79260000001")).heard == ("", "", "")
    await settled(agi)
    dropbox.incoming.mkdir(parents=True)
    (dropbox.incoming / "broken.toml").write_text("this is = = not TOML\n")
    [outcome] = await dropbox.scan_once()
    assert not outcome.accepted


async def test_the_figures_follow_switches_announcements_lookups_and_drops(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    lookup = Lookup(redis, keys, PhoneNormaliser("RU"))
    agi = AgiServer(lookup, port=0, record=HeardLog(redis, keys).record)
    await agi.start()
    agi_task = asyncio.create_task(agi.run())
    dropbox = Dropbox(redis, keys, city)
    metrics = Metrics(redis, keys, port=0, agi=agi, dropbox=dropbox, fresh_s=0)
    try:
        async with serving(metrics) as port:
            before = await scrape(port)
            [info] = [labels for name, labels in before if name == "announcer_build_info"]
            assert ("version", __version__) in info
            assert before["announcer_redis_up", ()] == 1
            assert before["announcer_switches", (("state", "unknown"),)] == 3
            assert before["announcer_switches", (("state", "down"),)] == 0
            active = ("announcer_announcements_active", (("scope", "district"), ("source", "auto")))
            assert before[active] == 0
            assert before["announcer_fastagi_lookups_total", ()] == 0
            assert before["announcer_heard_calls_total", ()] == 0
            assert ("announcer_poller_sweep_duration_seconds", ()) not in before, "no sweep yet"

            await outage_heard_and_a_drop_refused(city, redis, keys, agi, dropbox)
            after = await scrape(port)
            assert after["announcer_switches", (("state", "down"),)] == 1
            assert after["announcer_switches", (("state", "up"),)] == 2
            north_down = ("announcer_district_switches", (("district", "north"), ("state", "down")))
            assert after[north_down] == 1
            assert after[active] == 1
            assert after["announcer_poller_sweep_duration_seconds", ()] == 0.25
            assert after["announcer_poller_last_sweep_timestamp_seconds", ()] == 1000.0
            assert after["announcer_poller_probes", (("result", "silent"),)] == 1
            assert after["announcer_fastagi_lookups_total", ()] == 2
            assert after["announcer_fastagi_lookups_matched_total", ()] == 1
            assert after["announcer_fastagi_sessions_active", ()] == 0
            assert after["announcer_heard_calls_total", ()] == 1
            assert after["announcer_drops_total", (("result", "rejected"),)] == 1
            assert after["announcer_drops_total", (("result", "published"),)] == 0
    finally:
        agi_task.cancel()
        await asyncio.gather(agi_task, return_exceptions=True)


async def test_the_mirrors_links(city: Settings, redis: Redis, keys: Keys) -> None:
    up = LinkStatus("AstDB over AMI at 127.0.0.1:5038", "up", entries=1234)
    down = LinkStatus("Redis keys", "down", detail="cannot reach Redis")
    await redis.hset(keys.links, mapping={"astdb": json.dumps(asdict(up))})
    await redis.hset(keys.links, mapping={"redis-keys": json.dumps(asdict(down))})
    async with serving(Metrics(redis, keys, port=0, fresh_s=0)) as port:
        got = await scrape(port)
    state = "announcer_mirror_link_state"
    assert got[state, (("mirror", "astdb"), ("state", "up"))] == 1
    assert got[state, (("mirror", "astdb"), ("state", "down"))] == 0
    assert got[state, (("mirror", "redis-keys"), ("state", "down"))] == 1
    assert got["announcer_mirror_entries", (("mirror", "astdb"),)] == 1234
    assert ("announcer_fastagi_lookups_total", ()) not in got, "no FastAGI server here"


async def test_redis_lost_is_said_and_the_endpoint_still_answers(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis of its own, stopped during the test: announcer_redis_up goes
    to 0, the figures kept in Redis are left out rather than shown stale,
    and the loss is logged once however many scrapes see it."""
    with PrivateRedis() as url:
        redis = connect(RedisSettings(url=url, prefix=keys.prefix, timeout_ms=500))
        try:
            async with serving(Metrics(redis, keys, port=0, fresh_s=0)) as port:
                assert (await scrape(port))["announcer_redis_up", ()] == 1
                await asyncio.to_thread(redis_server_stops, url)
                with caplog.at_level(logging.ERROR, logger="announcer.metrics"):
                    for _ in range(3):
                        got = await scrape(port)
                        assert got["announcer_redis_up", ()] == 0
                        assert ("announcer_switches", (("state", "up"),)) not in got
                        assert any(name == "announcer_build_info" for name, _ in got)
                lost = [r for r in caplog.records if "cannot read Redis" in r.getMessage()]
                assert len(lost) == 1, lost
                assert "check that it runs" in lost[0].getMessage()
        finally:
            await redis.aclose()


def redis_server_stops(url: str) -> None:
    """SHUTDOWN NOSAVE: the server goes away as in a crash."""
    client = sync_redis.Redis.from_url(url)
    with contextlib.suppress(sync_redis.ConnectionError):
        client.shutdown(nosave=True)
    client.close()


async def test_only_metrics_is_served(redis: Redis, keys: Keys) -> None:
    async with serving(Metrics(redis, keys, port=0)) as port:
        assert await get(port, "/") == (404, "only /metrics is served here\n")
        assert (await get(port, "/metrics/../etc"))[0] == 404
        assert (await get(port, "/metrics", method="POST"))[0] == 405
        assert await get(port, "/metrics", method="HEAD") == (200, "")
        status, text = await get(port, "/metrics?name[]=announcer_redis_up")
        assert status == 200
        assert parse(text)["announcer_redis_up", ()] == 1


async def exchange(port: int, data: bytes, close: bool = True) -> bytes:
    """Send ``data`` (and end it when ``close``); what the server sends back
    before it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if close:
            writer.write_eof()
        async with asyncio.timeout(10):
            return await reader.read()
    except ConnectionResetError:  # dropped with our bytes unread
        return b""
    finally:
        writer.close()


async def test_clients_that_send_garbage_or_nothing_are_dropped(redis: Redis, keys: Keys) -> None:
    metrics = Metrics(redis, keys, port=0, request_timeout_s=0.5)
    async with serving(metrics) as port:
        silent = await asyncio.open_connection("127.0.0.1", port)  # says nothing, stays
        try:
            assert await exchange(port, b"") == b"", "connected and left"
            assert await exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc") == b""
            assert (await exchange(port, b"HELLO\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
            assert await exchange(port, b"GET /" + b"a" * 20_000, close=False) == b""
            assert (await scrape(port))["announcer_redis_up", ()] == 1, "meanwhile, served"
            async with asyncio.timeout(10):
                assert await silent[0].read() == b"", "dropped after request_timeout_s"
        finally:
            silent[1].close()
        assert (await scrape(port))["announcer_redis_up", ()] == 1


async def test_a_port_in_use_names_the_setting(redis: Redis, keys: Keys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError) as refused:
            await Metrics(redis, keys, port=port).start()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in str(refused.value)
    assert "set [metrics] port to a free port" in str(refused.value)


async def test_announcer_run_serves_metrics(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles, tmp_path: Path
) -> None:
    """The daemon as a real process: /metrics on the configured port, with
    the switches' states as its poller finds them; a second daemon on the
    same port refuses to start and says which setting to change."""
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    port = free_tcp_port()
    config = tmp_path / "announcer.toml"
    extra = f"[fastagi]\nport = {free_tcp_port()}\n[metrics]\nport = {port}\n"
    daemon_config(config, settings, keys, tmp_path, extra)
    daemon = await start_daemon(config)
    try:
        got: Samples = {}
        async with asyncio.timeout(60):
            while got.get(("announcer_switches", (("state", "up"),))) != 3:
                await asyncio.sleep(0.2)
                with contextlib.suppress(OSError):
                    got = await scrape(port)
        assert got["announcer_redis_up", ()] == 1
        assert got["announcer_fastagi_lookups_total", ()] == 0
        assert got["announcer_drops_total", (("result", "published"),)] == 0

        second = tmp_path / "second.toml"
        alone = f"[fastagi]\nenabled = false\n[metrics]\nport = {port}\n"
        daemon_config(second, settings, keys, tmp_path, alone)
        clash = await start_daemon(second)
        async with asyncio.timeout(30):
            assert await clash.wait() == 1
        log = second.with_suffix(".log").read_text()
        assert "set [metrics] port to a free port" in log
        assert "Traceback" not in log
    finally:
        await stopped(daemon, config)
