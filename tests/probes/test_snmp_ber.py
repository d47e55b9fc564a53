"""The hand-written BER codec (announcer/probes/snmp_ber.py) against pysnmp and pyasn1.

The codec exists only because pyasn1 is too slow for the v2c rate; these
tests hold it to the library's answers. Our GetRequests go through pyasn1's
decoder (and match pysnmp's own encoding byte for byte); pysnmp's Responses
go through our decoder; hypothesis varies request-ids, communities, OIDs and
values; and malformed or random datagrams must raise ``BerError``, never
anything else, and never hang. No network, no root.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pyasn1.type import univ  # type: ignore[import-untyped]
from pysnmp.proto.api import v2c  # type: ignore[import-untyped]

from announcer.probes.snmp_ber import (
    GET_REQUEST,
    RESPONSE,
    BerError,
    Message,
    decode_message,
    decode_value,
    encode_get,
    encode_oid,
    encode_varbinds,
)

pytestmark = pytest.mark.timeout(60)
"""A decoder that loops on some input fails here instead of hanging the suite."""

SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
IF_OPER_STATUS = (1, 3, 6, 1, 2, 1, 2, 2, 1, 8)
REQUEST_IDS = [0, 1, 127, 128, 255, 256, 32_767, 32_768, 65_535, 65_536, 2**24, 2**31 - 1]
OID_SETS: list[list[tuple[int, ...]]] = [
    [SYS_UPTIME],
    [SYS_UPTIME, (*IF_OPER_STATUS, 1), (*IF_OPER_STATUS, 25)],
    [SYS_UPTIME, (*IF_OPER_STATUS, 1_000_000), (*IF_OPER_STATUS, 2**31 - 1)],
    [(1, 3, 6, 1, 4, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 2**32 - 1)],
    [(0, 0), (1, 39), (2, 40), (2, 999, 3)],  # first two arcs packed into one sub-identifier
    [(*IF_OPER_STATUS, port) for port in range(1_000_001, 1_000_041)],  # over 255 octets
]

# --- pysnmp's side --------------------------------------------------------------


def library_message(pdu: Any, community: bytes) -> bytes:
    """``pdu`` wrapped in a v2c message and BER-encoded by pyasn1."""
    message = v2c.Message()
    v2c.apiMessage.set_defaults(message)
    v2c.apiMessage.set_community(message, community)
    v2c.apiMessage.set_pdu(message, pdu)
    return bytes(encoder.encode(message))


def library_get(community: bytes, request_id: int, oids: Sequence[tuple[int, ...]]) -> bytes:
    pdu = v2c.GetRequestPDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, request_id)
    v2c.apiPDU.set_varbinds(pdu, [(oid, v2c.null) for oid in oids])
    return library_message(pdu, community)


def library_response(
    community: bytes,
    request_id: int,
    varbinds: Sequence[tuple[tuple[int, ...], Any]],
    error_status: int = 0,
    error_index: int = 0,
) -> bytes:
    pdu = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, request_id)
    v2c.apiPDU.set_error_status(pdu, error_status)
    v2c.apiPDU.set_error_index(pdu, error_index)
    v2c.apiPDU.set_varbinds(pdu, list(varbinds))
    return library_message(pdu, community)


def oid_of(contents: bytes) -> tuple[int, ...]:
    """OBJECT IDENTIFIER contents octets as pyasn1 reads them (not through our code)."""
    size = len(contents)
    length = bytes([size]) if size < 0x80 else bytes([0x82]) + size.to_bytes(2, "big")
    value, rest = decoder.decode(b"\x06" + length + contents, asn1Spec=univ.ObjectIdentifier())
    assert rest == b""
    return tuple(value)


def our_get(community: bytes, request_id: int, oids: Sequence[tuple[int, ...]]) -> bytes:
    return encode_get(community, request_id, encode_varbinds(oids))


# --- (a) our GetRequest, read by pyasn1 -------------------------------------------


def assert_library_reads_our_get(
    community: bytes, request_id: int, oids: Sequence[tuple[int, ...]]
) -> None:
    data = our_get(community, request_id, oids)
    message, rest = decoder.decode(data, asn1Spec=v2c.Message())
    assert rest == b""
    assert int(v2c.apiMessage.get_version(message)) == 1  # SNMPv2c
    assert bytes(v2c.apiMessage.get_community(message)) == community
    pdu = v2c.apiMessage.get_pdu(message)
    assert pdu.tagSet == v2c.GetRequestPDU.tagSet
    assert int(v2c.apiPDU.get_request_id(pdu)) == request_id
    assert int(v2c.apiPDU.get_error_status(pdu)) == 0
    assert int(v2c.apiPDU.get_error_index(pdu)) == 0
    varbinds = v2c.apiPDU.get_varbinds(pdu)
    assert [tuple(oid) for oid, _ in varbinds] == [tuple(oid) for oid in oids]
    assert all(value.tagSet == v2c.null.tagSet for _, value in varbinds)
    # and the very bytes pysnmp itself would send
    assert data == library_get(community, request_id, oids)


@pytest.mark.parametrize("request_id", REQUEST_IDS)
@pytest.mark.parametrize("oids", OID_SETS, ids=lambda oids: f"{len(oids)}oids")
def test_library_decodes_our_get_request(request_id: int, oids: list[tuple[int, ...]]) -> None:
    assert_library_reads_our_get(b"public", request_id, oids)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 1000])
def test_library_decodes_our_get_request_with_long_communities(size: int) -> None:
    community = bytes(range(256)) * 4
    assert_library_reads_our_get(community[:size], 2**31 - 1, [SYS_UPTIME])


@pytest.mark.parametrize("oid", [(), (1,), (3, 1), (0, 40), (1, 40), (1, 3, -1)], ids=repr)
def test_encoder_refuses_what_is_not_an_oid(oid: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="not an OID"):
        encode_oid(oid)


# --- (b) pysnmp's Response, read by us --------------------------------------------

IF_INDEX = (*IF_OPER_STATUS, 1_000_000)
VALUES: list[tuple[str, Any, int, int | str]] = [
    # (case, pysnmp value, the tag on the wire, what decode_value says)
    ("timeticks", v2c.TimeTicks(12_345), 0x43, 12_345),
    ("timeticks 400 days", v2c.TimeTicks(400 * 86_400 * 100), 0x43, 400 * 86_400 * 100),
    ("timeticks max", v2c.TimeTicks(2**32 - 1), 0x43, 2**32 - 1),
    ("integer up", v2c.Integer(1), 0x02, 1),
    ("integer 0", v2c.Integer(0), 0x02, 0),
    ("integer -1", v2c.Integer(-1), 0x02, -1),
    ("integer -128", v2c.Integer(-128), 0x02, -128),
    ("integer min", v2c.Integer(-(2**31)), 0x02, -(2**31)),
    ("integer max", v2c.Integer(2**31 - 1), 0x02, 2**31 - 1),
    ("counter32", v2c.Counter32(128), 0x41, 128),
    ("counter32 max", v2c.Counter32(2**32 - 1), 0x41, 2**32 - 1),
    ("gauge32", v2c.Gauge32(2**31), 0x42, 2**31),
    ("unsigned32", v2c.Unsigned32(7), 0x42, 7),
    ("counter64 max", v2c.Counter64(2**64 - 1), 0x46, 2**64 - 1),
    ("octet string", v2c.OctetString(b"ge-0/0/1"), 0x04, "a value of type 0x04"),
    ("empty octet string", v2c.OctetString(b""), 0x04, "a value of type 0x04"),
    ("ip address", v2c.IpAddress("192.0.2.1"), 0x40, "a value of type 0x40"),
    ("noSuchObject", v2c.NoSuchObject(""), 0x80, "noSuchObject"),
    ("noSuchInstance", v2c.NoSuchInstance(""), 0x81, "noSuchInstance"),
    ("endOfMibView", v2c.EndOfMibView(""), 0x82, "endOfMibView"),
]


@pytest.mark.parametrize(
    ("value", "tag", "expected"), [case[1:] for case in VALUES], ids=[case[0] for case in VALUES]
)
@pytest.mark.parametrize("request_id", [0, 127, 128, 2**31 - 1])
def test_we_decode_the_librarys_response(
    value: Any, tag: int, expected: int | str, request_id: int
) -> None:
    data = library_response(
        b"public", request_id, [(SYS_UPTIME, v2c.TimeTicks(100)), (IF_INDEX, value)]
    )
    message = decode_message(data)
    assert message[:6] == (1, b"public", RESPONSE, request_id, 0, 0)
    [(uptime_oid, uptime_tag, uptime), (oid, found_tag, contents)] = message.varbinds
    assert (oid_of(uptime_oid), decode_value(uptime_tag, uptime)) == (SYS_UPTIME, 100)
    assert oid_of(oid) == IF_INDEX
    assert oid == encode_oid(IF_INDEX)  # what the v2c client compares with
    assert found_tag == tag
    assert decode_value(found_tag, contents) == expected
    if tag in (0x04, 0x40):  # not decoded, but handed over whole
        assert contents == bytes(value.asOctets())


@pytest.mark.parametrize(
    ("error_status", "error_index"),
    [(1, 0), (2, 2), (5, 1), (6, 3), (16, 2), (18, 255), (2**31 - 1, 2**31 - 1)],
)
def test_we_decode_error_status_and_index(error_status: int, error_index: int) -> None:
    varbinds = [(SYS_UPTIME, v2c.null), (IF_INDEX, v2c.null)]
    data = library_response(b"c", 42, varbinds, error_status, error_index)
    message = decode_message(data)
    assert (message.error_status, message.error_index) == (error_status, error_index)
    assert [(oid_of(oid), tag, contents) for oid, tag, contents in message.varbinds] == [
        (SYS_UPTIME, 0x05, b""),
        (IF_INDEX, 0x05, b""),
    ]
    assert decode_value(0x05, b"") == "a value of type 0x05"


@pytest.mark.parametrize(
    ("tag", "contents", "expected"),
    [
        (0x41, b"\xff\xff\xff\xff", 2**32 - 1),  # Counter32
        (0x42, b"\x80\x00\x00\x00", 2**31),  # Gauge32
        (0x43, b"\x80", 128),  # TimeTicks
        (0x46, b"\xff" * 8, 2**64 - 1),  # Counter64
        (0x02, b"\xff", -1),  # INTEGER stays signed
    ],
)
def test_unsigned_values_without_the_leading_zero_octet_read_unsigned(
    tag: int, contents: bytes, expected: int
) -> None:
    """Some agents drop the zero octet BER needs before a high bit; pyasn1 never does."""
    assert decode_value(tag, contents) == expected


def test_we_decode_the_get_request_we_encode() -> None:
    data = our_get(b"public", 300, [SYS_UPTIME, IF_INDEX])
    assert decode_message(data) == Message(
        1,
        b"public",
        GET_REQUEST,
        300,
        0,
        0,
        [(encode_oid(SYS_UPTIME), 0x05, b""), (encode_oid(IF_INDEX), 0x05, b"")],
    )


# --- (c) property-based round trips -----------------------------------------------

request_ids = st.integers(min_value=-(2**31), max_value=2**31 - 1)
communities = st.binary(max_size=300)
sub_ids = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def an_oid(draw: st.DrawFn) -> tuple[int, ...]:
    first = draw(st.integers(min_value=0, max_value=2))
    second = draw(st.integers(min_value=0, max_value=39 if first < 2 else 2**32 - 1))
    return (first, second, *draw(st.lists(sub_ids, max_size=20)))


oid_lists = st.lists(an_oid(), min_size=1, max_size=30)

SNMP_VALUES: list[tuple[st.SearchStrategy[Any], Any, bool]] = [
    # (strategy for the raw value, pysnmp type, decode_value gives the integer)
    (st.integers(-(2**31), 2**31 - 1), v2c.Integer, True),
    (st.integers(0, 2**32 - 1), v2c.Counter32, True),
    (st.integers(0, 2**32 - 1), v2c.Gauge32, True),
    (st.integers(0, 2**32 - 1), v2c.Unsigned32, True),
    (st.integers(0, 2**32 - 1), v2c.TimeTicks, True),
    (st.integers(0, 2**64 - 1), v2c.Counter64, True),
    (st.binary(max_size=300), v2c.OctetString, False),
    (st.just(""), v2c.NoSuchObject, False),
    (st.just(""), v2c.NoSuchInstance, False),
    (st.just(""), v2c.EndOfMibView, False),
]


@st.composite
def snmp_values(draw: st.DrawFn) -> tuple[Any, int | str | None]:
    """A pysnmp value and what ``decode_value`` must make of it (None: only its octets)."""
    strategy, kind, numeric = draw(st.sampled_from(SNMP_VALUES))
    raw = draw(strategy)
    value = kind(raw)
    if numeric:
        return value, raw
    if kind is v2c.OctetString:
        return value, None
    return value, kind.__name__[0].lower() + kind.__name__[1:]  # NoSuchObject -> noSuchObject


LIBRARY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""pyasn1 takes up to milliseconds a message: no per-example deadline."""


@LIBRARY
@given(communities, request_ids, oid_lists)
def test_any_get_request_reads_back_the_same_in_pyasn1(
    community: bytes, request_id: int, oids: list[tuple[int, ...]]
) -> None:
    assert_library_reads_our_get(community, request_id, oids)


@settings(max_examples=500)
@given(communities, request_ids, oid_lists)
def test_any_get_request_reads_back_the_same_in_our_decoder(
    community: bytes, request_id: int, oids: list[tuple[int, ...]]
) -> None:
    message = decode_message(our_get(community, request_id, oids))
    assert message == Message(
        1,
        community,
        GET_REQUEST,
        request_id,
        0,
        0,
        [(encode_oid(oid), 0x05, b"") for oid in oids],
    )


@LIBRARY
@given(
    communities,
    request_ids,
    st.integers(min_value=0, max_value=2**31 - 1),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.lists(st.tuples(an_oid(), snmp_values()), max_size=20),
)
def test_any_library_response_reads_the_same_in_our_decoder(
    community: bytes,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: list[tuple[tuple[int, ...], tuple[Any, int | str | None]]],
) -> None:
    data = library_response(
        community,
        request_id,
        [(oid, value) for oid, (value, _) in varbinds],
        error_status,
        error_index,
    )
    message = decode_message(data)
    assert message[:6] == (1, community, RESPONSE, request_id, error_status, error_index)
    assert len(message.varbinds) == len(varbinds)
    for (oid, tag, contents), (sent_oid, (value, expected)) in zip(
        message.varbinds, varbinds, strict=True
    ):
        assert oid_of(oid) == sent_oid
        assert tag == encoder.encode(value)[0]
        if expected is None:
            assert contents == bytes(value.asOctets())
        else:
            assert decode_value(tag, contents) == expected


# --- (d) malformed input: BerError, nothing else, never a hang --------------------

REPLY = library_response(
    b"public",
    2**31 - 1,
    [
        (SYS_UPTIME, v2c.TimeTicks(400 * 86_400 * 100)),
        (IF_INDEX, v2c.Integer(1)),
        ((*IF_OPER_STATUS, 2), v2c.NoSuchInstance("")),
    ],
)
LONG_REPLY = library_response(
    b"x" * 200, 1, [((*IF_OPER_STATUS, port), v2c.Counter64(2**64 - 1)) for port in range(30)]
)


def decodes_or_refuses(data: bytes) -> Message | None:
    """The message, or None when the codec raised BerError; anything else fails the test."""
    try:
        message = decode_message(data)
    except BerError:
        return None
    for _, tag, contents in message.varbinds:
        assert isinstance(decode_value(tag, contents), int | str)
    return message


@pytest.mark.parametrize("reply", [REPLY, LONG_REPLY], ids=["short", "long"])
def test_every_truncation_is_refused(reply: bytes) -> None:
    assert decode_message(reply).request_id in (1, 2**31 - 1)  # the whole is fine
    for size in range(len(reply)):
        with pytest.raises(BerError):
            decode_message(reply[:size])


def _replace(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + 1 :]


def _at(data: bytes, prefix: bytes) -> int:
    """Where ``prefix`` starts in ``data`` (it must occur)."""
    at = data.find(prefix)
    assert at >= 0
    return at


# REPLY's layout: 30 L | 02 01 01 | 04 06 "public" | a2 L | 02 04 rid | 02 01 00 | 02 01 00 | 30 L
#   | 30 L 06 08 <sysUpTime.0> 43 05 ... | ...
_PDU = _at(REPLY, b"\xa2")
_OID = _at(REPLY, b"\x06\x08+")  # sysUpTime.0's name
WRONG_TAGS = {
    "message not a SEQUENCE": (_replace(REPLY, 0, b"\x31"), "expected tag 0x30, found 0x31"),
    "version not an INTEGER": (_replace(REPLY, 2, b"\x04"), "expected tag 0x02, found 0x04"),
    "community not an OCTET STRING": (_replace(REPLY, 5, b"\x02"), "expected tag 0x04"),
    "request-id not an INTEGER": (_replace(REPLY, _PDU + 2, b"\x04"), "expected tag 0x02"),
    "error-status not an INTEGER": (_replace(REPLY, _PDU + 8, b"\x05"), "expected tag 0x02"),
    "error-index not an INTEGER": (_replace(REPLY, _PDU + 11, b"\x30"), "expected tag 0x02"),
    "varbind list not a SEQUENCE": (_replace(REPLY, _PDU + 14, b"\x31"), "expected tag 0x30"),
    "varbind not a SEQUENCE": (_replace(REPLY, _PDU + 16, b"\x04"), "expected tag 0x30"),
    "name not an OBJECT IDENTIFIER": (_replace(REPLY, _OID, b"\x04"), "expected tag 0x06"),
    "empty INTEGER": (bytes([0x30, REPLY[1] - 1, 0x02, 0x00]) + REPLY[5:], "empty INTEGER"),
}


@pytest.mark.parametrize(("data", "error"), WRONG_TAGS.values(), ids=WRONG_TAGS.keys())
def test_wrong_tags_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(BerError, match=error):
        decode_message(data)


ABSURD_LENGTHS = {
    "4 GiB message": (b"\x30\x84\xff\xff\xff\xff" + REPLY[2:], "truncated"),
    "5 length octets": (b"\x30\x85\x00\x00\x00\x00" + REPLY[1:], "unsupported length"),
    "127 length octets": (b"\x30\xff" + REPLY[2:], "unsupported length"),
    "indefinite length": (b"\x30\x80" + REPLY[2:] + b"\x00\x00", "unsupported length"),
    "length octets cut off": (b"\x30\x84\x00", "unsupported length"),
    "community past the end": (_replace(REPLY, 6, b"\x7f"), "truncated"),
    "community of 2 GiB": (REPLY[:6] + b"\x84\x7f\xff\xff\xff" + REPLY[7:], "truncated"),
    "PDU longer than the message": (_replace(REPLY, _PDU + 1, b"\x7f"), "truncated"),
    "request-id past the end": (_replace(REPLY, _PDU + 3, b"\x7f"), "truncated"),
    "varbind list longer than the PDU": (_replace(REPLY, _PDU + 15, b"\x7f"), "truncated"),
    "OID longer than its varbind": (_replace(REPLY, _OID + 1, b"\x20"), "truncated"),
    "value longer than its varbind": (
        _replace(REPLY, _at(REPLY, b"\x43\x05") + 1, b"\x06"),
        "truncated",
    ),
    "just a tag": (b"\x30", "truncated"),
    "nothing": (b"", "truncated"),
}


@pytest.mark.parametrize(("data", "error"), ABSURD_LENGTHS.values(), ids=ABSURD_LENGTHS.keys())
def test_absurd_lengths_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(BerError, match=error):
        decode_message(data)


@settings(max_examples=2000)
@given(st.binary(max_size=600))
def test_random_bytes_decode_or_raise_ber_error(data: bytes) -> None:
    decodes_or_refuses(data)


@settings(max_examples=2000)
@given(st.sampled_from([REPLY, LONG_REPLY]), st.data())
def test_damaged_replies_decode_or_raise_ber_error(reply: bytes, data: st.DataObject) -> None:
    """Bytes changed, cut out or put in anywhere in a real reply: deeper than random bytes."""
    damaged = bytearray(reply)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=max(0, len(damaged) - 1)))
        how = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        byte = data.draw(st.integers(min_value=0, max_value=255))
        if how == "replace" and damaged:
            damaged[at] = byte
        elif how == "delete" and damaged:
            del damaged[at]
        else:
            damaged.insert(at, byte)
    decodes_or_refuses(bytes(damaged))


@settings(max_examples=500)
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=255))
def test_decode_value_never_raises(contents: bytes, tag: int) -> None:
    assert isinstance(decode_value(tag, contents), int | str)
