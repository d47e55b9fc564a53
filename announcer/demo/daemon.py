"""The demo's daemon: ``announcer run`` as a child process, on a configuration of its own.

``demo_config`` writes ``announcer.toml`` into the demo's temporary folder:
the demo's Redis and key prefix, every switch asked over SNMP with the
``demo`` profile (the agents' port and community) on a two-second beat,
prompts spoken by espeak-ng into the folder, the drop folder there too, and
FastAGI on a free loopback port. Nothing points at /etc, /var/lib or
/var/spool. ``Daemon`` starts ``announcer run`` on it in a session of its own
(a Ctrl-C in the terminal reaches only the demo), its output into a log
file, and stops it with SIGTERM, as systemd does; the kernel sends the same
SIGTERM if the demo dies without stopping it.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from announcer.config import Settings, parse

#: How long the daemon may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1


def _stopped_with_us() -> Callable[[], None] | None:
    """For the child, between fork and exec: a SIGTERM from the kernel when
    the demo dies, even by SIGKILL, so no daemon outlives it. None where
    prctl(2) is missing (not Linux)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arrange() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the demo died before the line above
            os._exit(1)

    return arrange


def _free_tcp_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _metrics_off() -> str:
    """Prometheus metrics listen on a fixed port by default, where a real daemon
    may already be: off for the demo (where this version has them)."""
    if "metrics" not in Settings.model_fields:
        return ""
    return "\n[metrics]\nenabled = false\n"


def demo_config(work: Path, redis_url: str, snmp_port: int, community: str) -> Settings:
    """Write ``work/announcer.toml`` for the daemon and return its settings."""
    q = json.dumps  # a JSON string is a TOML basic string
    text = f"""\
# Written by announcer demo for its daemon; removed when the demo ends.
[redis]
url = {q(redis_url)}
prefix = "announcer-demo"

# The poller's beat: one sweep every 2 s, and every sweep asks SNMP
# ([snmp] interval_s is at most the beat). A switch that missed is asked
# again within the beat, so a dead one is down within about 3-5 s.
[icmp]
interval_s = 2
timeout_ms = 500

[snmp]
interval_s = 1
timeout_ms = 500
retries = 0
default_profile = "demo"

[snmp.profiles.demo]
port = {snmp_port}
community = {q(community)}

[poller]
confirm_interval_s = 0.5
# the scenes come round faster than a real network flaps
flap_window_s = 60

[announcements]
restored_s = 30

[prompts]
sounds_dir = {q(str(work / "sounds"))}
cache_dir = {q(str(work / "tts"))}
tts = "espeak"

[dropbox]
spool = {q(str(work / "spool"))}

[fastagi]
host = "127.0.0.1"
port = {_free_tcp_port("127.0.0.1")}
{_metrics_off()}"""
    path = work / "announcer.toml"
    path.write_text(text, encoding="utf-8")
    return parse(text, str(path), env={})


class Daemon:
    """``async with Daemon(config, log) as daemon:`` runs ``announcer run``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.settings = parse(config.read_text(encoding="utf-8"), str(config), env={})
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self) -> None:
        # the configuration says everything: none of the caller's ANNOUNCER_*
        # variables (ANNOUNCER_REDIS_URL would win over it), no systemd socket
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOUNCER_", "NOTIFY_"))}
        with self.log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "announcer", "--config", str(self.config), "run",
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_stopped_with_us(),
            )  # fmt: skip

    def gone(self) -> str | None:
        """Why the daemon is no longer running, or None while it runs."""
        if self._process is None or self._process.returncode is None:
            return None
        return f"the daemon exited with status {self._process.returncode}: {self.tail()}"

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no log"
        return "\n".join(text.splitlines()[-lines:])

    async def listening(self) -> bool:
        """The daemon's FastAGI server accepts connections."""
        try:
            _, writer = await asyncio.open_connection(
                self.settings.fastagi.host, self.settings.fastagi.port
            )
        except OSError:
            return False
        writer.close()
        return True

    async def stop(self) -> int | None:
        """SIGTERM, then its exit status; killed if it does not stop in time.
        None when it was not running (any more)."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return None
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
        return process.returncode

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        status = await self.stop()
        if status not in (0, None, -signal.SIGTERM):  # SIGTERM: stopped while starting
            print(
                f"announcer demo: the daemon exited with status {status}; the end of its log:\n"
                + self.tail(),
                file=sys.stderr,
            )
