"""What a complete drop becomes: checked, converted, published, filed away.

``Dropbox`` decides when a drop is complete and moves its files out of staff's
reach; ``Intake`` judges them (the files, the sidecar, the inventory, the
audio, in that order, cheapest first) and files them in ``done/`` with a
receipt or in ``rejected/`` with a note saying which file, what is wrong and
what to do.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from announcer import staff
from announcer.announcements import Announcement
from announcer.config import Settings
from announcer.keys import Keys
from announcer.prompts.audio import AudioProblem, install_recording
from announcer.sidecar import MAX_BYTES, Sidecar, parse_sidecar
from announcer.spool import (
    AUDIO_EXTENSIONS,
    extension,
    file_problem,
    free_names,
    iso,
    read_small,
    shown,
    write_note,
)
from announcer.staff import Refused

logger = logging.getLogger(__name__)

_AGAIN = "copy the recording and then its sidecar into incoming/ again"
_ADVICE_SIDECAR = f"Correct the sidecar (the .toml file) and {_AGAIN}."
_ADVICE_AUDIO = f"Record or export the message again (m4a, mp3 or wav), then {_AGAIN}."
_ADVICE_FILES = (
    "Put the files themselves (not links) in incoming/, named with letters, digits,"
    f" spaces, - or _; then {_AGAIN}."
)
_ADVICE_FAULT = (
    "This is a fault on announcer's side, not in your files: tell the administrator"
    " (the log has the details), then copy the files into incoming/ again."
)


@dataclass(frozen=True)
class Outcome:
    """What became of one drop taken from incoming/."""

    name: str
    """the drop as staff named it (without .toml), printable"""
    accepted: bool
    announcement_id: str | None
    reason: str | None
    """why it was rejected: which file, what is wrong"""
    files: tuple[Path, ...]
    """where the dropped files are now: in done/ or rejected/"""
    note: Path | None
    """NAME.receipt.json in done/ or NAME.error.txt in rejected/"""


@dataclass(frozen=True)
class Drop:
    """Files in incoming/ that go together."""

    key: str
    """what their names share: "Авария" for Авария.m4a and Авария.toml"""
    names: tuple[str, ...]
    sidecar: str | None
    """None for a file rejected on sight (a link, an odd name)"""


@dataclass(frozen=True)
class Refusal:
    reason: str
    """which file, what is wrong"""
    advice: str
    """what to do"""


def fault(exc: Exception) -> Refusal:
    """An unexpected error while taking a drop, for the drop's note."""
    return Refusal(f"announcer failed while taking it ({type(exc).__name__}: {exc})", _ADVICE_FAULT)


Verdict = tuple[Announcement, str | None] | Refusal
"""published (with the sound path of its recording, if any), or why not"""


class Intake:
    """Judges complete drops and files them away; ``Dropbox`` says which and when."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.spool = settings.dropbox.spool

    async def judge(self, drop: Drop, work: Path, sound_name: str) -> Verdict:
        """Check a drop moved to ``work`` and publish it, or say why not."""
        for name in drop.names:
            st = os.lstat(work / name)
            problem = file_problem(name, st)
            if problem:
                return Refusal(f"{shown(name)} {problem}", _ADVICE_FILES)
            if st.st_size == 0 and name != drop.sidecar:
                return Refusal(
                    f"{shown(name)} is empty (0 bytes): the copy did not work",
                    "Check that the recording plays on your computer, then copy it and then"
                    " its sidecar into incoming/ again.",
                )
        if drop.sidecar is None:
            return Refusal(f"no sidecar came with {shown(drop.names[0])}", _ADVICE_FILES)
        sidecar_name = shown(drop.sidecar)
        others = [n for n in drop.names if n != drop.sidecar]
        if len(others) > 1:
            listed = ", ".join(map(shown, others))
            return Refusal(
                f"{sidecar_name} goes with more than one file ({listed}); keep only the recording",
                f"Remove the extra files, then {_AGAIN}.",
            )
        recording = others[0] if others else None
        kind = extension(recording) if recording else None
        if recording and kind not in AUDIO_EXTENSIONS:
            return Refusal(
                f"{shown(recording)} is not a recording by its name;"
                f" announcer takes {', '.join(AUDIO_EXTENSIONS[:8])}",
                _ADVICE_AUDIO,
            )
        try:
            data = read_small(work / drop.sidecar, MAX_BYTES)
        except OSError as exc:
            return Refusal(
                f"{sidecar_name} cannot be read ({exc.strerror})",
                f"Ask the administrator to check the drop folder's permissions, then {_AGAIN}.",
            )
        sidecar = parse_sidecar(data, sidecar_name, time.time())
        if isinstance(sidecar, Refused):
            return Refusal(sidecar.reason, _ADVICE_SIDECAR)
        if recording is None and not sidecar.text:
            return Refusal(
                f"there is no recording beside {sidecar_name} ({shown(drop.key)}.m4a,"
                f' .mp3, .wav ...) and it has no text = "..." to speak',
                "Copy the recording first and then the sidecar into incoming/,"
                " or add a text to the sidecar.",
            )
        return await self._publish(sidecar_name, sidecar, work, recording, sound_name)

    async def _publish(
        self,
        sidecar_name: str,
        sidecar: Sidecar,
        work: Path,
        recording: str | None,
        sound_name: str,
    ) -> Verdict:
        # the cheap checks first: no conversion for a drop naming an unknown district
        trial = sidecar.request("(the recording)" if recording else None)
        checked = await staff.resolve(self.redis, self.keys, self.settings, trial, time.time())
        if isinstance(checked, Refused):
            return Refusal(f"{sidecar_name}: {checked.reason}", _ADVICE_SIDECAR)
        sound_path = None
        if recording is not None:
            sound = await install_recording(
                work / recording,
                self.settings.prompts.sounds_dir,
                name=sound_name,
                max_seconds=self.settings.dropbox.max_recording_s,
            )
            if isinstance(sound, AudioProblem):
                return Refusal(f"{shown(recording)}: {sound.reason}", _ADVICE_AUDIO)
            sound_path = sound.path
        request = sidecar.request(sound_path)
        published = await staff.publish(
            self.redis, self.keys, self.settings, request, ident=sound_name
        )
        if isinstance(published, Refused):
            if sound_path:
                logger.warning("%s was converted but is not used", sound_path)
            return Refusal(f"{sidecar_name}: {published.reason}", _ADVICE_SIDECAR)
        return published, sound_path

    def file(self, drop: Drop, work: Path, verdict: Verdict, taken_at: float) -> Outcome:
        """Move the drop's files to done/ or rejected/ and leave the note beside them."""
        accepted = not isinstance(verdict, Refusal)
        folder = self.spool / ("done" if accepted else "rejected")
        suffix = ".receipt.json" if accepted else ".error.txt"
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(taken_at))
        targets, note = free_names(folder, drop.key, list(drop.names), suffix, stamp)
        for name, target in zip(drop.names, targets, strict=True):
            os.rename(work / name, target)
        kept = tuple(targets)
        name = shown(drop.key)
        if isinstance(verdict, Refusal):
            logger.warning("rejected %s: %s", name, verdict.reason)
            written = write_note(note, _error_text(drop, verdict, kept, taken_at))
            return Outcome(name, False, None, verdict.reason, kept, written)
        announcement, sound_path = verdict
        logger.info(
            "published %s as %s for %s until %s",
            name,
            announcement.id,
            ", ".join(announcement.targets) or "everyone",
            iso(announcement.expires),
        )
        written = write_note(note, _receipt(announcement, sound_path, kept, taken_at))
        return Outcome(name, True, announcement.id, None, kept, written)


def _error_text(drop: Drop, refusal: Refusal, kept: tuple[Path, ...], taken_at: float) -> str:
    return (
        f"NOT PUBLISHED: {', '.join(map(shown, drop.names))}\n\n"
        f"What is wrong: {refusal.reason}\n\n"
        f"What to do: {refusal.advice}\n\n"
        f"The files are kept here as they were dropped: {', '.join(shown(p.name) for p in kept)}"
        f"\nTaken at {iso(taken_at)}.\n"
    )


def _receipt(
    announcement: Announcement, sound_path: str | None, kept: tuple[Path, ...], taken_at: float
) -> str:
    receipt = {
        "announcement": announcement.id,
        "scope": announcement.scope.value,
        "targets": list(announcement.targets),
        "expires": iso(announcement.expires),
        "eta": iso(announcement.eta),
        "text": announcement.text,
        "prompt": sound_path,
        "author": announcement.author,
        "taken_at": iso(taken_at),
        "files": [shown(p.name) for p in kept],
    }
    return json.dumps(receipt, ensure_ascii=False, indent=2) + "\n"
