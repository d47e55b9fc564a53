"""The drop folder's files: which names to take, and moving them without loss.

Names in ``incoming/`` come from staff and their copy tools: they may hold
odd bytes, line breaks or ``..``, and an entry may be a link pointing
anywhere. Nothing here follows a link or builds a path from a name other than
``folder / name`` inside the spool, and nothing overwrites: a name already
taken gets a tag before its extension.
"""

from __future__ import annotations

import logging
import os
import stat
import unicodedata
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (
    *("m4a", "mp3", "wav", "ogg", "opus", "webm", "flac", "aac"),
    *("oga", "amr", "3gp", "mp4", "caf", "aiff", "aif", "wma"),
)
"""Recordings taken (by name; the audio check then judges the content)."""
TEMP_SUFFIXES = (".part", ".tmp", ".filepart", "~")
"""Copies in progress (scp, browsers, WinSCP, editors); so are names starting with a dot."""
SIDECAR = ".toml"
NAME_MAX = 255
"""Bytes in one file name on Linux file systems."""


def shown(name: str) -> str:
    """A file name as a person can read it in a log, an error file or JSON."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def name_problem(name: str) -> str | None:
    """Why a file name is not taken as it is, or None."""
    if any("\udc80" <= c <= "\udcff" for c in name):
        return "its name has bytes that are not UTF-8 text"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "its name contains a line break or another control character"
    if name.startswith("..") or ".." in name.replace("\\", "/").split("/"):
        return "its name looks like a path out of the folder (it has '..')"
    return None


def file_problem(name: str, st: os.stat_result) -> str | None:
    """Why an entry (``lstat``-ed, never followed) is not taken, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a link to another file; links are never followed"
    if not stat.S_ISREG(st.st_mode):
        return "is not an ordinary file"
    if st.st_nlink > 1:
        return "is a hard link to a file elsewhere (it has more than one name)"
    return name_problem(name)


def in_progress(name: str) -> bool:
    """A copy tool's name for a file still being copied (``.x.m4a.Ab12``, ``x.m4a.part``)."""
    return (name.startswith(".") and not name.startswith("..")) or name.endswith(TEMP_SUFFIXES)


def copied_as(name: str) -> str:
    """Roughly the name a copy in progress will get: ``.x.m4a.Ab12`` -> ``x.m4a.Ab12``."""
    for suffix in TEMP_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.lstrip(".")


def stem(name: str) -> str:
    """``x.m4a`` -> ``x``; ``x`` -> ``x``."""
    head, dot, _ = name.rpartition(".")
    return head if dot and head else name


def extension(name: str) -> str | None:
    """``x.M4A`` -> ``m4a``; None without one."""
    return name.rpartition(".")[2].lower() if stem(name) != name else None


def fit(head: str, tag: str, tail: str) -> str:
    """``head + tag + tail``, shortening ``head`` until it fits in a file name."""
    while head and len(os.fsencode(head + tag + tail)) > NAME_MAX:
        head = head[:-1]
    return head + tag + tail


def free_names(
    folder: Path, key: str, names: list[str], note_suffix: str, stamp: str
) -> tuple[list[Path], Path]:
    """Names in ``folder`` for a drop's files (each starts with ``key``) and its
    note, none of them taken; one tag (``-STAMP``, ``-STAMP-2``, ...) for all,
    so the files of a drop keep matching names."""
    attempt = 0
    while True:
        tag = "" if attempt == 0 else f"-{stamp}" + (f"-{attempt}" if attempt > 1 else "")
        targets = [folder / fit(key, tag, name[len(key) :]) for name in names]
        note = folder / fit(shown(key), tag, note_suffix)
        wanted = [*targets, note]
        if len(set(wanted)) == len(wanted) and not any(map(os.path.lexists, wanted)):
            return targets, note
        attempt += 1


def move_aside(source: Path, folder: Path, name: str, tag: str) -> Path:
    """Rename ``source`` to ``folder/name``, or ``name`` with ``tag`` when taken."""
    head = stem(name)
    tail = name[len(head) :]
    target, attempt = folder / name, 1
    while os.path.lexists(target):
        target = folder / fit(head, tag if attempt == 1 else f"{tag}-{attempt}", tail)
        attempt += 1
    os.rename(source, target)
    return target


def read_small(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a file, opened without following a link.

    Raises ``OSError`` (a link: ``ELOOP``; a FIFO never blocks)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)


def write_note(path: Path, text: str) -> Path | None:
    """Create ``path`` (never over an existing file); None, logged, when it fails."""
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        logger.exception("could not write %s", shown(str(path)))
        return None
    return path


def iso(moment: float | None) -> str | None:
    """A Unix time as local ISO 8601 with its offset."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")
