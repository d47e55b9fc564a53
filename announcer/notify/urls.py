"""Where notifications go: apprise URLs and webhooks, checked and shown safely.

apprise URLs carry their secrets inside them (a bot token as the host, a
password, a webhook's path), so a URL is never logged as written: ``shown``
gives apprise's own privacy form, or scheme, host and port of a webhook, and
``Scrubber`` removes the secret parts from any text apprise or a server
sends back before it reaches the log.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from urllib.parse import unquote, urlsplit

import apprise

SERVICES_URL = "https://appriseit.com/services/"
#: Shown as examples when a scheme is unknown.
COMMON_SCHEMES = ("mailto", "mailtos", "tgram", "slack", "matrix", "json")
_PARTS = re.compile(r"[/:@?&=#,;+\s]+")
#: Parts of a URL shorter than this are not treated as secrets (ports, "to", ...).
_MIN_SECRET = 4


@functools.cache
def _plugins() -> None:
    """Load apprise's plugins once. One of them imports ``imghdr``, which warns
    of its own removal in Python 3.13: nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*imghdr", category=DeprecationWarning)
        apprise.plugins.N_MGR.load_modules()  # type: ignore[no-untyped-call]


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def instantiate(url: str) -> apprise.NotifyBase | str:
    """The apprise plugin for ``url``, or why it cannot be used (never the URL)."""
    _plugins()
    scheme = scheme_of(url)
    if not scheme:
        return f"it is not a URL: expected SCHEME://..., e.g. mailto:// (see {SERVICES_URL})"
    if scheme not in apprise.plugins.N_MGR:
        examples = ", ".join(f"{s}://" for s in COMMON_SCHEMES)
        return (
            f"apprise knows no scheme {scheme}://; use one it knows ({examples}, ...:"
            f" see {SERVICES_URL})"
        )
    # apprise says why in its log: caught here (not passed on to the
    # daemon's log, which must not see the URL) and said in the error
    apprise_log = logging.getLogger(apprise.LOGGER_NAME)
    propagate, apprise_log.propagate = apprise_log.propagate, False
    try:
        capture = apprise.LogCapture(level=logging.WARNING, fmt="%(message)s")  # type: ignore[no-untyped-call]
        with capture as captured:
            instance = apprise.Apprise.instantiate(url)
    finally:
        apprise_log.propagate = propagate
    if instance is None:
        scrub = Scrubber(url, f"{scheme}://")
        first = (str(captured.getvalue()).strip().splitlines() or [""])[0]
        said = scrub(first)[:200]
        why = f" ({said})" if said else ""
        return (
            f"apprise cannot use this {scheme}:// URL{why}; check it against"
            f" {SERVICES_URL}{scheme_page(scheme)}"
        )
    return instance


def scheme_page(scheme: str) -> str:
    return "email/" if scheme.startswith("mailto") else ""


def webhook_problem(url: str) -> str | None:
    """Why ``url`` cannot receive a JSON POST, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        return "it is not a valid URL; expected http(s)://host[:port]/path"
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// URL (apprise URLs go in urls)"
    if not parts.hostname:
        return "it names no host; expected http(s)://host[:port]/path"
    return None


def shown_webhook(url: str) -> str:
    """scheme://host:port/… : the path and query of a webhook often hold its token."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.hostname}{port}{rest}"


def shown_apprise(instance: apprise.NotifyBase) -> str:
    """apprise's privacy form of the URL (passwords and tokens masked), without
    its path, which apprise leaves as it is (json://host/TOKEN), or its options."""
    private = str(instance.url(privacy=True)).partition("?")[0]  # type: ignore[no-untyped-call]
    scheme, _, rest = private.partition("://")
    where, slash, path = rest.partition("/")
    return f"{scheme}://{where}" + ("/…" if path.strip("/") else slash)


class Scrubber:
    """Removes from a text every part of ``raw`` (a URL as configured) that
    its ``private`` form does not show: passwords, tokens, keys."""

    def __init__(self, raw: str, private: str) -> None:
        shown_parts = set(_PARTS.split(unquote(private).lower()))
        secrets: set[str] = set()
        for part in _PARTS.split(raw):
            for variant in (part, unquote(part)):
                if len(variant) >= _MIN_SECRET and variant.lower() not in shown_parts:
                    secrets.add(variant)
        self.secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text
