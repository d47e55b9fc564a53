"""Notifications end to end: the real publisher writes the events, the real
service reads them from Redis, and real local servers receive the messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.cluster import Cluster
from announcer.config import AmiSettings, ClusterSettings, DropboxSettings, Settings
from announcer.daemon import lead, make_mirrors
from announcer.dropbox import Dropbox
from announcer.keys import Keys
from announcer.notify.service import Notifications
from announcer.publisher import Publisher
from announcer.redisconn import connect
from announcer.states import State
from tests.asterisk.sandbox import free_tcp_port
from tests.notify.conftest import (
    FakeAmi,
    Hooks,
    Inbox,
    RedisProxy,
    evaluate,
    eventually,
    reading,
    running,
    settled,
    stopped,
    stream,
    subscriber,
    with_subscribers,
)


async def test_an_outage_email_reaches_the_subscriber_of_its_district_only(
    city: Settings, redis: Redis, keys: Keys, smtp: Inbox
) -> None:
    north = subscriber("north desk", urls=[smtp.url("north@example.net")], districts=["Северный"])
    south = subscriber("south desk", urls=[smtp.url("south@example.net")], districts=["south"])
    settings = with_subscribers(city, north, south, language="ru")
    service = Notifications(redis, keys, settings)
    async with running(service):
        await reading(service, redis, keys)
        await evaluate(redis, keys, settings, n1=State.DOWN, n2=State.DOWN)
        await settled(service, redis, keys)

    [mail] = smtp.to("north@example.net")
    assert smtp.to("south@example.net") == []
    [opened] = [e for e in await stream(redis, keys) if e.get("action") == "opened"]
    since = time.strftime("%H:%M:%S", time.localtime(float(opened["created"])))
    assert mail.subject == "Авария: район Северный"
    assert f"Начало: {since}" in mail.body
    assert "коммутаторов: 2, абонентских номеров: 3: n1, n2" in mail.body
    assert "Абоненты слышат: «В районе Северный авария на сети." in mail.body
    assert service.sent == 1
    assert service.failed == 0


async def test_a_webhook_gets_the_message_as_json_fields(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    settings = with_subscribers(city, subscriber("noc", webhooks=[hooks.url("/noc")]))
    service = Notifications(redis, keys, settings)
    async with running(service):
        await reading(service, redis, keys)
        await evaluate(redis, keys, settings, n1=State.DOWN, n2=State.DOWN)
        await settled(service, redis, keys)

    [body] = hooks.to("/noc")
    assert body["schema_version"] == 1
    assert (body["event"], body["action"], body["ongoing"]) == ("outage", "opened", True)
    assert body["id"] == "auto-district-north"
    assert (body["scope"], body["source"]) == ("district", "auto")
    assert body["districts"] == [{"id": "north", "name": "Северный"}]
    assert body["switches"] == ["n1", "n2"]
    assert (body["switch_count"], body["subscriber_count"]) == (2, 3)
    assert body["started_at"]
    assert body["ended_at"] is None
    assert body["text"].startswith("There is a network failure in the Северный district.")
    assert body["title"] == "Outage: Северный district"
    assert "Callers hear: «There is a network failure" in body["message"]


async def test_a_switch_outage_that_grows_into_its_district_is_one_message(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    settings = with_subscribers(city, subscriber("noc", webhooks=[hooks.url("/noc")]), debounce_s=2)
    service = Notifications(redis, keys, settings)
    async with running(service):
        await reading(service, redis, keys)
        await evaluate(redis, keys, settings, n1=State.DOWN)
        await evaluate(redis, keys, settings, n2=State.DOWN)
        await settled(service, redis, keys)

    [body] = hooks.to("/noc")
    assert body["title"] == "Outage: Северный district"
    assert body["ids"] == ["auto-switch-n1", "auto-district-north"]
    assert body["switch_count"] == 2
    assert "Began as: switch n1 (Северный district)" in body["message"]
    assert "cleared" not in body["message"].lower()


async def test_an_outage_opened_and_cleared_within_the_window_is_one_message(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    settings = with_subscribers(city, subscriber("noc", webhooks=[hooks.url("/noc")]), debounce_s=2)
    service = Notifications(redis, keys, settings)
    async with running(service):
        await reading(service, redis, keys)
        await evaluate(redis, keys, settings, n1=State.DOWN)
        await evaluate(redis, keys, settings, n1=State.UP)
        await settled(service, redis, keys)

    [body] = hooks.to("/noc")
    assert body["title"] == "Outage began and cleared: switch n1 (Северный district)"
    assert [a["action"] for a in body["actions"]] == ["opened", "restored", "cleared"]
    assert body["ongoing"] is False
    assert body["ended_at"]
    assert body["restored_text"].startswith("Service has been restored.")
    assert "Callers now hear, for 30 min: «Service has been restored." in body["message"]


async def test_a_flapping_outage_gives_at_most_one_message_per_window(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    window_s = 2.0
    settings = with_subscribers(
        city, subscriber("noc", webhooks=[hooks.url("/noc")]), debounce_s=window_s
    )
    service = Notifications(redis, keys, settings)
    async with running(service):
        await reading(service, redis, keys)
        started = time.monotonic()
        for _ in range(5):
            await evaluate(redis, keys, settings, s1=State.DOWN)
            await evaluate(redis, keys, settings, s1=State.UP)
        flapped_s = time.monotonic() - started
        await settled(service, redis, keys)

    posts = hooks.to("/noc")
    # the law: one message per window at most, however fast the flapping
    assert 1 <= len(posts) <= 1 + int(flapped_s // window_s)
    opened = [a for body in posts for a in body["actions"] if a["action"] == "opened"]
    assert len(opened) == 5  # every change is told, none lost
    if len(posts) == 1:
        assert "Unstable: opened 5 times, cleared 5 times" in posts[0]["message"]


async def test_a_failing_receiver_is_retried_then_reported_and_the_others_still_get_theirs(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    token, password = "s3cr3t-t0ken-4242", "Pa55w0rd-of-the-chat"
    broken = subscriber("broken desk", webhooks=[hooks.url(f"/fail/{token}")])
    closed = subscriber("closed desk", webhooks=[f"http://127.0.0.1:{free_tcp_port()}/hook"])
    port = free_tcp_port()
    chat = subscriber("chat", urls=[f"json://bot:{password}@127.0.0.1:{port}/{token}"])
    noc = subscriber("noc", webhooks=[hooks.url("/noc")])
    settings = with_subscribers(city, broken, closed, chat, noc, attempts=3)
    service = Notifications(redis, keys, settings)
    async with running(service) as task:
        await reading(service, redis, keys)
        await evaluate(redis, keys, settings, n1=State.DOWN, n2=State.DOWN)
        await settled(service, redis, keys)
        assert len(hooks.to(f"/fail/{token}")) == 3  # tried, and tried again
        assert len(hooks.to("/noc")) == 1
        assert (service.sent, service.failed) == (1, 3)

        await evaluate(redis, keys, settings, s1=State.DOWN)  # the service goes on
        await settled(service, redis, keys)
        assert not task.done()
    assert [b["title"] for b in hooks.to("/noc")] == [
        "Outage: Северный district",
        "Outage: switch s1 (Южный district)",
    ]
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        "broken desk" in m and "http://127.0.0.1" in m and "HTTP 500" in m for m in failures
    ), failures
    assert any("closed desk" in m and "cannot reach it" in m for m in failures), failures
    assert any(f"chat (json://bot:****@127.0.0.1:{port}/…)" in m for m in failures), failures
    # a webhook's path may be its secret; apprise's own log lines are checked too
    assert token not in caplog.text
    assert password not in caplog.text


async def test_a_restart_neither_repeats_nor_loses_a_notification(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    settings = with_subscribers(city, subscriber("noc", webhooks=[hooks.url("/noc")]))
    first = Notifications(redis, keys, settings)
    async with running(first):
        await reading(first, redis, keys)
        await evaluate(redis, keys, settings, n1=State.DOWN, n2=State.DOWN)
        await settled(first, redis, keys)
    # while no notifications run: the south goes down
    await evaluate(redis, keys, settings, s1=State.DOWN)

    second = Notifications(redis, keys, settings)
    async with running(second):
        await settled(second, redis, keys)
    assert [b["title"] for b in hooks.to("/noc")] == [
        "Outage: Северный district",
        "Outage: switch s1 (Южный district)",
    ]


async def test_an_instance_that_leads_again_goes_on_from_the_cursor(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    """Leadership lost and regained runs the same service again: it must
    not start from where it was, since another instance went on meanwhile."""
    settings = with_subscribers(city, subscriber("noc", webhooks=[hooks.url("/noc")]))
    this, other = Notifications(redis, keys, settings), Notifications(redis, keys, settings)
    async with running(this):
        await reading(this, redis, keys)
        await evaluate(redis, keys, settings, n1=State.DOWN, n2=State.DOWN)
        await settled(this, redis, keys)
    async with running(other):
        await evaluate(redis, keys, settings, s1=State.DOWN)
        await settled(other, redis, keys)
    async with running(this):
        await evaluate(redis, keys, settings, s1=State.UP)
        await settled(this, redis, keys)
    assert [b["title"] for b in hooks.to("/noc")] == [
        "Outage: Северный district",
        "Outage: switch s1 (Южный district)",
        "Outage cleared: switch s1 (Южный district)",
    ]


async def test_events_still_held_at_a_stop_are_sent_after_the_restart(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    noc = subscriber("noc", webhooks=[hooks.url("/noc")])
    slow = with_subscribers(city, noc, debounce_s=600)
    first = Notifications(redis, keys, slow)
    async with running(first):
        await reading(first, redis, keys)
        await evaluate(redis, keys, slow, n1=State.DOWN, n2=State.DOWN)
        await eventually(lambda: first.held == 1, "the outage to be held")
    assert hooks.posts == []

    second = Notifications(redis, keys, with_subscribers(city, noc))
    async with running(second):
        await settled(second, redis, keys)
    assert [b["title"] for b in hooks.to("/noc")] == ["Outage: Северный district"]


async def test_a_rejected_drop_names_the_file_and_the_reason(
    city: Settings, redis: Redis, keys: Keys, smtp: Inbox, tmp_path: Path
) -> None:
    support = subscriber("support", urls=[smtp.url("support@example.net")], events=["drop"])
    settings = with_subscribers(city, support, language="ru").model_copy(
        update={"dropbox": DropboxSettings(spool=tmp_path / "spool", settle_s=0)}
    )
    box = Dropbox(redis, keys, settings)
    service = Notifications(redis, keys, settings)
    async with running(service):
        await reading(service, redis, keys)
        (box.incoming).mkdir(parents=True)
        (box.incoming / "авария.toml").write_text('districts = ["Нигде"]\ntext = "Авария"\n')
        [outcome] = await box.scan_once()
        assert not outcome.accepted
        await settled(service, redis, keys)
        (box.incoming / "работы.toml").write_text('districts = ["Южный"]\ntext = "Работы"\n')
        [outcome] = await box.scan_once()
        assert outcome.accepted
        await Publisher(redis, keys, settings, None).publish_once()
        await settled(service, redis, keys)

    rejected, published = smtp.to("support@example.net")
    assert rejected.subject == "Файл не опубликован: авария"
    assert "Причина: авария.toml: unknown district 'Нигде'" in rejected.body
    assert "авария.error.txt" in rejected.body
    assert published.subject == "Объявление техподдержки: район Южный"
    assert "Из папки: работы" in published.body
    assert "Абоненты слышат: «Работы»" in published.body


async def test_an_ami_link_lost_and_regained_is_told_twice(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    port = free_tcp_port()
    ami = AmiSettings(enabled=True, port=port, timeout_s=2, max_backoff_s=0.5)
    settings = with_subscribers(
        city, subscriber("noc", webhooks=[hooks.url("/noc")], events=["link"])
    ).model_copy(update={"ami": ami})
    service = Notifications(redis, keys, settings)
    [mirror] = make_mirrors(redis, keys, settings, link_changed=service.link_changed)
    asterisk = FakeAmi(port)
    async with running(service), contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(asterisk.stop)
        mirror_task = asyncio.create_task(mirror.run())
        stack.push_async_callback(stopped, mirror_task)
        await eventually(lambda: len(hooks.to("/noc")) == 1, "the link to be reported lost")
        await asterisk.start()
        await eventually(lambda: len(hooks.to("/noc")) == 2, "the link to be reported back")

    lost, back = hooks.to("/noc")
    name = f"AstDB over AMI at 127.0.0.1:{port}"
    assert (lost["title"], lost["action"], lost["link"]) == (f"Link lost: {name}", "lost", name)
    assert f"cannot reach AMI on 127.0.0.1:{port}" in lost["reason"]
    assert "the dialplan then plays nothing" in lost["message"]
    assert back["title"] == f"Link back: {name}"
    assert (back["action"], back["ongoing"]) == ("regained", False)


async def test_an_ami_link_lost_just_before_stopping_is_still_told(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks
) -> None:
    """Only this process knows a link is lost: stopping within the grouping
    window tells it at once rather than taking it along."""
    port = free_tcp_port()
    ami = AmiSettings(enabled=True, port=port, timeout_s=2, max_backoff_s=0.5)
    settings = with_subscribers(
        city, subscriber("noc", webhooks=[hooks.url("/noc")]), debounce_s=30
    ).model_copy(update={"ami": ami})
    service = Notifications(redis, keys, settings)
    [mirror] = make_mirrors(redis, keys, settings, link_changed=service.link_changed)
    async with running(service):
        mirror_task = asyncio.create_task(mirror.run())
        try:
            await eventually(lambda: mirror.status.state == "down", "the link to be lost")
            await eventually(lambda: service.held == 1, "the loss held for grouping")
            assert hooks.posts == []
        finally:
            await stopped(mirror_task)
    [lost] = hooks.to("/noc")
    assert lost["title"] == f"Link lost: AstDB over AMI at 127.0.0.1:{port}"
    assert service.held == service.pending == 0


async def test_redis_lost_and_regained_is_told_without_redis(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks, redis_url: str
) -> None:
    door = RedisProxy(redis_url)
    await door.open()
    settings = with_subscribers(city, subscriber("noc", webhooks=[hooks.url("/noc")]))
    through = settings.redis.model_copy(update={"url": door.url, "timeout_ms": 500})
    settings = settings.model_copy(update={"redis": through})
    client = connect(through)
    service = Notifications(client, keys, settings)
    try:
        async with running(service):
            await reading(service, redis, keys)
            await door.shut()
            await eventually(lambda: len(hooks.posts) == 1, "Redis to be reported lost")
            await door.open()
            await eventually(lambda: len(hooks.posts) == 2, "Redis to be reported back")
    finally:
        await door.shut()
        await client.aclose()
    lost, back = hooks.to("/noc")
    assert lost["title"] == "Link lost: Redis"
    assert "cannot publish announcements" in lost["message"]
    assert back["title"] == "Link back: Redis"


async def test_redis_lost_under_the_redis_key_mirror_too_is_one_message(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks, redis_url: str
) -> None:
    """The Redis-key mirror notices the same outage on its own: the NOC
    still hears of it once, and of its end once."""
    door = RedisProxy(redis_url)
    await door.open()
    settings = with_subscribers(city, subscriber("noc", webhooks=[hooks.url("/noc")]))
    through = settings.redis.model_copy(update={"url": door.url, "timeout_ms": 500})
    mirror_settings = settings.mirror.model_copy(update={"redis_keys": True, "lease_s": 2})
    settings = settings.model_copy(update={"redis": through, "mirror": mirror_settings})
    client = connect(through)
    service = Notifications(client, keys, settings)
    [mirror] = make_mirrors(client, keys, settings, link_changed=service.link_changed)
    mirror_task = asyncio.create_task(mirror.run())
    try:
        async with running(service):
            await reading(service, redis, keys)
            await eventually(lambda: mirror.status.state == "up", "the mirror to sync")
            await door.shut()
            # both notice: the mirror, and the service reading the event stream
            await eventually(lambda: mirror.status.state == "down", "the mirror to lose Redis")
            await eventually(lambda: not service._redis_up, "the stream reader to lose Redis")
            await eventually(lambda: len(hooks.posts) >= 1, "Redis to be reported lost")
            await eventually(lambda: service.held == service.pending == 0, "quiet")
            assert len(hooks.posts) == 1
            await door.open()
            await eventually(lambda: mirror.status.state == "up", "the mirror to sync again")
            await eventually(lambda: service._redis_up, "the stream reader to read again")
            await eventually(lambda: len(hooks.posts) >= 2, "Redis to be reported back")
            await eventually(lambda: service.held == service.pending == 0, "quiet")
    finally:
        await stopped(mirror_task)
        await door.shut()
        await client.aclose()
    assert [post["title"] for post in hooks.to("/noc")] == ["Link lost: Redis", "Link back: Redis"]


async def test_a_leader_that_loses_redis_tells_it_and_its_return_once(
    city: Settings, redis: Redis, keys: Keys, hooks: Hooks, redis_url: str
) -> None:
    """Two instances of a cluster; Redis goes away for both. The leader steps
    down before its grouping window ends: it tells "Redis lost" on its way
    out, and "Redis back" when its heartbeat reaches Redis again, whoever
    leads then; the other instance tells nothing."""
    door = RedisProxy(redis_url)
    await door.open()
    settings = with_subscribers(
        city, subscriber("noc", webhooks=[hooks.url("/noc")]), debounce_s=30
    )
    through = settings.redis.model_copy(update={"url": door.url, "timeout_ms": 500})
    settings = settings.model_copy(update={"redis": through})
    lease = ClusterSettings(enabled=True, heartbeat_s=0.3, lease_s=1.5)
    clusters: list[Cluster] = []
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(door.shut)
        for name in ("east", "west"):
            client = connect(through)
            stack.push_async_callback(client.aclose)
            service = Notifications(client, keys, settings)
            cluster = Cluster(client, keys, lease.model_copy(update={"instance": name}))
            cluster.redis_seen = service.redis_seen
            clusters.append(cluster)
            publisher = Publisher(client, keys, settings, None)
            for work in (cluster.run(), lead(cluster, publisher, {"notify": service.run})):
                stack.push_async_callback(stopped, asyncio.create_task(work))
        await eventually(lambda: any(c.leading.is_set() for c in clusters), "a leader")
        await eventually(lambda: redis.exists(keys.notify_cursor), "the leader to read")
        await door.shut()
        await eventually(lambda: len(hooks.posts) >= 1, "the leader to tell Redis lost")
        assert not any(c.leading.is_set() for c in clusters)
        await door.open()
        await eventually(lambda: len(hooks.posts) >= 2, "Redis back to be told")
        await eventually(lambda: any(c.leading.is_set() for c in clusters), "a leader again")
        await asyncio.sleep(1.0)  # anything more would come now
    lost, back = hooks.to("/noc")
    assert lost["title"] == "Link lost: Redis"
    assert "cannot publish announcements" in lost["message"]
    assert back["title"] == "Link back: Redis"
