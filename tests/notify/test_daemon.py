"""``announcer run`` with [notify]: the daemon's own wiring delivers."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from announcer.announcements import Announcement
from announcer.config import Settings
from announcer.keys import Keys
from announcer.staff import StaffRequest, publish
from tests.conftest import InventoryFiles
from tests.daemon import daemon_config, start_daemon, stopped
from tests.notify.conftest import Hooks, eventually


async def test_announcer_run_notifies_a_staff_announcement(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    files: InventoryFiles,
    tmp_path: Path,
    hooks: Hooks,
) -> None:
    files.write()
    assert (await files.load_into(settings, redis, keys)).ok
    config = tmp_path / "announcer.toml"
    notify = f"""\
[fastagi]
enabled = false
[metrics]
enabled = false
[notify]
debounce_s = 0.2
[[notify.subscribers]]
name = "support desk"
webhooks = ["{hooks.url("/desk")}"]
events = ["staff"]
"""
    daemon_config(config, settings, keys, tmp_path, notify)
    daemon = await start_daemon(config)
    try:
        await eventually(lambda: redis.exists(keys.notify_cursor), "the daemon to notify")
        request = StaffRequest(districts=("Южный",), text="Работы на линии", ttl_s=3600)
        made = await publish(redis, keys, settings, request)
        assert isinstance(made, Announcement)
        await eventually(lambda: bool(hooks.to("/desk")), "the webhook to be called")
    finally:
        log = await stopped(daemon, config)
    [body] = hooks.to("/desk")
    assert (body["event"], body["action"], body["id"]) == ("staff", "published", made.id)
    assert body["districts"] == [{"id": "south", "name": "Южный"}]
    assert body["text"] == "Работы на линии"
    assert "notifications to support desk" in log
