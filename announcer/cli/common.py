"""What every command shares: loading settings, failing with a plain message."""

from __future__ import annotations

import argparse
import sys
import time

from announcer import config
from announcer.config import Settings

EXIT_OK = 0
EXIT_FAILED = 1


def fail(message: str) -> int:
    print(f"announcer: {message}", file=sys.stderr)
    return EXIT_FAILED


def settings_of(args: argparse.Namespace) -> Settings:
    return config.load(args.config).settings


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def ago(at: float | None, now: float) -> str:
    if at is None:
        return "?"
    seconds = max(0, int(now - at))
    if seconds < 120:
        return f"{clock(at)} ({seconds} s ago)"
    if seconds < 7200:
        return f"{clock(at)} ({seconds // 60} min ago)"
    return f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(at))} ({seconds // 3600} h ago)"
