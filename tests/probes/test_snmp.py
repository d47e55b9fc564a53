"""The SNMP probe against a real snmpd on loopback (tests/probes/snmpd.py).

Without snmpd these tests are skipped with the reason, except under CI, where
they fail. The uplink tests create a veth pair and need root; without it they
are skipped. A few tests use a small fake agent built on pysnmp's own encoder,
for answers snmpd cannot be made to give (an uptime of 400 days, a reply from
the wrong address).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

import pytest
from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pysnmp.proto.api import v2c  # type: ignore[import-untyped]

from announcer.config import SnmpProfile, SnmpSettings
from announcer.probes.base import ProbeResult, Target, Verdict
from announcer.probes.snmp import SnmpProbe
from tests.probes.snmpd import Snmpd, Uplink, find_ip, find_snmpd

POLL_S = 30.0
"""How long to wait for snmpd's interface cache (about 3 s) to show a change."""


def _need_snmpd() -> None:
    if find_snmpd() is None:
        message = "snmpd is not installed: apt-get install snmpd"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the test creates a veth interface pair (ip link add)")
    if find_ip() is None:
        pytest.skip("the ip command is missing: apt-get install iproute2")


@pytest.fixture(scope="module")
def agent() -> Iterator[Snmpd]:
    _need_snmpd()
    with Snmpd() as running:
        yield running


def settings(timeout_ms: int = 1000, retries: int = 1, **profiles: SnmpProfile) -> SnmpSettings:
    return SnmpSettings(
        timeout_ms=timeout_ms,
        retries=retries,
        default_profile=next(iter(profiles)),
        profiles=profiles,
    )


@pytest.fixture
async def make_probe() -> AsyncIterator[Callable[[SnmpSettings], SnmpProbe]]:
    probes: list[SnmpProbe] = []

    def make(snmp: SnmpSettings) -> SnmpProbe:
        probes.append(SnmpProbe(snmp))
        return probes[-1]

    yield make
    for probe in probes:
        await probe.close()


async def sweep_once(snmp: SnmpSettings, targets: Sequence[Target]) -> list[ProbeResult]:
    probe = SnmpProbe(snmp)
    try:
        return await probe.sweep(targets)
    finally:
        await probe.close()


async def poll(
    probe: SnmpProbe, target: Target, done: Callable[[ProbeResult], bool]
) -> ProbeResult:
    """Sweep until ``done(result)``, for at most POLL_S; the last result either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POLL_S
    while True:
        [result] = await probe.sweep([target])
        if done(result) or loop.time() > deadline:
            return result
        await asyncio.sleep(0.25)


# --- a switch that answers ---------------------------------------------------


async def test_v2c_switch_is_alive_with_its_uptime(agent: Snmpd) -> None:
    [result] = await sweep_once(
        settings(default=agent.v2c_profile()), [Target("sw-1", agent.address)]
    )
    assert result == ProbeResult(
        "sw-1", Verdict.ALIVE, "", rtt_ms=result.rtt_ms, uptime_s=result.uptime_s
    )
    assert result.uptime_s is not None
    assert 0 <= result.uptime_s < 3600
    assert result.rtt_ms is not None
    assert result.rtt_ms >= 0


async def test_v3_auth_priv_switch_is_alive(agent: Snmpd) -> None:
    [result] = await sweep_once(
        settings(noc=agent.v3_profile()), [Target("sw-3", agent.address, "noc")]
    )
    assert result.verdict is Verdict.ALIVE, result.reason
    assert result.uptime_s is not None
    assert result.reason == ""


async def test_v2c_and_v3_switches_in_one_sweep_keep_their_order(agent: Snmpd) -> None:
    snmp = settings(default=agent.v2c_profile(), noc=agent.v3_profile())
    targets = [Target(f"sw-{i}", agent.address, "noc" if i % 3 == 0 else None) for i in range(30)]
    results = await sweep_once(snmp, targets)
    assert [r.switch for r in results] == [t.switch for t in targets]
    assert all(r.verdict is Verdict.ALIVE for r in results), {r.reason for r in results}


async def test_ipv6_switch_is_alive_by_v2c_and_v3() -> None:
    _need_snmpd()
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        pytest.skip("this host has no IPv6")
    with Snmpd(address="::1") as own:
        snmp = settings(default=own.v2c_profile(), noc=own.v3_profile())
        results = await sweep_once(snmp, [Target("sw-1", "::1"), Target("sw-2", "::1", "noc")])
    assert [r.verdict for r in results] == [Verdict.ALIVE, Verdict.ALIVE], results


# --- a switch that does not answer, and our own mistakes ---------------------


async def test_wrong_community_is_silent_after_the_timeout(agent: Snmpd) -> None:
    snmp = settings(timeout_ms=300, retries=1, default=agent.v2c_profile(community="not-it"))
    [result] = await sweep_once(snmp, [Target("sw-1", agent.address)])
    assert result == ProbeResult("sw-1", Verdict.SILENT, "no SNMP reply within 300 ms (2 tries)")


async def test_wrong_v3_key_is_failed_and_names_the_profile(agent: Snmpd) -> None:
    snmp = settings(timeout_ms=500, noc=agent.v3_profile(auth_key="not-the-key"))
    [result] = await sweep_once(snmp, [Target("sw-1", agent.address, "noc")])
    assert result.verdict is Verdict.FAILED
    assert "credentials" in result.reason
    assert "[snmp.profiles.noc]" in result.reason


async def test_same_v3_user_with_two_keys_in_two_profiles(agent: Snmpd) -> None:
    snmp = settings(
        timeout_ms=500, good=agent.v3_profile(), bad=agent.v3_profile(auth_key="not-the-key")
    )
    targets = [Target(f"sw-{i}", agent.address, "good" if i % 2 else "bad") for i in range(6)]
    results = await sweep_once(snmp, targets)
    assert [r.verdict for r in results] == [Verdict.FAILED, Verdict.ALIVE] * 3


async def test_no_agent_on_that_port_is_silent() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    snmp = settings(timeout_ms=200, retries=0, default=SnmpProfile(port=port))
    [result] = await sweep_once(snmp, [Target("sw-1", "127.0.0.1")])
    assert result == ProbeResult("sw-1", Verdict.SILENT, "no SNMP reply within 200 ms (1 try)")


async def test_unknown_profile_is_failed_and_says_what_to_add() -> None:
    snmp = settings(default=SnmpProfile())
    [result] = await sweep_once(snmp, [Target("sw-1", "127.0.0.1", "core")])
    assert result.verdict is Verdict.FAILED
    assert "'core'" in result.reason
    assert "add [snmp.profiles.core]" in result.reason


async def test_address_that_is_not_an_ip_is_failed() -> None:
    [result] = await sweep_once(settings(default=SnmpProfile()), [Target("sw-1", "sw-1.lan")])
    assert result.verdict is Verdict.FAILED
    assert "not an IP address" in result.reason


async def test_send_error_is_failed_not_silent() -> None:
    # The loopback broadcast address: the kernel refuses to send without SO_BROADCAST.
    broadcast = Target("sw-1", "127.255.255.255")
    [result] = await sweep_once(settings(default=SnmpProfile()), [broadcast])
    assert result.verdict is Verdict.FAILED
    assert result.reason.startswith("cannot send: Permission denied")


async def test_empty_sweep() -> None:
    assert await sweep_once(settings(default=SnmpProfile()), []) == []


# --- reboots ----------------------------------------------------------------


async def test_restart_shows_as_a_smaller_uptime(
    make_probe: Callable[[SnmpSettings], SnmpProbe],
) -> None:
    _need_snmpd()
    with Snmpd() as own:
        probe = make_probe(settings(default=own.v2c_profile()))
        target = Target("sw-1", own.address)
        before = await poll(probe, target, lambda r: (r.uptime_s or 0) >= 1.0)
        assert before.uptime_s is not None
        assert before.uptime_s >= 1.0
        own.restart()
        [after] = await probe.sweep([target])
    assert after.verdict is Verdict.ALIVE
    assert after.uptime_s is not None
    assert after.uptime_s < before.uptime_s


# --- uplink ports -------------------------------------------------------------


def _up(result: ProbeResult) -> bool:
    return result.verdict is Verdict.ALIVE and not result.uplinks_down


async def test_cut_uplink_makes_the_switch_silent_and_restored_alive(
    agent: Snmpd, make_probe: Callable[[SnmpSettings], SnmpProbe]
) -> None:
    _need_root()
    probe = make_probe(settings(default=agent.v2c_profile()))
    with Uplink() as uplink:
        target = Target("sw-1", agent.address, uplink_ports=(uplink.ifindex,))
        up = await poll(probe, target, _up)
        assert up.verdict is Verdict.ALIVE, up.reason
        assert up.uplinks_down == ()

        uplink.cut()
        down = await poll(probe, target, lambda r: r.verdict is Verdict.SILENT)
        assert down.verdict is Verdict.SILENT
        assert down.reason == f"all uplink ports down: {uplink.ifindex}"
        assert down.uplinks_down == (uplink.ifindex,)
        assert down.uptime_s is not None  # the switch itself answered

        uplink.restore()
        again = await poll(probe, target, _up)
        assert again.verdict is Verdict.ALIVE
        assert again.uplinks_down == ()


async def test_one_of_two_uplinks_cut_is_alive_naming_the_port(
    agent: Snmpd, make_probe: Callable[[SnmpSettings], SnmpProbe]
) -> None:
    _need_root()
    probe = make_probe(settings(default=agent.v2c_profile()))
    with Uplink() as first, Uplink() as second:
        target = Target("sw-1", agent.address, uplink_ports=(first.ifindex, second.ifindex))
        assert _up(await poll(probe, target, _up))
        second.cut()
        result = await poll(probe, target, lambda r: bool(r.uplinks_down))
    assert result.verdict is Verdict.ALIVE
    assert result.uplinks_down == (second.ifindex,)
    assert result.reason.startswith(f"uplink port {second.ifindex} is down")


async def test_uplink_port_that_does_not_exist_counts_as_down(agent: Snmpd) -> None:
    snmp = settings(default=agent.v2c_profile())
    only_missing, with_lo = await sweep_once(
        snmp,
        [
            Target("sw-1", agent.address, uplink_ports=(999_999,)),
            Target("sw-2", agent.address, uplink_ports=(1, 999_999)),  # 1 is lo: up
        ],
    )
    assert only_missing.verdict is Verdict.SILENT
    assert only_missing.reason.startswith("all uplink ports down: 999999")
    assert "uplink port 999999 does not exist" in only_missing.reason
    assert with_lo.verdict is Verdict.ALIVE
    assert with_lo.uplinks_down == (999_999,)
    assert with_lo.reason == "uplink port 999999 does not exist"


# --- many switches -----------------------------------------------------------


async def test_thousand_switches_on_four_agents_all_alive_none_lost() -> None:
    _need_snmpd()
    agents = [Snmpd(address=f"127.0.0.{n}") for n in range(2, 6)]
    try:
        for one in agents:
            one.start()
        profiles = {f"a{n}": one.v2c_profile() for n, one in enumerate(agents)}
        snmp = SnmpSettings(timeout_ms=2000, retries=1, default_profile="a0", profiles=profiles)
        targets = [
            Target(f"sw-{i}", agents[i % 4].address, f"a{i % 4}", uplink_ports=(1,))
            for i in range(1000)
        ]
        results = await sweep_once(snmp, targets)
    finally:
        for one in agents:
            one.close()
    assert [r.switch for r in results] == [t.switch for t in targets]
    assert sum(r.verdict is Verdict.ALIVE for r in results) == 1000, {r.reason for r in results}
    assert all(r.uptime_s is not None for r in results)


# --- answers only a fake agent gives -------------------------------------------


class FakeAgent(asyncio.DatagramProtocol):
    """Answers every v2c GET with ``values`` (by OID), built by pysnmp's encoder."""

    def __init__(self, values: dict[tuple[int, ...], Any], reply_from: socket.socket | None):
        self.values = values
        self.reply_from = reply_from
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request, _ = decoder.decode(data, asn1Spec=v2c.Message())
        response = v2c.apiMessage.get_response(request)
        asked = v2c.apiPDU.get_varbinds(v2c.apiMessage.get_pdu(request))
        v2c.apiPDU.set_varbinds(
            v2c.apiMessage.get_pdu(response),
            [(oid, self.values.get(tuple(oid), v2c.NoSuchInstance(""))) for oid, _ in asked],
        )
        reply = encoder.encode(response)
        if self.reply_from is not None:
            self.reply_from.sendto(reply, addr)
        elif self.transport is not None:
            self.transport.sendto(reply, addr)


@pytest.fixture
async def fake_agent() -> AsyncIterator[Callable[..., Any]]:
    transports: list[asyncio.DatagramTransport] = []
    sockets: list[socket.socket] = []

    async def start(
        values: dict[tuple[int, ...], Any], reply_from: str | None = None
    ) -> SnmpProfile:
        sender = None
        if reply_from is not None:
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sender)
            sender.bind((reply_from, 0))
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: FakeAgent(values, sender), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return SnmpProfile(port=transport.get_extra_info("sockname")[1], community="public")

    yield start
    for transport in transports:
        transport.close()
    for s in sockets:
        s.close()


UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)


async def test_uptime_of_400_days_is_read_whole(fake_agent: Callable[..., Any]) -> None:
    ticks = 400 * 86_400 * 100  # above 2**31: five content octets in BER
    profile = await fake_agent({UPTIME: v2c.TimeTicks(ticks)})
    [result] = await sweep_once(settings(default=profile), [Target("sw-1", "127.0.0.1")])
    assert result.verdict is Verdict.ALIVE
    assert result.uptime_s == 400 * 86_400


async def test_reply_from_another_address_is_not_taken(fake_agent: Callable[..., Any]) -> None:
    profile = await fake_agent({UPTIME: v2c.TimeTicks(100)}, reply_from="127.0.0.9")
    snmp = settings(timeout_ms=200, retries=0, default=profile)
    [result] = await sweep_once(snmp, [Target("sw-1", "127.0.0.1")])
    assert result == ProbeResult("sw-1", Verdict.SILENT, "no SNMP reply within 200 ms (1 try)")


async def test_port_status_other_than_up_is_down(fake_agent: Callable[..., Any]) -> None:
    if_oper = (1, 3, 6, 1, 2, 1, 2, 2, 1, 8)
    profile = await fake_agent({
        UPTIME: v2c.TimeTicks(100),
        (*if_oper, 25): v2c.Integer(1),
        (*if_oper, 26): v2c.Integer(7),  # lowerLayerDown
        (*if_oper, 27): v2c.Integer(5),  # dormant
    })  # fmt: skip
    [result] = await sweep_once(
        settings(default=profile), [Target("sw-1", "127.0.0.1", uplink_ports=(25, 26, 27))]
    )
    assert result.verdict is Verdict.ALIVE
    assert result.uplinks_down == (26, 27)
    assert result.reason == (
        "uplink port 26 is down (lowerLayerDown); uplink port 27 is down (dormant)"
    )
