"""The demo's simulated switches, asked by announcer's real SNMP probe over loopback UDP."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from announcer.config import SnmpProfile, SnmpSettings
from announcer.demo.agents import Agents
from announcer.probes.base import ProbeResult, Target, Verdict
from announcer.probes.snmp import SnmpProbe

COMMUNITY = b"demo-test"
SWITCHES = {"agg": "127.0.1.10", "access": "127.0.3.1"}
DAY_S = 86_400.0


@pytest.fixture
async def agents() -> AsyncIterator[Agents]:
    async with await Agents.start(SWITCHES, COMMUNITY, {"agg": 3 * DAY_S}) as started:
        yield started


def probe(port: int, community: str = COMMUNITY.decode()) -> SnmpProbe:
    profile = SnmpProfile(port=port, community=community)
    return SnmpProbe(
        SnmpSettings(timeout_ms=300, retries=0, default_profile="demo", profiles={"demo": profile})
    )


async def ask(
    agents: Agents, *targets: Target, community: str = COMMUNITY.decode()
) -> list[ProbeResult]:
    snmp = probe(agents.port, community)
    try:
        return await snmp.sweep(targets or [Target(s, a) for s, a in SWITCHES.items()])
    finally:
        await snmp.close()


async def test_the_probe_finds_each_agent_alive_with_its_uptime(agents: Agents) -> None:
    agg, access = await ask(agents)
    assert (agg.switch, agg.verdict) == ("agg", Verdict.ALIVE)
    assert agg.uptime_s is not None
    assert 3 * DAY_S <= agg.uptime_s < 3 * DAY_S + 60
    assert access.verdict is Verdict.ALIVE
    assert access.uptime_s is not None
    assert access.uptime_s < 60


async def test_a_switch_without_power_is_silent_and_comes_back_rebooted(agents: Agents) -> None:
    await agents["agg"].power_off()
    agg, access = await ask(agents)
    assert agg.verdict is Verdict.SILENT
    assert "no SNMP reply within 300 ms" in agg.reason
    assert access.verdict is Verdict.ALIVE  # the other agent still answers
    await agents["agg"].power_on()
    agg, _ = await ask(agents)
    assert agg.verdict is Verdict.ALIVE
    assert agg.uptime_s is not None
    assert agg.uptime_s < 60  # sysUpTime starts again: announcer sees a reboot


async def test_a_silenced_switch_keeps_its_uptime(agents: Agents) -> None:
    agents["agg"].silence()
    assert [r.verdict for r in await ask(agents)] == [Verdict.SILENT, Verdict.ALIVE]
    agents["agg"].resume()
    agg, _ = await ask(agents)
    assert agg.verdict is Verdict.ALIVE
    assert agg.uptime_s is not None
    assert agg.uptime_s >= 3 * DAY_S


async def test_uplink_ports_and_the_community_are_checked(agents: Agents) -> None:
    target = Target("agg", SWITCHES["agg"], uplink_ports=(25, 26))
    (result,) = await ask(agents, target)
    assert (result.verdict, result.uplinks_down) == (Verdict.ALIVE, ())
    agents["agg"].ports_down = {25, 26}
    (result,) = await ask(agents, target)
    assert result.verdict is Verdict.SILENT
    assert result.reason == "all uplink ports down: 25, 26"
    (result,) = await ask(agents, Target("agg", SWITCHES["agg"], uplink_ports=(99,)))
    assert result.reason.startswith("all uplink ports down: 99 (uplink port 99 does not exist")
    (result,) = await ask(agents, target, community="wrong")
    assert result.verdict is Verdict.SILENT  # another community gets no answer


async def test_closed_agents_leave_their_port_free(agents: Agents) -> None:
    await agents.close()
    for address in SWITCHES.values():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, agents.port))  # would fail with EADDRINUSE


async def test_only_loopback_addresses_are_simulated() -> None:
    with pytest.raises(ValueError, match=r"192\.0\.2\.1 is not a loopback address"):
        await Agents.start({"far": "192.0.2.1"}, COMMUNITY)
