"""A private snmpd for the SNMP probe's tests and benchmark, and uplink ports to cut.

``Snmpd`` runs Debian's real ``snmpd`` (package ``snmpd``) in the foreground
on a loopback address and a free unprivileged UDP port, with a v2c community
and a v3 user (SHA + AES) of its own, from a temporary directory that holds
its configuration, its persistent state (``persistentDir``) and its log. It
reads no other configuration (``-C``) and never touches /etc/snmp or
/var/lib/snmp. ``restart()`` is a reboot as a manager sees it: sysUpTime
starts again from zero and the v3 engine's boot counter goes up.

``Uplink`` is a veth pair: snmpd's IF-MIB shows every interface of the host,
so ``uplink.ifindex`` is a port whose ifOperStatus a test changes by taking
the peer end down (the cable is cut) and up again. Creating it needs root
(CAP_NET_ADMIN). Net-SNMP caches its interface table for about three seconds,
so a change shows after a while: tests poll for it, bounded.

Everything is removed on ``close()`` / leaving the ``with`` block, also when
the test failed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pysnmp.proto.api import v2c  # type: ignore[import-untyped]

from announcer.config import SnmpProfile

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)


class NoSnmpd(RuntimeError):
    pass


def find_snmpd() -> str | None:
    """Path of Debian's snmpd (it lives in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("snmpd") or shutil.which("snmpd", path="/usr/sbin:/sbin")


def find_ip() -> str | None:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")


def snmpd_version() -> str:
    binary = find_snmpd()
    if binary is None:
        return "none found"
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    line = next((s for s in done.stdout.splitlines() if "version" in s.lower()), "?")
    return f"{line.split(':', 1)[-1].strip()} ({binary})"


@dataclass(frozen=True)
class V3User:
    name: str = "announcer"
    auth_protocol: str = "SHA"
    auth_key: str = "auth-secret-1"
    priv_protocol: str = "AES"
    priv_key: str = "priv-secret-1"


def _free_udp_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _uptime_ticks(address: str, port: int, community: str, timeout_s: float) -> int | None:
    """sysUpTime.0 by one v2c GET built with pysnmp (independent of the code under test)."""
    pdu = v2c.GetRequestPDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_varbinds(pdu, [(SYS_UPTIME, v2c.null)])
    message = v2c.Message()
    v2c.apiMessage.set_defaults(message)
    v2c.apiMessage.set_community(message, community)
    v2c.apiMessage.set_pdu(message, pdu)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        s.sendto(encoder.encode(message), (address, port))
        try:
            data = s.recv(65535)
        except TimeoutError:
            return None
    reply, _ = decoder.decode(data, asn1Spec=v2c.Message())
    varbinds = v2c.apiPDU.get_varbinds(v2c.apiMessage.get_pdu(reply))
    return int(varbinds[0][1])


class Snmpd:
    """``with Snmpd() as agent:`` a running snmpd at ``agent.address``:``agent.port``."""

    def __init__(
        self,
        address: str = "127.0.0.1",
        community: str = "announcer-test",
        user: V3User | None = None,
    ) -> None:
        self.address = address
        self.community = community
        self.user = user or V3User()
        self.port = 0
        self.directory: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- the profiles a probe needs to reach this agent --

    def v2c_profile(self, community: str | None = None) -> SnmpProfile:
        return SnmpProfile(version="2c", port=self.port, community=community or self.community)

    def v3_profile(self, auth_key: str | None = None, priv_key: str | None = None) -> SnmpProfile:
        user = self.user
        return SnmpProfile(
            version="3",
            port=self.port,
            user=user.name,
            auth_protocol="SHA",
            auth_key=auth_key or user.auth_key,
            priv_protocol="AES",
            priv_key=priv_key or user.priv_key,
        )

    # -- life cycle --

    def _config(self, directory: Path) -> str:
        where = f"udp6:[{self.address}]" if ":" in self.address else f"udp:{self.address}"
        source = "::1/128" if ":" in self.address else "127.0.0.0/8"
        community = "rocommunity6" if ":" in self.address else "rocommunity"
        u = self.user
        keys = f'{u.auth_protocol} "{u.auth_key}" {u.priv_protocol} "{u.priv_key}"'
        return "\n".join([
            f"agentAddress {where}:{self.port}",
            f"{community} {self.community} {source}",
            f"createUser {u.name} {keys}",
            f"rouser {u.name} priv",
            "dontLogTCPWrappersConnects yes",
            # library settings, which -C would otherwise take from snmp.conf
            f"[snmp] persistentDir {directory / 'persist'}",
            "[snmp] serverRecvBuf 4194304",
            "[snmp] serverSendBuf 4194304",
            "",
        ])  # fmt: skip

    def start(self) -> None:
        """Start snmpd (on the same port as before, if it ran before) and wait until it answers."""
        binary = find_snmpd()
        if binary is None:
            raise NoSnmpd("no snmpd found: install Debian's snmpd package (apt-get install snmpd)")
        if self._proc is not None:
            raise RuntimeError("snmpd is already running")
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="announcer-snmpd-"))
        directory = self.directory
        fresh_port = self.port == 0
        for _ in range(3 if fresh_port else 1):  # another process may take a free port first
            if fresh_port:
                self.port = _free_udp_port(self.address)
            (directory / "snmpd.conf").write_text(self._config(directory), encoding="utf-8")
            (directory / "mibs").mkdir(exist_ok=True)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "SNMPCONFPATH": str(directory),
                "SNMP_PERSISTENT_DIR": str(directory / "persist"),
                "MIBDIRS": str(directory / "mibs"),
                "MIBS": "",
            }
            command = [
                binary, "-f", "-C", "-c", str(directory / "snmpd.conf"),
                "-p", str(directory / "snmpd.pid"),
                "-M", str(directory / "mibs"), "-m", "",
                "-Lf", str(directory / "snmpd.log"),
            ]  # fmt: skip
            self._proc = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd=directory, start_new_session=True,
            )  # fmt: skip
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"snmpd did not start; its log says:\n{self.log()[-2000:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if _uptime_ticks(self.address, self.port, self.community, 0.2) is not None:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> None:
        """Stop and start again on the same port: a reboot, sysUpTime back near zero."""
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def uptime_s(self) -> float | None:
        ticks = _uptime_ticks(self.address, self.port, self.community, 1.0)
        return None if ticks is None else ticks / 100

    def log(self) -> str:
        if self.directory is None:
            return ""
        try:
            return (self.directory / "snmpd.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def __enter__(self) -> Snmpd:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Uplink:
    """A veth pair named ``annXXXXXXu`` / ``annXXXXXXp``; needs root. ``with Uplink() as port:``."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"ann{tag}u"
        self.peer = f"ann{tag}p"
        self.ifindex = 0
        self._created = False

    def _ip(self, *args: str) -> None:
        binary = find_ip()
        if binary is None:
            raise RuntimeError("no ip command: install Debian's iproute2 package")
        done = subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=10, check=False
        )
        if done.returncode:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def create(self) -> None:
        self._ip("link", "add", self.name, "type", "veth", "peer", "name", self.peer)
        self._created = True
        self._ip("link", "set", self.name, "up")
        self._ip("link", "set", self.peer, "up")
        self.ifindex = int(Path(f"/sys/class/net/{self.name}/ifindex").read_text().strip())

    def cut(self) -> None:
        """Take the far end down: this port loses its carrier (ifOperStatus no longer up)."""
        self._ip("link", "set", self.peer, "down")

    def restore(self) -> None:
        self._ip("link", "set", self.peer, "up")

    def delete(self) -> None:
        if self._created:
            self._created = False
            self._ip("link", "del", self.name)  # takes the peer with it

    def __enter__(self) -> Uplink:
        try:
            self.create()
        except BaseException:
            with contextlib.suppress(RuntimeError):
                self.delete()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.delete()
