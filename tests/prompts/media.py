"""Test audio made with the real ffmpeg and espeak-ng, and ways to measure it."""

from __future__ import annotations

import array
import math
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

#: file suffix -> ffmpeg output options; every container install_recording accepts
FORMATS: dict[str, list[str]] = {
    "wav": ["-c:a", "pcm_s16le"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "ogg": ["-c:a", "libvorbis"],
    "opus": ["-c:a", "libopus", "-f", "ogg"],
    "m4a": ["-c:a", "aac", "-f", "ipod"],
    "webm": ["-c:a", "libopus", "-f", "webm"],
    "flac": ["-c:a", "flac"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def tone(
    path: Path,
    seconds: float,
    *,
    level_db: float = -20.0,
    lead_s: float = 0.0,
    trail_s: float = 0.0,
    rate: int = 44_100,
    channels: int = 1,
    frequency: int = 440,
) -> Path:
    """A sine tone of ``seconds`` between ``lead_s`` and ``trail_s`` of digital silence,
    peaking at ``level_db`` dBFS, in the format ``path``'s suffix names."""
    amplitude = 10 ** (level_db / 20)
    chain = f"aevalsrc={amplitude:.6f}*sin(2*PI*{frequency}*t):s={rate}:d={seconds}"
    if lead_s:
        chain += f",adelay={round(lead_s * 1000)}"
    if trail_s:
        chain += f",apad=pad_dur={trail_s}"
    if channels > 1:
        chain += f",aformat=channel_layouts={'stereo' if channels == 2 else channels}"
    ffmpeg("-f", "lavfi", "-i", chain, *FORMATS[path.suffix[1:]], str(path))
    return path


def silence(path: Path, seconds: float) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r=16000:cl=mono:d={seconds}", str(path))
    return path


def speech(path: Path, text: str, voice: str = "ru") -> Path:
    """espeak-ng speaking ``text``, converted to ``path``'s format."""
    raw = path.with_name(path.stem + "-espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, timeout=60)
    ffmpeg("-i", str(raw), *FORMATS[path.suffix[1:]], str(path))
    return path


@dataclass(frozen=True)
class Wav:
    rate: int
    channels: int
    width: int
    frames: int
    header: int
    samples: array.array[int]

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate


def read_wav(path: Path) -> Wav:
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
        samples = array.array("h", frames)
        info = (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes())
    return Wav(*info, path.stat().st_size - len(frames), samples)


def decode_raw(path: Path, fmt: str, rate: int) -> array.array[int]:
    """A headerless file (mulaw, alaw, s16le) as 16-bit samples, decoded by ffmpeg."""
    out = subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-v", "error", "-f", fmt, "-ar", str(rate), "-ac", "1"),
            *("-i", str(path), "-f", "s16le", "-c:a", "pcm_s16le", "pipe:1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return array.array("h", out)


def rms_dbfs(samples: array.array[int] | list[int]) -> float:
    if not samples:
        return -math.inf
    power = sum(s * s for s in samples) / len(samples)
    return 10 * math.log10(power / 32768**2) if power else -math.inf
