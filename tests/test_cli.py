"""The announcer command as an admin uses it: real processes, a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import pytest
from redis.asyncio import Redis

from announcer.keys import Keys
from tests.conftest import InventoryFiles
from tests.demo.run import (
    assert_nothing_left,
    assert_shows_a_district_cut_and_a_staff_message,
    assert_shows_a_switch_failing_and_recovering,
    run_demo,
)


class Run(Protocol):
    def __call__(self, *args: str, redis: str = ...) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def announcer(redis_url: str, keys: Keys, tmp_path: Path) -> Run:
    config = tmp_path / "announcer.toml"
    config.write_text(f'[redis]\nprefix = "{keys.prefix}"\n')

    def run(*args: str, redis: str = redis_url) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ANNOUNCER_REDIS_URL": redis}
        env.pop("ANNOUNCER_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "announcer", "--config", str(config), *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=60,
        )

    return run


def test_import_and_lookup(announcer: Run, files: InventoryFiles, redis: Redis) -> None:
    done = announcer("import", *files.write().args())
    assert done.returncode == 0, done.stderr
    assert "Imported CSV" in done.stdout
    assert "2 districts, 3 switches, 2 subscriber numbers accepted" in done.stdout
    assert "subscribers: 2 added, 0 removed, 0 moved to another switch" in done.stdout

    done = announcer("lookup", "+79161234567", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["phone"] == "+79161234567"
    assert answer["known"] is True
    assert answer["switch"] == "n1"
    assert answer["district"] == "north"
    assert answer["prompt"] is None
    assert answer["announcement"] is None
    assert "nothing is active" in answer["reason"]

    done = announcer("lookup", "8 (916) 123-45-67", "anonymous")
    assert done.returncode == 0
    assert "switch    n1" in done.stdout
    assert "anonymous:\n" in done.stdout
    assert "straight to the queue" in done.stdout


def test_bad_rows_are_listed_and_good_ones_imported(
    announcer: Run, files: InventoryFiles, redis: Redis, tmp_path: Path
) -> None:
    good = [(f"8916{i:07d}", "n1") for i in range(60)]
    files.write(subscribers=[*good, ("12", "n1")])
    errors_file = tmp_path / "errors.txt"
    done = announcer("import", *files.args(), "--errors-file", str(errors_file))
    assert done.returncode == 0, done.stderr
    assert "Rejected rows (1):" in done.stdout
    assert f"{files.subscribers}, line 62: '12' has the wrong number of digits" in done.stdout
    assert errors_file.read_text().count("\n") == 1


def test_too_many_bad_rows_exit_1_and_nothing_changes(
    announcer: Run, files: InventoryFiles, redis: Redis
) -> None:
    assert announcer("import", *files.write().args()).returncode == 0
    files.write(subscribers=[("89161234567", "n1"), ("junk", "n1")])
    done = announcer("import", *files.args())
    assert done.returncode == 1
    assert "Nothing was imported; the inventory in Redis is unchanged:" in done.stderr
    assert "1 of 2 rows of" in done.stderr
    assert json.loads(announcer("lookup", "89260000001", "--json").stdout)["switch"] == "s1"


def test_missing_column_exit_1(announcer: Run, files: InventoryFiles) -> None:
    files.write()
    files.subscribers.write_text("number,switch\n89161234567,n1\n")
    done = announcer("import", *files.args())
    assert done.returncode == 1
    assert "nothing was imported" in done.stderr
    assert "missing column phone" in done.stderr


def test_dry_run_touches_nothing(
    announcer: Run, files: InventoryFiles, redis: Redis, keys: Keys
) -> None:
    done = announcer("import", "--dry-run", *files.write().args())
    assert done.returncode == 0, done.stderr
    assert "Dry run" in done.stdout
    assert json.loads(announcer("lookup", "89161234567", "--json").stdout)["reason"] == (
        "no inventory has been imported yet; nothing is active"
    )


def test_no_sources_named(announcer: Run) -> None:
    done = announcer("import")
    assert done.returncode == 1
    assert (
        "say where the inventory comes from: --districts, --switches, --subscribers" in done.stderr
    )


def test_redis_down_is_a_plain_message(announcer: Run, files: InventoryFiles) -> None:
    done = announcer("lookup", "89161234567", redis="redis://127.0.0.1:9/0")
    assert done.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:9/0" in done.stderr
    assert "Traceback" not in done.stderr
    done = announcer("import", *files.write().args(), redis="redis://127.0.0.1:9/0")
    assert done.returncode == 1
    assert "nothing was imported: cannot reach Redis" in done.stderr


def test_demo_runs_on_a_private_redis() -> None:
    """The live demo as this user (root under CI; tests/demo/test_demo.py runs
    it as nobody): its six scenes on simulated switches, then a clean exit."""
    status, out, errors = run_demo("--scenes", "6")
    assert status == 0, out + errors
    assert "Traceback" not in errors, errors
    assert "36 switches, 300 subscriber numbers accepted" in out
    assert "36 simulated switches answer SNMP" in out
    assert_shows_a_switch_failing_and_recovering(out)
    assert_shows_a_district_cut_and_a_staff_message(out)
    assert "== 6 scenes shown; everything the demo started is stopped and removed" in out
    assert "== 7." not in out
    assert_nothing_left(out)
