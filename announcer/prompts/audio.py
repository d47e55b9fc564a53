"""Recordings and rendered speech -> sounds Asterisk plays without transcoding.

``install_recording`` reads any audio file ffmpeg can (judged by content, not
by its name), refuses with a plain reason what callers should not hear (empty,
not audio, cut short, silent, too long, too short), trims the silence at both
ends, evens out the loudness and writes four files into the sounds folder:

- ``NAME.wav``: 8 kHz, 16-bit, mono PCM, the plain 44-byte header;
- ``NAME.ulaw`` and ``NAME.alaw``: raw G.711 at 8 kHz;
- ``NAME.sln16``: raw signed linear, 16 kHz, 16-bit, mono, little-endian.

Asterisk picks whichever matches the caller's codec. Each file is written to
a hidden temporary file beside it, flushed to disk and renamed over the old
one, so the dialplan never plays half a file; the ``.wav`` comes last, and a
sound counts as installed when all four exist.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from announcer.prompts import ffmpeg

with warnings.catch_warnings():
    # pydub 0.25 imports the stdlib audioop (deprecated in 3.11, gone in 3.13,
    # where the audioop-lts package stands in) and its utils.py has regex
    # strings with invalid escapes, reported when it is compiled.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)
    warnings.filterwarnings("ignore", "invalid escape sequence", SyntaxWarning)
    from pydub import AudioSegment  # type: ignore[import-untyped]

#: What a sound's name may be made of: it becomes a file name in sounds_dir.
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: The four files of one installed sound, in the order they are written.
EXTENSIONS = ("sln16", "ulaw", "alaw", "wav")

MIN_SECONDS = 0.5
#: The loudest 20 ms of a recording below this: nothing but noise floor.
SILENT_DBFS = -50.0
#: Leading and trailing audio quieter than the loudest 20 ms by this is trimmed.
TRIM_BELOW_PEAK_DB = 35.0
#: Kept before the first and after the last sound, so onsets are not clipped.
PAD_S = 0.15
#: Speech level aimed at (RMS of the active parts), and the highest peak allowed.
TARGET_DBFS = -18.0
PEAK_CEILING_DBFS = -1.0
MAX_GAIN_DB = 40.0
#: Decoding reads this much past max_seconds, for silence that trimming removes.
TRIM_ALLOWANCE_S = 30.0
FFMPEG_TIMEOUT_S = 60.0

#: Containers accepted (ffprobe's names); what ffmpeg calls the rest is refused.
AUDIO_FORMATS = frozenset(
    {"wav", "w64", "mp3", "ogg", "mov", "mp4", "m4a", "matroska", "webm", "flac", "aac"}
    | {"aiff", "amr", "asf", "caf"}
)
UNREADABLE = "not an audio file we can read; save the message as wav, mp3, ogg, m4a, webm or flac"
_CHUNK_MS = 20


@dataclass(frozen=True)
class AudioProblem:
    """Why a recording is refused: one plain sentence for a support engineer."""

    reason: str


@dataclass(frozen=True)
class InstalledSound:
    name: str
    """file stem inside sounds_dir, e.g. "rec-3f9a1c2b\""""
    path: str
    """what the dialplan plays: str(sounds_dir / name), absolute, no extension"""
    duration_s: float


def check_name(name: str) -> str:
    """``name`` itself when it is a safe file stem; ``ValueError`` otherwise."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"sound name {name!r} refused: use 1 to 128 of the characters A-Z, a-z, 0-9, _ and -"
        )
    return name


def sound_path(sounds_dir: Path, name: str) -> str:
    """What the dialplan plays for ``name``: absolute, without extension."""
    return str(sounds_dir.absolute() / check_name(name))


def is_installed(sounds_dir: Path, name: str) -> bool:
    """All four files of ``name`` are in place and not empty."""
    try:
        return all(path.stat().st_size > 0 for path in installed_files(sounds_dir, name))
    except OSError:
        return False


def human_duration(seconds: float) -> str:
    """40 min, 2 min, 1 min 30 s, 45 s, 5 s, 0.3 s: how a person would say it."""
    if seconds < 10:
        return f"{seconds:.1f}".removesuffix(".0") + " s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes >= 10 or rest == 0:
        return f"{round(seconds / 60)} min"
    return f"{minutes} min {rest} s"


async def install_recording(
    source: Path,
    sounds_dir: Path,
    name: str,
    max_seconds: float,
    *,
    timeout_s: float = FFMPEG_TIMEOUT_S,
) -> InstalledSound | AudioProblem:
    """Convert ``source`` into ``sounds_dir/name.{wav,ulaw,alaw,sln16}``.

    Returns the installed sound, or why the file was refused (nothing is
    written then, and an existing sound of that name is left as it was).
    Raises ``ValueError`` for a ``name`` that is not a plain file stem,
    ``OSError`` when the sounds folder cannot be written (the server's
    trouble, not the file's: try again later), and ``ffmpeg.ToolMissing``
    without ffmpeg. ``timeout_s`` bounds each ffmpeg run.
    """
    check_name(name)
    with tempfile.TemporaryDirectory(prefix="announcer-audio-") as scratch:
        folder = Path(scratch)
        copied = await asyncio.to_thread(_snapshot, source, folder / "input")
        if isinstance(copied, AudioProblem):
            return copied
        try:
            prepared = await _prepare(copied, max_seconds, timeout_s)
            if isinstance(prepared, AudioProblem):
                return prepared
            pcm, duration_s = prepared
            encoded = await ffmpeg.encode_telephony(pcm, folder, timeout_s=timeout_s)
        except TimeoutError:
            return AudioProblem(
                f"converting the recording took longer than {human_duration(timeout_s)}; "
                "the file may be damaged: export it again"
            )
        await asyncio.to_thread(_write_sound, sounds_dir, name, pcm, encoded)
    return InstalledSound(name, sound_path(sounds_dir, name), round(duration_s, 3))


def _snapshot(source: Path, copy: Path) -> Path | AudioProblem:
    """Copy the file under a neutral name: ffmpeg then judges by content alone,
    and staff overwriting the original mid-way cannot mix two files."""
    try:
        if source.stat().st_size == 0:
            return AudioProblem("the file is empty (0 bytes); copy the recording again")
        shutil.copyfile(source, copy)
    except FileNotFoundError:
        return AudioProblem("the file disappeared before it could be read")
    except IsADirectoryError:
        return AudioProblem(f"{source.name} is a folder, not an audio file")
    except OSError as exc:
        return AudioProblem(f"the file cannot be read ({exc.strerror}); check its permissions")
    return copy


async def _prepare(
    copy: Path, max_seconds: float, timeout_s: float
) -> tuple[bytes, float] | AudioProblem:
    info = await ffmpeg.probe(copy, timeout_s=timeout_s)
    if info is None or info.audio_codec is None or not info.formats & AUDIO_FORMATS:
        return AudioProblem(UNREADABLE)
    declared = info.duration_s
    if declared is not None and declared > max_seconds + TRIM_ALLOWANCE_S:
        return _too_long(declared, max_seconds)
    done = await ffmpeg.decode(copy, limit_s=max_seconds + TRIM_ALLOWANCE_S, timeout_s=timeout_s)
    pcm = done.stdout[: len(done.stdout) // ffmpeg.PCM_WIDTH * ffmpeg.PCM_WIDTH]
    if not pcm:
        return AudioProblem("the file is damaged: no sound could be read from it")
    decoded_s = len(pcm) / (ffmpeg.PCM_RATE * ffmpeg.PCM_WIDTH)
    if declared is not None and declared >= 1.0 and decoded_s < declared * 0.9 - 0.2:
        return AudioProblem(
            f"the file is cut short: it should last {human_duration(declared)} but only "
            f"{human_duration(decoded_s)} of it can be read; copy or export it again"
        )
    shaped = await asyncio.to_thread(_shape, pcm)
    if isinstance(shaped, AudioProblem):
        return shaped
    out, sound_s = shaped
    duration_s = len(out) / (ffmpeg.PCM_RATE * ffmpeg.PCM_WIDTH)
    if duration_s > max_seconds:
        return _too_long(max(duration_s, declared or 0.0), max_seconds)
    if sound_s < MIN_SECONDS:
        return AudioProblem(
            f"the recording is too short ({human_duration(sound_s)} of sound); "
            f"it must last at least {human_duration(MIN_SECONDS)}"
        )
    return out, duration_s


def _too_long(duration_s: float, max_seconds: float) -> AudioProblem:
    return AudioProblem(
        f"the recording lasts {human_duration(duration_s)}; at most "
        f"{human_duration(max_seconds)} is allowed: record a shorter message"
    )


def _level_db(power: float) -> float:
    """dBFS of a mean square over a full-scale square wave's."""
    return 10 * math.log10(power / float(2**15) ** 2) if power > 0 else -math.inf


def _shape(pcm: bytes) -> tuple[bytes, float] | AudioProblem:
    """Trim the silence at both ends and bring speech to TARGET_DBFS.

    Returns the new PCM and how long the sound lasts between the trimmed ends
    (without the pads)."""
    audio = AudioSegment(data=pcm, sample_width=2, frame_rate=ffmpeg.PCM_RATE, channels=1)
    powers = [float(chunk.rms) ** 2 for chunk in audio[::_CHUNK_MS]]
    loudest = _level_db(max(powers, default=0.0))
    if loudest < SILENT_DBFS:
        return AudioProblem("the recording is silent; check the microphone")
    floor = loudest - TRIM_BELOW_PEAK_DB
    loud = [i for i, p in enumerate(powers) if _level_db(p) >= floor]
    pad = round(PAD_S * 1000)
    start = max(0, loud[0] * _CHUNK_MS - pad)
    end = min(len(audio), (loud[-1] + 1) * _CHUNK_MS + pad)
    trimmed = audio[start:end]
    # the level of the speech itself, pauses left out (roughly ITU-T P.56)
    active = [p for p in powers[loud[0] : loud[-1] + 1] if _level_db(p) >= loudest - 25.0]
    level = _level_db(sum(active) / len(active))
    gain = min(TARGET_DBFS - level, PEAK_CEILING_DBFS - trimmed.max_dBFS, MAX_GAIN_DB)
    shaped: bytes = trimmed.apply_gain(gain).raw_data
    return shaped, (loud[-1] + 1 - loud[0]) * _CHUNK_MS / 1000


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` so readers see the old file or the whole new one.

    A hidden temporary file in the same folder, flushed to disk, then renamed
    over ``path``. ``mode`` 0644: Asterisk runs as another user and must read it.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_sound(sounds_dir: Path, name: str, pcm16k: bytes, encoded: dict[str, Path]) -> None:
    sounds_dir.mkdir(parents=True, exist_ok=True)
    data = {"sln16": pcm16k} | {ext: encoded[ext].read_bytes() for ext in ("ulaw", "alaw", "wav")}
    for ext in EXTENSIONS:
        write_atomic(sounds_dir / f"{name}.{ext}", data[ext])
    fsync_dir(sounds_dir)


def installed_files(sounds_dir: Path, name: str) -> Iterable[Path]:
    """The four files of one sound, whether or not they exist."""
    return [sounds_dir / f"{check_name(name)}.{ext}" for ext in EXTENSIONS]
