"""redis-server processes of a test's own, on loopback ports: for what the
session's private Redis cannot show (a restart with the data kept, a
replica and a sentinel)."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis as sync_redis

from announcer.private_redis import find_server


def binary() -> str:
    """redis-server's path; the test is skipped, saying why, without one."""
    found = find_server()
    if found is None:
        pytest.skip("needs redis-server (Debian package redis-server)")
    return found


def spawn(args: list[str], port: int) -> subprocess.Popen[bytes]:
    """``redis-server ARGS``, once it answers PING on 127.0.0.1:``port``."""
    process = subprocess.Popen(
        [binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with sync_redis.Redis(port=port, socket_timeout=1) as client:
                client.ping()
            return process
        except sync_redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                raise
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Redis saves what it is configured to keep), then SIGKILL."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
