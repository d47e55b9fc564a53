"""The prompt tests run the real ffmpeg and espeak-ng, and never reach Google."""

from __future__ import annotations

import os
import shutil
import socket

import gtts.tts  # type: ignore[import-untyped]
import pytest

TOOLS = {"ffmpeg": "ffmpeg", "ffprobe": "ffmpeg", "espeak-ng": "espeak-ng"}
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _tools() -> None:
    missing = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool)})
    if missing:
        message = f"needs the Debian packages {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def point_gtts_at(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    """Send gTTS's requests to ``base`` (a loopback URL) instead of Google."""

    def translate_url(tld: str = "com", path: str = "") -> str:
        return f"{base}/{path}"

    monkeypatch.setattr(gtts.tts, "_translate_url", translate_url)


@pytest.fixture(autouse=True)
def _no_google(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with gTTS aimed at a closed loopback port and no proxy,
    so even a test that forgets cannot send a byte off this machine."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    point_gtts_at(monkeypatch, f"http://127.0.0.1:{closed_port()}")
