"""The ``announcer`` command: one function per subcommand, grouped by topic.

``inventory`` (check-config, import, lookup), ``watch`` (status, poll),
``announce`` (announce, clear, list, maintenance), ``report`` (report),
``service`` (run, demo).
This package is the only place that configures logging or prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from announcer import __version__, config
from announcer.cli import announce, inventory, report, service, watch
from announcer.cli.common import EXIT_FAILED
from announcer.config import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="announcer",
        description="Tells callers about network outages before their call is queued.",
    )
    p.add_argument("--version", action="version", version=f"announcer {__version__}")
    p.add_argument(
        "--config",
        type=Path,
        help=f"TOML config file (default: ${config.CONFIG_ENV}, else {config.DEFAULT_PATH})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (inventory, watch, announce, report, service):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if args.command == "run" else
        logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    if not args.verbose:  # a line per message sent; announcer logs what matters itself
        logging.getLogger("apprise").setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return code
