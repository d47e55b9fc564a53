"""From switch states to what a caller hears: engine, prompts and lookup together.

A real Redis, real espeak-ng and ffmpeg rendering into a temporary sounds
folder, and the real lookup script.
"""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.announce_store import AnnouncementStore
from announcer.announcements import Announcement, Maintenance, Scope, Source
from announcer.config import PromptSettings, Settings
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from announcer.prompts.renderer import PromptRenderer
from announcer.prompts.tts import Speech, TtsFailure
from announcer.publisher import Publisher
from announcer.staff import StaffRequest, publish
from announcer.states import State, SwitchState
from announcer.store import StateStore
from tests.conftest import InventoryFiles, announce

CITY = (
    ("core", "127.0.0.10", "north", ""),
    ("n1", "127.0.0.11", "north", "core"),
    ("n2", "127.0.0.12", "north", "core"),
    ("n3", "127.0.0.13", "north", "core"),
    ("s1", "127.0.0.21", "south", "core"),
    ("s2", "127.0.0.22", "south", "core"),
)
N1_CALLER, S1_CALLER = "+79161234567", "+79260000001"


@pytest.fixture
async def city(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles, tmp_path: Path
) -> Settings:
    others = [("+79160000002", "n2"), ("+79160000003", "n3")]
    others += [("+79260000002", "s2"), ("+79260000003", "s2")]
    files.write(switches=CITY, subscribers=[(N1_CALLER, "n1"), (S1_CALLER, "s1"), *others])
    assert (await files.load_into(settings, redis, keys)).ok
    prompts = PromptSettings(
        sounds_dir=tmp_path / "sounds", cache_dir=tmp_path / "cache", tts="espeak"
    )
    return settings.model_copy(update={"prompts": prompts})


def publisher(redis: Redis, keys: Keys, settings: Settings) -> Publisher:
    renderer = PromptRenderer(settings.prompts, settings.announcements.language)
    return Publisher(redis, keys, settings, renderer)


async def set_states(redis: Redis, keys: Keys, **states: State) -> None:
    await StateStore(redis, keys).publish(
        {s: SwitchState(st, 100.0, "no echo reply", s if st is State.DOWN else None)
         for s, st in states.items()}
    )  # fmt: skip


def plays(prompt: str | None) -> float:
    """Seconds of audio in the prompt's 8 kHz WAV; fails if it is missing."""
    assert prompt is not None
    with wave.open(prompt + ".wav") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        frames: int = w.getnframes()
    return frames / 8000


async def test_dead_switch_is_heard_by_its_callers_only(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await set_states(redis, keys, n1=State.DOWN)
    result = await publisher(redis, keys, city).publish_once()
    [a] = result.active
    assert (a.id, a.source, a.targets) == ("auto-switch-n1", Source.AUTO, ("n1",))
    assert a.text.startswith("По вашему адресу авария на сети")
    assert plays(a.prompt) > 1.0
    lookup = Lookup(redis, keys, PhoneNormaliser())
    heard = await lookup(N1_CALLER)
    assert (heard.prompt, heard.announcement) == (a.prompt, "auto-switch-n1")
    assert "hears auto announcement auto-switch-n1" in heard.reason
    other = await lookup(S1_CALLER)
    assert (other.prompt, other.announcement) == (None, None)
    events = await StateStore(redis, keys).events()
    opened = [e for e in events if e.get("kind") == "announcement"]
    assert [(e["action"], e["id"]) for e in opened] == [("opened", "auto-switch-n1")]


async def test_district_outage_then_restored(city: Settings, redis: Redis, keys: Keys) -> None:
    await set_states(redis, keys, n1=State.DOWN, n2=State.DOWN)
    pub = publisher(redis, keys, city)
    [district] = (await pub.publish_once(now=1000.0)).active
    assert district.scope is Scope.DISTRICT
    assert district.text.startswith("В районе Северный авария на сети")
    await set_states(redis, keys, n1=State.UP, n2=State.UP)
    [restored] = (await pub.publish_once(now=1010.0)).active
    assert restored.source is Source.RESTORED
    assert "Связь восстановлена" in restored.text
    assert (await Lookup(redis, keys, PhoneNormaliser())(N1_CALLER, now=1011.0)).prompt == (
        restored.prompt
    )
    events = await StateStore(redis, keys).events()
    actions = [(e["action"], e["id"]) for e in events if e.get("kind") == "announcement"]
    assert ("closed", "auto-district-north") in actions


async def test_staff_recording_overrides_the_automatic_prompt(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await set_states(redis, keys, n1=State.DOWN)
    request = StaffRequest(districts=("Северный",), text="Авария у провайдера", audio="/x/rec")
    made = await publish(redis, keys, city, request)
    assert isinstance(made, Announcement)
    await publisher(redis, keys, city).publish_once()
    heard = await Lookup(redis, keys, PhoneNormaliser())(N1_CALLER)
    assert (heard.announcement, heard.prompt) == (made.id, "/x/rec")


async def test_expired_prompt_is_never_played_even_if_nothing_cleaned_it(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await set_states(redis, keys, n1=State.DOWN)
    await publisher(redis, keys, city).publish_once(now=1000.0)
    lookup = Lookup(redis, keys, PhoneNormaliser())
    assert (await lookup(N1_CALLER, now=1000.0 + 60)).prompt is not None
    # the publisher died: nothing renews the automatic announcement
    after = await lookup(N1_CALLER, now=1000.0 + city.announcements.auto_hold_s)
    assert (after.prompt, after.announcement) == (None, None)


async def test_planned_works_silence_the_outage_alarm(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    window = Maintenance("w1", ("north",), 900.0, 5000.0, "", None, 800.0)
    await AnnouncementStore(redis, keys).add_maintenance(window)
    await set_states(redis, keys, n1=State.DOWN)
    [works] = (await publisher(redis, keys, city).publish_once(now=1000.0)).active
    assert works.source is Source.MAINTENANCE
    assert "плановые работы" in works.text.lower()
    events = await StateStore(redis, keys).events()
    assert {"kind": "outage-in-maintenance", "switch": "n1"}.items() <= next(
        e for e in events if e.get("kind") == "outage-in-maintenance"
    ).items()
    opened = [e["id"] for e in events if e.get("action") == "opened"]
    assert opened == ["maintenance-w1"], "no alarm for the outage itself"


class Broken:
    """A text-to-speech engine that always fails, as gTTS does offline."""

    name = "espeak"

    def __init__(self) -> None:
        self.calls = 0

    async def synthesize(self, text: str, language: str) -> Speech | TtsFailure:
        self.calls += 1
        return TtsFailure("espeak-ng exited with status 1")


async def test_a_prompt_that_cannot_be_rendered_never_replaces_a_working_one(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await set_states(redis, keys, n1=State.DOWN)
    [good] = (await publisher(redis, keys, city).publish_once(now=1000.0)).active
    broken = Broken()
    renderer = PromptRenderer(city.prompts, "ru", engines={"espeak": broken})
    pub = Publisher(redis, keys, city, renderer)
    [same] = (await pub.publish_once(now=1001.0)).active
    assert (same.id, same.prompt) == (good.id, good.prompt), "its working prompt stays"
    assert broken.calls == 0
    # the district name changes the wording: a new text must be rendered, and fails
    await set_states(redis, keys, n1=State.DOWN, n2=State.DOWN)
    [district] = (await pub.publish_once(now=1005.0)).active
    assert broken.calls >= 1
    assert district.prompt is not None, "a shipped fragment plays instead"
    assert district.prompt != good.prompt
    assert plays(district.prompt) > 0.5
    events = await StateStore(redis, keys).events()
    failed = [e for e in events if e.get("kind") == "prompt-failed"]
    assert [e["id"] for e in failed] == ["auto-district-north"]


async def test_active_set_is_stored_with_its_index(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    await set_states(redis, keys, n3=State.DOWN)
    await publisher(redis, keys, city).publish_once()
    assert await redis.hgetall(keys.active_by_switch) == {"n3": "auto-switch-n3"}
    record = json.loads(await redis.hget(keys.active, "auto-switch-n3") or "{}")
    assert record["source"] == "auto"
    assert await redis.get(keys.active_global) is None


async def test_a_quiet_publisher_still_sees_the_next_change_and_each_expiry(
    city: Settings, redis: Redis, keys: Keys
) -> None:
    """Nothing is evaluated again while nothing changes; but a state written
    by the poller, and an expiry falling due, are seen at once."""
    p = publisher(redis, keys, city)
    await set_states(redis, keys, n1=State.UP, s1=State.UP)
    assert (await p.publish_once()).active == []
    quiet = await p.publish_once()
    assert await p.publish_once() is quiet  # the same answer, not evaluated again

    await set_states(redis, keys, n1=State.DOWN)
    [outage] = (await p.publish_once()).active
    assert outage.id == "auto-switch-n1"

    made = await announce(
        redis, keys, city, StaffRequest(districts=("south",), text="Работы.", ttl_s=60)
    )
    now = time.time()
    assert made in {a.id for a in (await p.publish_once(now)).active}
    assert made not in {a.id for a in (await p.publish_once(now + 61)).active}
