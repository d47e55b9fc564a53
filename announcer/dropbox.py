"""The staff drop folder: a recording and its sidecar in, a live announcement out.

Support staff copy ``NAME.m4a`` (wav, mp3, ogg, opus, m4a, webm, flac, ...) and
then ``NAME.toml`` (see ``announcer.sidecar``) into ``<spool>/incoming/``. The
pair is taken once both files have stopped changing: the recording goes
through ``prompts.audio.install_recording`` into the sounds folder, the
sidecar becomes a ``StaffRequest`` for ``staff.publish``, and both files move
to ``done/`` beside ``NAME.receipt.json``. Whatever is wrong, both move to
``rejected/`` beside ``NAME.error.txt``: which file, what is wrong, what to do.
A sidecar with ``text`` and no recording is a text-only announcement.

What staff can rely on:

- **Nothing they drop is deleted or overwritten.** Files only move, by rename
  inside the spool; a name already in ``done/`` or ``rejected/`` gets a time
  stamp (``NAME-20251130-093012.m4a``). Only the converted copy is written
  outside the spool, into ``[prompts] sounds_dir``.
- **Half-copied files are never taken.** A file counts once nothing has touched
  it for ``[dropbox] settle_s`` (its inode change time, which copy tools cannot
  set, or our own observation when the clock jumped), and, while inotify saw
  it written, only after it was closed. Names starting with ``.`` or ending
  in ``.part``, ``.tmp``, ``.filepart`` or ``~`` are copies in progress: they
  are left alone, and hold back the sidecar of the same name until renamed.
- **A recording waits for its sidecar as long as it takes**: staff may write
  the sidecar minutes later, and moving the recording away meanwhile would
  turn a late sidecar into a text-only announcement or a refusal. After 10
  minutes the wait is logged once. A sidecar without a recording is taken at
  once (text-only), so copy the recording first.
- **A bad drop never stops the watcher.** Symbolic links (never followed),
  hard links, special files, names with ``..``, control characters or bytes
  that are not UTF-8 are rejected; so is anything the sidecar, the audio check
  or ``publish`` refuses; an unexpected error rejects the drop with the
  exception named and its traceback in the log, and the loop goes on.

- **Redis being down is not the drop's fault**: the drop goes back to
  ``incoming/`` and is taken when Redis answers again.
- Folders in ``incoming/`` are left alone (and logged once): put the files
  themselves there.

A taken pair is first moved into ``<spool>/processing/<id>/``, so nobody can
swap a file while it is converted; what a crash leaves there goes back to
``incoming/`` at the next start (a drop published just before a crash may
then be published twice). One watcher per spool; ``incoming/``, ``done/``,
``rejected/`` and ``processing/`` must be on one file system. This module
decides *when* a drop is complete; ``announcer.intake`` what it becomes,
``announcer.sidecar`` reads the sidecar, ``announcer.spool`` names and moves
files.

inotify comes from ``asyncinotify``: small, typed, no dependencies, and it
hands over the raw events, including IN_CLOSE_WRITE, which tells a finished
copy from a stalled one. ``watchfiles`` reports only added/modified/deleted,
debounced, which cannot. A rescan every ``[dropbox] rescan_s`` and one at start
catch what inotify missed or what arrived while announcer was down; without
inotify (a file system that lacks it, watch limits) the rescans alone work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from asyncinotify import Event, Inotify, Mask
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from announcer.announcements import new_id
from announcer.cancel import raise_if_cancelled
from announcer.config import Settings
from announcer.intake import Drop, Intake, Outcome, fault
from announcer.keys import Keys
from announcer.spool import (
    SIDECAR,
    copied_as,
    file_problem,
    in_progress,
    move_aside,
    shown,
    stem,
)
from announcer.store import EVENTS_MAXLEN

__all__ = ["Dropbox", "Outcome"]

logger = logging.getLogger(__name__)

QUIET_TEMP_S = 600.0
"""A copy in progress untouched this long is abandoned: it holds nothing back."""
STALLED_WRITER_S = 600.0
"""A file still open for writing but untouched this long is taken all the same."""
LONELY_S = 600.0
"""A recording waiting this long for its sidecar is logged (once)."""
BURST_S = 0.2
"""After inotify wakes the loop, the rest of a burst (a rename, the sidecar) may come."""

_WATCHED = (
    Mask.CREATE | Mask.MODIFY | Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.MOVED_FROM
    | Mask.DELETE | Mask.ATTRIB | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR
)  # fmt: skip


class Dropbox:
    """Watches ``<spool>/incoming/`` and publishes what staff drop there."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        published: Callable[[], None] | None = None,
    ) -> None:
        """``published`` is called after a drop went live (to wake the publisher)."""
        self.published = published
        self.redis = redis
        self.keys = keys
        self.settings = settings
        spool = settings.dropbox.spool
        self.incoming = spool / "incoming"
        self.done = spool / "done"
        self.rejected = spool / "rejected"
        self.processing = spool / "processing"
        self._seen: dict[str, tuple[tuple[int, ...], float]] = {}
        """name -> (what lstat said, when it last changed by the monotonic clock)"""
        self._writing: set[str] = set()
        """names inotify saw created or written and not yet closed"""
        self._logged: set[str] = set()
        self._wake = asyncio.Event()
        self._next_scan_s = settings.dropbox.rescan_s
        self._recovered = False
        self._redis_down = False
        self._intake = Intake(redis, keys, settings)
        self.taken = {"published": 0, "rejected": 0}
        """drops taken since the start, by what became of them (for metrics)"""

    # the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Take drops until cancelled: at start, on inotify's word, and every rescan_s."""
        rescan_s = self.settings.dropbox.rescan_s
        self._prepare()
        inotify, pump = self._watch()
        try:
            while True:
                raise_if_cancelled()
                try:
                    await self.scan_once()
                except Exception:
                    logger.exception("scanning %s failed; again in %g s", self.incoming, rescan_s)
                    self._next_scan_s = rescan_s
                if pump is not None and pump.done():
                    inotify, pump = self._rewatch(inotify, pump)
                await self._sleep(self._next_scan_s)
        finally:
            if pump is not None:
                pump.cancel()
                await asyncio.wait([pump])
            if inotify is not None:
                inotify.close()
            logger.info("stopped watching %s", self.incoming)

    def _watch(self) -> tuple[Inotify | None, asyncio.Task[None] | None]:
        self._writing.clear()
        inotify = None
        try:
            inotify = Inotify()
            inotify.add_watch(self.incoming, _WATCHED)
        except OSError as exc:
            if inotify is not None:
                inotify.close()
            logger.warning(
                "no inotify on %s (%s): drops are seen by the rescan every %g s",
                self.incoming, exc, self.settings.dropbox.rescan_s,
            )  # fmt: skip
            return None, None
        logger.info("watching %s", self.incoming)
        return inotify, asyncio.create_task(self._pump(inotify), name="dropbox-inotify")

    def _rewatch(
        self, inotify: Inotify | None, pump: asyncio.Task[None]
    ) -> tuple[Inotify | None, asyncio.Task[None] | None]:
        """The watch ended (incoming/ removed or renamed, or inotify failed): again."""
        if not pump.cancelled() and pump.exception() is not None:
            logger.error("inotify failed: %r", pump.exception())
        if inotify is not None:
            inotify.close()
        self._prepare()
        return self._watch()

    async def _pump(self, inotify: Inotify) -> None:
        """Keep track of files open for writing; wake the loop when one may be ready."""
        async for event in inotify:
            if event.mask & (Mask.IGNORED | Mask.DELETE_SELF | Mask.MOVE_SELF):
                self._wake.set()
                return
            if self._note(event):
                self._wake.set()

    def _note(self, event: Event) -> bool:
        """Record what ``event`` says; True when it may have made a drop ready."""
        mask = event.mask
        if Mask.Q_OVERFLOW in mask:
            self._writing.clear()
            return True
        if event.name is None:
            return False
        name = str(event.name)
        if mask & (Mask.CREATE | Mask.MODIFY) and Mask.ISDIR not in mask:
            self._writing.add(name)
        if mask & (Mask.CLOSE_WRITE | Mask.MOVED_FROM | Mask.MOVED_TO | Mask.DELETE):
            self._writing.discard(name)
        return Mask.MODIFY not in mask

    async def _sleep(self, seconds: float) -> None:
        raise_if_cancelled()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        if self._wake.is_set():
            await asyncio.sleep(BURST_S)
        self._wake.clear()

    # one pass ------------------------------------------------------------------

    async def scan_once(self) -> list[Outcome]:
        """Take every complete drop in incoming/ now; leave the rest for later.

        Complete: a sidecar and the files named like it, all left alone for
        settle_s (so with settle_s = 0, everything there now), or an entry
        rejected on sight (a link, an odd name). ``run`` calls this; tests
        call it directly for a deterministic pass."""
        self._prepare()
        drops, pending_s = self._survey()
        self._next_scan_s = max(pending_s, BURST_S)
        outcomes = []
        for drop in drops:
            try:
                outcome = await self._take(drop)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if not self._redis_down:
                    logger.warning("Redis is unavailable (%s): drops wait in incoming/", exc)
                self._redis_down = True
                self._next_scan_s = self.settings.dropbox.rescan_s
                break
            if self._redis_down:
                logger.info("Redis is back: taking drops again")
                self._redis_down = False
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _prepare(self) -> None:
        for folder in (self.incoming, self.done, self.rejected, self.processing):
            folder.mkdir(parents=True, exist_ok=True)
        if not self._recovered:
            self._recovered = True
            self._recover()

    def _recover(self) -> None:
        """Put back in incoming/ what a crash left half-taken."""
        for left in sorted(self.processing.iterdir()):
            if left.is_symlink() or not left.is_dir():
                continue
            names = sorted(os.listdir(left))
            for name in names:
                move_aside(left / name, self.incoming, name, "-recovered")
            with contextlib.suppress(OSError):
                left.rmdir()
            if names:
                logger.warning("back in incoming/ after a crash: %s", ", ".join(map(shown, names)))

    def _survey(self) -> tuple[list[Drop], float]:
        """The drops ready to take, and how soon another may be ready."""
        now, mono = time.time(), time.monotonic()
        entries: dict[str, os.stat_result] = {}
        copying: list[str] = []
        present: set[str] = set()
        with os.scandir(self.incoming) as listing:
            for entry in listing:
                present.add(entry.name)
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    self._log_once(entry.name, "folder %s in incoming/ is left alone", entry.name)
                elif in_progress(entry.name):
                    if now - st.st_ctime < QUIET_TEMP_S:
                        copying.append(copied_as(entry.name))
                else:
                    entries[entry.name] = st
        self._seen = {n: seen for n, seen in self._seen.items() if n in entries}
        self._logged &= present

        drops = _pair(entries)
        paired = {name for drop in drops for name in drop.names}
        for name in sorted(set(entries) - paired):
            st = entries[name]
            if file_problem(name, st):
                drops.append(Drop(stem(name), (name,), None))
            elif now - st.st_ctime > LONELY_S:
                minutes = int(now - st.st_ctime) // 60
                self._log_once(
                    name, "%s has waited %d min for its sidecar %s.toml", name, minutes, stem(name)
                )

        ready, pending_s = [], self.settings.dropbox.rescan_s
        for drop in drops:
            held = any(c == drop.key or c.startswith(f"{drop.key}.") for c in copying)
            wait_s = max(self._wait_s(n, entries[n], now, mono) for n in drop.names)
            if not held and wait_s <= 0:
                ready.append(drop)
            elif not held:
                pending_s = min(pending_s, wait_s)
        return ready, pending_s

    def _wait_s(self, name: str, st: os.stat_result, now: float, mono: float) -> float:
        """How long until ``name`` has been left alone for settle_s (0: it has).

        The inode's change time moves with every write, rename or touch and no
        copy tool can set it; our own observation (same lstat for settle_s by
        the monotonic clock) covers a wall clock set back."""
        settle_s = self.settings.dropbox.settle_s
        signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        seen = self._seen.get(name)
        if seen is None or seen[0] != signature:
            self._seen[name] = seen = (signature, mono)
        untouched_s = now - st.st_ctime
        wait_s = max(0.0, min(settle_s - untouched_s, settle_s - (mono - seen[1])))
        still_open = name in self._writing and stat.S_ISREG(st.st_mode) and st.st_nlink == 1
        if still_open and untouched_s < STALLED_WRITER_S:
            return max(wait_s, self.settings.dropbox.rescan_s)
        return wait_s

    def _log_once(self, name: str, message: str, *args: object) -> None:
        if name not in self._logged:
            self._logged.add(name)
            logger.warning(message, *(shown(a) if isinstance(a, str) else a for a in args))

    # taking a drop -------------------------------------------------------------

    async def _take(self, drop: Drop) -> Outcome | None:
        """Move a drop out of staff's reach, check and publish it, file it away."""
        ident = new_id("staff")  # the announcement's id, and its recording's name
        work = self.processing / ident
        work.mkdir()
        for taken, name in enumerate(drop.names):
            try:
                os.rename(self.incoming / name, work / name)
            except FileNotFoundError:  # staff took it back meanwhile
                self._put_back(work, drop.names[:taken])
                return None
        taken_at = time.time()
        try:
            verdict = await self._intake.judge(drop, work, ident)
        except (RedisConnectionError, RedisTimeoutError):
            self._put_back(work, drop.names)  # Redis's trouble, not the drop's: later
            raise
        except Exception as exc:
            logger.exception("taking %s failed", shown(drop.key))
            verdict = fault(exc)
        except BaseException:
            self._put_back(work, drop.names)
            raise
        try:
            outcome = self._intake.file(drop, work, verdict, taken_at)
        except OSError:
            logger.exception("could not file %s away; it stays in %s", shown(drop.key), work)
            return None
        with contextlib.suppress(OSError):
            work.rmdir()
        self.taken["published" if outcome.accepted else "rejected"] += 1
        await self._record(outcome)
        if outcome.accepted and self.published is not None:
            self.published()
        return outcome

    async def _record(self, outcome: Outcome) -> None:
        """A ``kind=drop`` event on the stream (for notifications); the drop
        is filed already, so Redis failing now only costs the event."""
        event = {
            "kind": "drop",
            "action": "published" if outcome.accepted else "rejected",
            "file": outcome.name,
            "files": ", ".join(shown(path.name) for path in outcome.files),
            "at": f"{time.time():.3f}",
        }
        if outcome.announcement_id:
            event["id"] = outcome.announcement_id
        if outcome.reason:
            event["error"] = outcome.reason.splitlines()[0]
        try:
            await self.redis.xadd(self.keys.events, event, maxlen=EVENTS_MAXLEN, approximate=True)  # type: ignore[arg-type]
        except RedisError as exc:
            logger.warning("%s is filed, but no event says so (%s)", outcome.name, exc)

    def _put_back(self, work: Path, names: tuple[str, ...]) -> None:
        for name in names:
            move_aside(work / name, self.incoming, name, "-back")
        with contextlib.suppress(OSError):
            work.rmdir()


def _pair(entries: dict[str, os.stat_result]) -> list[Drop]:
    """Each sidecar ``KEY.toml`` with the files named ``KEY.*`` or ``KEY``."""
    sidecars = sorted(n for n in entries if n.lower().endswith(SIDECAR) and n != SIDECAR)
    claimed = set(sidecars)
    drops = []
    for sidecar in sidecars:
        key = sidecar[: -len(SIDECAR)]
        mates = sorted(n for n in entries if n not in claimed and key in (n, stem(n)))
        claimed.update(mates)
        drops.append(Drop(key, (*mates, sidecar), sidecar))
    return drops
