"""When announcer's peers fail: a Redis restarted under the running daemon,
a sounds folder that is full or read-only. The daemon keeps running, says
what is wrong, recovers by itself, and callers never wait on it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from announcer import status
from announcer.cli.watch import render_status
from announcer.config import PromptSettings, RedisSettings, Settings
from announcer.demo import firewall as netfilter
from announcer.keys import Keys
from announcer.metrics import Metrics
from announcer.prompts.renderer import PromptRenderer, is_fragment
from announcer.publisher import Publisher
from announcer.redisconn import connect
from announcer.staff import StaffRequest
from announcer.store import StateStore
from tests import redis_server
from tests.asterisk.sandbox import free_tcp_port
from tests.conftest import InventoryFiles, announce
from tests.daemon import daemon_config, start_daemon, stopped
from tests.pbx.test_agi import agi_call
from tests.test_metrics import scrape, serving

# -- the sounds folder ---------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs of the test's own, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    folder = tmp_path / "sounds"
    folder.mkdir()
    _mount("-t", "tmpfs", "-o", "size=8m", "announcer-test", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


def _fill(folder: Path) -> None:
    """Take every free byte of the file system under ``folder``."""
    free = os.statvfs(folder)
    fd = os.open(folder / "ballast", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, free.f_bavail * free.f_frsize)
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0


@pytest.mark.parametrize("trouble", ["full", "read-only"])
async def test_a_sounds_folder_in_trouble_costs_the_new_prompt_not_the_daemon(
    trouble: str,
    small_disk: Path,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    files: InventoryFiles,
    tmp_path: Path,
) -> None:
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    prompts = PromptSettings(sounds_dir=small_disk, cache_dir=tmp_path / "tts", tts="espeak")
    renderer = PromptRenderer(prompts, "ru")
    publisher = Publisher(redis, keys, settings, renderer)
    publisher.render_retry_s = 0.0
    await publisher.prepare()  # while the folder can take the fragments

    if trouble == "full":
        _fill(small_disk)
    else:
        _mount("-o", "remount,ro", str(small_disk))
    made = await announce(
        redis, keys, settings, StaffRequest(districts=("north",), text="Работы на линии.")
    )
    await publisher.publish_once()
    active = json.loads(await redis.hget(keys.active, made))  # type: ignore[arg-type]
    assert is_fragment(active["prompt"]), active  # callers hear the shipped fragment
    assert (await status.gather(redis, keys))["prompts"] == {"fragment": [made], "silent": []}
    async with serving(Metrics(redis, keys, port=0)) as port:
        samples = await scrape(port)
    playing = "announcer_announcements_without_prompt"
    assert samples[playing, (("playing", "fragment"),)] == 1
    assert samples[playing, (("playing", "nothing"),)] == 0
    failed = [e for e in await StateStore(redis, keys).events() if e["kind"] == "prompt-failed"]
    assert failed[-1]["id"] == made
    assert "No space left" in failed[-1]["reason"] or "Read-only" in failed[-1]["reason"]

    # the folder recovers: the next evaluation renders the real prompt
    if trouble == "full":
        (small_disk / "ballast").unlink()
    else:
        _mount("-o", "remount,rw", str(small_disk))
    await publisher.publish_once()
    active = json.loads(await redis.hget(keys.active, made))  # type: ignore[arg-type]
    assert not is_fragment(active["prompt"])
    assert (await status.gather(redis, keys))["prompts"] == {"fragment": [], "silent": []}
    assert Path(active["prompt"]).parent == small_disk
    installed = await asyncio.to_thread(lambda: list(small_disk.iterdir()))
    assert any(p.name.startswith(Path(active["prompt"]).name) for p in installed)


async def test_a_sounds_folder_that_never_worked_plays_nothing_but_publishes(
    small_disk: Path, settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    _mount("-o", "remount,ro", str(small_disk))
    prompts = PromptSettings(sounds_dir=small_disk, cache_dir=small_disk / "tts", tts="espeak")
    publisher = Publisher(redis, keys, settings, PromptRenderer(prompts, "ru"))
    await publisher.prepare()  # says so in the log, and goes on
    made = await announce(redis, keys, settings, StaffRequest(everyone=True, text="Авария."))
    await publisher.publish_once()
    active = json.loads(await redis.hget(keys.active, made))  # type: ignore[arg-type]
    assert active.get("prompt") is None  # the dialplan plays nothing: the call goes on
    said = render_status(await status.gather(redis, keys))
    assert "NOTHING plays for these, the sounds folder cannot be written" in said
    assert made in said
    failed = [e for e in await StateStore(redis, keys).events() if e["kind"] == "prompt-failed"]
    assert "no fragment either" in failed[-1]["reason"]


# -- Redis restarted under the daemon -------------------------------------------


@dataclass
class OwnRedis:
    """A redis-server of the test's own that keeps its data across restarts."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self.process = redis_server.spawn(args, self.port)

    def stop(self) -> None:
        if self.process is not None:
            redis_server.stop(self.process)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = OwnRedis(folder, free_tcp_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def on_own_redis(own_redis: OwnRedis, keys: Keys) -> AsyncIterator[tuple[Settings, Redis]]:
    settings = Settings(redis=RedisSettings(url=own_redis.url, prefix=keys.prefix))
    client = connect(settings.redis)
    try:
        yield settings, client
    finally:
        await client.aclose()


async def _eventually_state(redis: Redis, keys: Keys, switch: str, state: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                states = await StateStore(redis, keys).states()
                if states.get(switch, {}).get("state") == state:
                    return
            except sync_redis.RedisError:
                pass
            await asyncio.sleep(0.2)


async def test_redis_restarted_under_the_daemon(
    own_redis: OwnRedis,
    on_own_redis: tuple[Settings, Redis],
    keys: Keys,
    files: InventoryFiles,
    tmp_path: Path,
    firewall: netfilter.Firewall,
) -> None:
    """While Redis is away the daemon runs on and callers go straight on;
    a switch that fell meanwhile is announced once Redis is back."""
    settings, redis = on_own_redis
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    agi_port = free_tcp_port()
    config = tmp_path / "announcer.toml"
    daemon_config(
        config, settings, keys, tmp_path,
        f"[fastagi]\nport = {agi_port}\n"
        "[icmp]\ninterval_s = 1\ntimeout_ms = 300\n",
    )  # fmt: skip
    daemon = await start_daemon(config)
    try:
        await _eventually_state(redis, keys, "n1", "up")
        own_redis.stop()

        # callers are not kept waiting: the lookup fails open at once
        talk = await agi_call(agi_port, "89161234567")
        assert talk.heard == ("", "", "")
        firewall.drop_echo_requests(["127.0.0.11"])  # n1 falls while Redis is away
        await asyncio.sleep(3)
        assert daemon.returncode is None

        own_redis.start()
        await _eventually_state(redis, keys, "n1", "down")
        async with asyncio.timeout(30):
            while True:
                if await redis.hget(keys.active_by_switch, "n1"):
                    break
                await asyncio.sleep(0.2)
        talk = await agi_call(agi_port, "89161234567")
        prompt, ident, scope = talk.heard
        assert (ident, scope) == ("auto-district-north", "district")  # n1 is most of it
        assert prompt
    finally:
        log = await stopped(daemon, config)
    assert log.count("cannot write switch states to Redis") == 1, log
    assert "Redis is reachable again" in log
