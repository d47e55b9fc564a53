"""announce, list, clear and maintenance as tech support type them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import pytest
from redis.asyncio import Redis

from announcer.config import Settings
from announcer.keys import Keys
from tests.conftest import InventoryFiles


class Run(Protocol):
    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def announcer(settings: Settings, keys: Keys, tmp_path: Path, files: InventoryFiles) -> Run:
    config = tmp_path / "announcer.toml"
    config.write_text(
        f'[redis]\nurl = "{settings.redis.url}"\nprefix = "{keys.prefix}"\n'
        f'[prompts]\nsounds_dir = "{tmp_path / "sounds"}"\ncache_dir = "{tmp_path / "cache"}"\n'
        'tts = "espeak"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOUNCER_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "announcer", "--config", str(config), *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=120,
        )

    files.write()
    done = run("import", *files.args())
    assert done.returncode == 0, done.stderr
    return run


def test_announce_to_a_district_by_name_then_clear(announcer: Run, redis: Redis) -> None:
    done = announcer(
        "announce", "--district", "Северный", "--text", "Авария у провайдера", "--ttl", "2h",
        "--eta", "12:00", "--author", "Иванова",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ident = done.stdout.strip()
    assert ident.startswith("staff-")
    heard = json.loads(announcer("lookup", "89161234567", "--json").stdout)
    assert heard["announcement"] == ident
    assert Path(heard["prompt"] + ".wav").stat().st_size > 1000
    other = json.loads(announcer("lookup", "89260000001", "--json").stdout)
    assert other["announcement"] is None, "south hears nothing"
    listing = announcer("list")
    assert ident in listing.stdout
    assert "Северный" in listing.stdout
    assert "Авария у провайдера" in listing.stdout
    assert announcer("clear", ident).returncode == 0
    assert json.loads(announcer("lookup", "89161234567", "--json").stdout)["prompt"] is None


def test_announce_for_everyone_reaches_unknown_callers(announcer: Run) -> None:
    ident = announcer("announce", "--all", "--text", "Внимание").stdout.strip()
    unknown = json.loads(announcer("lookup", "+7 999 000-00-00", "--json").stdout)
    withheld = json.loads(announcer("lookup", "anonymous", "--json").stdout)
    assert unknown["announcement"] == withheld["announcement"] == ident
    assert announcer("clear", "--all").returncode == 0
    assert json.loads(announcer("list", "--json").stdout)["active"] == []


def test_refusals_are_plain(announcer: Run) -> None:
    done = announcer("announce", "--district", "Северный ", "--text", "x")
    assert done.returncode == 1
    assert "not announced: unknown district 'Северный '; did you mean 'Северный'" in done.stderr
    done = announcer("announce", "--all", "--text", "x", "--ttl", "soon")
    assert done.returncode == 1
    assert "write it like 45m, 2h or 1d" in done.stderr
    done = announcer("clear", "staff-000000")
    assert done.returncode == 1
    assert "no staff announcement staff-000000" in done.stderr


def test_announce_a_recording(announcer: Run, tmp_path: Path) -> None:
    recording = tmp_path / "message.mp3"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
         str(recording)],
        check=True,
    )  # fmt: skip
    done = announcer("announce", "--switch", "n1", "--audio", str(recording))
    assert done.returncode == 0, done.stderr
    heard = json.loads(announcer("lookup", "89161234567", "--json").stdout)
    assert heard["announcement"] == done.stdout.strip()
    assert heard["prompt"].startswith(str(tmp_path / "sounds"))
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"PK\x03\x04 not really audio")
    done = announcer("announce", "--all", "--audio", str(broken))
    assert done.returncode == 1
    assert "not announced" in done.stderr


def test_planned_works(announcer: Run) -> None:
    done = announcer(
        "maintenance", "add", "--district", "Южный", "--from", "2000-01-01 01:00",
        "--to", "2100-01-01 05:00", "--text", "Плановые работы до пяти утра",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ident = done.stdout.strip()
    heard = json.loads(announcer("lookup", "89260000001", "--json").stdout)
    assert heard["announcement"] == f"maintenance-{ident}"
    assert announcer("maintenance", "remove", ident).returncode == 0
    again = announcer("maintenance", "remove", ident)
    assert again.returncode == 1
    assert f"no planned works {ident}" in again.stderr
    assert json.loads(announcer("lookup", "89260000001", "--json").stdout)["prompt"] is None
    backwards = announcer(
        "maintenance", "add", "--district", "south", "--from", "2100-01-01 05:00",
        "--to", "2100-01-01 01:00",
    )  # fmt: skip
    assert backwards.returncode == 1
    assert "must end after they start" in backwards.stderr
