"""Text-to-speech engines: one signature, chosen by name.

``synthesize(text, language)`` returns the speech as an audio file's bytes,
or a ``TtsFailure`` saying why not; neither engine raises for the outages
it expects. The bytes are not checked here: the renderer installs them
through ``audio.install_recording``, which refuses empty, partial or silent
audio like any recording.

- ``gtts``: Google Translate's voice through gTTS (an MP3). Needs the
  Internet; every call has a hard deadline, since a black-holed TCP
  connection or a DNS server that drops packets would otherwise hold it for
  minutes. It runs in a daemon thread of its own: a stuck request cannot
  hold up the event loop's executor or the daemon's exit.
- ``espeak``: espeak-ng (Debian package espeak-ng), offline, a WAV.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

from gtts import gTTS  # type: ignore[import-untyped]

from announcer.prompts import ffmpeg

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Speech:
    data: bytes
    suffix: str
    """the file type the bytes are: ".mp3" or ".wav\""""


@dataclass(frozen=True)
class TtsFailure:
    reason: str


class Engine(Protocol):
    @property
    def name(self) -> str:
        """The config's name for it: "gtts" or "espeak"."""
        ...

    async def synthesize(self, text: str, language: str) -> Speech | TtsFailure: ...


async def in_daemon_thread(work: Callable[[], T], timeout_s: float) -> T:
    """``work()`` in a new daemon thread; ``TimeoutError`` after ``timeout_s``.

    A thread cannot be stopped: on timeout it is left to finish (or hang) on
    its own while the caller goes on. Unlike ``asyncio.to_thread`` it does not
    occupy the loop's default executor, which ``asyncio.run`` waits for.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: Exception | None) -> None:
        if future.done():  # timed out or cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        try:
            outcome: tuple[T | None, Exception | None] = (work(), None)
        except Exception as exc:
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            logger.debug("a late answer from a thread was dropped")

    threading.Thread(target=body, name="announcer-tts", daemon=True).start()
    async with asyncio.timeout(timeout_s):
        return await future


class GttsEngine:
    """Google's voice via gTTS, under a hard deadline."""

    name = "gtts"

    def __init__(self, timeout_s: float, tld: str = "com") -> None:
        self.timeout_s = timeout_s
        self.tld = tld

    def _fetch(self, text: str, language: str) -> bytes:
        # lang_check=False: checking the language would be one more request.
        # timeout: each connect and read; the hard deadline covers the rest (DNS).
        buffer = io.BytesIO()
        speech = gTTS(text, tld=self.tld, lang=language, lang_check=False, timeout=self.timeout_s)
        speech.write_to_fp(buffer)
        return buffer.getvalue()

    async def synthesize(self, text: str, language: str) -> Speech | TtsFailure:
        try:
            data = await in_daemon_thread(lambda: self._fetch(text, language), self.timeout_s)
        except TimeoutError:
            return TtsFailure(
                f"Google text-to-speech did not answer within {self.timeout_s:g} s; "
                "check the Internet connection and DNS"
            )
        except Exception as exc:  # gTTS and requests raise many kinds; all mean "no speech"
            logger.debug("gTTS failed", exc_info=True)
            return TtsFailure(f"Google text-to-speech failed: {exc}")
        if not data:
            return TtsFailure("Google text-to-speech answered without any audio")
        return Speech(data, ".mp3")


class EspeakEngine:
    """espeak-ng, offline; the text goes in on standard input."""

    name = "espeak"
    VOICES: ClassVar[dict[str, str]] = {"ru": "ru", "en": "en"}

    def __init__(
        self, binary: str = "espeak-ng", timeout_s: float = 30.0, words_per_minute: int = 150
    ) -> None:
        self.binary = binary
        self.timeout_s = timeout_s
        self.words_per_minute = words_per_minute

    async def synthesize(self, text: str, language: str) -> Speech | TtsFailure:
        voice = self.VOICES.get(language)
        if voice is None:
            return TtsFailure(f"espeak-ng has no voice set up for language {language!r}")
        with tempfile.TemporaryDirectory(prefix="announcer-espeak-") as scratch:
            out = Path(scratch) / "speech.wav"
            argv = [self.binary, "-v", voice, "-s", str(self.words_per_minute)]
            argv += ["-b", "1", "-w", str(out), "--stdin"]
            try:
                done = await ffmpeg.run(
                    argv, stdin=text.encode(), timeout_s=self.timeout_s, package="espeak-ng"
                )
            except ffmpeg.ToolMissing as exc:
                return TtsFailure(str(exc))
            except TimeoutError:
                return TtsFailure(f"espeak-ng took longer than {self.timeout_s:g} s")
            data = out.read_bytes() if out.exists() else b""
        if done.returncode != 0 or not data:
            detail = done.stderr.strip() or f"exit status {done.returncode}"
            return TtsFailure(f"espeak-ng produced no speech: {detail}")
        return Speech(data, ".wav")
