"""announcer status: what the NOC screen shows, from a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from redis.asyncio import Redis

from announcer import status
from announcer.cli.watch import render_status
from announcer.config import Settings
from announcer.keys import Keys
from announcer.pbx.mirror import LinkStatus
from announcer.states import State, SwitchState
from announcer.store import StateStore, SweepInfo
from tests.conftest import InventoryFiles


async def _city(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> None:
    files.write(
        switches=(
            ("core", "127.0.0.10", "north", ""),
            ("agg", "127.0.0.11", "north", "core"),
            ("n1", "127.0.0.12", "north", "agg"),
            ("n2", "127.0.0.13", "north", "agg"),
            ("s1", "127.0.0.14", "south", "core"),
        )
    )
    assert (await files.load_into(settings, redis, keys)).ok
    await StateStore(redis, keys).publish(
        {
            "core": SwitchState(State.UP, 100.0),
            "agg": SwitchState(State.DOWN, 200.0, "no echo reply within 1000 ms", "agg"),
            "n1": SwitchState(State.UNREACHABLE, 201.0, "uplink agg is down", "agg"),
            "n2": SwitchState(State.UNREACHABLE, 201.0, "uplink agg is down", "agg"),
        },
        sweep=SweepInfo(at=300.0, duration_s=1.25, probed=5, alive=2, silent=3, failed=0),
    )


async def test_status_counts_and_outages(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    await _city(settings, redis, keys, files)
    data = await status.gather(redis, keys)
    assert data["switches"] == 5
    assert data["counts"] == {"up": 1, "down": 1, "unreachable": 2, "flapping": 0, "unknown": 1}
    assert [(d["switch"], d["district_name"], d["behind"]) for d in data["down"]] == [
        ("agg", "Северный", 2)
    ]
    assert [(u["switch"], u["root_cause"]) for u in data["unreachable"]] == [
        ("n1", "agg"),
        ("n2", "agg"),
    ]
    assert data["poller"]["last_sweep_s"] == 1.25


async def test_status_command(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles, tmp_path: Path
) -> None:
    await _city(settings, redis, keys, files)
    config = tmp_path / "a.toml"
    config.write_text(f'[redis]\nurl = "{settings.redis.url}"\nprefix = "{keys.prefix}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOUNCER_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "announcer", "--config", str(config), "status", *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )

    text = run()
    assert text.returncode == 0, text.stderr
    assert "Switches: 5: 1 up, 1 down, 2 unreachable, 0 flapping, 1 unknown" in text.stdout
    assert "agg" in text.stdout
    assert "2 unreachable behind it; no echo reply within 1000 ms" in text.stdout
    assert "behind agg: n1, n2" in text.stdout
    assert "took 1.25 s; 5 probed: 2 alive, 3 silent, 0 could not be probed" in text.stdout
    data = json.loads(run("--json").stdout)
    assert data["counts"]["unreachable"] == 2
    assert data["links"] == {}


async def test_status_shows_the_mirrors_links(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    """What the NOC sees of the AstDB and Redis-key mirrors: in sync or not,
    why not, and until when their prompts may still play."""
    await _city(settings, redis, keys, files)
    now = time.time()
    up = LinkStatus(
        "AstDB over AMI at 127.0.0.1:5038", "up", now - 60, "", 1234, 0, now + 100, now, now
    )
    down = LinkStatus(
        "Redis keys", "down", now - 30, "cannot reach Redis", 0, 0, now - 5, now - 30, now
    )
    await redis.hset(keys.links, mapping={"astdb": json.dumps(asdict(up))})
    await redis.hset(keys.links, mapping={"redis-keys": json.dumps(asdict(down))})
    data = await status.gather(redis, keys)
    text = render_status(data)
    assert "AstDB over AMI at 127.0.0.1:5038: in sync since" in text
    assert "1,234 entries; mirrored prompts play until" in text
    assert "Redis keys: DOWN since" in text
    assert "cannot reach Redis; its lease ran out at" in text
    assert "no mirrored prompt plays (is announcer running?)" in text


async def test_status_before_anything(redis: Redis, keys: Keys) -> None:
    data = await status.gather(redis, keys)
    assert data["inventory"] is None
    assert data["poller"] is None
    assert data["switches"] == 0


async def test_status_watch_redraws_until_ctrl_c(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles, tmp_path: Path
) -> None:
    """The NOC screen: the status again and again, a state change showing up
    in the next frame, and Ctrl-C ending it quietly."""
    await _city(settings, redis, keys, files)
    config = tmp_path / "a.toml"
    config.write_text(f'[redis]\nurl = "{settings.redis.url}"\nprefix = "{keys.prefix}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOUNCER_")}
    watch = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "announcer", "--config", str(config), "status", "--watch", "0.2",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watch.stdout is not None
    try:
        async with asyncio.timeout(20):
            first = await watch.stdout.readuntil(b"could not be probed\n")
            await StateStore(redis, keys).publish({"s1": SwitchState(State.DOWN, 400.0, "gone")})
            later = b""
            while b"s1" not in later:
                later = await watch.stdout.readuntil(b"could not be probed\n")
    finally:
        watch.send_signal(signal.SIGINT)
        _, errors = await watch.communicate()
    assert b"announcer status at" in first
    assert b"1 down" in first
    assert b"2 down" in later
    assert watch.returncode == 0, errors
    assert b"Traceback" not in errors


def test_status_watch_refuses_nonsense(settings: Settings, keys: Keys, tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text(f'[redis]\nurl = "{settings.redis.url}"\nprefix = "{keys.prefix}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "announcer", "--config", str(config), "status", "--watch", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "--watch takes a number of seconds above 0" in done.stderr
