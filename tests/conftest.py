"""Shared fixtures: a real Redis (private unless $ANNOUNCER_TEST_REDIS_URL is
set), a fresh key prefix per test, and helpers to write inventory CSVs."""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from announcer.announcements import Announcement
from announcer.config import RedisSettings, Settings
from announcer.demo import firewall as netfilter
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import ImportResult, run_import
from announcer.inventory.model import Table
from announcer.keys import Keys
from announcer.private_redis import PrivateRedis
from announcer.publisher import Publisher
from announcer.redisconn import connect
from announcer.staff import StaffRequest, publish


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the whole session; a private one unless one is named.

    The tests never write into a Redis that merely happens to answer on the
    default port: it may be someone's production.
    """
    named = os.environ.get("ANNOUNCER_TEST_REDIS_URL")
    if named:
        yield named
        return
    with PrivateRedis() as url:
        yield url


@pytest.fixture
def keys() -> Keys:
    return Keys(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def settings(redis_url: str, keys: Keys) -> Settings:
    return Settings(redis=RedisSettings(url=redis_url, prefix=keys.prefix))


@pytest.fixture
async def redis(settings: Settings, keys: Keys) -> AsyncIterator[Redis]:
    client = connect(settings.redis)
    try:
        yield client
    finally:
        stale = [k async for k in client.scan_iter(f"{keys.prefix}:*", count=1000)]
        for start in range(0, len(stale), 1000):
            await client.unlink(*stale[start : start + 1000])
        await client.aclose()


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


class InventoryFiles:
    """Writes districts.csv, switches.csv and subscribers.csv into a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.districts = folder / "districts.csv"
        self.switches = folder / "switches.csv"
        self.subscribers = folder / "subscribers.csv"

    def write(
        self,
        districts: Sequence[Sequence[object]] = (("north", "Северный"), ("south", "Южный")),
        switches: Sequence[Sequence[object]] = (
            ("core", "127.0.0.10", "north", ""),
            ("n1", "127.0.0.11", "north", "core"),
            ("s1", "127.0.0.12", "south", "core"),
        ),
        subscribers: Sequence[Sequence[object]] = (
            ("8 (916) 123-45-67", "n1"),
            ("+7 926 000-00-01", "s1"),
        ),
        subscriber_header: Sequence[str] = ("phone", "switch"),
    ) -> InventoryFiles:
        write_csv(self.districts, ("id", "name"), districts)
        write_csv(self.switches, ("id", "address", "district", "parent"), switches)
        write_csv(self.subscribers, subscriber_header, subscribers)
        return self

    def tables(self) -> tuple[Table, Table, Table]:
        return (
            read_table("districts", self.districts),
            read_table("switches", self.switches),
            read_table("subscribers", self.subscribers),
        )

    async def load_into(self, settings: Settings, redis: Redis, keys: Keys) -> ImportResult:
        """Import the files as `announcer import` would."""
        return await run_import(settings, redis, keys, self.tables, "test")

    def args(self) -> list[str]:
        return [
            "--districts", str(self.districts),
            "--switches", str(self.switches),
            "--subscribers", str(self.subscribers),
        ]  # fmt: skip


async def announce(redis: Redis, keys: Keys, settings: Settings, request: StaffRequest) -> str:
    """What ``announcer announce`` does: store the request, make it live; its id."""
    made = await publish(redis, keys, settings, request)
    assert isinstance(made, Announcement), made
    await Publisher(redis, keys, settings, None).publish_once()
    return made.id


@pytest.fixture
def firewall() -> Iterator[netfilter.Firewall]:
    """Chains of the test's own for iptables, removed afterwards; skipped
    without root, and a failure in CI, where iptables must work."""
    if os.geteuid() != 0:
        pytest.skip("needs root for raw ICMP and iptables")
    reason = netfilter.missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with netfilter.Firewall() as fw:
        yield fw


@pytest.fixture
def files(tmp_path: Path) -> InventoryFiles:
    return InventoryFiles(tmp_path)
