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
from announcer.demo import firewall as netfilter
from announcer.keys import Keys
from announcer.sdnotify import Beat, Notifier, Watchdog
from announcer.states import State
from announcer.store import StateStore
from tests.asterisk.sandbox import free_tcp_port
from tests.conftest import InventoryFiles
from tests.daemon import answers_tcp, daemon_config, start_daemon, stopped

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


def notify_env(path: Path) -> dict[str, str]:
    """A pretend systemd: its notify socket, a watchdog of 1.5 s."""
    return {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1500000"}


async def receive(server: socket.socket, until: str, within_s: float = 30.0) -> list[str]:
    """Datagrams (their lines) until one line starts with ``until``."""
    loop = asyncio.get_running_loop()
    lines: list[str] = []
    async with asyncio.timeout(within_s):
        while not any(line.startswith(until) for line in lines):
            data = await loop.sock_recv(server, 4096)
            lines += data.decode().splitlines()
    return lines


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
    daemon = await start_daemon(config, notify_env(path))
    try:
        await receive(server, "READY=1")
        assert await answers_tcp(first_port)

        config.write_text(config.read_text() + "\n[poller]\ndown_after = 0\n")
        daemon.send_signal(signal.SIGHUP)
        refused = await receive(server, "STATUS=configuration refused")
        assert any("[poller] down_after" in line for line in refused), refused
        assert daemon.returncode is None
        assert await answers_tcp(first_port)  # the old configuration still serves

        daemon_config(config, settings, keys, tmp_path, f"[fastagi]\nport = {second_port}")
        daemon.send_signal(signal.SIGHUP)
        await receive(server, "RELOADING=1")
        await receive(server, "READY=1")
        assert await answers_tcp(second_port)
        assert not await answers_tcp(first_port)

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
    daemon = await start_daemon(config, notify_env(path))
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


async def test_a_part_that_crashes_stops_the_service_non_zero(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    files: InventoryFiles,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, Path],
) -> None:
    """Never half-alive: the drop folder cannot work (its spool is a file),
    so the whole service says which part crashed and exits non-zero, for
    systemd to restart it."""
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    server, path = notify_socket
    config = tmp_path / "announcer.toml"
    daemon_config(config, settings, keys, tmp_path, "[fastagi]\nenabled = false")
    spool = tmp_path / "spool"
    spool.write_text("not a folder")
    daemon = await start_daemon(config, notify_env(path))
    try:
        said = await receive(server, "STATUS=crashed")
        async with asyncio.timeout(20):
            status = await daemon.wait()
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
    assert status == 1
    assert any("drop folder" in line for line in said if line.startswith("STATUS=crashed"))
    log = config.with_suffix(".log").read_text()
    assert "drop folder crashed; announcer stops rather than run without it" in log
    assert "Not a directory" in log


async def test_sigterm_in_the_middle_of_a_sweep(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    files: InventoryFiles,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, Path],
    firewall: netfilter.Firewall,
) -> None:
    """A sweep waiting on 200 silent switches is cut short cleanly: exit 0
    at once, and every state left in Redis is whole."""
    switches = [("core", "127.82.0.1", "north", "")]
    switches += [(f"acc{i}", f"127.82.1.{i}", "north", "core") for i in range(1, 201)]
    files.write(switches=switches, subscribers=[("89161234567", "acc1")])
    assert (await files.load_into(settings, redis, keys)).ok
    server, path = notify_socket
    config = tmp_path / "announcer.toml"
    daemon_config(
        config, settings, keys, tmp_path,
        "[fastagi]\nenabled = false\n[icmp]\ninterval_s = 1\ntimeout_ms = 3000\n",
    )  # fmt: skip
    firewall.drop_echo_requests(["127.82.1.0/24"])
    daemon = await start_daemon(config, notify_env(path))
    try:
        await receive(server, "READY=1")
        async with asyncio.timeout(30):  # the first sweep has written its states
            while True:
                if await redis.hlen(keys.state) == len(switches):
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # well inside a sweep that waits 3 s for replies
    finally:
        log = await stopped(daemon, config)
    states = await StateStore(redis, keys).states()
    assert set(states) == {s for s, *_ in switches}
    assert all(v["state"] in {s.value for s in State} for v in states.values()), states
    assert "stopped" in log
