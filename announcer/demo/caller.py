"""A call as Asterisk places it: one FastAGI session with announcer's server.

``ask_fastagi`` connects, sends the AGI header block with the caller's number
(``agi_callerid``), answers ``200 result=1`` to every ``SET VARIABLE`` the
server sends, and returns what those set: the prompt the dialplan would play
and the announcement's id, both empty when the caller hears nothing (see
``announcer.pbx.agi`` for the server's side of the exchange).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

_SET_VARIABLE = re.compile(r'^SET VARIABLE (\S+) "(.*)"$')


@dataclass(frozen=True)
class Heard:
    """What the dialplan gets back over FastAGI: empty values for nothing to play."""

    prompt: str
    id: str


async def ask_fastagi(port: int, caller: str, host: str = "127.0.0.1") -> Heard:
    """Ask announcer's FastAGI server what ``caller`` would hear, as Asterisk does."""
    headers = {
        "agi_network": "yes",
        "agi_network_script": "outage",
        "agi_request": f"agi://{host}:{port}/outage",
        "agi_channel": "PJSIP/trunk-00000001",
        "agi_callerid": caller,
        "agi_context": "support",
        "agi_extension": "s",
        "agi_priority": "1",
    }
    values: dict[str, str] = {}
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write("".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n")
        while line := await reader.readline():
            command = _SET_VARIABLE.match(line.decode().rstrip("\n"))
            if command:
                values[command[1]] = re.sub(r"\\(.)", r"\1", command[2])
            writer.write(b"200 result=1\n")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return Heard(values.get("ANNOUNCER_PROMPT", ""), values.get("ANNOUNCER_ID", ""))
