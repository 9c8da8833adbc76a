"""PA-TNC (RFC 5792) codec: round trips, wire layout, NOSKIP semantics, malformed input."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap_ext.tnc.errors import PaTncCodecError, TncCodecError
from eap_ext.tnc.pa_tnc import (
    DEFAULT_VENDOR_ID,
    AssessmentResult,
    AttributeRequest,
    AttrType,
    FactoryDefaultPasswordEnabled,
    ForwardingEnabled,
    InstalledPackages,
    NumericVersion,
    OperationalStatus,
    PaErrorCode,
    PaTncError,
    PaTncMessage,
    PortFilter,
    ProductInformation,
    RawAttribute,
    RemediationInstructions,
    StringVersion,
    VendorAttribute,
    VendorAttrType,
    decode_message,
    requested_types,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
text = st.text(max_size=30)
short = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 255)
json_val = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=4),
    max_leaves=10)

attributes = st.one_of(
    st.builds(AttributeRequest, st.lists(st.tuples(u24, u32), max_size=5).map(tuple)),
    st.builds(ProductInformation, u24, u16, text),
    st.builds(NumericVersion, u32, u32, u32, u16, u16),
    st.builds(StringVersion, short, short, short),
    st.builds(OperationalStatus, st.integers(0, 3), st.integers(0, 3),
              st.sampled_from([OperationalStatus.NEVER, "2026-11-27T23:30:00Z"])),
    st.builds(PortFilter, st.lists(st.tuples(st.booleans(), u8, u16), max_size=5).map(tuple)),
    st.builds(InstalledPackages, st.lists(st.tuples(short, short), max_size=5).map(tuple)),
    st.builds(PaTncError.invalid_parameter, st.binary(min_size=8, max_size=8), u32),
    st.builds(PaTncError.attribute_type_not_supported, st.binary(min_size=8, max_size=8),
              st.binary(min_size=8, max_size=8)),
    st.builds(PaTncError, st.integers(1, 0xFFFFFF), u32, st.binary(max_size=20)),
    st.builds(AssessmentResult, u32),
    st.builds(RemediationInstructions.uri, text),
    st.builds(RemediationInstructions.string, text, short),
    st.builds(ForwardingEnabled, u32),
    st.builds(FactoryDefaultPasswordEnabled, u32),
    st.builds(VendorAttribute, st.sampled_from(list(VendorAttrType)), json_val),
    st.builds(RawAttribute, st.integers(1, 0xFFFFFE).filter(lambda v: v != DEFAULT_VENDOR_ID),
              u32, st.binary(max_size=20)),
)


@settings(max_examples=300, deadline=None)
@given(u32, st.lists(attributes, max_size=8))
def test_message_round_trip(ident: int, attrs: list) -> None:
    msg = PaTncMessage(ident, tuple(attrs))
    assert decode_message(msg.encode()) == msg


@settings(max_examples=50, deadline=None)
@given(json_val, st.integers(1, 0xFFFFFE))
def test_vendor_id_is_a_parameter(data: object, vendor: int) -> None:
    attr = VendorAttribute(VendorAttrType.FIREWALL, data, vendor)
    wire = PaTncMessage(1, (attr,)).encode()
    assert decode_message(wire, vendor_id=vendor).attributes == (attr,)
    other = decode_message(wire, vendor_id=vendor ^ 1).attributes[0]
    assert isinstance(other, RawAttribute) and other.vendor == vendor


def test_wire_layout_matches_rfc5792() -> None:
    wire = PaTncMessage(0x01020304, (AssessmentResult(2, noskip=True),)).encode()
    assert wire[:8] == bytes([1, 0, 0, 0, 1, 2, 3, 4])
    flags, vendor, atype, length = wire[8], wire[9:12], wire[12:16], wire[16:20]
    assert flags == 0x80 and vendor == b"\0\0\0"
    assert struct.unpack("!I", atype)[0] == AttrType.ASSESSMENT_RESULT
    assert struct.unpack("!I", length)[0] == 16 and wire[20:] == b"\0\0\0\2"


def test_unknown_skippable_attribute_kept_raw() -> None:
    raw = RawAttribute(0, 200, b"future")
    msg = decode_message(PaTncMessage(7, (raw, AssessmentResult(0))).encode())
    assert msg.attributes == (raw, AssessmentResult(0))


def test_unknown_noskip_attribute_rejects_message() -> None:
    wire = PaTncMessage(7, (AssessmentResult(0), RawAttribute(9, 200, b"x", noskip=True))).encode()
    with pytest.raises(PaTncCodecError) as ei:
        decode_message(wire)
    assert ei.value.code == PaErrorCode.ATTRIBUTE_TYPE_NOT_SUPPORTED
    assert ei.value.header == wire[:8]
    err = PaTncError.from_exception(ei.value)
    assert err.info == wire[:8] + wire[24:32]
    assert decode_message(PaTncMessage(8, (err,)).encode()).attributes == (err,)


def test_version_not_supported() -> None:
    wire = bytearray(PaTncMessage(1).encode())
    wire[0] = 2
    with pytest.raises(PaTncCodecError) as ei:
        decode_message(bytes(wire))
    assert ei.value.code == PaErrorCode.VERSION_NOT_SUPPORTED
    err = PaTncError.from_exception(ei.value)
    assert err.info[8:10] == b"\1\1"


@pytest.mark.parametrize("wire,offset", [
    (b"\1\0\0", 0),                                            # truncated header
    (b"\1\0\0\0\0\0\0\1" + b"\0" * 11, 8),                 # truncated attribute header
    (b"\1\0\0\0\0\0\0\1" + b"\0\0\0\0\0\0\0\x09\0\0\0\x0b", 16),   # length < 12
    (b"\1\0\0\0\0\0\0\1" + b"\0\0\0\0\0\0\0\x09\xff\xff\xff\xff", 16),  # huge length
    (b"\1\0\0\0\0\0\0\1" + b"\0\0\0\0\0\0\0\x09\0\0\0\x0f" + b"\0\0\0", 20),  # short value
])
def test_malformed_lengths(wire: bytes, offset: int) -> None:
    with pytest.raises(PaTncCodecError) as ei:
        decode_message(wire)
    assert ei.value.code == PaErrorCode.INVALID_PARAMETER
    assert ei.value.offset == offset


def test_bad_json_and_bad_utf8_are_invalid_parameter() -> None:
    bad_json = RawAttribute(DEFAULT_VENDOR_ID, VendorAttrType.FIREWALL, b"{nope")
    with pytest.raises(PaTncCodecError) as ei:
        decode_message(PaTncMessage(1, (bad_json,)).encode())
    assert ei.value.code == PaErrorCode.INVALID_PARAMETER and ei.value.offset == 20
    bad_utf8 = RawAttribute(0, AttrType.PRODUCT_INFORMATION, b"\0\0\0\0\0\xff")
    with pytest.raises(PaTncCodecError):
        decode_message(PaTncMessage(1, (bad_utf8,)).encode())


def test_deep_json_is_rejected_quickly() -> None:
    deep = RawAttribute(DEFAULT_VENDOR_ID, VendorAttrType.INTERFACES, b"[" * 200000)
    t0 = time.monotonic()
    with pytest.raises(PaTncCodecError):
        decode_message(PaTncMessage(1, (deep,)).encode())
    assert time.monotonic() - t0 < 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_only_codec_errors(data: bytes) -> None:
    try:
        decode_message(b"\1\0\0\0\0\0\0\1" + data)
    except TncCodecError:
        pass


def test_requested_types_and_remediation_text() -> None:
    req = AttributeRequest(((0, 7), (DEFAULT_VENDOR_ID, 6)))
    assert requested_types([req, AssessmentResult(0)]) == {(0, 7), (DEFAULT_VENDOR_ID, 6)}
    assert RemediationInstructions.string("apt upgrade").text == "apt upgrade"
    assert RemediationInstructions.uri("https://fix.example/").text == "https://fix.example/"


def test_deflated_kind_bounds_inflation() -> None:
    import zlib

    from eap_ext.tnc.pa_tnc import MAX_INFLATED

    ok = VendorAttribute(VendorAttrType.PACKAGE_EXTRA_Z, [[0, {"arch": "amd64"}]] * 500)
    wire = PaTncMessage(1, (ok,)).encode()
    assert len(wire) < 200 and decode_message(wire).attributes == (ok,)
    bomb = zlib.compress(b"[" + b" " * (MAX_INFLATED + 10) + b"]", 1)
    for value in (bomb, bomb[:-10], b"not deflate", zlib.compress(b"[1]") + b"junk"):
        attr = RawAttribute(DEFAULT_VENDOR_ID, VendorAttrType.PACKAGE_EXTRA_Z, value)
        t0 = time.monotonic()
        with pytest.raises(PaTncCodecError) as ei:
            decode_message(PaTncMessage(1, (attr,)).encode())
        assert ei.value.code == PaErrorCode.INVALID_PARAMETER
        assert time.monotonic() - t0 < 2
