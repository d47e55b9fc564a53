"""The shipped fragments: prompts that play with no text-to-speech at all.

They live in ``announcer/prompts/sounds/LANGUAGE/NAME.wav`` (package data, so
an installed announcer has them too), as 8 kHz 16-bit mono WAV, spoken by
espeak-ng from the templates without district names or times. Regenerate
them after changing a template or upgrading espeak-ng:

    .venv/bin/python -m announcer.prompts.fragments

The same espeak-ng and ffmpeg give the same bytes, so a regeneration that
changed nothing shows no difference in git.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from contextlib import AbstractContextManager
from importlib import resources
from pathlib import Path

from announcer.announcements import Source
from announcer.prompts import audio, templates, tts

#: The fragment each source falls back to.
FRAGMENTS = {
    Source.AUTO: "outage",
    Source.MAINTENANCE: "maintenance",
    Source.RESTORED: "restored",
    Source.STAFF: "staff",
}
MAX_FRAGMENT_S = 15.0


def source_folder() -> Path:
    """Where the fragments are kept in a source checkout."""
    return Path(__file__).resolve().parent / "sounds"


def fragment_file(language: str, source: Source) -> AbstractContextManager[Path]:
    """The shipped WAV for ``source`` as a real file, however announcer was installed."""
    if language not in templates.LANGUAGES:
        raise ValueError(f"no fragments in language {language!r}; use one of {templates.LANGUAGES}")
    traversable = resources.files("announcer.prompts") / "sounds" / language
    return resources.as_file(traversable / f"{FRAGMENTS[source]}.wav")


async def generate(folder: Path) -> list[str]:
    """Speak every fragment with espeak-ng into ``folder``; one line per file."""
    engine = tts.EspeakEngine()
    lines = []
    for language in templates.LANGUAGES:
        (folder / language).mkdir(parents=True, exist_ok=True)
        for source, stem in FRAGMENTS.items():
            text = templates.text_for(source, language, [], None, None)
            speech = await engine.synthesize(text, language)
            if isinstance(speech, tts.TtsFailure):
                raise RuntimeError(f"{language}/{stem}: {speech.reason}")
            with tempfile.TemporaryDirectory(prefix="announcer-fragment-") as scratch:
                spoken = Path(scratch) / f"speech{speech.suffix}"
                spoken.write_bytes(speech.data)
                sounds = Path(scratch) / "sounds"
                done = await audio.install_recording(spoken, sounds, stem, MAX_FRAGMENT_S)
                if isinstance(done, audio.AudioProblem):
                    raise RuntimeError(f"{language}/{stem}: {done.reason}")
                target = folder / language / f"{stem}.wav"
                audio.write_atomic(target, (sounds / f"{stem}.wav").read_bytes())
            lines.append(f"{target}: {done.duration_s:.1f} s  {text}")
    return lines


def main() -> int:
    for line in asyncio.run(generate(source_folder())):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
