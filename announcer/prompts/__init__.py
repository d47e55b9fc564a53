"""Prompts: what callers hear, as files Asterisk plays without transcoding.

- ``audio``: recordings in (wav, mp3, ogg/opus, m4a, webm, flac), checked,
  trimmed, levelled and written atomically as .wav, .ulaw, .alaw and .sln16;
- ``templates``: the automatic prompts' texts, in Russian and English;
- ``tts``: text-to-speech engines (gTTS, espeak-ng);
- ``renderer``: text -> installed sound, cached, with the shipped fragments
  as the last resort;
- ``fragments``: regenerates the shipped fragments in ``sounds/``.
"""

from announcer.prompts.audio import AudioProblem, InstalledSound, install_recording

__all__ = ["AudioProblem", "InstalledSound", "install_recording"]
