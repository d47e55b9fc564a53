"""The shipped fragments: present, in Asterisk's format, and reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest

from announcer.announcements import Source
from announcer.prompts import fragments, templates

from .media import read_wav


@pytest.mark.parametrize("language", templates.LANGUAGES)
@pytest.mark.parametrize("source", list(Source))
def test_every_fragment_is_shipped_as_8khz_mono_wav(language: str, source: Source) -> None:
    with fragments.fragment_file(language, source) as path:
        wav = read_wav(path)
        size = path.stat().st_size
    assert (wav.rate, wav.channels, wav.width, wav.header) == (8000, 1, 2, 44)
    assert 1.0 < wav.duration_s < 10.0
    assert size < 200_000


def test_the_shipped_fragments_are_the_package_data() -> None:
    with fragments.fragment_file("ru", Source.AUTO) as path:
        assert path == fragments.source_folder() / "ru" / "outage.wav"


def test_unknown_language() -> None:
    with pytest.raises(ValueError, match="'de'"):
        fragments.fragment_file("de", Source.AUTO)


async def test_regenerating_gives_the_same_fragments(tmp_path: Path) -> None:
    """Same texts, same engine: the same length (byte for byte with the same
    espeak-ng and ffmpeg; other versions may differ slightly)."""
    lines = await fragments.generate(tmp_path)
    assert len(lines) == len(templates.LANGUAGES) * len(Source)
    for language in templates.LANGUAGES:
        for stem in fragments.FRAGMENTS.values():
            made = read_wav(tmp_path / language / f"{stem}.wav")
            shipped = read_wav(fragments.source_folder() / language / f"{stem}.wav")
            assert made.duration_s == pytest.approx(shipped.duration_s, abs=0.3)
