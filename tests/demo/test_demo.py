"""``announcer demo`` without root, stopped by Ctrl-C (SIGINT) in the middle of its show.

The run as the current user (root under CI) with ``--scenes`` is
tests/test_cli.py::test_demo_runs_on_a_private_redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from tests.demo.run import (
    as_nobody,
    assert_nothing_left,
    assert_shows_a_switch_failing_and_recovering,
    demo,
    stop,
)


def test_the_demo_runs_as_nobody_until_ctrl_c() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody; the run as this user is in tests/test_cli.py")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is missing: apt-get install util-linux")
    process = subprocess.Popen(
        as_nobody(demo()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "hears restored-auto-switch-" in line:
                break  # two scenes are over: a switch failed and came back
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=60)
    finally:
        stop(process)
    out = "".join(lines) + rest
    assert process.returncode == 0, out + errors
    assert "Traceback" not in errors, errors
    assert "announcer demo:" not in errors, errors
    assert_shows_a_switch_failing_and_recovering(out)
    assert "== Stopping: the daemon, the agents, Redis and the temporary folder" in out
    assert "everything the demo started is stopped and removed" in out
    assert_nothing_left(out)
