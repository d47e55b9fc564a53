"""Text -> a sound in the sounds folder, by text-to-speech, cached.

A rendered prompt is named after a hash of (engine, language, text), e.g.
``tts-ru-espeak-1f0c9a4e2b7d6a53``, so the same text always gives the same
path, and a render whose files are all in place returns at once. The
engine's raw output is kept in ``cache_dir`` as well, so a sounds folder
wiped clean is refilled without asking the engine again.

Engines by ``[prompts] tts``:

- ``espeak``: espeak-ng only;
- ``gtts``: gTTS for every prompt, espeak-ng when gTTS fails;
- ``auto``: gTTS; after it fails, espeak-ng alone for ``GTTS_RETRY_S``
  (5 minutes) before gTTS is tried again, so an Internet outage costs one
  timeout, not one per prompt. A prompt already rendered by either engine is
  reused.

Nothing that fails replaces a working file: the files of a sound are written
only once the new audio has passed every check (see ``audio``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from announcer.announcements import Source
from announcer.config import PromptSettings
from announcer.prompts import audio, fragments, templates, tts
from announcer.prompts.ffmpeg import ToolMissing

logger = logging.getLogger(__name__)

GTTS_RETRY_S = 300.0
MAX_SPEECH_S = 300.0
#: What the installed name of every shipped fragment starts with.
FRAGMENT_PREFIX = "fragment-"


@dataclass(frozen=True)
class RenderResult:
    path: str | None
    """what the dialplan plays (absolute, no extension); None: nothing to play"""
    engine: str | None
    """"gtts" or "espeak": the engine whose speech ``path`` is"""
    error: str | None
    """what went wrong, even when a fallback engine still gave a ``path``"""


def sound_name(engine: str, language: str, text: str) -> str:
    """The file stem for a rendered text: the same inputs, the same name."""
    digest = hashlib.sha256(f"{engine}\0{language}\0{text}".encode()).hexdigest()
    return f"tts-{language}-{engine}-{digest[:16]}"


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class PromptRenderer:
    """Renders prompt texts for one language into ``settings.sounds_dir``."""

    def __init__(
        self,
        settings: PromptSettings,
        language: str,
        *,
        engines: Mapping[str, tts.Engine] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if language not in templates.LANGUAGES:
            raise ValueError(f"no prompts in language {language!r}; use one of ru, en")
        self.settings = settings
        self.language = language
        self.engines: dict[str, tts.Engine] = (
            dict(engines)
            if engines is not None
            else {"gtts": tts.GttsEngine(settings.gtts_timeout_s), "espeak": tts.EspeakEngine()}
        )
        self._clock = clock
        self._gtts_retry_at = -math.inf
        self._locks = _KeyedLocks()

    @property
    def sounds_dir(self) -> Path:
        return self.settings.sounds_dir

    def _plan(self) -> list[str]:
        """Engines to try, in order."""
        mode = self.settings.tts
        if mode == "espeak":
            return ["espeak"]
        if mode == "auto" and self._clock() < self._gtts_retry_at:
            return ["espeak"]
        return ["gtts", "espeak"]

    async def render(self, text: str) -> RenderResult:
        """The sound for ``text``, rendering it if it is not there yet."""
        text = " ".join(text.split())
        if not text:
            return RenderResult(None, None, "nothing to say: the prompt text is empty")
        async with self._locks.hold(f"{self.language}\0{text}"):
            if self.settings.tts == "auto":
                for engine in ("gtts", "espeak"):
                    name = sound_name(engine, self.language, text)
                    if audio.is_installed(self.sounds_dir, name):
                        return RenderResult(audio.sound_path(self.sounds_dir, name), engine, None)
            errors: list[str] = []
            for engine in self._plan():
                outcome = await self._render_with(engine, text)
                if isinstance(outcome, str):
                    errors.append(f"{engine}: {outcome}")
                    self._note_failure(engine, outcome)
                    continue
                self._note_success(engine)
                if errors:
                    errors.append(f"spoken by {engine} instead")
                return RenderResult(outcome.path, engine, "; ".join(errors) or None)
        return RenderResult(None, None, "; ".join(errors))

    def _note_failure(self, engine: str, reason: str) -> None:
        if engine != "gtts" or self.settings.tts != "auto":
            logger.warning("%s could not render a prompt: %s", engine, reason)
            return
        if self._gtts_retry_at == -math.inf:
            logger.warning(
                "gTTS failed (%s); using espeak-ng for the next %g s", reason, GTTS_RETRY_S
            )
        self._gtts_retry_at = self._clock() + GTTS_RETRY_S

    def _note_success(self, engine: str) -> None:
        if engine == "gtts" and self._gtts_retry_at != -math.inf:
            logger.info("gTTS answers again")
            self._gtts_retry_at = -math.inf

    async def _render_with(self, engine_name: str, text: str) -> audio.InstalledSound | str:
        """The installed sound, or why this engine could not give one."""
        engine = self.engines.get(engine_name)
        if engine is None:
            return "no such engine configured"
        name = sound_name(engine_name, self.language, text)
        if audio.is_installed(self.sounds_dir, name):
            return audio.InstalledSound(name, audio.sound_path(self.sounds_dir, name), 0.0)
        try:
            cached = await self._from_cache(name)
            if cached is not None:
                return cached
            speech = await engine.synthesize(text, self.language)
            if isinstance(speech, tts.TtsFailure):
                return speech.reason
            with tempfile.TemporaryDirectory(prefix="announcer-tts-") as scratch:
                spoken = Path(scratch) / f"speech{speech.suffix}"
                await asyncio.to_thread(spoken.write_bytes, speech.data)
                done = await audio.install_recording(spoken, self.sounds_dir, name, MAX_SPEECH_S)
        except (OSError, ToolMissing) as exc:
            return f"cannot install the prompt: {exc}"
        if isinstance(done, audio.AudioProblem):
            return f"unusable speech: {done.reason}"
        await asyncio.to_thread(self._keep, name, speech)
        return done

    def _cached_file(self, name: str) -> Path | None:
        try:
            return next(iter(sorted(self.settings.cache_dir.glob(f"{name}.*"))), None)
        except OSError:
            return None

    async def _from_cache(self, name: str) -> audio.InstalledSound | None:
        cached = await asyncio.to_thread(self._cached_file, name)
        if cached is None:
            return None
        done = await audio.install_recording(cached, self.sounds_dir, name, MAX_SPEECH_S)
        if isinstance(done, audio.AudioProblem):
            logger.warning("dropping cached speech %s: %s", cached, done.reason)
            cached.unlink(missing_ok=True)
            return None
        return done

    def _keep(self, name: str, speech: tts.Speech) -> None:
        """Keep the engine's output; a cache that cannot be written costs only time."""
        try:
            self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
            audio.write_atomic(self.settings.cache_dir / f"{name}{speech.suffix}", speech.data)
        except OSError as exc:
            logger.warning("cannot keep rendered speech in %s: %s", self.settings.cache_dir, exc)

    async def fallback(self, source: Source) -> str:
        """Install the shipped fragment for ``source`` and return its path.

        The name carries a hash of the fragment's bytes, so an upgrade that
        changes a fragment installs it anew. Raises ``OSError`` when the
        sounds folder cannot be written.
        """
        with fragments.fragment_file(self.language, source) as shipped:
            data = await asyncio.to_thread(shipped.read_bytes)
            digest = hashlib.sha256(data).hexdigest()[:12]
            name = f"{FRAGMENT_PREFIX}{self.language}-{fragments.FRAGMENTS[source]}-{digest}"
            if not audio.is_installed(self.sounds_dir, name):
                done = await audio.install_recording(
                    shipped, self.sounds_dir, name, fragments.MAX_FRAGMENT_S
                )
                if isinstance(done, audio.AudioProblem):
                    raise RuntimeError(f"shipped fragment {shipped} is unusable: {done.reason}")
        return audio.sound_path(self.sounds_dir, name)


def is_fragment(prompt: str) -> bool:
    """Is ``prompt`` a shipped fragment standing in for a rendered prompt?"""
    return Path(prompt).name.startswith(FRAGMENT_PREFIX)
