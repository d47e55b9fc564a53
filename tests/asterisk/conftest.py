"""Fixtures every Asterisk test file shares: the sandbox (built on first use)
and a bare Asterisk running in it.

They need root (Asterisk runs in a chroot) and the sandbox that
``scripts/asterisk-sandbox.sh`` builds; a missing sandbox is built on the
first test (a minute or two). Without root, or when the build fails, the
tests are skipped with the reason, except under CI, where a failed build
fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.asterisk.sandbox import (
    BUILD_SCRIPT,
    Asterisk,
    build_sandbox,
    sandbox_dir,
    sandbox_ready,
)


@pytest.fixture(scope="module")
def sandbox() -> Path:
    path = sandbox_dir()
    if os.geteuid() != 0:
        pytest.skip("the Asterisk tests need root: Asterisk runs in a chroot")
    if sandbox_ready(path):
        return path
    try:
        result = build_sandbox(path)
        output = (result.stderr or result.stdout).strip().splitlines()
        failure = "" if result.returncode == 0 else (output[-1] if output else "no output")
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    if failure or not sandbox_ready(path):
        message = (
            f"no Asterisk sandbox in {path}, and building it failed ({failure}); "
            f"try it by hand: sudo scripts/{BUILD_SCRIPT.name}"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def asterisk(sandbox: Path) -> Iterator[Asterisk]:
    """An Asterisk with an empty dialplan; stopped after the test."""
    with Asterisk(sandbox) as running:
        yield running
