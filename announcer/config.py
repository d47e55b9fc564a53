"""Settings: defaults in one place, then the TOML file, then validation.

The file is found from ``--config PATH``, else ``$ANNOUNCER_CONFIG``, else
``/etc/announcer/announcer.toml``; when none of these exists the defaults
apply. ``$ANNOUNCER_REDIS_URL`` overrides ``[redis] url``. Unknown keys are
errors, and every error names the key and what it expects.
"""

from __future__ import annotations

import codecs
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from announcer import phones

DEFAULT_PATH = Path("/etc/announcer/announcer.toml")
CONFIG_ENV = "ANNOUNCER_CONFIG"
REDIS_URL_ENV = "ANNOUNCER_REDIS_URL"

ProbeName = Literal["icmp", "snmp", "icmp+snmp"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelUrl:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``;
    the password is the Redis servers'; ``?sentinel_password=`` the
    sentinels' own, when they have one."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """Raise ValueError saying what is wrong with ``url``."""
        parts = urlsplit(url)
        if parts.scheme != SENTINEL_SCHEME:
            raise ValueError(f"expected a {SENTINEL_SCHEME}:// URL")
        credentials, _, hosts = parts.netloc.rpartition("@")
        sentinels = []
        for host in filter(None, hosts.split(",")):
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"expected host:port for every sentinel, got {host!r}")
            sentinels.append((name.strip("[]"), int(port)))
        if not sentinels:
            raise ValueError("expected at least one sentinel as host:port")
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError("expected /SERVICE or /SERVICE/DB after the sentinels")
        user, _, password = credentials.partition(":")
        query = parse_qs(parts.query)
        return cls(
            sentinels=sentinels,
            service=unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
            username=unquote(user) or None,
            password=unquote(password) or None,
            sentinel_password=query.get("sentinel_password", [None])[0],
        )


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    """redis://, rediss:// or unix:// URL of the Redis that holds everything, or
    redis+sentinel://[:password@]host:port[,host:port...]/SERVICE[/DB] to ask
    Redis Sentinel which server is the master."""
    prefix: str = "announcer"
    """Every key starts with this and a colon; instances sharing it share state."""
    timeout_ms: Annotated[int, Field(gt=0, le=60_000)] = 2_000

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if url.startswith("redis+sentinel://"):
            SentinelUrl.parse(url)
            return url
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "expected a URL starting with redis://, rediss://, unix:// or redis+sentinel://"
            )
        return url

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", prefix):
            raise ValueError("expected letters, digits, '_', '.' or '-' only, at least one")
        return prefix


class PhoneSettings(_Section):
    default_region: str = "RU"
    """Region whose national formats (8 916 ..., 916 ...) numbers are read in."""

    @field_validator("default_region")
    @classmethod
    def _region(cls, region: str) -> str:
        if not phones.valid_region(region):
            raise ValueError("expected a two-letter region code known to phonenumbers, e.g. RU")
        return region


class InventorySettings(_Section):
    districts_csv: Path | None = None
    switches_csv: Path | None = None
    subscribers_csv: Path | None = None
    csv_encoding: str = "utf-8"
    """Encoding of the CSV files; billing systems on Windows often write cp1251."""
    max_bad_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """Bad rows tolerated per table before the whole import is refused."""
    default_probe: ProbeName = "icmp"

    @field_validator("csv_encoding")
    @classmethod
    def _encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError("expected an encoding Python knows, e.g. utf-8 or cp1251") from None
        return encoding


class BillingSettings(_Section):
    url: str | None = None
    """SQLAlchemy URL: postgresql+psycopg://user:pass@host/db or mysql+pymysql://..."""
    districts_query: str = "SELECT id, name FROM districts"
    switches_query: str = "SELECT id, address, district, parent FROM switches"
    subscribers_query: str = "SELECT phone, switch FROM subscribers"
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @field_validator("url")
    @classmethod
    def _driver(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql", "mysql", "mariadb")):
            raise ValueError(
                "expected a postgresql+psycopg://, mysql+pymysql:// or mariadb+pymysql:// URL"
            )
        return url


class IcmpSettings(_Section):
    interval_s: Annotated[float, Field(ge=0.5, le=3600)] = 5.0
    """How often every ICMP-probed switch is pinged."""
    timeout_ms: Annotated[int, Field(ge=10, le=30_000)] = 1_000
    """How long to wait for an echo reply after the request was sent."""
    rate_pps: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000
    """Echo requests per second at most, sent evenly (not in one burst)."""
    privileged: bool | None = None
    """Raw sockets (true), unprivileged ping sockets (false), or decide (unset)."""


class SnmpProfile(_Section):
    version: Literal["2c", "3"] = "2c"
    port: Annotated[int, Field(ge=1, le=65535)] = 161
    community: str = "public"
    """v2c only."""
    user: str | None = None
    """v3: the USM user name; auth and priv below decide the security level."""
    auth_protocol: Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"] | None = None
    auth_key: str | None = None
    priv_protocol: Literal["DES", "AES", "AES192", "AES256"] | None = None
    priv_key: str | None = None

    @model_validator(mode="after")
    def _v3(self) -> SnmpProfile:
        if self.version == "3" and not self.user:
            raise ValueError("version 3 needs user (and usually auth_protocol and auth_key)")
        for proto, key, name in (
            (self.auth_protocol, self.auth_key, "auth"),
            (self.priv_protocol, self.priv_key, "priv"),
        ):
            if proto and (not key or len(key) < 8):
                raise ValueError(f"{name}_protocol needs {name}_key of at least 8 characters")
        if self.priv_protocol and not self.auth_protocol:
            raise ValueError("priv_protocol needs auth_protocol too (SNMPv3 has no privNoAuth)")
        return self


class SnmpSettings(_Section):
    interval_s: Annotated[float, Field(ge=1, le=3600)] = 15.0
    timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 2_000
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    max_in_flight: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    """Requests awaiting a reply at once, across all switches."""
    default_profile: str = "default"
    """Profile for switches whose snmp_profile column is empty."""
    profiles: dict[str, SnmpProfile] = {"default": SnmpProfile()}
    """[snmp.profiles.NAME] sections; a switch names one in snmp_profile."""

    @model_validator(mode="after")
    def _default_exists(self) -> SnmpSettings:
        if self.default_profile not in self.profiles:
            known = ", ".join(self.profiles) or "none"
            raise ValueError(
                f"default_profile {self.default_profile!r} is not among the profiles ({known})"
            )
        return self


class PollerSettings(_Section):
    down_after: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive missed probes before a switch is down."""
    up_after: Annotated[int, Field(ge=1, le=100)] = 2
    """Consecutive answered probes before a down switch is up again."""
    confirm_interval_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    """A switch that just missed a probe (or answered while down) is probed again
    after this long rather than at the next sweep, so a verdict takes seconds
    instead of down_after sweeps. 0 waits for the sweeps."""
    flap_changes: Annotated[int, Field(ge=2, le=1000)] = 4
    """State changes within flap_window_s that make a switch flapping."""
    flap_window_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    flap_quiet_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    """A flapping switch settles after this long without a change."""


class AnnouncementSettings(_Section):
    language: Literal["ru", "en"] = "ru"
    """Language of the automatic prompts' templates and of text-to-speech."""
    district_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Share of a district's switches, or of its subscribers, that must be cut
    off for one district announcement instead of one per switch."""
    restored_s: Annotated[float, Field(ge=0, le=86_400)] = 1_800
    """How long callers hear "service restored" after an outage; 0: never."""
    auto_hold_s: Annotated[float, Field(ge=10, le=3_600)] = 120
    """Expiry of automatic announcements, pushed on while the outage lasts:
    if announcer stops, they end by themselves after this long."""
    staff_ttl_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 4 * 3_600
    """Expiry of a staff announcement that names none."""
    staff_max_ttl_s: Annotated[float, Field(gt=0, le=365 * 86_400)] = 7 * 86_400
    """The longest a staff announcement may be set to last."""


class PromptSettings(_Section):
    sounds_dir: Path = Path("/var/lib/announcer/sounds")
    """Where rendered prompts go; the dialplan plays them by absolute path."""
    asterisk_sounds_dir: Path | None = None
    """The same folder as Asterisk sees it, when that differs: an Asterisk on
    another machine that mounts it elsewhere, or one in a chroot. Prompts
    handed to the dialplan (FastAGI, AstDB, Redis keys) are named under it."""
    cache_dir: Path = Path("/var/cache/announcer/tts")
    """Rendered text-to-speech, kept by engine, language and text."""
    tts: Literal["auto", "gtts", "espeak"] = "auto"
    """auto: Google's service when it answers, espeak-ng otherwise."""
    gtts_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0

    def for_asterisk(self, prompt: str) -> str:
        """``prompt`` (a sound path without extension) as Asterisk names it."""
        if self.asterisk_sounds_dir is None:
            return prompt
        path = Path(prompt)
        if not path.is_relative_to(self.sounds_dir):
            return prompt
        return str(self.asterisk_sounds_dir / path.relative_to(self.sounds_dir))


class DropboxSettings(_Section):
    spool: Path = Path("/var/spool/announcer")
    """incoming/, done/ and rejected/ live here."""
    max_recording_s: Annotated[float, Field(gt=0, le=3_600)] = 120.0
    settle_s: Annotated[float, Field(ge=0, le=600)] = 1.0
    """A file is taken once it has not changed for this long (and, where inotify
    saw it written, has been closed)."""
    rescan_s: Annotated[float, Field(gt=0, le=3_600)] = 10.0
    """Look at the whole folder this often too, in case a change was missed."""


class FastAgiSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    """Where the dialplan's AGI(agi://HOST:PORT/outage) reaches announcer."""
    port: Annotated[int, Field(ge=1, le=65535)] = 4573
    header_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    """A client that has not sent its AGI headers by then is dropped."""
    lookup_timeout_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    """A lookup slower than this answers "nothing to play": the call goes on."""
    max_sessions: Annotated[int, Field(ge=1, le=100_000)] = 1000


class AmiSettings(_Section):
    """The Asterisk manager interface, for the AstDB mirror."""

    enabled: bool = False
    """Mirror what callers should hear into AstDB (the dialplan's AstDB mode)."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 5038
    username: str = "announcer"
    secret: str = ""
    """manager.conf's secret for ``username``; needs write=system (DBPut)."""
    family: str = "announcer"
    """AstDB family: ${DB(announcer/<number>)}, ${DB(announcer/global)}."""
    max_writes_per_s: Annotated[int, Field(ge=10, le=1_000_000)] = 10_000
    """DBPut and DBDel actions a second at most, so a mass outage cannot
    starve Asterisk."""
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    """Connecting, logging in, or one batch of actions taking longer than this
    counts as a lost link: announcer reconnects."""
    max_backoff_s: Annotated[float, Field(gt=0, le=3_600)] = 30.0
    """Reconnection attempts back off from 1 s up to this."""

    @field_validator("family")
    @classmethod
    def _family(cls, family: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", family):
            raise ValueError("expected letters, digits, '_', '.' or '-' only, at least one")
        return family


class MirrorSettings(_Section):
    """Copies of what callers should hear, for dialplans that read them
    directly (AstDB, Redis keys) rather than asking over FastAGI."""

    lease_s: Annotated[float, Field(ge=2, le=3_600)] = 120.0
    """A mirrored prompt stops playing at most this long after announcer
    last vouched for it: when announcer, AMI or Redis is lost, callers stop
    hearing it within this bound. Renewed every quarter of it."""
    redis_keys: bool = False
    """Also keep one Redis key per affected number (P:callers:<digits>) and
    P:callers:global, with a TTL of lease_s, for func_redis or any script."""


class ClusterSettings(_Section):
    """Several instances on one Redis: they split the switches between them,
    and one of them, the leader, runs the engine and publishes."""

    enabled: bool = False
    """Off: this instance does everything alone (no heartbeat, no lease)."""
    instance: str = ""
    """This instance's name among the others; empty: host name and process id."""
    heartbeat_s: Annotated[float, Field(ge=0.2, le=60)] = 2.0
    """How often an instance says it is alive; it is gone after three missed."""
    lease_s: Annotated[float, Field(ge=1, le=600)] = 10.0
    """The leader's lease: a new leader takes over within two of these after
    the leader dies."""

    @model_validator(mode="after")
    def _lease(self) -> ClusterSettings:
        if self.lease_s < 3 * self.heartbeat_s:
            raise ValueError("lease_s must be at least three times heartbeat_s")
        return self


#: What a subscriber can choose to hear about (``events`` of a subscriber).
EVENT_KINDS = ("outage", "staff", "maintenance", "drop", "link", "prompt")


class NotifySubscriber(_Section):
    """One [[notify.subscribers]] entry: where its messages go, and which."""

    name: str
    """Names the subscriber in the log (never its URLs, which hold secrets)."""
    urls: tuple[str, ...] = ()
    """apprise URLs: mailto://, tgram://, slack://, matrix://, ...
    (https://appriseit.com/services/)."""
    webhooks: tuple[str, ...] = ()
    """http:// or https:// URLs that receive every message as a JSON POST."""
    districts: tuple[str, ...] = ()
    """District ids or names; empty: all. What concerns no one district (the
    whole network, a lost link, a rejected drop) reaches every subscriber."""
    events: tuple[str, ...] = ()
    """Kinds among outage, staff, maintenance, drop, link; empty: all."""

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError('expected a name for the subscriber, e.g. "noc"')
        return name.strip()

    @field_validator("events")
    @classmethod
    def _events(cls, events: tuple[str, ...]) -> tuple[str, ...]:
        for kind in events:
            if kind not in EVENT_KINDS:
                raise ValueError(
                    f"unknown event kind {kind!r}; expected some of"
                    f" {', '.join(EVENT_KINDS)} (or none: all)"
                )
        return events

    @model_validator(mode="after")
    def _destinations(self) -> NotifySubscriber:
        # the URLs are checked here rather than per field, so that an error
        # never echoes them: they hold passwords and tokens
        from announcer.notify import urls  # noqa: PLC0415  (apprise loads only when used)

        if not self.urls and not self.webhooks:
            raise ValueError(f"subscriber {self.name!r} has no urls and no webhooks; add one")
        for number, url in enumerate(self.urls, 1):
            made = urls.instantiate(url)
            if isinstance(made, str):
                raise ValueError(f"subscriber {self.name!r}, urls entry {number}: {made}")
        for number, url in enumerate(self.webhooks, 1):
            problem = urls.webhook_problem(url)
            if problem:
                raise ValueError(f"subscriber {self.name!r}, webhooks entry {number}: {problem}")
        return self


class NotifySettings(_Section):
    """Messages to people (email, chat, webhooks) about outages, staff
    announcements, planned works, rejected drops and lost links."""

    enabled: bool = True
    """Send them (when there are subscribers)."""
    debounce_s: Annotated[float, Field(ge=0, le=3_600)] = 10.0
    """Events of one outage (one announcement, one link) within this long of
    the first become one message: at most one message per outage this often."""
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """One delivery attempt taking longer than this has failed."""
    attempts: Annotated[int, Field(ge=1, le=20)] = 3
    """Attempts per message and destination before it is given up (and logged)."""
    retry_backoff_s: Annotated[float, Field(ge=0, le=3_600)] = 2.0
    """Wait before the second attempt; twice as long before each next one."""
    subscribers: tuple[NotifySubscriber, ...] = ()
    """[[notify.subscribers]] entries."""

    @model_validator(mode="after")
    def _unique(self) -> NotifySettings:
        names = [s.name for s in self.subscribers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"subscriber names must differ; used twice: {', '.join(twice)}")
        return self


class MetricsSettings(_Section):
    """Prometheus metrics of ``announcer run``: ``GET /metrics`` over HTTP."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Where Prometheus scrapes; loopback unless a firewall guards a wider address."""
    port: Annotated[int, Field(ge=1, le=65535)] = 9105
    """Prometheus's list of exporter ports is full; 9105 went to the Mesos
    exporter, long retired (9464, OpenTelemetry's, is often taken)."""


class Settings(_Section):
    redis: RedisSettings = RedisSettings()
    phones: PhoneSettings = PhoneSettings()
    inventory: InventorySettings = InventorySettings()
    billing: BillingSettings = BillingSettings()
    icmp: IcmpSettings = IcmpSettings()
    snmp: SnmpSettings = SnmpSettings()
    poller: PollerSettings = PollerSettings()
    announcements: AnnouncementSettings = AnnouncementSettings()
    prompts: PromptSettings = PromptSettings()
    dropbox: DropboxSettings = DropboxSettings()
    fastagi: FastAgiSettings = FastAgiSettings()
    ami: AmiSettings = AmiSettings()
    mirror: MirrorSettings = MirrorSettings()
    metrics: MetricsSettings = MetricsSettings()
    notify: NotifySettings = NotifySettings()
    cluster: ClusterSettings = ClusterSettings()


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` are one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


@dataclass(frozen=True)
class Loaded:
    settings: Settings
    source: str
    """The file read, or a note that defaults are in force."""


def _section_depth(loc: list[str]) -> int:
    """How many leading parts of ``loc`` name a section (a TOML table)."""
    model: type[BaseModel] = Settings
    depth = 0
    parts = iter(loc)
    for part in parts:
        field = model.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model, depth = annotation, depth + 1
            continue
        values: tuple[Any, ...] = getattr(annotation, "__args__", ())
        if getattr(annotation, "__origin__", None) is dict and len(values) == 2:
            if next(parts, None) is None:
                return depth
            model, depth = values[-1], depth + 2
            continue
        break
    return depth


def _key(loc: list[str]) -> str:
    """``["snmp", "profiles", "noc", "port"]`` -> ``[snmp.profiles.noc] port``."""
    if not loc:
        return "(top level)"
    depth = max(1, _section_depth(loc))
    section, rest = ".".join(loc[:depth]), ".".join(loc[depth:])
    return f"[{section}] {rest}" if rest else f"[{section}]"


def _describe(error: Any, model: type[BaseModel]) -> str:
    loc = [str(part) for part in error["loc"]]
    key = _key(loc)
    if error["type"] == "extra_forbidden":
        section: type[BaseModel] = model
        parts = iter(loc[:-1])
        for part in parts:
            annotation = section.model_fields[part].annotation
            items: tuple[Any, ...] = getattr(annotation, "__args__", ())
            if getattr(annotation, "__origin__", None) is tuple and items:
                annotation, _ = items[0], next(parts, None)  # [[array]] entry: skip its index
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                break
            section = annotation
        known = ", ".join(section.model_fields)
        what = "section" if len(loc) == 1 else "key"
        return f"{key}: unknown {what}; expected one of: {known}"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    if error["type"] in ("model_type", "dict_type"):
        return f"{key}: expected a section [{'.'.join(loc)}] with keys{shown}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: {message[0].lower()}{message[1:]}{shown}"


def parse(text: str, source: str, env: Mapping[str, str] | None = None) -> Settings:
    """Validate TOML text; raise ``ConfigError`` naming every bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    url = (os.environ if env is None else env).get(REDIS_URL_ENV)
    if url:
        redis = data.setdefault("redis", {})
        if isinstance(redis, dict):
            redis["url"] = url
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e, Settings) for e in exc.errors()]
        raise ConfigError(source, problems) from None


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Loaded:
    """Find, read and validate the configuration."""
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(CONFIG_ENV))
    chosen = path or Path(env.get(CONFIG_ENV) or DEFAULT_PATH)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(str(chosen), ["file not found; check the path"]) from None
        return Loaded(parse("", "defaults", env), f"defaults (no {chosen})")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(chosen), [f"cannot read: {exc}"]) from None
    return Loaded(parse(text, str(chosen), env), str(chosen))
