"""The ICMP probe against real loopback addresses, with real firewall rules.

Only 127.0.0.0/8 and ::1 are ever probed. Every firewall rule lives in chains
of the test's own (``announcer/demo/firewall.py``) and every sysctl is put back,
whatever the test's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from icmplib import ICMPSocketError  # type: ignore[import-untyped]

from announcer.config import IcmpSettings
from announcer.demo import firewall as netfilter
from announcer.probes import icmp, icmp_socket
from announcer.probes.base import Probe, ProbeResult, Target, Verdict
from announcer.probes.icmp import IcmpProbe, IcmpUnavailable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for raw ICMP and iptables")

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
MakeProbe = Callable[..., IcmpProbe]


def targets(*addresses: str) -> list[Target]:
    return [Target(f"sw-{address}", address) for address in addresses]


def block(first: str, count: int) -> list[str]:
    start = ipaddress.IPv4Address(first)
    return [str(start + i) for i in range(count)]


def verdicts(results: list[ProbeResult]) -> dict[str, Verdict]:
    return {result.switch.removeprefix("sw-"): result.verdict for result in results}


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
async def make_probe() -> AsyncIterator[MakeProbe]:
    """``make_probe(timeout_ms=..., ...)``: probes closed after the test."""
    made: list[IcmpProbe] = []

    def make(**settings: object) -> IcmpProbe:
        probe = IcmpProbe(IcmpSettings.model_validate(settings))
        made.append(probe)
        return probe

    try:
        yield make
    finally:
        for probe in made:
            await probe.close()


@pytest.fixture
def firewall() -> Iterator[netfilter.Firewall]:
    reason = netfilter.missing()
    if reason:
        _unavailable(reason)
    with netfilter.Firewall() as rules:
        yield rules


@pytest.fixture
def firewall6() -> Iterator[netfilter.Firewall]:
    reason = netfilter.missing(ipv6=True)
    if reason:
        _unavailable(reason)
    with netfilter.Firewall(ipv6=True) as rules:
        yield rules


@pytest.fixture
def ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect(("::1", 9))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here ({exc})")


@contextlib.contextmanager
def ping_group_range(value: str) -> Iterator[None]:
    """net.ipv4.ping_group_range set to ``value``, and back afterwards."""
    old = PING_GROUP_RANGE.read_text(encoding="ascii")
    PING_GROUP_RANGE.write_text(value, encoding="ascii")
    try:
        yield
    finally:
        PING_GROUP_RANGE.write_text(old, encoding="ascii")


async def test_live_loopback_addresses_are_alive(make_probe: MakeProbe) -> None:
    probe: Probe = make_probe()
    addresses = ("127.0.0.1", "127.0.0.2", "127.3.4.5")
    results = await probe.sweep(targets(*addresses))
    assert [r.switch for r in results] == [f"sw-{a}" for a in addresses]
    for result in results:
        assert result.verdict is Verdict.ALIVE, result
        assert result.rtt_ms is not None
        assert result.rtt_ms >= 0
        assert result.reason == ""


def test_mode_description_says_raw_sockets_as_root(make_probe: MakeProbe) -> None:
    assert make_probe().description == "ICMP: raw sockets (running as root)"
    assert make_probe(privileged=True).mode.raw


async def test_input_drop_silences_only_those_addresses(
    make_probe: MakeProbe, firewall: netfilter.Firewall
) -> None:
    addresses = block("127.2.0.1", 6)
    firewall.drop_echo_requests(["127.2.0.2", "127.2.0.5"])
    results = await make_probe(timeout_ms=300).sweep(targets(*addresses))
    silent = {"127.2.0.2", "127.2.0.5"}
    assert verdicts(results) == {
        a: Verdict.SILENT if a in silent else Verdict.ALIVE for a in addresses
    }
    for result in results:
        if result.verdict is Verdict.SILENT:
            assert result.reason == "no echo reply within 300 ms"
            assert result.rtt_ms is None


@pytest.mark.parametrize("target", ["DROP", "REJECT --reject-with icmp-port-unreachable"])
async def test_output_rule_is_failed_not_silent(
    make_probe: MakeProbe, firewall: netfilter.Firewall, target: str
) -> None:
    firewall.drop_echo_requests(["127.2.1.2"], hook="OUTPUT", target=target)
    results = await make_probe(timeout_ms=300).sweep(targets("127.2.1.1", "127.2.1.2", "127.2.1.3"))
    assert verdicts(results) == {
        "127.2.1.1": Verdict.ALIVE,
        "127.2.1.2": Verdict.FAILED,
        "127.2.1.3": Verdict.ALIVE,
    }
    assert results[1].reason == (
        "cannot send: Operation not permitted; check this host's firewall and routes"
    )


async def test_input_reject_is_silent_with_the_icmp_error(
    make_probe: MakeProbe, firewall: netfilter.Firewall
) -> None:
    firewall.drop_echo_requests(["127.2.2.2"], target="REJECT --reject-with icmp-host-unreachable")
    results = await make_probe(timeout_ms=2000).sweep(targets("127.2.2.1", "127.2.2.2"))
    assert verdicts(results) == {"127.2.2.1": Verdict.ALIVE, "127.2.2.2": Verdict.SILENT}
    assert results[1].reason == "127.2.2.2 says destination unreachable: host unreachable"


async def test_not_an_address_is_failed(make_probe: MakeProbe) -> None:
    results = await make_probe().sweep(targets("127.0.0.1", "switch-7.example", "127.0.0.1"))
    assert [r.verdict for r in results] == [Verdict.ALIVE, Verdict.FAILED, Verdict.ALIVE]
    assert results[1].reason.startswith("not an IP address: 'switch-7.example'")


@pytest.mark.usefixtures("ipv6_loopback")
async def test_ipv6_loopback_is_alive_beside_ipv4(make_probe: MakeProbe) -> None:
    results = await make_probe().sweep(targets("::1", "127.0.0.1", "0:0::1"))
    assert [r.verdict for r in results] == [Verdict.ALIVE] * 3
    assert all(r.rtt_ms is not None for r in results)


async def test_no_ipv6_socket_fails_those_targets_and_says_so_once(
    make_probe: MakeProbe, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_open = icmp_socket.open_socket

    def no_ipv6(family: socket.AddressFamily, raw: bool) -> object:
        if family == socket.AF_INET6:
            raise ICMPSocketError("[Errno 97] Address family not supported by protocol")
        return real_open(family, raw)

    monkeypatch.setattr(icmp, "open_socket", no_ipv6)  # where IcmpProbe looks it up
    probe = make_probe()
    for _ in range(2):
        results = await probe.sweep(targets("::1", "127.0.0.1"))
        assert [r.verdict for r in results] == [Verdict.FAILED, Verdict.ALIVE]
        assert results[0].reason == (
            "cannot send: no ICMPv6 socket ([Errno 97] Address family not supported by"
            " protocol); check this host's IP setup"
        )
    warnings = [r for r in caplog.records if r.name == icmp.__name__ and r.levelname == "WARNING"]
    assert len(warnings) == 1


@pytest.mark.usefixtures("ipv6_loopback")
async def test_ipv6_input_drop_is_silent(
    make_probe: MakeProbe, firewall6: netfilter.Firewall
) -> None:
    firewall6.drop_echo_requests(["::1"])
    results = await make_probe(timeout_ms=300).sweep(targets("::1", "127.0.0.1"))
    assert verdicts(results) == {"::1": Verdict.SILENT, "127.0.0.1": Verdict.ALIVE}
    assert results[0].reason == "no echo reply within 300 ms"


@pytest.mark.usefixtures("ipv6_loopback")
async def test_ipv6_output_drop_is_failed(
    make_probe: MakeProbe, firewall6: netfilter.Firewall
) -> None:
    firewall6.drop_echo_requests(["::1"], hook="OUTPUT")
    results = await make_probe(timeout_ms=300).sweep(targets("::1"))
    assert results[0].verdict is Verdict.FAILED
    assert results[0].reason.startswith("cannot send: Operation not permitted")


async def test_ten_thousand_loopback_addresses_are_all_alive(make_probe: MakeProbe) -> None:
    addresses = block("127.1.0.0", 10_000)
    assert addresses[-1] == "127.1.39.15"
    probe = make_probe()
    for _ in range(2):  # the second sweep reuses the sockets and the plan
        results = await probe.sweep(targets(*addresses))
        assert len(results) == 10_000
        assert [r.switch for r in results] == [f"sw-{a}" for a in addresses]
        lost = [r.switch for r in results if r.verdict is not Verdict.ALIVE]
        assert lost == []


async def test_two_probes_and_a_ping_at_once_do_not_confuse_each_other(
    make_probe: MakeProbe, firewall: netfilter.Firewall
) -> None:
    if shutil.which("ping") is None:
        _unavailable("needs ping (Debian package iputils-ping)")
    silent = {"127.7.0.7", "127.7.0.177", "127.7.1.44"}
    firewall.drop_echo_requests(sorted(silent))
    first, second = block("127.7.0.1", 300), block("127.7.0.150", 300)
    ping = await asyncio.create_subprocess_exec(
        "ping", "-n", "-c", "40", "-i", "0.01", "127.7.0.200",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        a, b = make_probe(timeout_ms=500), make_probe(timeout_ms=500)
        for _ in range(3):
            one, two = await asyncio.gather(a.sweep(targets(*first)), b.sweep(targets(*second)))
            for addresses, results in ((first, one), (second, two)):
                assert verdicts(results) == {
                    x: Verdict.SILENT if x in silent else Verdict.ALIVE for x in addresses
                }
        output, _ = await asyncio.wait_for(ping.communicate(), timeout=30)
    finally:
        if ping.returncode is None:
            ping.kill()
            await ping.wait()
    assert ping.returncode == 0, output
    assert re.search(rb"40 packets transmitted, 40 received", output), output


# --- stale replies: forged on the wire, with a raw socket of the test's own ---


def _checksum(data: bytes) -> int:
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _sniffer() -> socket.socket:
    """A raw socket that sees incoming ICMP echo requests only."""
    sniffer = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sniffer.setsockopt(255, 1, struct.pack("=I", ~(1 << 8) & 0xFFFFFFFF))  # ICMP_FILTER
    sniffer.setblocking(False)
    return sniffer


async def _request_to(sniffer: socket.socket, address: str) -> tuple[int, bytes]:
    """(identifier, echo data) of the next echo request to ``address``."""
    wanted = socket.inet_aton(address)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            data = sniffer.recv(2048)
        except BlockingIOError:
            await asyncio.sleep(0.001)
            continue
        at = (data[0] & 0x0F) * 4
        if data[16:20] == wanted and data[at] == 8:
            return struct.unpack_from("!H", data, at + 4)[0], data[at + 8 :]
    raise AssertionError(f"no echo request to {address} seen")


async def _forge_replies(source: str, ident: int, echo_data: bytes) -> None:
    """Echo replies from ``source`` with every sequence number, as if it had answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as forger:
        forger.bind((source, 0))
        for seq in range(0x10000):
            header = struct.pack("!BBHHH", 0, 0, 0, ident, seq)
            checksum = _checksum(header + echo_data)
            packet = struct.pack("!BBHHH", 0, 0, checksum, ident, seq) + echo_data
            forger.sendto(packet, ("127.0.0.1", 0))
            if seq % 256 == 255:
                await asyncio.sleep(0)  # let the probe read its socket


async def test_replies_with_an_earlier_sweeps_data_are_ignored(
    make_probe: MakeProbe, firewall: netfilter.Firewall
) -> None:
    live, mute = "127.6.0.1", "127.6.0.2"
    firewall.drop_echo_requests([mute])
    probe = make_probe(timeout_ms=3000, privileged=True)
    with _sniffer() as sniffer:
        first = asyncio.create_task(probe.sweep(targets(live)))
        ident, stale = await _request_to(sniffer, live)
        assert verdicts(await first) == {live: Verdict.ALIVE}

        # The next sweep asks the silenced address; forged replies carry the old data.
        second = asyncio.create_task(probe.sweep(targets(live, mute)))
        await _request_to(sniffer, live)
        await _forge_replies(mute, ident, stale)
        assert verdicts(await second) == {live: Verdict.ALIVE, mute: Verdict.SILENT}

        # Control: the same forgery with the current sweep's data is taken as an answer.
        third = asyncio.create_task(probe.sweep(targets(live, mute)))
        _, current = await _request_to(sniffer, live)
        assert current != stale
        await _forge_replies(mute, ident, current)
        assert verdicts(await third) == {live: Verdict.ALIVE, mute: Verdict.ALIVE}


# --- unprivileged ping sockets and the choice between the two ---


async def test_ping_sockets_when_the_group_is_allowed(
    make_probe: MakeProbe, firewall: netfilter.Firewall
) -> None:
    firewall.drop_echo_requests(["127.8.0.2"])
    firewall.drop_echo_requests(["127.8.0.3"], hook="OUTPUT")
    with ping_group_range("0 0"):
        probe = make_probe(privileged=False, timeout_ms=300)
        assert not probe.mode.raw
        assert probe.description == (
            "ICMP: unprivileged ping sockets ([icmp] privileged = false;"
            " net.ipv4.ping_group_range 0 0 includes group 0)"
        )
        addresses = ("127.8.0.1", "127.8.0.2", "127.8.0.3", "127.0.0.1")
        results = await probe.sweep(targets(*addresses))
    assert [r.verdict for r in results] == [
        Verdict.ALIVE,
        Verdict.SILENT,
        Verdict.FAILED,
        Verdict.ALIVE,
    ]
    assert results[2].reason.startswith("cannot send: Operation not permitted")


@pytest.mark.usefixtures("ipv6_loopback")
async def test_ping_sockets_over_ipv6(make_probe: MakeProbe) -> None:
    with ping_group_range("0 0"):
        probe = make_probe(privileged=False)
        results = await probe.sweep(targets("::1", "127.0.0.1"))
    assert [r.verdict for r in results] == [Verdict.ALIVE, Verdict.ALIVE]


def test_ping_sockets_refused_say_how_to_allow_them() -> None:
    with ping_group_range("1 0"), pytest.raises(IcmpUnavailable) as raised:
        IcmpProbe(IcmpSettings(privileged=False))
    message = str(raised.value)
    assert 'sysctl -w net.ipv4.ping_group_range="0 0"' in message
    assert "leave [icmp] privileged unset" in message


_CHOOSE = """
import json
from announcer.config import IcmpSettings
from announcer.probes import icmp
from announcer.probes.icmp import IcmpProbe, IcmpUnavailable
out = {}
for privileged in (None, True):
    try:
        out[str(privileged)] = IcmpProbe(IcmpSettings(privileged=privileged)).description
    except IcmpUnavailable as exc:
        out[str(privileged)] = "IcmpUnavailable: " + str(exc)
print(json.dumps(out))
"""


def test_without_raw_nor_ping_sockets_the_error_says_what_to_do(tmp_path: Path) -> None:
    """A process without CAP_NET_RAW, its group outside ping_group_range.

    Root without CAP_NET_RAW stands in for user nobody, who cannot run the
    virtualenv's interpreter here (it lives under /root).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (Debian package util-linux)")
    command = [setpriv, "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable]
    with ping_group_range("1 0"):
        done = subprocess.run(
            [*command, "-c", _CHOOSE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["None"] == (
        "IcmpUnavailable: cannot send ICMP echo: raw sockets need CAP_NET_RAW, which this"
        " root process lacks (a container or a systemd unit can drop it), and ping sockets"
        " are off for group 0 (net.ipv4.ping_group_range is 1 0); run announcer as root,"
        " give it CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW), or allow ping"
        ' sockets with sysctl -w net.ipv4.ping_group_range="0 0" (and make it permanent in'
        " /etc/sysctl.d/)"
    )
    assert out["True"].startswith(
        "IcmpUnavailable: cannot open a raw ICMP socket: raw sockets need CAP_NET_RAW"
    )
    assert "AmbientCapabilities=CAP_NET_RAW" in out["True"]
