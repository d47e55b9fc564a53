"""``announcer run`` as a real process, for the tests that need the whole
daemon: a configuration file beside its log, start, and a SIGTERM that must
end it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from announcer.config import Settings
from announcer.keys import Keys


def daemon_config(path: Path, settings: Settings, keys: Keys, tmp_path: Path, extra: str) -> None:
    """A configuration on the test's Redis and prefix, with its folders under
    ``tmp_path``, espeak-ng for speech, and ``extra`` TOML appended; the
    metrics endpoint off unless ``extra`` has a [metrics] section (its port
    is fixed, and another daemon or program may hold it)."""
    if "[metrics]" not in extra:
        extra += "\n[metrics]\nenabled = false\n"
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


async def start_daemon(
    config: Path, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``announcer run``; its log goes beside the config (``.log``), so a
    chatty daemon never blocks on a pipe nobody reads."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANNOUNCER_", "NOTIFY_"))}
    with config.with_suffix(".log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "announcer", "--config", str(config), "run",
            env=clean | dict(env or {}), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def stopped(daemon: asyncio.subprocess.Process, config: Path) -> str:
    """SIGTERM, then its exit status must be 0 and its log free of
    tracebacks; returns the log."""
    if daemon.returncode is None:
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


async def answers_tcp(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts a connection on ``host``:``port``."""
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True
