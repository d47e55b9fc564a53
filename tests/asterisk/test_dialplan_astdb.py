"""The AstDB mode end to end on a real Asterisk: announcer's mirror writes
AstDB over AMI, and the shipped dialplan (asterisk/announcer-common.conf and
announcer-astdb.conf) plays the prompt to the callers it names, with no
network at call time; prompts stop when nobody vouches for them, and the
mirror is reconciled after Asterisk comes back.

Needs root and the Asterisk sandbox (see conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.announce_store import AnnouncementStore
from announcer.config import AmiSettings, PromptSettings, Settings
from announcer.daemon import make_mirrors
from announcer.heard import HeardLog
from announcer.keys import Keys
from announcer.pbx.ami import AstDbSink
from announcer.pbx.mirror import LEASE, LinkDown, Mirror, Truth
from announcer.staff import StaffRequest
from tests.asterisk.ami import Ami, Call
from tests.asterisk.sandbox import Asterisk
from tests.conftest import InventoryFiles, announce

pytestmark = pytest.mark.timeout(300)

ASTERISK_DIR = Path(__file__).resolve().parents[2] / "asterisk"
ENTRY = "support"
CALLER_FORMS = ("+79161234567", "79161234567", "89161234567", "9161234567", "+7 (916) 123-45-67")
SOUTH_CALLER = "+79260000001"
UNKNOWN_CALLER = "+79990000000"
FAMILY = "announcer"


def dialplan() -> str:
    """The shipped files, and an entry context like an admin's."""
    shipped = "\n".join(
        (ASTERISK_DIR / name).read_text()
        for name in ("announcer-common.conf", "announcer-astdb.conf")
    )
    return f"""{shipped}
[{ENTRY}]
exten => 1,1,Gosub(announcer-astdb,s,1)
 same => n,Set(REACHED_QUEUE=1)
 same => n,Hangup()
exten => 2,1,Gosub(announcer-astdb,s,1(early))
 same => n,Set(REACHED_QUEUE=1)
 same => n,Hangup()
"""


@pytest.fixture
def pbx(sandbox: Path, request: pytest.FixtureRequest) -> Iterator[Asterisk]:
    """Without app_userevent unless a test asks for more modules (indirect
    parametrisation): the calls must go on without it."""
    modules = ["func_db", *getattr(request, "param", ())]
    with Asterisk(sandbox, extensions=dialplan(), extra_modules=modules) as running:
        yield running


@pytest.fixture
async def city(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles, pbx: Asterisk
) -> Settings:
    """Two districts, the sounds folder inside Asterisk's view."""
    files.write(
        switches=[
            ("core", "127.0.0.10", "north", ""),
            ("n1", "127.0.0.11", "north", "core"),
            ("s1", "127.0.0.21", "south", "core"),
        ],
        subscribers=[(CALLER_FORMS[2], "n1"), (SOUTH_CALLER, "s1")],
    )
    assert (await files.load_into(settings, redis, keys)).ok
    prompts = PromptSettings(
        sounds_dir=pbx.host_dir / "sounds", asterisk_sounds_dir=Path(pbx.root) / "sounds"
    )
    return settings.model_copy(update={"prompts": prompts})


def sound(pbx: Asterisk, name: str) -> str:
    """A playable sound; its path as announcer names it (the host's)."""
    pbx.write_silence(name, 0.2)
    return str(pbx.host_dir / "sounds" / name)


def ami_settings(pbx: Asterisk, **changes: object) -> AmiSettings:
    return AmiSettings(
        enabled=True,
        port=pbx.ami_port,
        username=pbx.ami_user,
        secret=pbx.ami_secret,
        timeout_s=3.0,
        max_backoff_s=0.5,
    ).model_copy(update=changes)


def make_mirror(
    pbx: Asterisk, redis: Redis, keys: Keys, settings: Settings, lease_s: float = 60.0
) -> Mirror:
    truth = Truth(redis, keys, settings.prompts.for_asterisk)
    sink = AstDbSink(ami_settings(pbx))
    return Mirror(sink, truth, lease_s=lease_s, max_writes_per_s=10_000, max_backoff_s=0.5)


@contextlib.asynccontextmanager
async def running(mirror: Mirror) -> AsyncIterator[asyncio.Task[None]]:
    """The mirror's loop, as ``announcer run`` runs it; cancelled on the way out
    (a killed daemon: nothing is cleaned up)."""
    task = asyncio.create_task(mirror.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(condition: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    async with asyncio.timeout(within_s):
        while not await condition():  # noqa: ASYNC110  (polling Asterisk's AstDB)
            await asyncio.sleep(0.1)


def played(call: Call) -> str | None:
    """The prompt the caller heard, or None; the call must reach the queue step."""
    assert call.variables.get("REACHED_QUEUE") == "1", call.summary()
    if call.variables.get("ANNOUNCER_RESULT") != "heard":
        assert "Playback" not in call.applications, call.summary()
        return None
    for step in call.steps:
        if step.application == "Playback":
            assert call.variables.get("PLAYBACKSTATUS") == "SUCCESS", call.summary()
            return step.data
        if step.application == "Read":
            return step.data.split(",")[1]
    raise AssertionError(f"heard, but nothing played: {call.summary()}")


async def test_affected_callers_in_every_form_hear_the_prompt(
    city: Settings, redis: Redis, keys: Keys, pbx: Asterisk
) -> None:
    audio = sound(pbx, "north-outage")
    ident = await announce(redis, keys, city, StaffRequest(districts=("north",), audio=audio))
    async with pbx.ami() as ami, running(make_mirror(pbx, redis, keys, city)):
        await eventually(lambda: _has(ami, "79161234567"))
        for caller in CALLER_FORMS:
            call = await ami.originate("1", ENTRY, callerid=caller)
            assert played(call) == f"{pbx.root}/sounds/north-outage", (caller, call.summary())
            assert call.variables["ANNOUNCER_ID"] == ident
            assert call.variables["ANNOUNCER_SCOPE"] == "district"
            # no app_userevent here: the call is only not counted
            assert call.variables["TRYSTATUS"] == "NOAPP", call.summary()
        for caller in (SOUTH_CALLER, UNKNOWN_CALLER, ""):
            assert played(await ami.originate("1", ENTRY, callerid=caller)) is None, caller


async def test_a_global_message_reaches_everyone_and_early_media_is_not_answered(
    city: Settings, redis: Redis, keys: Keys, pbx: Asterisk
) -> None:
    audio = sound(pbx, "everyone")
    ident = await announce(redis, keys, city, StaffRequest(everyone=True, audio=audio))
    async with pbx.ami() as ami, running(make_mirror(pbx, redis, keys, city)):
        await eventually(lambda: _has(ami, "global"))
        for caller in (SOUTH_CALLER, UNKNOWN_CALLER, "", CALLER_FORMS[0]):
            call = await ami.originate("1", ENTRY, callerid=caller)
            assert played(call) == f"{pbx.root}/sounds/everyone", caller
            assert call.variables["ANNOUNCER_ID"] == ident
        early = await ami.originate("2", ENTRY, callerid=SOUTH_CALLER)
    assert played(early) == f"{pbx.root}/sounds/everyone"
    assert "Answer" not in early.applications
    assert "Progress" in early.applications
    assert not any(
        e.get("Event") == "Newstate" and e.get("ChannelStateDesc") == "Up"
        for e in early.events
        if e.get("Uniqueid") == early.dialplan_channel_id
    ), early.summary()


async def test_prompts_stop_within_the_lease_once_the_daemon_is_gone(
    city: Settings, redis: Redis, keys: Keys, pbx: Asterisk
) -> None:
    """The daemon killed with an outage on: its AstDB entries are still there,
    but the lease runs out and every caller goes straight to the queue."""
    audio = sound(pbx, "north-outage")
    await announce(redis, keys, city, StaffRequest(districts=("north",), audio=audio))
    lease_s = 3.0
    async with pbx.ami() as ami:
        async with running(make_mirror(pbx, redis, keys, city, lease_s=lease_s)):
            await eventually(lambda: _has(ami, "79161234567"))
            assert played(await ami.originate("1", ENTRY, callerid=CALLER_FORMS[0]))
        killed_at = time.time()
        lease = await ami.db_get(FAMILY, LEASE)
        assert lease is not None
        assert float(lease) <= killed_at + lease_s + 1
        await asyncio.sleep(max(0.0, float(lease) - time.time()) + 1.1)
        call = await ami.originate("1", ENTRY, callerid=CALLER_FORMS[0])
        assert played(call) is None
        # the entry itself is still there: only the lease silenced it
        assert await ami.db_get(FAMILY, "79161234567") is not None


async def test_asterisk_restarted_the_mirror_reconnects_and_reconciles(
    city: Settings, redis: Redis, keys: Keys, pbx: Asterisk
) -> None:
    north = await announce(
        redis, keys, city, StaffRequest(districts=("north",), audio=sound(pbx, "n"))
    )
    mirror = make_mirror(pbx, redis, keys, city)
    async with running(mirror):
        async with pbx.ami() as ami:
            await eventually(lambda: _has(ami, "79161234567"))
        pbx.rx("core restart now")
        await eventually(lambda: _is(mirror, "down"))
        assert "AMI" in mirror.status.detail
        # while Asterisk was away: north is cleared, south falls, and an entry
        # nobody wants appears in AstDB
        await AnnouncementStore(redis, keys).remove_staff([north])
        south = await announce(
            redis, keys, city, StaffRequest(districts=("south",), audio=sound(pbx, "s"))
        )
        await eventually(lambda: _booted(pbx))
        async with pbx.ami() as ami:
            await ami.db_put(FAMILY, "79990000000", f"{int(time.time()) + 999},stray,x,switch")
            await eventually(lambda: _has(ami, "79260000001"))
            await eventually(lambda: _gone(ami, "79990000000"))
            assert await ami.db_get(FAMILY, "79161234567") is None
            call = await ami.originate("1", ENTRY, callerid=SOUTH_CALLER)
            assert played(call) == f"{pbx.root}/sounds/s"
            assert call.variables["ANNOUNCER_ID"] == south
            assert played(await ami.originate("1", ENTRY, callerid=CALLER_FORMS[3])) is None
        await eventually(lambda: _is(mirror, "up"))


async def test_the_daemon_mirrors_and_its_prompts_stop_after_it_is_killed(
    city: Settings, redis: Redis, keys: Keys, pbx: Asterisk, tmp_path: Path
) -> None:
    """``announcer run`` as a process, configured as an admin would: callers
    hear the outage; after SIGKILL, nothing plays once the lease is over."""
    audio = sound(pbx, "north-outage")
    await announce(redis, keys, city, StaffRequest(districts=("north",), audio=audio))
    config = tmp_path / "announcer.toml"
    config.write_text(f"""\
[redis]
url = "{city.redis.url}"
prefix = "{keys.prefix}"
[prompts]
sounds_dir = "{pbx.host_dir / "sounds"}"
asterisk_sounds_dir = "{pbx.root}/sounds"
cache_dir = "{tmp_path / "tts"}"
[dropbox]
spool = "{tmp_path / "spool"}"
[fastagi]
enabled = false
[ami]
enabled = true
port = {pbx.ami_port}
username = "{pbx.ami_user}"
secret = "{pbx.ami_secret}"
[mirror]
lease_s = 3
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOUNCER_")}
    command = [sys.executable, "-m", "announcer", "--config", str(config)]
    daemon = await asyncio.create_subprocess_exec(
        *command, "run", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with pbx.ami() as ami:
            await eventually(lambda: _has(ami, "79161234567"))
            call = await ami.originate("1", ENTRY, callerid=CALLER_FORMS[1])
            assert played(call) == f"{pbx.root}/sounds/north-outage"
            status = await asyncio.create_subprocess_exec(
                *command, "status", env=env, stdout=asyncio.subprocess.PIPE
            )
            shown = (await status.communicate())[0].decode()
            assert f"AstDB over AMI at 127.0.0.1:{pbx.ami_port}: in sync" in shown
            daemon.kill()
            await daemon.wait()
            await asyncio.sleep(3 + 1.1)
            call = await ami.originate("1", ENTRY, callerid=CALLER_FORMS[1])
            assert played(call) is None
    finally:
        if daemon.returncode is None:
            daemon.kill()
        output = (await daemon.communicate())[0].decode(errors="replace")
    assert "Traceback" not in output, output


async def test_a_wrong_ami_secret_is_reported_plainly(pbx: Asterisk) -> None:
    sink = AstDbSink(ami_settings(pbx, secret="not-the-secret"))
    with pytest.raises(LinkDown, match=r"check \[ami\] username and secret"):
        await sink.connect()
    closed = AstDbSink(ami_settings(pbx, port=1))
    with pytest.raises(LinkDown, match=r"cannot reach AMI on 127\.0\.0\.1:1 "):
        await closed.connect()


async def _has(ami: Ami, key: str) -> bool:
    return await ami.db_get(FAMILY, key) is not None


async def _gone(ami: Ami, key: str) -> bool:
    return await ami.db_get(FAMILY, key) is None


async def _is(mirror: Mirror, state: str) -> bool:
    return mirror.status.state == state


async def _booted(pbx: Asterisk) -> bool:
    try:
        return "fully booted" in await asyncio.to_thread(pbx.rx, "core waitfullybooted", 2.0)
    except Exception:
        return False


async def test_an_entry_asterisk_refuses_is_reported_and_the_rest_goes_on(pbx: Asterisk) -> None:
    """One value AMI cannot take (a line longer than Asterisk reads) is
    reported with Asterisk's reason; the entries beside it are written and
    the link stays up."""
    sink = AstDbSink(ami_settings(pbx))
    await sink.connect()
    try:
        refused = await sink.apply({"79990000001": "x" * 2000, "79990000002": "1,p,i,switch"}, ())
        assert list(refused) == ["79990000001"]
        assert "DBPut refused" in refused["79990000001"]
        assert sink.connected
        assert await sink.read_all() == {"79990000002": "1,p,i,switch"}
    finally:
        await sink.close()


async def test_a_prompt_whose_sound_is_missing_counts_as_not_heard(
    city: Settings, redis: Redis, keys: Keys, pbx: Asterisk
) -> None:
    """The sounds folder lost the file: the caller goes on to the queue and
    the dialplan does not claim they heard anything."""
    missing = str(pbx.host_dir / "sounds" / "gone")
    await announce(redis, keys, city, StaffRequest(districts=("north",), audio=missing))
    async with pbx.ami() as ami, running(make_mirror(pbx, redis, keys, city)):
        await eventually(lambda: _has(ami, "79161234567"))
        answered = await ami.originate("1", ENTRY, callerid=CALLER_FORMS[0])
        early = await ami.originate("2", ENTRY, callerid=CALLER_FORMS[0])
    for call in (answered, early):
        assert call.variables["REACHED_QUEUE"] == "1", call.summary()
        assert call.variables["ANNOUNCER_PROMPT"] == f"{pbx.root}/sounds/gone"
        assert call.variables["ANNOUNCER_RESULT"] == "none", call.summary()


@pytest.mark.parametrize("pbx", [("app_userevent",)], indirect=True)
async def test_callers_played_a_mirrored_prompt_are_counted_for_the_report(
    city: Settings, redis: Redis, keys: Keys, pbx: Asterisk
) -> None:
    """The dialplan tells announcer over AMI (UserEvent), which records the
    call like a FastAGI lookup: the report counts AstDB calls too."""
    audio = sound(pbx, "north-outage")
    ident = await announce(redis, keys, city, StaffRequest(districts=("north",), audio=audio))
    settings = city.model_copy(update={"ami": ami_settings(pbx)})
    [mirror] = make_mirrors(redis, keys, settings)
    log = HeardLog(redis, keys)
    async with pbx.ami() as ami, running(mirror):
        await eventually(lambda: _has(ami, "79161234567"))
        heard = await ami.originate("2", ENTRY, callerid=CALLER_FORMS[2])
        unaffected = await ami.originate("1", ENTRY, callerid=SOUTH_CALLER)
        assert played(heard) == f"{pbx.root}/sounds/north-outage"
        assert played(unaffected) is None
        assert "UserEvent" not in unaffected.applications
        await eventually(lambda: _counted(log, 1))
    [entry] = await log.entries()
    assert entry["announcement"] == ident
    assert (entry["phone"], entry["caller"]) == ("+79161234567", CALLER_FORMS[2])
    assert (entry["scope"], entry["switch"], entry["district"]) == ("district", "n1", "north")


async def _counted(log: HeardLog, calls: int) -> bool:
    return len(await log.entries()) >= calls
