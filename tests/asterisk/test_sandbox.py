"""The Asterisk sandbox itself: a real Asterisk 22 boots, answers on the CLI
and the AMI, runs a dialplan with the caller ID it was given, reads AstDB,
and talks FastAGI to a server on loopback (and carries on without it).

They need root and the sandbox (the fixtures in conftest.py build it or
skip, saying why).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.asterisk.ami import AgiCommand, AsteriskError
from tests.asterisk.sandbox import Asterisk

# The first test may build the sandbox (debootstrap and apt: a minute or two
# on a good mirror); each wait inside the harness has its own, shorter bound.
pytestmark = pytest.mark.timeout(960)

CONTEXT = "announcer-test"
CALLER = "+79161234567"


class FastAgiResponder:
    """A tiny FastAGI server: reads the request's headers, sets one variable.

    Each request: headers up to the blank line, then ``SET VARIABLE
    ANNOUNCER_PROMPT "<prompt>"``, then Asterisk's ``200 result=1`` is read
    and the connection closed, which ends the AGI with SUCCESS.
    """

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.requests: list[dict[str, str]] = []
        self.replies: list[str] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                headers: dict[str, str] = {}
                while line := (await reader.readline()).decode().strip():
                    key, _, value = line.partition(":")
                    headers[key.strip()] = value.strip()
                self.requests.append(headers)
                writer.write(f'SET VARIABLE ANNOUNCER_PROMPT "{self.prompt}"\n'.encode())
                await writer.drain()
                self.replies.append((await reader.readline()).decode().strip())
        finally:
            writer.close()
            await writer.wait_closed()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        """Listens on 127.0.0.1 and a free port, yielded; closed on the way out."""
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            await server.wait_closed()


def agi_dialplan(port: int) -> str:
    return f"""\
[{CONTEXT}]
exten => 300,1,AGI(agi://127.0.0.1:{port}/outage)
 same => n,Set(AFTER_AGI=${{AGISTATUS}})
 same => n,Hangup()
"""


def test_asterisk_boots_and_reports_version_22(asterisk: Asterisk) -> None:
    version = asterisk.rx("core show version")
    assert re.match(r"Asterisk 22\.\d+", version), version


def test_no_sip_or_iax_is_loaded(asterisk: Asterisk) -> None:
    modules = asterisk.rx("module show like chan_")
    assert "chan_pjsip" not in modules
    assert "chan_iax2" not in modules


async def test_ami_login_works_and_a_wrong_secret_is_refused(asterisk: Asterisk) -> None:
    async with asterisk.ami() as ami:
        (pong,) = await ami.action({"Action": "Ping"})
    assert pong["Response"] == "Success"
    assert pong["Ping"] == "Pong"

    asterisk.ami_secret = "not-the-secret"
    with pytest.raises(AsteriskError, match="AMI login refused"):
        async with asterisk.ami():
            pass


async def test_a_call_runs_the_dialplan_with_the_caller_id_given(asterisk: Asterisk) -> None:
    silence = asterisk.write_silence("silence-1")
    asterisk.set_dialplan(f"""\
[{CONTEXT}]
exten => 100,1,Set(X=${{CALLERID(num)}})
 same => n,Playback({silence})
 same => n,Hangup()
""")
    async with asterisk.ami() as ami:
        call = await ami.originate("100", CONTEXT, callerid=CALLER)

    assert call.applications == ["Set", "Playback", "Hangup"], call.summary()
    assert call.variables["X"] == CALLER
    assert call.variables["PLAYBACKSTATUS"] == "SUCCESS"
    assert call.hangup_cause == "Normal Clearing"


async def test_the_dialplan_reads_what_dbput_wrote(asterisk: Asterisk) -> None:
    asterisk.set_dialplan(f"""\
[{CONTEXT}]
exten => 200,1,Set(Y=${{DB(announcer/{CALLER})}})
 same => n,Hangup()
""")
    async with asterisk.ami() as ami:
        assert await ami.db_get("announcer", CALLER) is None
        await ami.db_put("announcer", CALLER, "outage-agg-north")
        assert await ami.db_get("announcer", CALLER) == "outage-agg-north"
        call = await ami.originate("200", CONTEXT, callerid=CALLER)

    assert call.variables["Y"] == "outage-agg-north", call.summary()


async def test_fastagi_sets_the_prompt_in_the_channel(asterisk: Asterisk) -> None:
    responder = FastAgiResponder(prompt="x")
    async with responder.serving() as port, asterisk.ami() as ami:
        asterisk.set_dialplan(agi_dialplan(port))
        call = await ami.originate("300", CONTEXT, callerid=CALLER)

    assert call.variables["ANNOUNCER_PROMPT"] == "x", call.summary()
    assert call.variables["AGISTATUS"] == "SUCCESS"
    assert call.applications == ["AGI", "Set", "Hangup"]
    assert call.agi == [AgiCommand('SET VARIABLE ANNOUNCER_PROMPT "x"', "200", "Success")]
    (request,) = responder.requests
    assert request["agi_network_script"] == "outage"
    assert request["agi_callerid"] == CALLER
    assert responder.replies == ["200 result=1"]


async def test_without_the_fastagi_server_the_dialplan_carries_on(asterisk: Asterisk) -> None:
    responder = FastAgiResponder(prompt="x")
    async with responder.serving() as port:
        pass  # the port was ours a moment ago; nothing listens there now
    asterisk.set_dialplan(agi_dialplan(port))
    async with asterisk.ami() as ami:
        call = await ami.originate("300", CONTEXT, callerid=CALLER)

    assert call.variables["AGISTATUS"] == "FAILURE", call.summary()
    assert call.variables["AFTER_AGI"] == "FAILURE"
    assert call.applications == ["AGI", "Set", "Hangup"]
    assert "ANNOUNCER_PROMPT" not in call.variables
    assert responder.requests == []


def test_asterisk_and_its_directory_are_gone_after_a_failed_test(sandbox: Path) -> None:
    asterisk = Asterisk(sandbox)
    seen: list[tuple[Path, int | None]] = []

    def failing_test() -> None:
        with asterisk:
            seen.append((asterisk.host_dir, asterisk.pid))
            assert asterisk.host_dir.is_dir()
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing_test()

    ((host_dir, pid),) = seen
    assert not host_dir.exists()
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()
    assert not asterisk.running
