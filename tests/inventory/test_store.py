"""The inventory in a real Redis: atomic swap, diff, failed imports, memory layout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from announcer import keys as layout
from announcer.config import Settings
from announcer.inventory.csv_source import read_table
from announcer.inventory.importer import ImportResult, run_import
from announcer.inventory.model import Table
from announcer.inventory.store import ImportBusy, InventoryStore, pack_numbers, unpack_numbers
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser
from tests.conftest import InventoryFiles


def csv_tables(files: InventoryFiles) -> tuple[Table, Table, Table]:
    return (
        read_table("districts", files.districts),
        read_table("switches", files.switches),
        read_table("subscribers", files.subscribers),
    )


async def do_import(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> ImportResult:
    return await run_import(settings, redis, keys, lambda: csv_tables(files), "test")


async def test_import_then_reimport_reports_what_changed(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    first = await do_import(settings, redis, keys, files.write())
    assert first.ok
    assert first.diff is not None
    assert first.diff.switches_added == ["core", "n1", "s1"]
    assert first.diff.subscribers_added == 2

    files.write(
        districts=(("north", "Северный"), ("south", "Южный район"), ("east", "Восточный")),
        switches=(
            ("core", "127.0.0.10", "north", ""),
            ("n1", "127.0.0.11", "north", "core"),
            ("e1", "127.0.0.13", "east", "core"),
        ),
        subscribers=(("+79161234567", "e1"), ("+7 926 000-00-05", "n1")),
    )
    second = await do_import(settings, redis, keys, files)
    d = second.diff
    assert d is not None
    assert (d.districts_added, d.districts_removed, d.districts_renamed) == (
        ["east"],
        [],
        ["south"],
    )
    assert (d.switches_added, d.switches_removed, d.switches_changed) == (["e1"], ["s1"], [])
    assert (d.subscribers_added, d.subscribers_removed, d.subscribers_moved) == (1, 1, 1)
    assert d.moved_examples == [("79161234567", "n1", "e1")]
    report = "\n".join(second.report())
    assert "subscribers: 1 added, 1 removed, 1 moved to another switch" in report
    assert "+79161234567: n1 -> e1" in report

    third = await do_import(settings, redis, keys, files)
    assert third.diff is not None
    assert third.diff.empty
    assert "no changes since the previous import" in "\n".join(third.report())


async def test_old_generations_are_removed(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    await do_import(settings, redis, keys, files.write())
    await do_import(settings, redis, keys, files)
    live = await InventoryStore(redis, keys).current()
    assert live is not None
    assert live.gen == 2
    leftovers = [k async for k in redis.scan_iter(keys.generation_pattern(1))]
    assert leftovers == []
    assert await redis.smembers(keys.inventory_gens) == {"2"}


async def test_too_many_bad_rows_changes_nothing(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    await do_import(settings, redis, keys, files.write())
    before = await InventoryStore(redis, keys).current()
    files.write(subscribers=[("89161234567", "n1"), ("bad", "n1"), ("also bad", "n1")])
    result = await do_import(settings, redis, keys, files)
    assert not result.ok
    assert "2 of 3 rows of" in result.refused[0]
    assert await InventoryStore(redis, keys).current() == before
    lookup = Lookup(redis, keys, PhoneNormaliser())
    assert (await lookup("+79260000001")).switch == "s1"


async def test_an_empty_switch_list_never_replaces_the_inventory(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    await do_import(settings, redis, keys, files.write())
    files.write(switches=(), subscribers=())
    result = await do_import(settings, redis, keys, files)
    assert result.refused == [
        "no switch was accepted; refusing to replace the inventory with an empty one"
    ]
    assert (await InventoryStore(redis, keys).current()) is not None


async def test_import_that_dies_while_writing_leaves_the_old_one_live(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    await do_import(settings, redis, keys, files.write())
    many = [(f"8916{i:07d}", "s1") for i in range(70_000)]
    files.write(subscribers=many)

    def die(written: int) -> None:
        raise ConnectionError("connection to Redis lost")

    with pytest.raises(ConnectionError):
        await run_import(
            settings, redis, keys, lambda: csv_tables(files), "test", write_progress=die
        )
    lookup = Lookup(redis, keys, PhoneNormaliser())
    assert (await lookup("89161234567")).switch == "n1"
    assert (await lookup("89160000001")).known is False
    assert await redis.exists(keys.phones(2, 0)) == 1  # the half-written generation
    # the next import clears it away, and does not mistake it for live data
    result = await do_import(settings, redis, keys, files.write())
    assert result.diff is not None
    assert result.diff.empty
    assert [k async for k in redis.scan_iter(keys.generation_pattern(2))] == []


async def test_second_import_at_once_is_refused(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    held = redis.lock(keys.inventory_lock, timeout=60)
    assert await held.acquire()
    try:
        with pytest.raises(ImportBusy, match="another import is running"):
            await do_import(settings, redis, keys, files.write())
    finally:
        await held.release()


async def test_lookups_never_see_half_an_import(
    settings: Settings, redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    """Old inventory: every number on an 'a' switch in district A with account A.
    New one: the same numbers on 'b' switches in district B with account B. A
    lookup running during the swap must see all-A or all-B, never a mix."""
    count = 20_000
    header = ("phone", "switch", "account")
    old = InventoryFiles(tmp_path / "old")
    new = InventoryFiles(tmp_path / "new")
    for files, tag in ((old, "a"), (new, "b")):
        files.folder.mkdir()
        files.write(
            districts=((tag, tag.upper()),),
            switches=[(f"{tag}{i}", f"127.0.{i}.{ord(tag)}", tag, "") for i in range(20)],
            subscribers=[(f"8916{n:07d}", f"{tag}{n % 20}", tag.upper()) for n in range(count)],
            subscriber_header=header,
        )
    await do_import(settings, redis, keys, old)
    lookup = Lookup(redis, keys, PhoneNormaliser())
    seen: dict[str, int] = {"A": 0, "B": 0}
    mixed: list[str] = []
    stop = asyncio.Event()

    async def caller(offset: int) -> None:
        n = offset
        while not stop.is_set():
            answer = await lookup(f"+7916{n % count:07d}")
            kinds = {
                (answer.switch or "?")[0].upper(),
                (answer.district or "?").upper(),
                (answer.district_name or "?").upper(),
                answer.account or "?",
            }
            if len(kinds) == 1:
                seen[kinds.pop()] += 1
            else:
                mixed.append(f"{answer}")
            n += 7919

    callers = [asyncio.create_task(caller(i)) for i in range(8)]
    try:
        result = await do_import(settings, redis, keys, new)
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*callers)
    assert result.diff is not None
    assert result.diff.subscribers_moved == count
    assert mixed == []
    assert seen["A"] > 0
    assert seen["B"] > 0


async def test_phone_buckets_stay_compact(
    settings: Settings, redis: Redis, keys: Keys, files: InventoryFiles
) -> None:
    numbers = [(f"8916{i * 7:07d}", "n1") for i in range(50_000)]
    await do_import(settings, redis, keys, files.write(subscribers=numbers))
    live = await InventoryStore(redis, keys).current()
    assert live is not None
    assert live.buckets == layout.bucket_count(50_000)
    sizes = []
    for bucket in range(live.buckets):
        sizes.append(await redis.hlen(keys.phones(live.gen, bucket)))
        assert await redis.object("encoding", keys.phones(live.gen, bucket)) in (
            "listpack",
            "ziplist",
        )
    assert sum(sizes) == 50_000
    assert max(sizes) < 128


@given(st.lists(st.integers(min_value=1, max_value=10**15 - 1).map(str), max_size=50))
def test_packed_numbers_come_back_as_they_went(numbers: list[str]) -> None:
    assert unpack_numbers(pack_numbers(numbers)) == numbers


def test_packed_russian_numbers_take_eight_characters_each() -> None:
    packed = pack_numbers(["79161234567", "79261234567"])
    assert len(packed) == len("8:") + 16
