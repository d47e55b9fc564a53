"""The sidecar of a staff drop: ``NAME.toml`` beside the recording ``NAME.m4a``.

Pure: bytes in, a ``Sidecar`` or a ``Refused`` out, no I/O. What staff write::

    districts = ["Северный", "Южный"]   # ids or names; or: all = true ; or: switches = [...]
    ttl = "2h"                          # or: until = "12:00"; neither: [announcements] staff_ttl_s
    eta = "12:00"                       # optional: expected restoration, spoken in the prompt
    text = "Авария у магистрального провайдера"   # optional; spoken when there is no recording
    author = "Иванова"                  # optional

Every refusal names the file, the key or line, and what to write instead,
because the reader is a support engineer, not a TOML parser. Names are passed
on exactly as written: ``staff.resolve`` checks them against the inventory
and explains near misses such as a trailing space.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from announcer.staff import Refused, StaffRequest, parse_duration, parse_moment

KEYS = ("districts", "all", "switches", "ttl", "until", "eta", "text", "author")
MAX_BYTES = 64 * 1024
"""A sidecar is a few lines; anything larger is some other file named .toml."""

_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_CURLY = "“”„«»‘’‚"
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=\s*(.*?)\s*$")
_BARE_LITERAL = re.compile(r"^(true|false|[+-]?\d[\d_]*(\.\d+)?)\s*(#.*)?$")


@dataclass(frozen=True)
class Sidecar:
    """What a sidecar asks for, checked for form but not yet against the inventory."""

    districts: tuple[str, ...] = ()
    switches: tuple[str, ...] = ()
    everyone: bool = False
    ttl_s: float | None = None
    until: float | None = None
    eta: float | None = None
    text: str = ""
    author: str | None = None

    def request(self, audio: str | None) -> StaffRequest:
        return StaffRequest(
            districts=self.districts,
            switches=self.switches,
            everyone=self.everyone,
            text=self.text,
            audio=audio,
            ttl_s=self.ttl_s,
            until=self.until,
            eta=self.eta,
            author=self.author,
        )


def parse_sidecar(data: bytes, filename: str, now: float) -> Sidecar | Refused:
    """Read a sidecar's bytes; ``filename`` is how the file is named in refusals."""
    if len(data) > MAX_BYTES:
        return Refused(
            f"{filename} is {len(data) // 1024} KiB, too big for a sidecar (a few lines);"
            " check that it is the right file"
        )
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return Refused(
            f"{filename} is not UTF-8 text; save it again choosing the UTF-8 encoding"
            " (in Notepad: Save as, Encoding: UTF-8)"
        )
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Refused(_syntax_error(filename, text, exc))
    return _check(values, filename, now)


def _syntax_error(filename: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    position = _TOML_POSITION.search(message)
    what = _TOML_POSITION.sub("", message).strip()
    what = what[:1].lower() + what[1:]
    if position is None:
        return f"{filename} is not valid TOML: {what}"
    number = int(position.group(1))
    lines = text.splitlines()
    line = lines[number - 1] if 0 < number <= len(lines) else ""
    shown = line.strip()
    out = f"{filename} is not valid TOML: line {number}"
    if shown:
        out += f" ({shown})"
    return f"{out}: {what}{_hint(line)}"


def _hint(line: str) -> str:
    """The likely mistake on a line TOML refused, as advice."""
    if any(c in line for c in _CURLY):
        return '; use straight double quotes "like this", not curly ones (“ ” « »)'
    assignment = _ASSIGNMENT.match(line)
    if not assignment:
        return ""
    key, value = assignment.groups()
    if value.startswith("["):
        items = [i.strip() for i in value.strip("[] ").split(",") if i.strip()]
        if any(i[0] not in "\"'" and not _BARE_LITERAL.match(i) for i in items):
            quoted = ", ".join(i if i[0] in "\"'" else f'"{i}"' for i in items)
            return f"; put each name in double quotes: {key} = [{quoted}]"
    elif value and value[0] not in "\"'{" and not _BARE_LITERAL.match(value):
        return f'; put text, times and durations in double quotes: {key} = "{value}"'
    return ""


class _Problem(Exception):
    """Internal: carries a refusal out of the helpers below to ``_check``."""


def _check(values: dict[str, Any], filename: str, now: float) -> Sidecar | Refused:
    try:
        return _checked(values, filename, now)
    except _Problem as problem:
        return Refused(f"{filename}{problem}")


def _checked(values: dict[str, Any], filename: str, now: float) -> Sidecar:
    unknown = [key for key in values if key not in KEYS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, KEYS, n=1)
        maybe = f" (did you mean {close[0]!r}?)" if close else ""
        raise _Problem(f": unknown key {key!r}{maybe}; a sidecar may have: {', '.join(KEYS)}")
    districts = _names(values, "districts")
    switches = _names(values, "switches")
    everyone = values.get("all", False)
    if not isinstance(everyone, bool):
        raise _Problem(f": all must be true or false, without quotes (got {everyone!r})")
    given = {"districts": districts, "switches": switches, "all": everyone}
    chosen = [key for key, value in given.items() if value]
    if not chosen:
        raise _Problem(
            ' does not say who hears it: add districts = ["..."], switches = ["..."] or all = true'
        )
    if len(chosen) > 1:
        both = " and ".join(chosen)
        raise _Problem(f": give only one of districts, switches and all, not {both}")
    if "ttl" in values and "until" in values:
        raise _Problem(
            ': give either ttl (how long, e.g. "2h") or until (when it ends, e.g. "12:00"),'
            " not both"
        )
    return Sidecar(
        districts=districts,
        switches=switches,
        everyone=everyone,
        ttl_s=_duration(values),
        until=_moment(values, "until", now),
        eta=_moment(values, "eta", now),
        text=_text(values, "text") or "",
        author=_text(values, "author") or None,
    )


def _names(values: dict[str, Any], key: str) -> tuple[str, ...]:
    given = values.get(key, [])
    if isinstance(given, str | int) and not isinstance(given, bool):
        given = [given]
    if not isinstance(given, list) or not all(
        isinstance(n, str | int) and not isinstance(n, bool) for n in given
    ):
        raise _Problem(f': {key} must be a list of names in quotes: {key} = ["...", "..."]')
    return tuple(str(n) for n in given)


def _duration(values: dict[str, Any]) -> float | None:
    if "ttl" not in values:
        return None
    given = values["ttl"]
    if isinstance(given, bool) or not isinstance(given, str | int | float):
        raise _Problem(': ttl must be a duration in quotes, e.g. ttl = "2h"')
    text = str(given).strip()
    if re.fullmatch(r"\d+([.,]\d+)?", text):
        raise _Problem(
            f': ttl = {given!r} has no unit; write ttl = "{text}h" for hours,'
            f' "{text}m" for minutes or "{text}d" for days'
        )
    seconds = parse_duration(text)
    if isinstance(seconds, Refused):
        raise _Problem(f": ttl: {seconds.reason}")
    return seconds


def _moment(values: dict[str, Any], key: str, now: float) -> float | None:
    if key not in values:
        return None
    given = values[key]
    if isinstance(given, dt.datetime):
        return given.astimezone().timestamp() if given.tzinfo is None else given.timestamp()
    if isinstance(given, dt.time):
        given = given.strftime("%H:%M")
    elif isinstance(given, dt.date):
        raise _Problem(f': {key} needs a time of day too, e.g. {key} = "{given} 12:00"')
    if not isinstance(given, str):
        raise _Problem(f': {key} must be a time in quotes, e.g. {key} = "12:00"')
    moment = parse_moment(given, now)
    if isinstance(moment, Refused):
        raise _Problem(f": {key}: {moment.reason}")
    return moment


def _text(values: dict[str, Any], key: str) -> str | None:
    given = values.get(key)
    if given is None:
        return None
    if not isinstance(given, str):
        raise _Problem(f': {key} must be text in quotes, e.g. {key} = "..."')
    return given.strip()
