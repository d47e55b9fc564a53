"""File names in the drop folder, and moves that never overwrite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from announcer.spool import (
    NAME_MAX,
    copied_as,
    extension,
    fit,
    free_names,
    in_progress,
    move_aside,
    name_problem,
    shown,
    stem,
)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Авария в Северном.m4a", None),
        ("a..b.m4a", None),
        ("..\\..\\etc\\passwd.wav", "looks like a path"),
        ("..passwd.wav", "looks like a path"),
        ("line\nbreak.wav", "control character"),
        (os.fsdecode(b"\xff\xfe.wav"), "not UTF-8"),
    ],
)
def test_name_problem(name: str, problem: str | None) -> None:
    got = name_problem(name)
    assert got == problem if problem is None else problem in (got or "")


def test_shown_makes_any_name_printable() -> None:
    assert shown("Авария.m4a") == "Авария.m4a"
    assert shown("line\nbreak") == "line\\nbreak"
    assert shown(os.fsdecode(b"\xffx")) == "\\xffx"
    shown(os.fsdecode(b"\xffx")).encode("utf-8")  # always writable as UTF-8


@pytest.mark.parametrize(
    ("name", "copying"),
    [
        (".x.m4a.Ab12Cd", True),  # rsync
        ("x.m4a.part", True),
        ("x.m4a.filepart", True),  # WinSCP
        ("x.toml~", True),
        ("x.tmp", True),
        ("x.m4a", False),
        ("..\\evil.wav", False),  # not a copy tool's name: rejected, not ignored
    ],
)
def test_copies_in_progress(name: str, copying: bool) -> None:
    assert in_progress(name) is copying


def test_names() -> None:
    assert copied_as(".x.m4a.Ab12Cd") == "x.m4a.Ab12Cd"
    assert copied_as("x.m4a.part") == "x.m4a"
    assert (stem("x.m4a"), stem("x"), stem(".x"), stem("x.y.toml")) == ("x", "x", ".x", "x.y")
    assert (extension("x.M4A"), extension("x")) == ("m4a", None)


def test_fit_shortens_the_head_only() -> None:
    name = fit("я" * 200, "-20260310-093000", ".receipt.json")
    assert len(os.fsencode(name)) <= NAME_MAX
    assert name.endswith("я-20260310-093000.receipt.json")


def test_free_names_tag_the_whole_drop(tmp_path: Path) -> None:
    names = ["a.toml", "a.m4a"]
    first, note = free_names(tmp_path, "a", names, ".receipt.json", "20260310-093000")
    assert [p.name for p in first] == names
    assert note.name == "a.receipt.json"
    (tmp_path / "a.m4a").touch()  # only one of them taken: all move on together
    second, note = free_names(tmp_path, "a", names, ".receipt.json", "20260310-093000")
    assert [p.name for p in second] == ["a-20260310-093000.toml", "a-20260310-093000.m4a"]
    assert note.name == "a-20260310-093000.receipt.json"
    (tmp_path / "a-20260310-093000.receipt.json").touch()
    third, note = free_names(tmp_path, "a", names, ".receipt.json", "20260310-093000")
    assert third[1].name == "a-20260310-093000-2.m4a"


def test_move_aside_never_overwrites(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    (target / "x.m4a").write_bytes(b"old")
    (source / "x.m4a").write_bytes(b"new")
    moved = move_aside(source / "x.m4a", target, "x.m4a", "-back")
    assert moved.name == "x-back.m4a"
    assert (target / "x.m4a").read_bytes() == b"old"
    assert moved.read_bytes() == b"new"
