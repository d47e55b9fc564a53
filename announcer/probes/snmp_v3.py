"""The SNMPv3 client: GETs through pysnmp's high-level asyncio API.

USM (engine discovery, authentication, privacy) is pysnmp's work: one
``SnmpEngine`` per v3 profile, because pysnmp keeps one key set per user name
and engine. It is correct but slow: pysnmp spends milliseconds of CPU on each
message, a few hundred GETs a second on one core (``python -m
bench.snmp_rate``), so some thousands of v3 switches per 15 s interval at
best; the probe keeps at most ``V3_MAX_IN_FLIGHT`` of them in flight. pysnmp
is imported when the first ``V3Client`` is made, that is when a v3 profile is
first used. Privacy (AES, DES) needs the ``cryptography`` package.

A wrong auth key or user name comes back as a report and is FAILED; a wrong
priv key is dropped by Net-SNMP agents without a word, so it looks like
silence.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

from announcer.config import SnmpProfile
from announcer.probes.snmp_verdict import Answer, Outcome

V3_MAX_IN_FLIGHT = 64
"""SNMPv3 requests in flight at most: pysnmp spends milliseconds of CPU on each
message, so more only queue replies (in a socket with the default buffer)
until they time out."""


class V3Client:
    """pysnmp's asyncio command generator with one shared engine."""

    def __init__(self, timeout_s: float, retries: int) -> None:
        from pysnmp.error import PySnmpError  # type: ignore[import-untyped]  # noqa: PLC0415
        from pysnmp.hlapi.v3arch import asyncio as hlapi  # type: ignore[import-untyped]  # noqa: PLC0415
        from pysnmp.proto import errind, rfc1905  # type: ignore[import-untyped]  # noqa: PLC0415

        self._hlapi: Any = hlapi
        self._timeout_s = timeout_s
        self._retries = retries
        self._users: dict[str, tuple[Any, Any]] = {}
        """profile name -> (SnmpEngine, UsmUserData)"""
        self._timed_out: Any = errind.RequestTimedOut
        self._credentials: tuple[Any, ...] = (
            errind.UnknownUserName,
            errind.WrongDigest,
            errind.UnknownSecurityName,
            errind.AuthenticationFailure,
            errind.AuthenticationError,
            errind.DecryptionError,
            errind.UnsupportedSecurityLevel,
        )
        self._missing: dict[Any, str] = {
            rfc1905.NoSuchObject: "noSuchObject",
            rfc1905.NoSuchInstance: "noSuchInstance",
            rfc1905.EndOfMibView: "endOfMibView",
        }
        self._pysnmp_error: type[Exception] = PySnmpError

    def _user(self, name: str, profile: SnmpProfile) -> tuple[Any, Any]:
        """The profile's engine and user: pysnmp keeps one key set per user name and
        engine, so two profiles with the same user name but other keys need two engines."""
        known = self._users.get(name)
        if known is None:
            h = self._hlapi
            auth = {
                "MD5": h.USM_AUTH_HMAC96_MD5,
                "SHA": h.USM_AUTH_HMAC96_SHA,
                "SHA224": h.USM_AUTH_HMAC128_SHA224,
                "SHA256": h.USM_AUTH_HMAC192_SHA256,
                "SHA384": h.USM_AUTH_HMAC256_SHA384,
                "SHA512": h.USM_AUTH_HMAC384_SHA512,
            }
            priv = {
                "DES": h.USM_PRIV_CBC56_DES,
                "AES": h.USM_PRIV_CFB128_AES,
                "AES192": h.USM_PRIV_CFB192_AES,
                "AES256": h.USM_PRIV_CFB256_AES,
            }
            user = h.UsmUserData(
                profile.user,
                authKey=profile.auth_key if profile.auth_protocol else None,
                privKey=profile.priv_key if profile.priv_protocol else None,
                authProtocol=auth[profile.auth_protocol]
                if profile.auth_protocol
                else h.USM_AUTH_NONE,
                privProtocol=priv[profile.priv_protocol]
                if profile.priv_protocol
                else h.USM_PRIV_NONE,
            )
            known = self._users[name] = (h.SnmpEngine(), user)
        return known

    async def get(
        self,
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
        profile_name: str,
        profile: SnmpProfile,
        oids: list[tuple[int, ...]],
    ) -> Outcome:
        h = self._hlapi
        kind = h.UdpTransportTarget if ip.version == 4 else h.Udp6TransportTarget
        engine, user = self._user(profile_name, profile)
        started = time.monotonic()
        try:
            transport = await kind.create(
                (str(ip), profile.port), timeout=self._timeout_s, retries=self._retries
            )
            indication, status, index, varbinds = await h.get_cmd(
                engine,
                user,
                transport,
                h.ContextData(),
                *(h.ObjectType(h.ObjectIdentity(oid)) for oid in oids),
                lookupMib=False,
            )
        except OSError as exc:
            return f"cannot send: {exc}; check this host's firewall and routes"
        except self._pysnmp_error as exc:
            return f"SNMPv3 request failed: {exc}"
        rtt_ms = (time.monotonic() - started) * 1000
        if indication is not None:
            if isinstance(indication, self._timed_out):
                return None
            if isinstance(indication, self._credentials):
                return (
                    f"the agent rejected our SNMPv3 credentials ({indication}): check user,"
                    f" auth_key and priv_key of [snmp.profiles.{profile_name}]"
                )
            return f"SNMPv3 request failed: {indication}"
        values: list[int | str] = []
        for i, oid in enumerate(oids):
            if i >= len(varbinds) or tuple(varbinds[i][0]) != oid:
                values.append("missing from the reply")
                continue
            value = varbinds[i][1]
            missing = next((w for k, w in self._missing.items() if isinstance(value, k)), None)
            if missing is not None:
                values.append(missing)
            else:
                try:
                    values.append(int(value))
                except (TypeError, ValueError):
                    values.append(f"a {type(value).__name__} value")
        return Answer(rtt_ms, int(status), int(index), values)

    async def close(self) -> None:
        for engine, _user in self._users.values():
            engine.close_dispatcher()
        self._users.clear()
        await asyncio.sleep(0)  # let the dispatcher's cancelled timer task finish
