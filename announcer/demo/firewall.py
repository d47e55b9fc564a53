"""Firewall rules that silence loopback switches, in chains of their own that are always removed.

The ICMP tests and benchmarks make switches silent (INPUT) or unsendable
(OUTPUT) with them; it lives in the package, not under tests/, because the
benchmarks import it too. (The demo itself needs no root: it simulates its
switches, see ``agents``.)

``Firewall`` makes two chains, ``ANNOUNCER-TEST-<random>-IN`` and ``-OUT``,
jumped to first thing from INPUT and OUTPUT, and deletes the jumps and the
chains on exit whatever happened. Nothing else in the host's rules is touched.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Literal

logger = logging.getLogger(__name__)

Hook = Literal["INPUT", "OUTPUT"]


def missing(ipv6: bool = False) -> str | None:
    """Why ``Firewall(ipv6)`` cannot work here, or None when it can."""
    tool = "ip6tables" if ipv6 else "iptables"
    if shutil.which(tool) is None:
        return f"needs {tool} (Debian package iptables)"
    done = subprocess.run(
        [tool, "-w", "-n", "-L", "INPUT"], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode:
        return f"{tool} does not work here: {done.stderr.strip()}"
    return None


class Firewall:
    """Test chains for iptables (or ip6tables), removed on exit."""

    def __init__(self, ipv6: bool = False) -> None:
        self.tool = "ip6tables" if ipv6 else "iptables"
        self.echo_request = (
            ["-p", "ipv6-icmp", "--icmpv6-type", "echo-request"]
            if ipv6
            else ["-p", "icmp", "--icmp-type", "echo-request"]
        )
        tag = secrets.token_hex(3).upper()
        self.chains: dict[Hook, str] = {
            "INPUT": f"ANNOUNCER-TEST-{tag}-IN",
            "OUTPUT": f"ANNOUNCER-TEST-{tag}-OUT",
        }

    def _run(self, *args: str, check: bool = True) -> bool:
        done = subprocess.run(
            [self.tool, "-w", *args], capture_output=True, text=True, timeout=30, check=False
        )
        if check and done.returncode:
            raise RuntimeError(f"{self.tool} {' '.join(args)}: {done.stderr.strip()}")
        return done.returncode == 0

    def __enter__(self) -> Firewall:
        try:
            for hook, chain in self.chains.items():
                self._run("-N", chain)
                self._run("-I", hook, "1", "-j", chain)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def drop_echo_requests(
        self, destinations: Sequence[str], hook: Hook = "INPUT", target: str = "DROP"
    ) -> None:
        """Echo requests to these addresses (or networks) meet ``target`` at ``hook``."""
        for destination in destinations:
            self._run(
                "-A",
                self.chains[hook],
                "-d",
                destination,
                *self.echo_request,
                "-j",
                *target.split(),
            )

    def remove(self) -> None:
        """Delete the jumps and the chains; every step is tried, leftovers raise."""
        left: list[str] = []
        for hook, chain in self.chains.items():
            for _ in range(10):  # one jump was inserted; never loop forever
                if not self._run("-C", hook, "-j", chain, check=False):
                    break
                self._run("-D", hook, "-j", chain, check=False)
            self._run("-F", chain, check=False)
            self._run("-X", chain, check=False)
            if self._run("-n", "-L", chain, check=False):
                left.append(chain)
        if left:
            raise RuntimeError(f"{self.tool}: could not remove chains {', '.join(left)}")
