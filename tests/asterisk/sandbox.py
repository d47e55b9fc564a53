"""A real Asterisk 22 for the dialplan tests, run from the sid chroot.

``scripts/asterisk-sandbox.sh`` builds the chroot once (Debian 12 has no
Asterisk; sid's installs in a chroot). ``Asterisk`` starts one server in it
with a configuration of its own: a fresh directory under the chroot's /tmp
(``/tmp/announcer-test-XXXX`` as Asterisk sees it) holds ``asterisk.conf``,
whose etc, run, log, spool, db and cache directories all point back into that
directory, so runs side by side or left over from a crash never collide, and
the chroot's own /etc/asterisk is never read. The files are made from the
templates in ``conf/``. Modules load only by name (``autoload=no``, see
``conf/modules.conf``): no SIP or IAX listener, no HTTP; the one socket open
is the manager (AMI) on 127.0.0.1 and a free port, with a random login.

    with Asterisk(sandbox, extensions=DIALPLAN) as asterisk:
        asterisk.rx("core show version")
        async with asterisk.ami() as ami:
            call = await ami.originate("100", "announcer-test", callerid="+79161234567")
            assert call.applications == ["Set", "Playback", "Hangup"]
            assert call.variables["PLAYBACKSTATUS"] == "SUCCESS"

Leaving the ``with`` block (also when the test failed) stops Asterisk (``core
stop now``, then SIGTERM, then SIGKILL) and deletes the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.asterisk.ami import AMI_TIMEOUT_S, Ami, AsteriskError

SANDBOX_ENV = "ANNOUNCER_ASTERISK_SANDBOX"
DEFAULT_SANDBOX = Path("/var/cache/announcer/asterisk-sid")
READY_MARKER = ".announcer-sandbox-ready"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "asterisk-sandbox.sh"
ASTERISK = "/usr/sbin/asterisk"
REDIS_CLI = "/usr/bin/redis-cli"

BOOT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RX_TIMEOUT_S = 10.0
TEST_DIR_PREFIX = "announcer-test-"
OWNER_LOCK = "owner.lock"
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

# asterisk.conf, modules.conf, manager.conf, logger.conf, indications.conf:
# templates whose $names _write_config fills in.
TEMPLATES = Path(__file__).resolve().parent / "conf"
# Files the core reads at start and warns without; empty is fine.
EMPTY_CONFIGS = ("acl", "ccss", "cdr", "cel", "features", "udptl")


def sandbox_dir() -> Path:
    """Where the chroot is: $ANNOUNCER_ASTERISK_SANDBOX or the default."""
    return Path(os.environ.get(SANDBOX_ENV) or DEFAULT_SANDBOX)


def sandbox_ready(sandbox: Path) -> bool:
    """The build script finished there (it writes the marker last), and the
    chroot has every program the tests use (the script adds what is new)."""
    return (sandbox / READY_MARKER).is_file() and all(
        (sandbox / program.lstrip("/")).is_file() for program in (ASTERISK, REDIS_CLI)
    )


def build_sandbox(sandbox: Path, timeout_s: float = 900.0) -> subprocess.CompletedProcess[str]:
    """Runs scripts/asterisk-sandbox.sh for ``sandbox``; a no-op when it is built."""
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env={**os.environ, SANDBOX_ENV: str(sandbox)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def ready_sandbox(needs: str) -> Path | str:
    """The sandbox, built first if it is missing (a minute or two); or, in a
    sentence, why there is none. ``needs`` names who asks, for the root hint."""
    if os.geteuid() != 0:
        return f"{needs} needs root: Asterisk runs in a chroot (run it with sudo)"
    path = sandbox_dir()
    if not sandbox_ready(path):
        print(f"building the Asterisk sandbox in {path} (once; a minute or two)", flush=True)
        result = build_sandbox(path)
        if result.returncode != 0 or not sandbox_ready(path):
            output = (result.stderr or result.stdout).strip().splitlines()
            return (
                f"no Asterisk sandbox in {path} ({output[-1] if output else 'no output'});"
                f" build it by hand: sudo {BUILD_SCRIPT}"
            )
    return path


def free_tcp_port() -> int:
    """A port free on 127.0.0.1 just now (Asterisk binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def reap_orphans(sandbox: Path, min_age_s: float = 60.0) -> list[Path]:
    """Stops the Asterisks of test processes that died (SIGKILL, a lost
    machine) and deletes their directories; returns the directories removed.

    A test directory's owner lock is held for as long as its test process
    lives, so a free lock means nobody will ever stop that Asterisk. Brand-new
    directories (younger than ``min_age_s``) are left alone: their owner may
    not have taken the lock yet.
    """
    removed = []
    for host_dir in sorted((sandbox / "tmp").glob(f"{TEST_DIR_PREFIX}*")):
        try:
            if time.time() - host_dir.stat().st_mtime < min_age_s:
                continue
            with (host_dir / OWNER_LOCK).open("ab") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its test process is alive
                _kill_sandboxed(sandbox, host_dir / "run" / "asterisk.pid")
                shutil.rmtree(host_dir, ignore_errors=True)
                removed.append(host_dir)
        except OSError:
            continue
    return removed


def _kill_sandboxed(sandbox: Path, pid_file: Path) -> None:
    """SIGKILLs the process in ``pid_file`` if it is an Asterisk of ``sandbox``."""
    try:
        pid = int(pid_file.read_text().strip())
        exe = Path(f"/proc/{pid}/exe").resolve()
    except (OSError, ValueError):
        return
    if exe == (sandbox / ASTERISK.lstrip("/")).resolve():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _packaged_dirs(sandbox: Path) -> dict[str, str]:
    """The package's own module, data and library directories (its asterisk.conf)."""
    dirs = {
        "astmoddir": "/usr/lib/asterisk/modules",
        "astvarlibdir": "/var/lib/asterisk",
        "astkeydir": "/var/lib/asterisk",
        "astdatadir": "/usr/share/asterisk",
        "astagidir": "/usr/share/asterisk/agi-bin",
        "astsbindir": "/usr/sbin",
    }
    with contextlib.suppress(OSError):
        for line in (sandbox / "etc" / "asterisk" / "asterisk.conf").read_text().splitlines():
            key, arrow, value = line.partition("=>")
            if arrow and key.strip() in dirs:
                dirs[key.strip()] = value.split(";")[0].strip()
    return dirs


def _ids_of(sandbox: Path, user: str) -> tuple[int, int]:
    """uid and gid of ``user`` in the chroot's /etc/passwd (not the host's)."""
    for line in (sandbox / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise AsteriskError(f"no user {user!r} in {sandbox}/etc/passwd; rebuild the sandbox")


class Asterisk:
    """One Asterisk in the sandbox, with its own configuration directory."""

    def __init__(
        self,
        sandbox: Path,
        extensions: str = "",
        extra_modules: Iterable[str] = (),
        boot_timeout_s: float = BOOT_TIMEOUT_S,
    ) -> None:
        if not sandbox_ready(sandbox):
            raise AsteriskError(
                f"no Asterisk sandbox in {sandbox}; build it with: sudo {BUILD_SCRIPT}"
            )
        self.sandbox = sandbox
        self.extensions = extensions
        self.extra_modules = tuple(extra_modules)
        self.boot_timeout_s = boot_timeout_s
        self.ami_port = 0
        self.ami_user = f"test-{secrets.token_hex(4)}"
        self.ami_secret = secrets.token_hex(16)
        self._host_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner: IO[bytes] | None = None

    # -- paths: "root" is the test directory as Asterisk (inside the chroot) sees it

    @property
    def host_dir(self) -> Path:
        if self._host_dir is None:
            raise AsteriskError("Asterisk is not started")
        return self._host_dir

    @property
    def root(self) -> str:
        return "/" + str(self.host_dir.relative_to(self.sandbox))

    @property
    def config(self) -> str:
        return f"{self.root}/etc/asterisk.conf"

    def host_path(self, inside: str) -> Path:
        """The host's path of a path as Asterisk sees it."""
        return self.sandbox / inside.lstrip("/")

    # -- life cycle

    def __enter__(self) -> Asterisk:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._process is not None:
            raise AsteriskError("Asterisk is already started")
        reap_orphans(self.sandbox)
        self._host_dir = Path(tempfile.mkdtemp(prefix=TEST_DIR_PREFIX, dir=self.sandbox / "tmp"))
        try:
            # Held while this Asterisk lives: a directory whose lock is free
            # belongs to a test process that died (reap_orphans).
            self._owner = (self.host_dir / OWNER_LOCK).open("wb")
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._write_config()
            command = [
                "chroot", str(self.sandbox), ASTERISK,
                "-f", "-n", "-U", "asterisk", "-G", "asterisk", "-C", self.config,
            ]  # fmt: skip
            with (self.host_dir / "asterisk.out").open("wb") as log:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=CHROOT_ENV,
                    start_new_session=True,
                )
            self._wait_fully_booted()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops Asterisk (politely, then less so) and deletes its directory."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                with contextlib.suppress(AsteriskError, subprocess.TimeoutExpired):
                    self._asterisk_rx("core stop now", timeout_s=5.0)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.terminate()
                    try:
                        process.wait(STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(STOP_TIMEOUT_S)
        finally:
            host_dir, self._host_dir = self._host_dir, None
            if host_dir is not None:
                shutil.rmtree(host_dir, ignore_errors=True)
            owner, self._owner = self._owner, None
            if owner is not None:
                owner.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- the configuration

    def _write_config(self) -> None:
        uid, gid = _ids_of(self.sandbox, "asterisk")
        self.host_dir.chmod(0o755)
        for sub in ("etc", "run", "log", "spool", "db", "cache", "sounds"):
            path = self.host_dir / sub
            path.mkdir()
            os.chown(path, uid, gid)
        self.ami_port = free_tcp_port()
        root = self.root
        packaged = "\n".join(f"{k} => {v}" for k, v in _packaged_dirs(self.sandbox).items())
        values = {
            "root": root,
            "packaged_dirs": packaged,
            "extra_modules": "".join(f"load = {name}.so\n" for name in self.extra_modules),
            "port": str(self.ami_port),
            "user": self.ami_user,
            "secret": self.ami_secret,
        }
        files = {
            template.name: string.Template(template.read_text()).substitute(values)
            for template in sorted(TEMPLATES.glob("*.conf"))
        }
        files["extensions.conf"] = self.extensions
        for name in EMPTY_CONFIGS:
            files.setdefault(f"{name}.conf", "")
        for name, text in files.items():
            path = self.host_dir / "etc" / name
            path.write_text(text)
            path.chmod(0o644)

    def set_dialplan(self, extensions: str) -> None:
        """Replaces extensions.conf and reloads the dialplan."""
        self.extensions = extensions
        (self.host_dir / "etc" / "extensions.conf").write_text(extensions)
        self.rx("dialplan reload")

    def write_silence(self, name: str, seconds: float = 1.0) -> str:
        """A WAV of silence (8 kHz, 16-bit, mono); returns what Playback() takes."""
        path = self.host_dir / "sounds" / f"{name}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(b"\0\0" * int(8000 * seconds))
        path.chmod(0o644)
        return f"{self.root}/sounds/{name}"

    # -- the command line

    def _asterisk_rx(self, command: str, timeout_s: float = RX_TIMEOUT_S) -> str:
        result = subprocess.run(
            ["chroot", str(self.sandbox), ASTERISK, "-C", self.config, "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env=CHROOT_ENV,
        )
        if result.returncode != 0:
            raise AsteriskError(
                f"asterisk -rx {command!r} exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def rx(self, command: str, timeout_s: float = RX_TIMEOUT_S) -> str:
        """Runs one CLI command (``asterisk -rx``) and returns what it printed."""
        if not self.running:
            raise AsteriskError(f"Asterisk is not running\n{self.log_tail()}")
        return self._asterisk_rx(command, timeout_s)

    def _wait_fully_booted(self) -> None:
        process = self._process
        if process is None:
            raise AsteriskError("Asterisk is not started")
        deadline = time.monotonic() + self.boot_timeout_s
        last = ""
        while True:
            if process.poll() is not None:
                raise AsteriskError(
                    f"Asterisk exited with status {process.returncode} while starting\n"
                    + self.log_tail()
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AsteriskError(
                    f"Asterisk did not boot within {self.boot_timeout_s:.0f} s ({last})\n"
                    + self.log_tail()
                )
            try:
                output = self._asterisk_rx("core waitfullybooted", timeout_s=left)
            except (AsteriskError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
                time.sleep(0.1)
                continue
            if "fully booted" in output:
                return
            last = output.strip()

    def log_tail(self, lines: int = 40) -> str:
        """The end of Asterisk's log and console output, for error messages."""
        if self._host_dir is None:
            return ""
        parts = []
        for path in (self._host_dir / "log" / "messages.log", self._host_dir / "asterisk.out"):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- the manager interface

    @contextlib.asynccontextmanager
    async def ami(self, timeout_s: float = AMI_TIMEOUT_S) -> AsyncIterator[Ami]:
        """A logged-in AMI client (panoramisk), closed on the way out."""
        client = Ami(self)
        await client.connect(timeout_s)
        try:
            yield client
        finally:
            client.close()
