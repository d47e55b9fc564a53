"""PromptRenderer: text -> installed sound, cached; gTTS failures fall back to espeak-ng."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from announcer.announcements import Source
from announcer.config import PromptSettings
from announcer.prompts import audio, renderer
from announcer.prompts.renderer import PromptRenderer, RenderResult, sound_name
from announcer.prompts.tts import Engine, EspeakEngine, GttsEngine, Speech, TtsFailure

from .conftest import closed_port, point_gtts_at
from .fake_google import FakeGoogle
from .media import decode_raw, read_wav, tone

TEXT = "В районе Северный авария на сети. Ведутся работы."
OTHER = "Связь восстановлена. Если интернет не работает, перезагрузите роутер."
FILES = ("wav", "ulaw", "alaw", "sln16")


class Counting:
    """An engine that counts its calls and can be told to return something else."""

    def __init__(self, inner: Engine, answer: Speech | TtsFailure | None = None) -> None:
        self.inner = inner
        self.answer = answer
        self.calls: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    async def synthesize(self, text: str, language: str) -> Speech | TtsFailure:
        self.calls.append(text)
        if self.answer is not None:
            return self.answer
        return await self.inner.synthesize(text, language)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    tmp_path: Path,
    mode: Literal["auto", "gtts", "espeak"] = "espeak",
    language: str = "ru",
    timeout_s: float = 0.5,
    clock: Clock | None = None,
) -> tuple[PromptRenderer, Counting, Counting]:
    settings = PromptSettings(
        sounds_dir=tmp_path / "sounds",
        cache_dir=tmp_path / "cache",
        tts=mode,
        gtts_timeout_s=timeout_s,
    )
    gtts, espeak = Counting(GttsEngine(timeout_s)), Counting(EspeakEngine())
    engines: dict[str, Engine] = {"gtts": gtts, "espeak": espeak}
    prompts = PromptRenderer(settings, language, engines=engines, clock=clock or Clock())
    return prompts, gtts, espeak


def sizes_of(path: str) -> dict[str, int]:
    return {ext: Path(f"{path}.{ext}").stat().st_size for ext in FILES}


def stamps_of(path: str) -> list[int]:
    return [Path(f"{path}.{ext}").stat().st_mtime_ns for ext in FILES]


def files_of(result: RenderResult) -> list[Path]:
    assert result.path is not None
    return [Path(f"{result.path}.{ext}") for ext in FILES]


async def test_espeak_renders_russian_to_every_format(tmp_path: Path) -> None:
    prompts, gtts, espeak = make(tmp_path)
    result = await prompts.render(TEXT)
    name = sound_name("espeak", "ru", TEXT)
    assert result == RenderResult(str(tmp_path / "sounds" / name), "espeak", None)
    wav = read_wav(tmp_path / "sounds" / f"{name}.wav")
    assert (wav.rate, wav.channels, wav.width) == (8000, 1, 2)
    assert 2.0 < wav.duration_s < 8.0
    ulaw = decode_raw(tmp_path / "sounds" / f"{name}.ulaw", "mulaw", 8000)
    assert len(ulaw) == wav.frames
    assert (espeak.calls, gtts.calls) == ([TEXT], [])
    assert list((tmp_path / "cache").iterdir()) == [tmp_path / "cache" / f"{name}.wav"]


async def test_english(tmp_path: Path) -> None:
    prompts, _, espeak = make(tmp_path, language="en")
    result = await prompts.render("Service has been restored.")
    assert result.engine == "espeak"
    assert result.path is not None
    assert Path(result.path).name.startswith("tts-en-espeak-")
    assert espeak.calls == ["Service has been restored."]


async def test_the_same_text_twice_is_rendered_once(tmp_path: Path) -> None:
    prompts, _, espeak = make(tmp_path)
    first = await prompts.render(TEXT)
    stamps = [p.stat().st_mtime_ns for p in files_of(first)]
    second = await prompts.render(f"  {TEXT.replace(' ', '   ')}\n")  # spacing does not matter
    assert second == first
    assert espeak.calls == [TEXT]
    assert [p.stat().st_mtime_ns for p in files_of(second)] == stamps


async def test_a_wiped_sounds_folder_is_refilled_from_the_cache(tmp_path: Path) -> None:
    prompts, _, espeak = make(tmp_path)
    first = await prompts.render(TEXT)
    for path in files_of(first):
        path.unlink()
    assert await prompts.render(TEXT) == first
    assert all(p.stat().st_size > 0 for p in files_of(first))
    assert espeak.calls == [TEXT]


async def test_a_failed_render_never_replaces_a_working_file(tmp_path: Path) -> None:
    prompts, _, espeak = make(tmp_path)
    good = await prompts.render(TEXT)
    kept = {p.name: p.read_bytes() for p in files_of(good)[1:]}
    files_of(good)[0].unlink()  # one file lost: the sound must be made again
    for cached in (tmp_path / "cache").iterdir():
        cached.write_bytes(b"\0" * 100)  # and the cache is damaged
    espeak.answer = Speech(b"RIFF garbage, not audio", ".wav")
    result = await prompts.render(TEXT)
    assert result.path is None
    assert result.engine is None
    assert result.error is not None
    assert result.error.startswith("espeak: unusable speech: not an audio file we can read")
    assert {p.name: p.read_bytes() for p in files_of(good)[1:]} == kept
    assert not files_of(good)[0].exists()
    assert list((tmp_path / "cache").iterdir()) == []  # the damaged copy is gone


async def test_an_engine_that_fails_gives_an_error_not_a_path(tmp_path: Path) -> None:
    prompts, _, espeak = make(tmp_path)
    espeak.answer = TtsFailure("espeak-ng produced no speech: exit status 1")
    assert await prompts.render(TEXT) == RenderResult(
        None, None, "espeak: espeak-ng produced no speech: exit status 1"
    )
    assert not (tmp_path / "sounds").exists()


async def test_empty_text(tmp_path: Path) -> None:
    prompts, _, espeak = make(tmp_path)
    result = await prompts.render("  \n ")
    assert result == RenderResult(None, None, "nothing to say: the prompt text is empty")
    assert espeak.calls == []


async def test_gtts_when_google_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    voice = tone(tmp_path / "voice.mp3", 2.0, lead_s=0.5).read_bytes()
    prompts, gtts, espeak = make(tmp_path, mode="auto", timeout_s=5)
    async with FakeGoogle("good", voice) as google:
        point_gtts_at(monkeypatch, google.url)
        result = await prompts.render(TEXT)
        again = await prompts.render(TEXT)
    name = sound_name("gtts", "ru", TEXT)
    assert result == again == RenderResult(str(tmp_path / "sounds" / name), "gtts", None)
    assert google.connections == 1
    assert (gtts.calls, espeak.calls) == ([TEXT], [])
    assert (tmp_path / "cache" / f"{name}.mp3").read_bytes() == voice


@pytest.mark.timeout(60)
async def test_auto_falls_back_to_espeak_and_leaves_gtts_alone_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    prompts, gtts, espeak = make(tmp_path, mode="auto", clock=clock)
    async with FakeGoogle("silent") as google:
        point_gtts_at(monkeypatch, google.url)
        first = await prompts.render(TEXT)
        assert first.engine == "espeak"
        assert first.path == str(tmp_path / "sounds" / sound_name("espeak", "ru", TEXT))
        assert first.error is not None
        assert first.error.startswith("gtts: Google text-to-speech")
        assert first.error.endswith("; spoken by espeak instead")

        clock.now += renderer.GTTS_RETRY_S - 1
        second = await prompts.render(OTHER)
        assert (second.engine, second.error) == ("espeak", None)
        assert google.connections == 1  # not asked again so soon

        clock.now += 2
        third = await prompts.render("Ведутся работы.")
        assert third.engine == "espeak"
        assert third.error is not None
        assert google.connections == 2
    assert espeak.calls == [TEXT, OTHER, "Ведутся работы."]
    assert len(gtts.calls) == 2


async def test_auto_reuses_a_prompt_espeak_rendered(tmp_path: Path) -> None:
    espeak_only, _, _ = make(tmp_path)
    before = await espeak_only.render(TEXT)
    prompts, gtts, espeak = make(tmp_path, mode="auto")
    assert await prompts.render(TEXT) == before
    assert gtts.calls == espeak.calls == []


@pytest.mark.parametrize("mood", ["refused", "garbage", "html"])
async def test_gtts_mode_falls_back_on_every_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mood: str
) -> None:
    prompts, gtts, _ = make(tmp_path, mode="gtts", timeout_s=5)
    if mood == "refused":
        point_gtts_at(monkeypatch, f"http://127.0.0.1:{closed_port()}")
        results = [await prompts.render(TEXT), await prompts.render(OTHER)]
        expected = "gtts: Google text-to-speech failed: Failed to connect"
    else:
        fake = (
            FakeGoogle("good", b"\xff\xfb" + bytes(range(256)) * 8)
            if mood == "garbage"
            else (FakeGoogle("html"))
        )
        async with fake as google:
            point_gtts_at(monkeypatch, google.url)
            results = [await prompts.render(TEXT), await prompts.render(OTHER)]
        expected = {
            "garbage": "gtts: unusable speech: not an audio file we can read",
            "html": "gtts: Google text-to-speech answered without any audio",
        }[mood]
    for result in results:
        assert result.engine == "espeak"
        assert result.error is not None
        assert result.error.startswith(expected)
        assert all(p.stat().st_size > 0 for p in files_of(result))
    assert len(gtts.calls) == 2  # "gtts" asks every time
    assert not list((tmp_path / "cache").glob("*gtts*"))
    assert not list((tmp_path / "sounds").glob("*gtts*"))


@pytest.mark.parametrize("language", ["ru", "en"])
async def test_fallback_fragments_install_for_every_source(tmp_path: Path, language: str) -> None:
    prompts, gtts, espeak = make(tmp_path, language=language)
    for source in Source:
        path = await prompts.fallback(source)
        assert path.startswith(f"{tmp_path / 'sounds'}/fragment-{language}-")
        wav = read_wav(Path(f"{path}.wav"))
        assert (wav.rate, wav.channels, wav.width, wav.header) == (8000, 1, 2, 44)
        assert 1.0 < wav.duration_s < 10.0
        sizes = sizes_of(path)
        assert sizes["ulaw"] == sizes["alaw"] == wav.frames
        assert sizes["sln16"] == pytest.approx(4 * wav.frames, abs=8)
        stamps = stamps_of(path)
        assert await prompts.fallback(source) == path
        assert stamps_of(path) == stamps
    assert gtts.calls == espeak.calls == []
    assert len(list((tmp_path / "sounds").glob("*.wav"))) == len(Source)


def test_unknown_language(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'de'"):
        make(tmp_path, language="de")


def test_sound_names_are_safe_and_stable() -> None:
    name = sound_name("gtts", "ru", TEXT)
    assert audio.check_name(name) == name
    assert name == sound_name("gtts", "ru", TEXT) != sound_name("espeak", "ru", TEXT)
    assert name.startswith("tts-ru-gtts-")
