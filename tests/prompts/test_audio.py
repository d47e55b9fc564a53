"""install_recording: every accepted format in, four Asterisk formats out, or a plain refusal."""

from __future__ import annotations

import os
import random
import stat
import zipfile
from pathlib import Path

import pytest

from announcer.prompts import audio
from announcer.prompts.audio import AudioProblem, InstalledSound, install_recording

from .media import FORMATS, decode_raw, ffmpeg, read_wav, rms_dbfs, silence, speech, tone

PAD = audio.PAD_S


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


async def install(
    source: Path, sounds: Path, name: str = "rec-test", max_s: float = 120.0
) -> InstalledSound:
    result = await install_recording(source, sounds, name, max_s)
    assert isinstance(result, InstalledSound), result
    return result


async def refused(source: Path, sounds: Path, max_s: float = 120.0) -> str:
    result = await install_recording(source, sounds, "rec-refused", max_s)
    assert isinstance(result, AudioProblem), result
    assert not any(name.startswith("rec-refused") for name in listing(sounds))
    return result.reason


@pytest.mark.parametrize("suffix", sorted(FORMATS))
async def test_every_format_becomes_four_telephony_files(tmp_path: Path, suffix: str) -> None:
    """A 2 s tone between 1 s of silence each side, at 44.1 kHz stereo, quiet."""
    source = tone(tmp_path / f"in.{suffix}", 2.0, level_db=-35, lead_s=1.0, trail_s=1.0, channels=2)
    sounds = tmp_path / "var" / "sounds"  # created on the way
    result = await install(source, sounds)

    assert result.name == "rec-test"
    assert result.path == str(sounds.absolute() / "rec-test")
    assert files_under(sounds) == {f"rec-test.{ext}" for ext in ("wav", "ulaw", "alaw", "sln16")}
    for file in sounds.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o644  # Asterisk, another user, reads them

    wav = read_wav(sounds / "rec-test.wav")
    assert (wav.rate, wav.channels, wav.width, wav.header) == (8000, 1, 2, 44)
    # the silence at both ends is gone, but for a short pad
    assert 2.0 <= wav.duration_s <= 2.0 + 2 * PAD + 0.1
    assert result.duration_s == pytest.approx(wav.duration_s, abs=0.01)
    assert rms_dbfs(wav.samples[:400]) < -40  # the first 50 ms: pad, not tone
    # brought from -38 dBFS RMS to about -18
    middle = wav.samples[round(8000 * 0.4) : -round(8000 * 0.4)]
    assert -20.0 <= rms_dbfs(middle) <= -16.0
    assert max(abs(s) for s in wav.samples) < 32768 * 10 ** (audio.PEAK_CEILING_DBFS / 20) + 2

    # G.711: one byte a sample at 8 kHz; sln16: two bytes a sample at 16 kHz
    ulaw, alaw, sln16 = (sounds / f"rec-test.{ext}" for ext in ("ulaw", "alaw", "sln16"))
    assert ulaw.stat().st_size == alaw.stat().st_size == wav.frames
    assert sln16.stat().st_size == pytest.approx(4 * wav.frames, abs=8)
    for path, fmt, rate in ((ulaw, "mulaw", 8000), (alaw, "alaw", 8000), (sln16, "s16le", 16000)):
        samples = decode_raw(path, fmt, rate)
        assert len(samples) / rate == pytest.approx(wav.duration_s, abs=0.01)
        assert rms_dbfs(samples) == pytest.approx(rms_dbfs(wav.samples), abs=0.5)


async def test_speech_is_levelled_and_trimmed(tmp_path: Path) -> None:
    source = speech(tmp_path / "message.ogg", "Уважаемые абоненты, в районе Северный авария.")
    raw = read_wav(source.with_name("message-espeak.wav"))
    result = await install(source, tmp_path / "sounds")
    wav = read_wav(tmp_path / "sounds" / "rec-test.wav")
    assert 1.0 < wav.duration_s <= raw.duration_s + 2 * PAD
    assert result.duration_s == pytest.approx(wav.duration_s, abs=0.01)
    # speech has pauses and a high crest factor: a wider window than a tone's
    assert -26.0 <= rms_dbfs(wav.samples) <= -14.0


async def test_quiet_and_loud_recordings_come_out_alike(tmp_path: Path) -> None:
    levels = []
    for peak in (-40.0, -3.0):
        source = tone(tmp_path / f"in{peak}.wav", 1.5, level_db=peak)
        await install(source, tmp_path / "sounds", f"rec-{abs(round(peak))}")
        levels.append(
            rms_dbfs(read_wav(tmp_path / "sounds" / f"rec-{abs(round(peak))}.wav").samples)
        )
    assert levels[0] == pytest.approx(levels[1], abs=0.5)


async def test_reinstalling_replaces_the_sound_whole(tmp_path: Path) -> None:
    sounds = tmp_path / "sounds"
    await install(tone(tmp_path / "a.wav", 1.0), sounds)
    second = await install(tone(tmp_path / "b.flac", 3.0), sounds)
    assert read_wav(sounds / "rec-test.wav").duration_s == pytest.approx(second.duration_s)
    assert files_under(sounds) == {f"rec-test.{ext}" for ext in audio.EXTENSIONS}  # no temp files


async def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    assert "empty (0 bytes)" in await refused(tmp_path / "empty.wav", tmp_path / "sounds")


async def test_random_bytes_named_mp3(tmp_path: Path) -> None:
    source = tmp_path / "message.mp3"
    source.write_bytes(random.Random(7).randbytes(50_000))
    assert await refused(source, tmp_path / "sounds") == audio.UNREADABLE
    assert "not an audio file we can read" in audio.UNREADABLE


async def test_word_document_renamed_mp3(tmp_path: Path) -> None:
    source = tmp_path / "message.mp3"
    with zipfile.ZipFile(source, "w") as docx:
        docx.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        docx.writestr("word/document.xml", "<w:document>Авария в районе Северный</w:document>")
    assert await refused(source, tmp_path / "sounds") == audio.UNREADABLE


async def test_a_real_mp3_named_wav_is_read_by_content(tmp_path: Path) -> None:
    source = tone(tmp_path / "in.mp3", 1.5)
    await install(source.rename(tmp_path / "in.wav"), tmp_path / "sounds")


@pytest.mark.parametrize("suffix", ["flac", "mp3", "webm"])
async def test_cut_short_is_refused(tmp_path: Path, suffix: str) -> None:
    """Containers that declare their length: half a file is noticed."""
    whole = tone(tmp_path / f"whole.{suffix}", 10.0).read_bytes()
    source = tmp_path / f"half.{suffix}"
    source.write_bytes(whole[: len(whole) // 2])
    reason = await refused(source, tmp_path / "sounds")
    assert reason.startswith("the file is cut short: it should last 10 s but only")


async def test_a_guessed_length_is_not_taken_for_a_declared_one(tmp_path: Path) -> None:
    """A VBR MP3 without a Xing header: ffprobe guesses its length from the first
    frames' bitrate (silence: few bits), here nearly twice the truth."""
    source = tmp_path / "vbr.mp3"
    noise = "anoisesrc=d=2:c=white:a=0.5:r=44100,adelay=5000"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        noise,
        "-c:a",
        "libmp3lame",
        "-q:a",
        "0",
        "-write_xing",
        "0",
        str(source),
    )
    result = await install(source, tmp_path / "sounds")
    assert result.duration_s == pytest.approx(2.0 + PAD, abs=0.1)  # nothing to pad after


async def test_m4a_without_its_index_is_unreadable(tmp_path: Path) -> None:
    whole = tone(tmp_path / "whole.m4a", 5.0).read_bytes()
    source = tmp_path / "half.m4a"
    source.write_bytes(whole[: len(whole) // 2])
    assert await refused(source, tmp_path / "sounds") == audio.UNREADABLE


async def test_a_few_bytes_of_a_file_are_refused(tmp_path: Path) -> None:
    whole = tone(tmp_path / "whole.wav", 5.0).read_bytes()
    source = tmp_path / "stub.wav"
    source.write_bytes(whole[:200])  # the header and a handful of samples
    reason = await refused(source, tmp_path / "sounds")
    assert reason == "the file is damaged: no sound could be read from it"
    source.write_bytes(whole[:20_000])  # the header and 0.2 s
    assert "too short" in await refused(source, tmp_path / "sounds")


async def test_silence(tmp_path: Path) -> None:
    reason = await refused(silence(tmp_path / "quiet.wav", 3.0), tmp_path / "sounds")
    assert reason == "the recording is silent; check the microphone"


async def test_noise_floor_alone_counts_as_silent(tmp_path: Path) -> None:
    source = tone(tmp_path / "hiss.wav", 3.0, level_db=-62.0)
    assert "silent" in await refused(source, tmp_path / "sounds")


async def test_too_long_by_what_the_file_declares(tmp_path: Path) -> None:
    """A 40-minute FLAC is refused before it is decoded."""
    source = tone(tmp_path / "long.flac", 2400.0, rate=8000)
    reason = await refused(source, tmp_path / "sounds", max_s=120.0)
    assert (
        reason == "the recording lasts 40 min; at most 2 min is allowed: record a shorter message"
    )


async def test_too_long_by_what_was_decoded(tmp_path: Path) -> None:
    source = tone(tmp_path / "long.ogg", 12.0)
    reason = await refused(source, tmp_path / "sounds", max_s=5.0)
    assert reason == "the recording lasts 12 s; at most 5 s is allowed: record a shorter message"


async def test_silence_around_the_message_does_not_count_towards_the_limit(
    tmp_path: Path,
) -> None:
    source = tone(tmp_path / "padded.wav", 4.0, lead_s=3.0, trail_s=3.0)
    result = await install(source, tmp_path / "sounds", max_s=5.0)
    assert result.duration_s < 5.0


async def test_too_short(tmp_path: Path) -> None:
    source = tone(tmp_path / "blip.wav", 0.2, lead_s=1.0, trail_s=1.0)
    reason = await refused(source, tmp_path / "sounds")
    assert reason == "the recording is too short (0.2 s of sound); it must last at least 0.5 s"


async def test_missing_file(tmp_path: Path) -> None:
    assert "disappeared" in await refused(tmp_path / "gone.wav", tmp_path / "sounds")


async def test_ffmpeg_that_takes_too_long_is_stopped(tmp_path: Path) -> None:
    source = tone(tmp_path / "in.wav", 2.0)
    result = await install_recording(source, tmp_path / "sounds", "slow", 120, timeout_s=0.001)
    assert isinstance(result, AudioProblem)
    assert result.reason.startswith("converting the recording took longer than")


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "../escape",
        "/etc/passwd",
        "a/b",
        "..",
        ".",
        "",
        "x.wav",
        "a b",
        "ж",
        "x" * 129,
        "rec\0",
        "-" * 129,
    ],
)
async def test_hostile_names_are_refused_before_anything_is_written(
    tmp_path: Path, name: str
) -> None:
    source = tone(tmp_path / "in.wav", 1.0)
    sounds = tmp_path / "a" / "b" / "sounds"
    before = files_under(tmp_path)
    with pytest.raises(ValueError, match="sound name"):
        await install_recording(source, sounds, name, 120)
    assert files_under(tmp_path) == before


async def test_a_refused_file_leaves_the_installed_sound_alone(tmp_path: Path) -> None:
    sounds = tmp_path / "sounds"
    await install(tone(tmp_path / "good.wav", 2.0), sounds, "staff-1")
    before = {p.name: p.read_bytes() for p in sounds.iterdir()}
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(os.urandom(4096))
    for source in (bad, silence(tmp_path / "quiet.wav", 2.0)):
        result = await install_recording(source, sounds, "staff-1", 120)
        assert isinstance(result, AudioProblem)
    assert {p.name: p.read_bytes() for p in sounds.iterdir()} == before


def test_durations_read_as_people_say_them() -> None:
    said = [audio.human_duration(s) for s in (0.34, 5.0, 45.2, 60, 90, 125, 2400, 7200)]
    assert said == ["0.3 s", "5 s", "45 s", "1 min", "1 min 30 s", "2 min 5 s", "40 min", "120 min"]
