"""The engines: espeak-ng for real; gTTS for real up to a fake Google on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from pathlib import Path

import pytest

from announcer.prompts.tts import EspeakEngine, GttsEngine, Speech, TtsFailure, in_daemon_thread

from .conftest import closed_port, point_gtts_at
from .fake_google import FakeGoogle, Mood
from .media import tone

TEXT = "По вашему адресу авария на сети. Ведутся работы."


async def test_espeak_speaks_russian_and_english() -> None:
    engine = EspeakEngine()
    for language, text in (("ru", TEXT), ("en", "Service has been restored.")):
        speech = await engine.synthesize(text, language)
        assert isinstance(speech, Speech)
        assert speech.suffix == ".wav"
        assert speech.data[:4] == b"RIFF"
        assert len(speech.data) > 20_000  # about a second at espeak's 22 kHz


async def test_espeak_reads_the_text_not_options() -> None:
    speech = await EspeakEngine().synthesize("--help -w /tmp/x", "en")
    assert isinstance(speech, Speech)
    assert speech.data[:4] == b"RIFF"


async def test_espeak_without_a_voice_for_the_language() -> None:
    failure = await EspeakEngine().synthesize(TEXT, "de")
    assert isinstance(failure, TtsFailure)
    assert "no voice" in failure.reason


async def test_espeak_not_installed() -> None:
    failure = await EspeakEngine(binary="espeak-ng-is-not-here").synthesize(TEXT, "ru")
    assert isinstance(failure, TtsFailure)
    assert "install the Debian package espeak-ng" in failure.reason


async def test_gtts_gets_the_audio_google_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mp3 = tone(tmp_path / "voice.mp3", 1.0).read_bytes()
    async with FakeGoogle("good", mp3) as google:
        point_gtts_at(monkeypatch, google.url)
        speech = await GttsEngine(timeout_s=5).synthesize(TEXT, "ru")
    assert speech == Speech(mp3, ".mp3")
    [request] = google.requests
    assert request.startswith(b"POST /_/TranslateWebserverUi/data/batchexecute ")
    form = urllib.parse.unquote(request.split(b"\r\n\r\n", 1)[1].decode())
    rpc = json.loads(form.removeprefix("f.req=").removesuffix("&"))
    assert json.loads(rpc[0][0][1]) == [TEXT, "ru", None, "null"]


async def test_gtts_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    point_gtts_at(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    failure = await GttsEngine(timeout_s=5).synthesize(TEXT, "ru")
    assert isinstance(failure, TtsFailure)
    assert failure.reason.startswith("Google text-to-speech failed: Failed to connect")


@pytest.mark.timeout(30)
async def test_gtts_black_hole_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted, never answered: the deadline ends it, whichever of gTTS's
    read timeout and the hard deadline comes first."""
    async with FakeGoogle("silent") as google:
        point_gtts_at(monkeypatch, google.url)
        failure = await GttsEngine(timeout_s=0.5).synthesize(TEXT, "ru")
    assert isinstance(failure, TtsFailure)
    assert failure.reason.startswith("Google text-to-speech")
    assert google.connections == 1


@pytest.mark.timeout(30)
async def test_gtts_trickling_answer_hits_the_hard_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A byte every 50 ms: no single read times out, so only the hard deadline helps."""
    async with FakeGoogle("trickle") as google:
        point_gtts_at(monkeypatch, google.url)
        failure = await GttsEngine(timeout_s=0.5).synthesize(TEXT, "ru")
    assert failure == TtsFailure(
        "Google text-to-speech did not answer within 0.5 s; check the Internet connection and DNS"
    )


@pytest.mark.parametrize(
    ("mood", "reason"),
    [
        ("error", "Google text-to-speech failed: 500 (Internal Server Error) from TTS API"),
        ("html", "Google text-to-speech answered without any audio"),
        ("mangled", "Google text-to-speech failed: 200 (OK) from TTS API"),
    ],
)
async def test_gtts_garbage_answers(
    monkeypatch: pytest.MonkeyPatch, mood: Mood, reason: str
) -> None:
    async with FakeGoogle(mood) as google:
        point_gtts_at(monkeypatch, google.url)
        failure = await GttsEngine(timeout_s=5).synthesize(TEXT, "ru")
    assert isinstance(failure, TtsFailure)
    assert failure.reason.startswith(reason)


async def test_daemon_thread_hands_back_result_and_errors() -> None:
    assert await in_daemon_thread(lambda: 42, 5) == 42

    def broken() -> int:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await in_daemon_thread(broken, 5)


async def test_daemon_thread_left_behind_after_its_deadline() -> None:
    release = threading.Event()
    finished = threading.Event()

    def stuck() -> int:
        release.wait(10)
        finished.set()
        return 1

    with pytest.raises(TimeoutError):
        await in_daemon_thread(stuck, 0.05)
    release.set()  # the late answer is dropped quietly
    await asyncio.to_thread(finished.wait, 10)
    await asyncio.sleep(0.01)
