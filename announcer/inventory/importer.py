"""One import, start to finish: read, check, refuse or swap in, report.

The CLI, the demo and (later) the daemon's reload all call ``run_import``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from announcer.config import Settings
from announcer.inventory.build import Outcome, Progress, build
from announcer.inventory.diff import Diff
from announcer.inventory.model import Table
from announcer.inventory.store import Generation, InventoryStore
from announcer.keys import Keys
from announcer.phones import PhoneNormaliser, e164

_SHOWN = 10


@dataclass
class ImportResult:
    outcome: Outcome
    refused: list[str] = field(default_factory=list)
    """why nothing was changed; empty when the import went through"""
    generation: Generation | None = None
    diff: Diff | None = None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.refused

    def report(self, max_errors: int = 50) -> list[str]:
        """The plain-text report an admin reads after an import."""
        out: list[str] = []
        o = self.outcome
        inv = o.inventory
        if self.refused:
            out.append("Nothing was imported; the inventory in Redis is unchanged:")
            out += [f"  {reason}" for reason in self.refused]
        elif self.dry_run:
            out.append("Dry run: the rows were checked, Redis was not touched.")
        elif self.generation is not None:
            out.append(f"Imported {self.generation.source} as generation {self.generation.gen}.")
        out.append(
            f"  {len(inv.districts):,} districts, {len(inv.switches):,} switches,"
            f" {len(inv.phones):,} subscriber numbers accepted"
        )
        if self.diff is not None and self.ok and not self.dry_run:
            out += _diff_lines(self.diff)
        for kind, columns in o.ignored_columns.items():
            out.append(f"  note: {o.sources[kind]}: ignored unknown columns {', '.join(columns)}")
        if o.errors:
            out.append(f"Rejected rows ({len(o.errors):,}):")
            out += [f"  {error}" for error in o.errors[:max_errors]]
            if len(o.errors) > max_errors:
                out.append(f"  ... and {len(o.errors) - max_errors:,} more (see --errors-file)")
        return out


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _diff_lines(d: Diff) -> list[str]:
    if d.empty:
        return ["  no changes since the previous import"]
    out = []
    for label, items in (
        ("districts added", d.districts_added),
        ("districts removed", d.districts_removed),
        ("districts renamed", d.districts_renamed),
        ("switches added", d.switches_added),
        ("switches removed", d.switches_removed),
        ("switches changed", d.switches_changed),
    ):
        if items:
            out.append(f"  {label} ({len(items)}): {_names(items)}")
    out.append(
        f"  subscribers: {d.subscribers_added:,} added, {d.subscribers_removed:,} removed,"
        f" {d.subscribers_moved:,} moved to another switch"
    )
    for digits, old, new in d.moved_examples:
        out.append(f"    {e164(digits)}: {old} -> {new}")
    return out


TableSource = Callable[[], tuple[Table, Table, Table]]


async def run_import(
    settings: Settings,
    redis: Redis | None,
    keys: Keys,
    tables: TableSource,
    source: str,
    dry_run: bool = False,
    progress: Progress | None = None,
    write_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Check the tables; unless refused or a dry run, make them the live inventory.

    ``tables`` is called in a worker thread (billing queries and CSV parsing
    block), so a running daemon keeps serving while an import is checked.
    """
    normaliser = PhoneNormaliser(settings.phones.default_region)

    def check() -> Outcome:
        districts, switches, subscribers = tables()
        return build(
            districts,
            switches,
            subscribers,
            normaliser,
            default_probe=settings.inventory.default_probe,
            progress=progress,
        )

    outcome = await asyncio.to_thread(check)
    result = ImportResult(outcome, refused=outcome.over_limit(settings.inventory.max_bad_share))
    result.dry_run = dry_run
    if not result.ok or dry_run:
        return result
    if not outcome.inventory.switches:
        result.refused.append(
            "no switch was accepted; refusing to replace the inventory with an empty one"
        )
        return result
    if redis is None:
        raise ValueError("a Redis client is needed unless dry_run is set")
    store = InventoryStore(redis, keys)
    result.generation, result.diff = await store.replace(outcome.inventory, source, write_progress)
    return result
