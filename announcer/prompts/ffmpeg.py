"""ffprobe and ffmpeg (and espeak-ng) as asyncio subprocesses, each under a deadline.

Every call is killed when its deadline passes or its caller is cancelled, so
a hostile or broken file can never hold the daemon. Paths handed in are ours
(files in a private temporary folder), never names staff chose.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

#: Raw signed 16-bit little-endian mono: what decoding gives and encoding takes.
PCM_RATE = 16_000
PCM_WIDTH = 2


class ToolMissing(RuntimeError):
    """ffmpeg, ffprobe or espeak-ng is not installed: a misconfiguration, not a bad file."""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: str


@dataclass(frozen=True)
class Probe:
    """What ffprobe read from a file's content."""

    formats: frozenset[str]
    """the demuxer's names, e.g. {"mov", "mp4", "m4a", ...} or {"wav"}"""
    audio_codec: str | None
    """codec of the first audio stream; None when the file has no audio"""
    duration_s: float | None
    """what the container declares, when it declares anything (not a guess)"""


async def run(
    argv: list[str], *, stdin: bytes | None = None, timeout_s: float, package: str = "ffmpeg"
) -> Completed:
    """Run one tool; raise ``TimeoutError`` after ``timeout_s`` (the process is
    killed), ``ToolMissing`` naming the Debian ``package`` when it is absent."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise ToolMissing(
            f"{argv[0]} is not installed; install the Debian package {package}"
        ) from None
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Completed(proc.returncode, out, err.decode("utf-8", "replace"))


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


async def probe(path: Path, *, timeout_s: float) -> Probe | None:
    """What the file holds, judged by content; None when ffprobe cannot read it."""
    done = await run(
        [
            FFPROBE,
            "-v",
            "warning",
            "-show_entries",
            "format=format_name,duration:stream=codec_type,codec_name,duration",
            "-of",
            "json",
            f"file:{path}",
        ],
        timeout_s=timeout_s,
    )
    if done.returncode != 0:
        logger.debug("ffprobe refused %s: %s", path, done.stderr.strip())
        return None
    try:
        info = json.loads(done.stdout)
    except ValueError:
        return None
    fmt = info.get("format") or {}
    audio = [s for s in info.get("streams") or [] if s.get("codec_type") == "audio"]
    first = audio[0] if audio else {}
    duration_s = _float(fmt.get("duration")) or _float(first.get("duration"))
    if "Estimating duration from bitrate" in done.stderr:
        duration_s = None  # a guess (an MP3 without a Xing header), not a declaration
    return Probe(
        formats=frozenset(str(fmt.get("format_name", "")).split(",")) - {""},
        audio_codec=first.get("codec_name") if audio else None,
        duration_s=duration_s,
    )


async def decode(path: Path, *, limit_s: float, timeout_s: float) -> Completed:
    """The first audio stream as raw 16 kHz mono PCM, at most ``limit_s`` of it."""
    return await run(
        [
            FFMPEG,
            "-nostdin",
            "-v",
            "error",
            "-i",
            f"file:{path}",
            "-map",
            "0:a:0",
            "-vn",
            "-sn",
            "-dn",
            "-t",
            f"{limit_s:.3f}",
            "-ac",
            "1",
            "-ar",
            str(PCM_RATE),
            "-c:a",
            "pcm_s16le",
            "-f",
            "s16le",
            "pipe:1",
        ],
        timeout_s=timeout_s,
    )


async def encode_telephony(pcm: bytes, folder: Path, *, timeout_s: float) -> dict[str, Path]:
    """Raw 16 kHz PCM -> 8 kHz ``out.wav``, ``out.ulaw`` and ``out.alaw`` in ``folder``.

    The WAV is the plain 44-byte-header kind (no metadata chunks), which every
    Asterisk version reads.
    """
    outputs = {
        "wav": (["-c:a", "pcm_s16le", "-bitexact", "-map_metadata", "-1", "-f", "wav"]),
        "ulaw": ["-c:a", "pcm_mulaw", "-f", "mulaw"],
        "alaw": ["-c:a", "pcm_alaw", "-f", "alaw"],
    }
    argv = [FFMPEG, "-nostdin", "-v", "error", "-y"]
    argv += ["-f", "s16le", "-ar", str(PCM_RATE), "-ac", "1", "-i", "pipe:0"]
    paths: dict[str, Path] = {}
    for ext, options in outputs.items():
        paths[ext] = folder / f"out.{ext}"
        argv += ["-ar", "8000", "-ac", "1", *options, f"file:{paths[ext]}"]
    done = await run(argv, stdin=pcm, timeout_s=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg could not encode for Asterisk: {done.stderr.strip()}")
    return paths
