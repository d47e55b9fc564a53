"""announcer under systemd: the unit verifies, and ``announcer run`` speaks the
notify protocol to a real notify socket (READY, STATUS, WATCHDOG, STOPPING)
and reloads its configuration on SIGHUP, refusing a bad one. The watchdog's
judgement is tested on its own: a part that stopped moving stops the
petting."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.config import Settings
from announcer.keys import Keys
from announcer.sdnotify import Beat, Notifier, Watchdog
from tests.asterisk.sandbox import free_tcp_port
from tests.conftest import InventoryFiles

ROOT = Path(__file__).resolve().parents[1]


def test_the_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = (ROOT / "systemd" / "announcer.service").read_text()
    # verify checks that ExecStart exists: point it at this checkout's announcer
    here = Path(sys.executable).with_name("announcer")
    (tmp_path / "announcer.service").write_text(unit.replace("/usr/local/bin/announcer", str(here)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "announcer.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "CAP_NET_RAW" in unit
    assert "Type=notify" in unit


def test_the_watchdog_stops_petting_when_a_part_stands_still() -> None:
    now = [1000.0]
    poller, publisher = [995.0], [999.0]
    watchdog = Watchdog(
        [Beat("poller", 30.0, lambda: poller[0]), Beat("publisher", 30.0, lambda: publisher[0])],
        clock=lambda: now[0],
    )
    assert watchdog.stuck() == []
    now[0] = 1024.0  # the poller's last sweep ended 29 s ago: still within 30 s
    publisher[0] = 1023.0
    assert watchdog.stuck() == []
    now[0] = 1040.0  # the poller's last sweep ended 45 s ago
    assert watchdog.stuck() == ["poller: no round for 45 s"]


def test_without_systemd_nothing_is_sent() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    assert notifier.ready("x") is False


def test_a_watchdog_meant_for_another_process_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}
    assert Notifier(env=env).watchdog_s is None
    assert Notifier(env={**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 5.0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.setblocking(False)
    try:
        yield server, path
    finally:
        server.close()


async def receive(server: socket.socket, until: str, within_s: float = 30.0) -> list[str]:
    """Datagrams (their lines) until one line starts with ``until``."""
    loop = asyncio.get_running_loop()
    lines: list[str] = []
    async with asyncio.timeout(within_s):
        while not any(line.startswith(until) for line in lines):
            data = await loop.sock_recv(server, 4096)
            lines += data.decode().splitlines()
    return lines


def daemon_config(path: Path, settings: Settings, keys: Keys, tmp_path: Path, extra: str) -> None:
    path.write_text(f"""\
[redis]
url = "{settings.redis.url}"
prefix = "{keys.prefix}"
[prompts]
sounds_dir = "{tmp_path / "sounds"}"
cache_dir = "{tmp_path / "tts"}"
tts = "espeak"
[dropbox]
spool = "{tmp_path / "spool"}"
{extra}
""")


async def start_daemon(config: Path, notify: Path) -> asyncio.subprocess.Process:
    """``announcer run`` under a pretend systemd; its log goes beside the config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOUNCER_", "NOTIFY_"))}
    env |= {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1500000"}
    with config.with_suffix(".log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "announcer", "--config", str(config), "run",
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def stopped(daemon: asyncio.subprocess.Process, config: Path) -> str:
    """SIGTERM, then its exit status must be 0; its log."""
    daemon.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(20):
            status = await daemon.wait()
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
    log = config.with_suffix(".log").read_text(errors="replace")
    assert status == 0, log
    assert "Traceback" not in log, log
    return log


async def answers_agi(port: int) -> bool:
    """Something accepts a connection on 127.0.0.1:``port``."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def test_sighup_refuses_a_bad_config_and_applies_a_good_one(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    files: InventoryFiles,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, Path],
) -> None:
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    server, path = notify_socket
    first_port, second_port = free_tcp_port(), free_tcp_port()
    config = tmp_path / "announcer.toml"
    daemon_config(config, settings, keys, tmp_path, f"[fastagi]\nport = {first_port}")
    daemon = await start_daemon(config, path)
    try:
        await receive(server, "READY=1")
        assert await answers_agi(first_port)

        config.write_text(config.read_text() + "\n[poller]\ndown_after = 0\n")
        daemon.send_signal(signal.SIGHUP)
        refused = await receive(server, "STATUS=configuration refused")
        assert any("[poller] down_after" in line for line in refused), refused
        assert daemon.returncode is None
        assert await answers_agi(first_port)  # the old configuration still serves

        daemon_config(config, settings, keys, tmp_path, f"[fastagi]\nport = {second_port}")
        daemon.send_signal(signal.SIGHUP)
        await receive(server, "RELOADING=1")
        await receive(server, "READY=1")
        assert await answers_agi(second_port)
        assert not await answers_agi(first_port)

    finally:
        log = await stopped(daemon, config)
    assert "the new configuration is refused, the one in force stays" in log


async def test_announcer_run_speaks_to_systemd(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    files: InventoryFiles,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, Path],
) -> None:
    """READY=1 once it serves, WATCHDOG=1 while it works, a STATUS that says
    what it watches, STOPPING=1 on SIGTERM, and exit status 0."""
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    server, path = notify_socket
    config = tmp_path / "announcer.toml"
    daemon_config(config, settings, keys, tmp_path, "[fastagi]\nenabled = false")
    daemon = await start_daemon(config, path)
    try:
        first = await receive(server, "READY=1")
        assert first[0] == "READY=1"
        working = await receive(server, "WATCHDOG=1")
        working += await receive(server, "STATUS=3 switches watched")
        status = next(line for line in working if line.startswith("STATUS=3 switches"))
        assert status.endswith("announcements active")
        daemon.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in await receive(server, "STOPPING=1")
    finally:
        await stopped(daemon, config)
