"""The ``report`` command: who heard which announcement, and how outages went."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from announcer.cli.common import EXIT_OK, fail, settings_of
from announcer.keys import Keys
from announcer.redisconn import connect, unreachable
from announcer.report import AnnouncementRow, DistrictRow, Report, parse_moment
from announcer.report_reader import read

SOURCES = {
    "auto": "automatic",
    "staff": "staff",
    "maintenance": "planned works",
    "restored": "restored",
}
#: Targets named in the table before "+N more".
NAMED = 3
ANNOUNCEMENT_COLUMNS = (
    "id", "source", "scope", "targets", "districts", "published", "ended", "calls", "numbers",
    "first_heard", "root_switches", "outage_start", "declared_down", "detection_s", "cleared",
    "duration_s",
)  # fmt: skip
DISTRICT_COLUMNS = ("district", "name", "calls", "numbers", "announcements", "outages")


def span(seconds: float | None) -> str:
    """A duration as support staff say it: ``2.5 s``, ``4 min 12 s``, ``3 h 5 min``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _clock(at: float | None, day: str, missing: str = "-") -> str:
    """``at`` in local time, without the date when it falls on ``day``."""
    if at is None:
        return missing
    full = stamp(at)
    return full[11:] if full[:10] == day else full


def _names(items: Sequence[str], more: str = "more") -> str:
    shown = ", ".join(items[:NAMED])
    return shown + (f" +{len(items) - NAMED} {more}" if len(items) > NAMED else "")


def where(row: AnnouncementRow, names: Mapping[str, str]) -> str:
    if row.scope == "global":
        return "everyone"
    if row.scope == "district":
        return _names([names.get(d, d) for d in row.targets])
    return _names(row.targets)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    out = []
    for r in (header, *rows):
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def render(report: Report) -> str:
    """The report as a plain table, times in local time."""
    period = f"from {stamp(report.since)} to {stamp(report.until)}"
    out = [f"Announcements {period} (local time)"]
    out += report.notes
    if report.empty:
        out.append(
            "Nothing to report for this period: no announcement was live and no caller heard one."
        )
        return "\n".join(out)
    names = report.names
    rows = []
    for r in report.announcements:
        day = stamp(r.published if r.published is not None else r.first_heard or 0.0)[:10]
        outage = r.outage and r.outage_start is not None
        rows.append(
            (
                _clock(r.published, "", "earlier"),
                r.id,
                SOURCES.get(r.source, r.source),
                where(r, names),
                str(r.calls),
                str(r.numbers),
                _clock(r.first_heard, day),
                _clock(r.outage_start, day) if outage else "",
                span(r.detection_s) if outage else "",
                _clock(r.cleared, day, "not yet") if outage else "",
                span(r.duration_s) if outage and r.cleared is not None else "",
                _clock(r.closed, day, "still on"),
            )
        )
    header = (
        "Published", "Announcement", "Source", "Where", "Calls", "Numbers", "First heard",
        "Outage start", "Detected in", "Cleared", "Lasted", "Ended",
    )  # fmt: skip
    out += ["", *_table(header, rows, {4, 5})]
    districts = [
        (
            f"{d.name} ({d.district})"
            if d.name != d.district
            else (d.district or "not in the inventory"),
            str(d.calls),
            str(d.numbers),
            str(d.announcements),
            str(d.outages),
        )
        for d in report.districts
    ]
    districts.append(("Total", str(report.calls), str(report.numbers), "", ""))
    district_header = ("District", "Calls", "Numbers", "Announcements", "Outages")
    out += ["", *_table(district_header, districts, {1, 2, 3, 4})]
    outages = sum(r.outage and bool(r.roots) for r in report.announcements)
    out += [
        "",
        f"{report.calls:,} calls from {report.numbers:,} numbers heard an announcement;"
        f" {len(report.announcements):,} announcements, {outages:,} of them for outages.",
    ]
    return "\n".join(out)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def as_json(report: Report) -> dict[str, Any]:
    """The report for machines: times in seconds since 1970, durations in seconds."""
    return {
        "since": _seconds(report.since),
        "until": _seconds(report.until),
        "notes": report.notes,
        "calls": report.calls,
        "numbers": report.numbers,
        "announcements": [
            {
                "id": r.id,
                "source": r.source,
                "scope": r.scope,
                "targets": r.targets,
                "districts": r.districts,
                "published": _seconds(r.published),
                "ended": _seconds(r.closed),
                "calls": r.calls,
                "numbers": r.numbers,
                "first_heard": _seconds(r.first_heard),
                "root_switches": r.roots,
                "outage_start": _seconds(r.outage_start),
                "declared_down": _seconds(r.declared_down),
                "detection_s": _seconds(r.detection_s),
                "cleared": _seconds(r.cleared),
                "duration_s": _seconds(r.duration_s),
            }
            for r in report.announcements
        ],
        "districts": [_district(d) for d in report.districts],
    }


def _district(d: DistrictRow) -> dict[str, Any]:
    return {
        "district": d.district,
        "name": d.name,
        "calls": d.calls,
        "numbers": d.numbers,
        "announcements": d.announcements,
        "outages": d.outages,
    }


def _iso(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def as_csv(report: Report, table: str) -> str:
    """One table as CSV: times in ISO 8601 with the local offset, durations in seconds."""
    buffer = io.StringIO()
    if table == "districts":
        writer = csv.DictWriter(buffer, DISTRICT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_district(d) for d in report.districts)
        return buffer.getvalue()
    writer = csv.DictWriter(buffer, ANNOUNCEMENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in as_json(report)["announcements"]:
        for name in ("published", "ended", "first_heard", "outage_start", "declared_down"):
            r[name] = _iso(r[name])
        r["cleared"] = _iso(r["cleared"])
        for name in ("targets", "districts", "root_switches"):
            r[name] = " ".join(r[name])
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buffer.getvalue()


def cmd_report(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    now = time.time()
    since = parse_moment(args.since, now)
    if isinstance(since, str):
        return fail(f"--since: {since}")
    until = now if args.until is None else parse_moment(args.until, now)
    if isinstance(until, str):
        return fail(f"--until: {until}")
    if since >= until:
        return fail(
            f"--since ({stamp(since)}) is not before --until ({stamp(until)}); give an earlier"
            " --since or a later --until"
        )

    async def go() -> Report:
        redis = connect(settings.redis)
        try:
            return await read(redis, Keys(settings.redis.prefix), since, until)
        finally:
            await redis.aclose()

    try:
        report = asyncio.run(go())
    except RedisError as exc:
        return fail(unreachable(settings.redis, exc))
    if args.json:
        print(json.dumps(as_json(report), ensure_ascii=False, indent=2))
    elif args.csv:
        print(as_csv(report, args.csv), end="")
    else:
        print(render(report))
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "report",
        help="statistics: callers who heard each announcement, outage and detection times",
    )
    r.add_argument(
        "--since",
        default="7d",
        help="start of the period: 30m, 12h, 7d (before now) or a date: 2025-11-30 (default 7d)",
    )
    r.add_argument("--until", help="end of the period, written the same way (default: now)")
    form = r.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the whole report for machines")
    form.add_argument(
        "--csv",
        nargs="?",
        const="announcements",
        choices=("announcements", "districts"),
        help="one table as CSV: announcements (the default) or districts",
    )
    r.set_defaults(func=cmd_report)
