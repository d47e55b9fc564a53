"""The staff drop folder end to end: real files, real Redis, real ffmpeg.

Scenario 5 (a recording and a three-line sidecar go live with a receipt) and
scenario 6 (bad drops end in rejected/ with a reason, nothing is lost, nothing
is written outside the spool, the watcher goes on).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

import pytest
from redis.asyncio import Redis

from announcer import intake
from announcer.announce_store import AnnouncementStore
from announcer.config import DropboxSettings, PromptSettings, RedisSettings, Settings
from announcer.dropbox import Dropbox, Outcome
from announcer.keys import Keys
from announcer.prompts.audio import AudioProblem, InstalledSound
from announcer.redisconn import connect
from tests.conftest import InventoryFiles

SIDECAR = (
    'districts = ["Северный", "Южный"]\n'
    'ttl = "2h"\n'
    'eta = "12:00"\n'
    'text = "Авария у магистрального провайдера"\n'
    'author = "Иванова"\n'
)
PASSWD = Path("/etc/passwd")
TEXT_ONLY = 'all = true\ntext = "Плановые работы до утра"\nuntil = "23:59"\n'


# fixtures -------------------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


@pytest.fixture(scope="session")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Test recordings made with ffmpeg, by name."""
    if shutil.which("ffmpeg") is None:
        if os.environ.get("CI"):
            pytest.fail("ffmpeg is not installed; apt-get install ffmpeg")
        pytest.skip("ffmpeg is not installed")
    folder = tmp_path_factory.mktemp("audio")
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=3"]
    _ffmpeg(*tone, "-c:a", "aac", str(folder / "tone.m4a"))
    _ffmpeg(*tone, str(folder / "tone.mp3"))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=880:duration=2", str(folder / "other.mp3"))
    # 40 minutes, made cheap: 8 kHz, 8-bit
    _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2400:sample_rate=8000",
        "-ac", "1", "-c:a", "pcm_u8", str(folder / "forty-minutes.wav"),
    )  # fmt: skip
    docx = io.BytesIO()
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr("word/document.xml", "<w:document><w:body>Авария</w:body></w:document>")
    return {p.name: p.read_bytes() for p in folder.iterdir()} | {"letter.docx": docx.getvalue()}


@pytest.fixture
async def inventory(settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles) -> None:
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "dropbox": DropboxSettings(spool=tmp_path / "spool", settle_s=0, rescan_s=1),
            "prompts": PromptSettings(sounds_dir=tmp_path / "sounds", cache_dir=tmp_path / "tts"),
        }
    )


@pytest.fixture
def box(redis: Redis, keys: Keys, config: Settings, inventory: None) -> Dropbox:
    return Dropbox(redis, keys, config)


@pytest.fixture
def incoming(box: Dropbox) -> Path:
    box.incoming.mkdir(parents=True, exist_ok=True)
    return box.incoming


@pytest.fixture
async def running(box: Dropbox) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(box.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# helpers --------------------------------------------------------------------


def put(folder: Path, name: str | bytes, data: bytes | str) -> Path:
    """Write a file the way a copy tool would, into ``folder``."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


async def eventually(check: Callable[[], bool], what: str, within_s: float = 30) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within_s``."""
    for _ in range(int(within_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"waited {within_s:g} s for {what}")


def read(path: Path) -> bytes:
    return path.read_bytes()


def size(path: Path) -> int:
    return path.stat().st_size


def names(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.exists() else set()


def tree(root: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    """Every file under ``root`` except ``skip``, with a hash of its content."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in files:
            path = Path(folder, name)
            out[str(path)] = (
                "link" if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
            )
        out.update({str(Path(folder, d)): "dir" for d in dirs})
    return out


async def staff(redis: Redis, keys: Keys) -> dict[str, dict[str, object]]:
    return {a.id: a.record() for a in await AnnouncementStore(redis, keys).staff()}


# scenario 5 -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["m4a", "mp3"])
async def test_recording_and_sidecar_go_live_with_a_receipt(
    box: Dropbox, incoming: Path, audio: dict[str, bytes], redis: Redis, keys: Keys, kind: str
) -> None:
    put(incoming, f"Авария.{kind}", audio[f"tone.{kind}"])
    put(incoming, "Авария.toml", SIDECAR)

    [outcome] = await box.scan_once()

    assert outcome.accepted, outcome.reason
    assert outcome.name == "Авария"
    assert names(box.done) == {f"Авария.{kind}", "Авария.toml", "Авария.receipt.json"}
    assert names(incoming) == set()
    assert names(box.processing) == set()
    assert (box.done / f"Авария.{kind}").read_bytes() == audio[f"tone.{kind}"]
    receipt = json.loads((box.done / "Авария.receipt.json").read_text("utf-8"))
    assert outcome.note == box.done / "Авария.receipt.json"
    assert receipt["announcement"] == outcome.announcement_id
    assert (receipt["scope"], receipt["targets"]) == ("district", ["north", "south"])
    assert receipt["author"] == "Иванова"
    assert receipt["text"] == "Авария у магистрального провайдера"
    assert receipt["eta"].endswith(("12:00:00+00:00", "12:00:00Z")) or "T12:00:00" in receipt["eta"]
    assert receipt["expires"]
    assert receipt["taken_at"]
    live = await staff(redis, keys)
    assert list(live) == [outcome.announcement_id]
    announcement = live[str(outcome.announcement_id)]
    assert announcement["targets"] == ["north", "south"]
    assert announcement["audio"] == receipt["prompt"]
    sounds = box.settings.prompts.sounds_dir.absolute()
    assert Path(receipt["prompt"]).parent == sounds
    assert size(Path(f"{receipt['prompt']}.wav")) > 0


async def test_text_only_sidecar(box: Dropbox, incoming: Path, redis: Redis, keys: Keys) -> None:
    put(incoming, "works.toml", TEXT_ONLY)

    [outcome] = await box.scan_once()

    assert outcome.accepted, outcome.reason
    announcement = (await staff(redis, keys))[str(outcome.announcement_id)]
    assert announcement["text"] == "Плановые работы до утра"
    assert announcement["scope"] == "global"
    assert "audio" not in announcement
    receipt = json.loads((box.done / "works.receipt.json").read_text("utf-8"))
    assert receipt["prompt"] is None


# scenario 6 -----------------------------------------------------------------

BAD_DROPS: dict[str, tuple[dict[str, str], list[str]]] = {
    # case: ({file name: audio fixture name or sidecar text}, words of the reason)
    "empty file": ({"x.mp3": "", "x.toml": SIDECAR}, ["x.mp3 is empty", "0 bytes"]),
    "empty file, bad sidecar too": ({"x.mp3": "", "x.toml": "all = 1"}, ["x.mp3 is empty"]),
    "docx renamed": ({"x.mp3": "@letter.docx", "x.toml": SIDECAR}, ["x.mp3", "not an audio file"]),
    "forty minutes": (
        {"x.wav": "@forty-minutes.wav", "x.toml": SIDECAR},
        ["x.wav", "lasts 40 min", "at most 2 min"],
    ),
    "trailing space": (
        {"x.m4a": "@tone.m4a", "x.toml": 'districts = ["Северный "]\nttl = "2h"'},
        ["x.toml", "unknown district 'Северный '", "without the spaces"],
    ),
    "toml syntax": (
        {"x.m4a": "@tone.m4a", "x.toml": 'districts = ["Северный"]\nuntil = 12:00\n'},
        ["x.toml", "not valid TOML", "line 2", 'until = "12:00"'],
    ),
    "unknown key": (
        {"x.m4a": "@tone.m4a", "x.toml": 'district = ["Северный"]'},
        ["x.toml", "unknown key 'district'", "did you mean 'districts'"],
    ),
    "ttl and until": (
        {"x.m4a": "@tone.m4a", "x.toml": 'all = true\nttl = "2h"\nuntil = "12:00"'},
        ["x.toml", "ttl", "until", "not both"],
    ),
    "nobody named": ({"x.m4a": "@tone.m4a", "x.toml": 'ttl = "2h"'}, ["does not say who"]),
    "no recording, no text": ({"x.toml": "all = true"}, ["no recording beside x.toml"]),
    "not a sound by name": (
        {"x.docx": "@letter.docx", "x.toml": SIDECAR},
        ["x.docx", "not a recording"],
    ),
    "two recordings": (
        {"x.mp3": "@tone.mp3", "x.wav": "@tone.mp3", "x.toml": SIDECAR},
        ["more than one file", "x.mp3, x.wav"],
    ),
}


def drop_files(incoming: Path, files: dict[str, str], audio: dict[str, bytes]) -> dict[str, bytes]:
    """Drop the recording(s) first, then the sidecar; return what was dropped."""
    dropped = {}
    for name in sorted(files, key=lambda n: n.endswith(".toml")):
        content = files[name]
        data = audio[content[1:]] if content.startswith("@") else content.encode()
        put(incoming, name, data)
        dropped[name] = data
    return dropped


@pytest.mark.parametrize("case", list(BAD_DROPS))
async def test_bad_drop_is_rejected_with_a_reason(
    box: Dropbox,
    incoming: Path,
    audio: dict[str, bytes],
    redis: Redis,
    keys: Keys,
    case: str,
) -> None:
    files, words = BAD_DROPS[case]
    dropped = drop_files(incoming, files, audio)

    [outcome] = await box.scan_once()

    assert not outcome.accepted
    assert outcome.reason is not None
    for word in words:
        assert word in outcome.reason
    assert names(incoming) == set()
    assert names(box.done) == set()
    assert names(box.rejected) == {*dropped, "x.error.txt"}
    for name, data in dropped.items():  # nothing lost: the very bytes are kept
        assert (box.rejected / name).read_bytes() == data
    error = (box.rejected / "x.error.txt").read_text("utf-8")
    assert outcome.reason in error
    assert "What to do:" in error
    assert await staff(redis, keys) == {}
    assert names(box.settings.prompts.sounds_dir) == set()


async def test_links_are_rejected_and_never_followed(
    box: Dropbox, incoming: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"not yours")
    passwd = read(PASSWD)
    (incoming / "x.wav").symlink_to("/etc/passwd")
    put(incoming, "x.toml", SIDECAR)
    (incoming / "y.wav").symlink_to("../../secret.wav")
    os.link(secret, incoming / "hard.wav")
    put(incoming, "hard.toml", SIDECAR)

    outcomes = {o.name: o for o in await box.scan_once()}

    assert {n: o.accepted for n, o in outcomes.items()} == {"x": False, "y": False, "hard": False}
    assert "x.wav is a link" in str(outcomes["x"].reason)
    assert "y.wav is a link" in str(outcomes["y"].reason)
    assert "hard.wav is a hard link" in str(outcomes["hard"].reason)
    assert os.readlink(box.rejected / "x.wav") == "/etc/passwd"  # the link itself, kept
    assert os.readlink(box.rejected / "y.wav") == "../../secret.wav"
    assert read(PASSWD) == passwd
    assert secret.read_bytes() == b"not yours"
    assert names(box.rejected) >= {"x.error.txt", "y.error.txt", "hard.error.txt"}


async def test_odd_names_are_rejected(
    box: Dropbox, incoming: Path, audio: dict[str, bytes]
) -> None:
    put(incoming, "..\\..\\etc\\passwd.wav", audio["tone.mp3"])
    put(incoming, "line\nbreak.m4a", audio["tone.m4a"])
    put(incoming, "line\nbreak.toml", SIDECAR)
    put(incoming, b"\xff\xfe.wav", audio["tone.mp3"])

    outcomes = await box.scan_once()

    reasons = sorted(str(o.reason) for o in outcomes)
    assert not any(o.accepted for o in outcomes)
    assert len(reasons) == 3
    assert any("looks like a path" in r for r in reasons)
    assert any("control character" in r for r in reasons)
    assert any("not UTF-8" in r for r in reasons)
    assert names(incoming) == set()
    kept = set(os.listdir(os.fsencode(box.rejected)))
    assert {
        b"..\\..\\etc\\passwd.wav",
        b"line\nbreak.m4a",
        b"line\nbreak.toml",
        b"\xff\xfe.wav",
    } <= kept
    assert {b"line\\nbreak.error.txt", b"\\xff\\xfe.error.txt"} <= kept


async def test_bad_drops_never_stop_the_watcher(
    box: Dropbox,
    incoming: Path,
    audio: dict[str, bytes],
    tmp_path: Path,
    running: asyncio.Task[None],
    redis: Redis,
    keys: Keys,
) -> None:
    spool, sounds = box.settings.dropbox.spool, box.settings.prompts.sounds_dir
    before = tree(tmp_path, skip=(spool, sounds))
    passwd = read(PASSWD)
    dropped: dict[str, bytes] = {}
    for case, (files, _) in BAD_DROPS.items():
        dropped |= drop_files(incoming, {f"{case}{n[1:]}": c for n, c in files.items()}, audio)
    (incoming / "link.wav").symlink_to("/etc/passwd")
    dropped["link.toml"] = put(incoming, "link.toml", SIDECAR).read_bytes()
    dropped["..\\..\\etc\\passwd.wav"] = audio["tone.mp3"]
    put(incoming, "..\\..\\etc\\passwd.wav", audio["tone.mp3"])
    expected = {*dropped, "link.wav"} | {f"{case}.error.txt" for case in BAD_DROPS}
    expected |= {"link.error.txt", "..\\..\\etc\\passwd.error.txt"}
    await eventually(lambda: names(box.rejected) == expected, "the bad drops rejected")
    put(incoming, "good.m4a", audio["tone.m4a"])
    put(incoming, "good.toml", SIDECAR)

    await eventually(lambda: "good.receipt.json" in names(box.done), "the good drop taken")

    assert not running.done()
    assert names(incoming) == set()
    assert names(box.rejected) == expected
    for name, data in dropped.items():  # nothing lost
        assert read(box.rejected / name) == data
    assert len(await staff(redis, keys)) == 1
    assert tree(tmp_path, skip=(spool, sounds)) == before  # nothing written outside the spool
    prompt = json.loads(read(box.done / "good.receipt.json"))["prompt"]
    assert {p.parent / p.name.partition(".")[0] for p in sounds.iterdir()} == {Path(prompt)}
    assert read(PASSWD) == passwd


# half-written files ---------------------------------------------------------


def _open_for_append(path: Path) -> IO[bytes]:
    return path.open("ab")


def _append(path: Path, chunk: bytes) -> None:
    with path.open("ab") as f:
        f.write(chunk)


@pytest.mark.parametrize("writer", ["one handle", "reopened per chunk"])
async def test_a_slow_copy_is_taken_only_when_complete(
    redis: Redis,
    keys: Keys,
    config: Settings,
    inventory: None,
    audio: dict[str, bytes],
    writer: str,
) -> None:
    """Like SMB or scp over a slow link, with the sidecar copied alongside:
    the recording grows every 0.3 s while the watcher runs."""
    slow = config.model_copy(
        update={"dropbox": config.dropbox.model_copy(update={"settle_s": 1.0, "rescan_s": 0.5})}
    )
    box = Dropbox(redis, keys, slow)
    box.incoming.mkdir(parents=True)
    data = audio["tone.m4a"]
    first, *chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    target = box.incoming / "slow.m4a"
    task = asyncio.create_task(box.run())
    try:
        if writer == "one handle":
            with _open_for_append(target) as f:
                f.write(first)
                f.flush()
                put(box.incoming, "slow.toml", SIDECAR)
                for chunk in chunks:
                    await asyncio.sleep(0.3)
                    assert names(box.done) == set(), "taken while still being written"
                    f.write(chunk)
                    f.flush()
        else:
            _append(target, first)
            put(box.incoming, "slow.toml", SIDECAR)
            for chunk in chunks:
                await asyncio.sleep(0.3)
                assert names(box.done) == set(), "taken while still being written"
                _append(target, chunk)
        await eventually(lambda: "slow.receipt.json" in names(box.done), "the copy taken")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (box.done / "slow.m4a").read_bytes() == data
    assert names(box.rejected) == set()


async def test_a_copy_in_progress_holds_its_sidecar_back(
    box: Dropbox, incoming: Path, audio: dict[str, bytes]
) -> None:
    """scp's or WinSCP's temporary name: the sidecar must not go out as text-only."""
    partial = put(incoming, "x.m4a.part", audio["tone.m4a"])
    put(incoming, "x.toml", SIDECAR)
    assert await box.scan_once() == []
    assert names(incoming) == {"x.m4a.part", "x.toml"}

    partial.rename(incoming / "x.m4a")
    [outcome] = await box.scan_once()

    assert outcome.accepted
    assert names(box.done) == {"x.m4a", "x.toml", "x.receipt.json"}


async def test_a_recording_waits_for_its_sidecar(
    box: Dropbox, incoming: Path, audio: dict[str, bytes]
) -> None:
    put(incoming, "x.m4a", audio["tone.m4a"])
    put(incoming, ".hidden.m4a", audio["tone.m4a"])
    (incoming / "folder").mkdir()
    assert await box.scan_once() == []
    assert names(incoming) == {"x.m4a", ".hidden.m4a", "folder"}

    put(incoming, "x.toml", SIDECAR)
    [outcome] = await box.scan_once()

    assert outcome.accepted
    assert names(incoming) == {".hidden.m4a", "folder"}


# the loop -------------------------------------------------------------------


async def test_drops_made_before_the_start_are_taken_at_start(
    redis: Redis, keys: Keys, config: Settings, inventory: None, audio: dict[str, bytes]
) -> None:
    quiet = config.model_copy(
        update={"dropbox": config.dropbox.model_copy(update={"settle_s": 0.5, "rescan_s": 600})}
    )
    box = Dropbox(redis, keys, quiet)
    box.incoming.mkdir(parents=True)
    put(box.incoming, "early.mp3", audio["tone.mp3"])
    put(box.incoming, "early.toml", SIDECAR)
    task = asyncio.create_task(box.run())
    try:
        await eventually(lambda: "early.receipt.json" in names(box.done), "the early drop taken")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()


async def test_the_same_name_twice_keeps_both(
    box: Dropbox, incoming: Path, audio: dict[str, bytes], redis: Redis, keys: Keys
) -> None:
    put(incoming, "x.mp3", audio["tone.mp3"])
    put(incoming, "x.toml", SIDECAR)
    [first] = await box.scan_once()
    put(incoming, "x.mp3", audio["other.mp3"])
    put(incoming, "x.toml", TEXT_ONLY)
    [second] = await box.scan_once()

    assert first.accepted
    assert second.accepted
    assert [p.name for p in first.files] == ["x.mp3", "x.toml"]
    assert second.files[0].name.startswith("x-")
    assert second.files[0].name.endswith(".mp3")
    kept = {p.read_bytes() for p in box.done.glob("*.mp3")}
    assert kept == {audio["tone.mp3"], audio["other.mp3"]}
    assert {p.read_text("utf-8") for p in box.done.glob("*.toml")} == {SIDECAR, TEXT_ONLY}
    assert len(list(box.done.glob("*.receipt.json"))) == 2
    assert len(await staff(redis, keys)) == 2


async def test_an_unexpected_error_rejects_the_drop_and_the_watcher_goes_on(
    box: Dropbox,
    incoming: Path,
    audio: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    running: asyncio.Task[None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(
        source: Path, sounds_dir: Path, name: str, max_seconds: float
    ) -> InstalledSound | AudioProblem:
        raise RuntimeError("boom")

    monkeypatch.setattr(intake, "install_recording", broken)
    put(incoming, "x.m4a", audio["tone.m4a"])
    put(incoming, "x.toml", SIDECAR)
    await eventually(lambda: "x.error.txt" in names(box.rejected), "the drop rejected")
    put(incoming, "after.toml", TEXT_ONLY)
    await eventually(lambda: "after.receipt.json" in names(box.done), "the next drop taken")

    error = (box.rejected / "x.error.txt").read_text("utf-8")
    assert "RuntimeError: boom" in error
    assert "fault on announcer's side" in error
    assert (box.rejected / "x.m4a").read_bytes() == audio["tone.m4a"]
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


async def test_cancelled_while_converting_puts_the_drop_back(
    box: Dropbox, incoming: Path, audio: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = asyncio.Event()

    async def slow(
        source: Path, sounds_dir: Path, name: str, max_seconds: float
    ) -> InstalledSound | AudioProblem:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    monkeypatch.setattr(intake, "install_recording", slow)
    put(incoming, "x.m4a", audio["tone.m4a"])
    put(incoming, "x.toml", SIDECAR)
    task = asyncio.create_task(box.run())
    async with asyncio.timeout(30):
        await entered.wait()
    assert names(incoming) == set()  # out of staff's reach while converting

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert names(incoming) == {"x.m4a", "x.toml"}
    assert (incoming / "x.m4a").read_bytes() == audio["tone.m4a"]
    assert names(box.processing) == set()


async def test_what_a_crash_left_half_taken_is_taken_again(
    redis: Redis, keys: Keys, config: Settings, inventory: None, audio: dict[str, bytes]
) -> None:
    left = config.dropbox.spool / "processing" / "0badf00d"
    left.mkdir(parents=True)
    put(left, "x.mp3", audio["tone.mp3"])
    put(left, "x.toml", SIDECAR)

    [outcome] = await Dropbox(redis, keys, config).scan_once()

    assert outcome.accepted
    assert names(config.dropbox.spool / "done") == {"x.mp3", "x.toml", "x.receipt.json"}
    assert names(config.dropbox.spool / "processing") == set()


async def test_outcome_says_where_the_files_went(box: Dropbox, incoming: Path) -> None:
    put(incoming, "x.toml", "all = true")
    [outcome] = await box.scan_once()
    assert outcome == Outcome(
        name="x",
        accepted=False,
        announcement_id=None,
        reason=outcome.reason,
        files=(box.rejected / "x.toml",),
        note=box.rejected / "x.error.txt",
    )


async def test_the_folders_are_made_when_missing(box: Dropbox) -> None:
    spool = box.settings.dropbox.spool
    assert not spool.exists()
    assert await box.scan_once() == []
    assert names(spool) == {"incoming", "done", "rejected", "processing"}


async def test_while_redis_is_down_drops_wait_in_incoming(
    box: Dropbox, incoming: Path, config: Settings, keys: Keys, redis: Redis
) -> None:
    put(incoming, "x.toml", TEXT_ONLY)
    down = connect(RedisSettings(url=f"unix://{config.dropbox.spool}/no-redis.sock"))
    try:
        assert await Dropbox(down, keys, config).scan_once() == []
    finally:
        await down.aclose()
    assert names(incoming) == {"x.toml"}  # not rejected: Redis's trouble, not the drop's
    assert names(box.rejected) == set()
    assert names(box.processing) == set()

    [outcome] = await box.scan_once()  # Redis is back

    assert outcome.accepted
    assert len(await staff(redis, keys)) == 1


async def test_incoming_removed_while_running_is_made_again(
    box: Dropbox, incoming: Path, running: asyncio.Task[None]
) -> None:
    put(incoming, "first.toml", TEXT_ONLY)
    await eventually(lambda: "first.receipt.json" in names(box.done), "the first drop taken")
    shutil.rmtree(incoming)
    await eventually(incoming.exists, "incoming/ made again")
    put(incoming, "second.toml", TEXT_ONLY)
    await eventually(lambda: "second.receipt.json" in names(box.done), "the second drop taken")
