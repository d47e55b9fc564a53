"""Recording a message by phone (``asterisk/announcer-staff.conf``) on a real
Asterisk, into a real drop folder that a real ``Dropbox`` watches.

The shipped file is included unchanged. The staff member's phone is the ``;1``
half of a Local channel: a ``Playback`` there is their voice (a tone), and
their key presses are AMI ``PlayDTMF`` on that half. The example city's
inventory is in Redis, so the district codes shipped in the file (2 is north,
3 is south) are the ones tested.

They need root and the sandbox (the fixtures in conftest.py build it or skip,
saying why).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.announce_store import AnnouncementStore
from announcer.announcements import Announcement
from announcer.config import DropboxSettings, PromptSettings, Settings
from announcer.dropbox import Dropbox
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import run_import
from announcer.inventory.model import Table
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from announcer.prompts.renderer import PromptRenderer
from announcer.publisher import Publisher
from tests.asterisk.ami import Ami, LiveCall
from tests.asterisk.sandbox import Asterisk, _ids_of

pytestmark = pytest.mark.timeout(960)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "asterisk" / "announcer-staff.conf"
CITY = REPO / "examples" / "inventory"

PIN = "4711"
STAFF_PHONE = "101"
NORTH_CALLER = "8 (916) 593-55-10"  # on north-01
SOUTH_CALLER = "9169211975"  # on south-01
NORTH, SOUTH, UNKNOWN = "2", "3", "7"  # district codes as shipped; 7 is none

# What the shipped file needs beyond the harness's modules.conf, and
# app_senddtmf for the AMI's PlayDTMF (the phone's keys).
MODULES = ("app_system", "func_env", "func_cut", "func_dialplan", "func_global", "app_senddtmf")

STEP = "ANNOUNCER_STAFF_STEP"
RESULT = "ANNOUNCER_STAFF_RESULT"
WAIT_S = 60.0
"""Bound on each wait for the dialplan (prompts play in real time)."""
SPOKEN_S = 2.0
"""How long the staff member speaks before pressing #."""


def tone(path: Path, seconds: float = 1.0, hz: float = 440.0) -> None:
    """A sine, 8 kHz 16-bit mono: what the staff member says."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 8000)))
        for i in range(int(8000 * seconds))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(frames)
    path.chmod(0o644)


def dialplan(spool: str, voice: str) -> str:
    """The test's extensions.conf: the shipped file included as admins do."""
    return f"""\
[globals]
ANNOUNCER_STAFF_PIN = {PIN}
ANNOUNCER_SPOOL = {spool}
ANNOUNCER_STAFF_WAIT = {int(WAIT_S)}

#include announcer-staff.conf

[staff-phones]
include => announcer-staff

; The staff member's handset: they speak (a tone) for as long as the call lasts.
[phone]
exten => talk,1,Answer()
 same => n(again),Playback({voice})
 same => n,Goto(again)

; A subscriber's call that plays what the lookup gave.
[caller]
exten => hear,1,Answer()
 same => n,Playback(${{PROMPT}})
 same => n,Hangup()
"""


@dataclass
class StaffLine:
    """Asterisk with the staff extension, its drop folder, and announcer's side."""

    asterisk: Asterisk
    ami: Ami
    box: Dropbox
    settings: Settings
    spool: Path

    def dial(self) -> contextlib.AbstractAsyncContextManager[LiveCall]:
        """The staff member dials the feature code from their phone."""
        return self.ami.dial("*77", "staff-phones", STAFF_PHONE, ("phone", "talk"))

    def files(self, folder: str) -> set[str]:
        path = self.spool / folder
        return set(os.listdir(path)) if path.exists() else set()

    def warnings(self) -> list[str]:
        """Asterisk's warnings and errors so far (the shipped file should cause none)."""
        log = (self.asterisk.host_dir / "log" / "messages.log").read_text(errors="replace")
        return [line for line in log.splitlines() if "WARNING[" in line or "ERROR[" in line]

    def inside(self, host: Path) -> str:
        """A host path as Asterisk, in its chroot, sees it."""
        return "/" + str(host.relative_to(self.asterisk.sandbox))


async def city_inventory(settings: Settings, redis: Redis, keys: Keys) -> None:
    def tables() -> tuple[Table, Table, Table]:
        return (
            read_table("districts", CITY / "districts.csv"),
            read_table("switches", CITY / "switches.csv"),
            read_table("subscribers", CITY / "subscribers.csv"),
        )

    assert (await run_import(settings, redis, keys, tables, "test")).ok


@pytest.fixture
async def line(
    sandbox: Path, settings: Settings, redis: Redis, keys: Keys
) -> AsyncIterator[StaffLine]:
    await city_inventory(settings, redis, keys)
    with Asterisk(sandbox, extra_modules=MODULES) as asterisk:
        uid, gid = _ids_of(sandbox, "asterisk")
        spool = asterisk.host_dir / "announcer-spool"
        for folder in (spool, spool / "incoming"):  # announcer makes the rest
            folder.mkdir()
            os.chown(folder, uid, gid)
        sounds = asterisk.host_dir / "announcer-sounds"
        config = settings.model_copy(
            update={
                "dropbox": DropboxSettings(spool=spool),
                "prompts": PromptSettings(sounds_dir=sounds, cache_dir=asterisk.host_dir / "tts"),
            }
        )
        voice = asterisk.host_dir / "sounds" / "voice.wav"
        tone(voice)
        shutil.copy(SHIPPED, asterisk.host_dir / "etc" / SHIPPED.name)
        inside = "/" + str(spool.relative_to(sandbox))
        asterisk.set_dialplan(dialplan(inside, f"{asterisk.root}/sounds/voice"))
        async with asterisk.ami() as ami:
            yield StaffLine(asterisk, ami, Dropbox(redis, keys, config), config, spool)


@pytest.fixture
async def announcer(line: StaffLine) -> AsyncIterator[None]:
    """announcer's drop-folder watcher, running as in production."""
    task = asyncio.create_task(line.box.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# what the staff member does --------------------------------------------------


async def step(call: LiveCall) -> str:
    """The next step the dialplan reaches (where it waits for keys)."""
    return await call.value(STEP, WAIT_S)


async def log_in(call: LiveCall) -> Path:
    """Enter the PIN; returns where the recording is being made (host path)."""
    assert await step(call) == "pin"
    await call.press(f"{PIN}#")
    staged = await call.value("STAGED", WAIT_S)
    assert await step(call) == "record"
    return call.ami.asterisk.host_path(f"{staged}.wav")


def written(path: Path) -> tuple[int, int]:
    """(bytes, last change in ns) of ``path``; (0, 0) while it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0, 0
    return st.st_size, st.st_mtime_ns


async def talk(call: LiveCall, recording: Path) -> None:
    """Talk after the tone until SPOKEN_S are recorded (afresh: a take
    recorded again overwrites the last one, which does not count)."""
    wanted = 44 + int(16000 * SPOKEN_S)
    _, before = written(recording)
    for _ in range(int(WAIT_S / 0.05)):
        size, changed = written(recording)
        if size >= wanted and changed != before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{recording} did not grow to {SPOKEN_S:g} s; {call.call.summary()}")


async def speak(call: LiveCall, recording: Path) -> None:
    """Talk after the tone, then press # to end the recording."""
    await talk(call, recording)
    await call.press("#")


async def record_for(call: LiveCall, codes: str, hours: str) -> None:
    """From the PIN to the confirmation question."""
    recording = await log_in(call)
    await speak(call, recording)
    assert await step(call) == "districts"
    await call.press(f"{codes}#")
    assert await step(call) == "hours"
    await call.press(f"{hours}#")
    assert await step(call) == "confirm"


def heard(call: LiveCall, application: str) -> list[str]:
    """What the dialplan half ran with ``application`` (what the phone heard)."""
    return [s.data for s in call.call.steps if s.application == application]


async def staff(redis: Redis, keys: Keys) -> list[Announcement]:
    return await AnnouncementStore(redis, keys).staff()


# the way it should go ------------------------------------------------------


async def test_a_message_recorded_by_phone_goes_live_in_its_district(
    line: StaffLine, announcer: None, redis: Redis, keys: Keys
) -> None:
    async with line.dial() as call:
        await record_for(call, NORTH, "2")
        await call.press("1")
        result = await call.value(RESULT, WAIT_S)
        name = call.call.variables["NAME"]

    assert result == "live", call.call.summary()
    assert "vm-msgsaved" in heard(call, "Playback")  # "Your message has been saved."
    assert line.warnings() == []
    assert line.files("incoming") == set()
    assert line.files("phone") == set()
    assert line.files("done") == {f"{name}.wav", f"{name}.toml", f"{name}.receipt.json"}
    assert (line.spool / "done" / f"{name}.toml").read_text() == (
        'districts = ["north"]\nttl = "2h"\nauthor = "phone 101"\n'
    )
    [announcement] = await staff(redis, keys)
    assert (announcement.scope.value, announcement.targets) == ("district", ("north",))
    assert announcement.expires - announcement.created == 2 * 3600
    assert announcement.author == "phone 101"

    # what callers hear once the publisher has run
    renderer = PromptRenderer(line.settings.prompts, line.settings.announcements.language)
    await Publisher(redis, keys, line.settings, renderer).publish_once()
    lookup = Lookup(redis, keys, PhoneNormaliser())
    north, south = await lookup(NORTH_CALLER), await lookup(SOUTH_CALLER)
    assert north.announcement == announcement.id
    assert north.prompt == announcement.audio
    assert (south.announcement, south.prompt) == (None, None)

    # ffmpeg made it what Asterisk plays, and Asterisk plays it to the caller
    assert north.prompt is not None
    with wave.open(f"{north.prompt}.wav") as converted:
        assert (converted.getframerate(), converted.getnchannels()) == (8000, 1)
        assert converted.getnframes() / 8000 > 1.0
    played = await line.ami.originate(
        "hear",
        "caller",
        callerid=NORTH_CALLER,
        variables={"PROMPT": line.inside(Path(north.prompt))},
    )
    assert played.variables["PLAYBACKSTATUS"] == "SUCCESS", played.summary()


async def test_an_unknown_district_code_is_refused_by_voice_and_asked_again(
    line: StaffLine, announcer: None, redis: Redis, keys: Keys
) -> None:
    async with line.dial() as call:
        await speak(call, await log_in(call))
        assert await step(call) == "districts"
        await call.press(f"{UNKNOWN}#")
        assert await step(call) == "districts"  # asked again
        refusal = (heard(call, "Playback")[-1], heard(call, "SayDigits")[-1])
        await call.press(f"{SOUTH}#")
        assert await step(call) == "hours"
        await call.press("#")  # announcer's default duration
        assert await step(call) == "confirm"
        await call.press("1")
        result = await call.value(RESULT, WAIT_S)

    # "I'm sorry, that number is not valid. You entered seven."
    assert refusal == ("privacy-incorrect&you-entered", UNKNOWN)
    assert result == "live", call.call.summary()
    [announcement] = await staff(redis, keys)
    assert announcement.targets == ("south",)
    default_s = line.settings.announcements.staff_ttl_s
    assert announcement.expires - announcement.created == default_s


async def test_listening_again_and_recording_again_before_confirming(
    line: StaffLine, announcer: None, redis: Redis, keys: Keys
) -> None:
    async with line.dial() as call:
        await record_for(call, NORTH, "3")
        first = call.call.variables["STAGED"]
        await call.press("2")  # listen to it again
        assert await step(call) == "confirm"
        await call.press("3")  # record it again
        assert await step(call) == "record"
        await speak(call, call.ami.asterisk.host_path(f"{first}.wav"))
        assert await step(call) == "confirm"  # districts and hours are kept
        await call.press("1")
        result = await call.value(RESULT, WAIT_S)

    assert result == "live", call.call.summary()
    assert len(heard(call, "Record")) == 2
    assert heard(call, "Playback").count(first) == 3  # heard back three times
    [announcement] = await staff(redis, keys)
    assert announcement.targets == ("north",)
    assert announcement.expires - announcement.created == 3 * 3600
    assert line.warnings() == []


async def test_zero_is_everyone(line: StaffLine, announcer: None, redis: Redis, keys: Keys) -> None:
    async with line.dial() as call:
        await record_for(call, "0", "1")
        await call.press("1")
        result = await call.value(RESULT, WAIT_S)

    assert result == "live", call.call.summary()
    [announcement] = await staff(redis, keys)
    assert (announcement.scope.value, announcement.targets) == ("global", ())


# refusals --------------------------------------------------------------------


async def test_a_wrong_pin_records_nothing(line: StaffLine, redis: Redis, keys: Keys) -> None:
    async with line.dial() as call:
        for _ in range(3):
            assert await step(call) == "pin"
            await call.press("0000#")
        result = await call.value(RESULT, WAIT_S)
        await call.end(WAIT_S)  # Asterisk hangs up by itself

    assert result == "wrong-pin"
    assert heard(call, "Playback")[-1] == "vm-goodbye"
    assert heard(call, "Record") == []
    assert "STAGED" not in call.call.variables
    assert line.files("incoming") == set()
    assert line.files("phone") == set()
    assert await line.box.scan_once() == []
    assert await staff(redis, keys) == []


async def test_without_a_pin_configured_the_feature_code_refuses(
    line: StaffLine, redis: Redis, keys: Keys
) -> None:
    setting = "ANNOUNCER_STAFF_PIN ="
    # set empty, as a dialplan reload cannot unset a global
    line.asterisk.set_dialplan(line.asterisk.extensions.replace(f"{setting} {PIN}", setting))
    async with line.dial() as call:
        result = await call.value(RESULT, WAIT_S)
        await call.end(WAIT_S)

    assert result == "off"
    # "That feature is not available on this line. Goodbye."
    assert heard(call, "Playback") == ["feature-not-avail-line", "vm-goodbye"]
    assert STEP not in call.call.variables  # no PIN was even asked for
    assert line.files("incoming") == set()
    assert line.files("phone") == set()
    assert await staff(redis, keys) == []


async def test_three_unknown_district_codes_end_the_call_and_keep_nothing(
    line: StaffLine, redis: Redis, keys: Keys
) -> None:
    async with line.dial() as call:
        await speak(call, await log_in(call))
        for codes in (UNKNOWN, f"{NORTH}*{UNKNOWN}", "**"):
            assert await step(call) == "districts"
            await call.press(f"{codes}#")
        result = await call.value(RESULT, WAIT_S)
        await call.end(WAIT_S)

    assert result == "bad-districts"
    assert heard(call, "SayDigits") == [UNKNOWN, UNKNOWN, "**"]
    assert line.files("incoming") == set()
    assert line.files("phone") == set()
    assert await line.box.scan_once() == []
    assert await staff(redis, keys) == []


@pytest.mark.parametrize(
    "moment", ["hanging up while recording", "hanging up at the confirmation", "pressing * there"]
)
async def test_ending_the_call_before_confirming_leaves_nothing(
    line: StaffLine, redis: Redis, keys: Keys, moment: str
) -> None:
    async with line.dial() as call:
        if moment == "hanging up while recording":
            recording = await log_in(call)
            await talk(call, recording)  # the recording is being written
        else:
            await record_for(call, NORTH, "2")
            if moment == "pressing * there":
                await call.press("*")
                assert await call.value(RESULT, WAIT_S) == "cancelled"
        await call.hang_up()
        await call.end(WAIT_S)

    assert line.files("incoming") == set()
    assert line.files("phone") == set()
    assert await line.box.scan_once() == []
    assert line.files("done") == set()
    assert await staff(redis, keys) == []
