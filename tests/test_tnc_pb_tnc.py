"""PB-TNC (RFC 5793) codec: round trips, header layout, strict lengths, PB-Error codes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap_ext.tnc.errors import PbTncCodecError, TncCodecError
from eap_ext.tnc.pb_tnc import (
    BatchType,
    PbAccessRecommendation,
    PbAssessmentResult,
    PbBatch,
    PbError,
    PbErrorCode,
    PbExperimental,
    PbLanguagePreference,
    PbPa,
    PbRawMessage,
    PbReasonString,
    PbRemediationParameters,
    decode_batch,
)

u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFE)
u32 = st.integers(0, 0xFFFFFFFE)
lang = st.text(max_size=10).filter(lambda s: len(s.encode()) <= 255)

any_batch_msgs = st.one_of(
    st.builds(PbExperimental, st.binary(max_size=20)),
    st.builds(PbPa, u24, u32, u16, u16, st.binary(max_size=40), st.booleans()),
    st.builds(PbError.with_offset, st.integers(0, 4), st.integers(0, 0xFFFFFFFF),
              st.booleans()),
    st.builds(PbError.version_not_supported, st.integers(0, 255)),
    st.builds(PbLanguagePreference, st.text(st.characters(max_codepoint=127), max_size=30)),
    st.builds(PbReasonString, st.text(max_size=30), lang),
    st.builds(PbRawMessage, st.integers(1, 0xFFFFFE), u32, st.binary(max_size=20)),
)
result_msgs = st.one_of(
    any_batch_msgs,
    st.builds(PbAssessmentResult, st.integers(0, 4)),
    st.builds(PbAccessRecommendation, st.integers(1, 3)),
    st.builds(PbRemediationParameters.uri, st.text(max_size=30)),
    st.builds(PbRemediationParameters.string, st.text(max_size=30), lang),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([t for t in BatchType if t != BatchType.RESULT]),
       st.lists(any_batch_msgs, max_size=6))
def test_batch_round_trip(btype: BatchType, msgs: list) -> None:
    batch = PbBatch(btype, tuple(msgs), from_server=btype in (BatchType.SDATA,
                                                              BatchType.SRETRY))
    assert decode_batch(batch.encode()) == batch


@settings(max_examples=200, deadline=None)
@given(st.lists(result_msgs, max_size=6))
def test_result_batch_round_trip(msgs: list) -> None:
    batch = PbBatch(BatchType.RESULT, tuple(msgs), from_server=True)
    assert decode_batch(batch.encode(), expect_from_server=True) == batch


def test_header_layout() -> None:
    wire = PbBatch(BatchType.RESULT, (PbAssessmentResult(1),)).encode()
    assert wire[0] == 2 and wire[1] == 0x80 and wire[3] == BatchType.RESULT
    assert struct.unpack("!I", wire[4:8])[0] == len(wire) == 8 + 16
    assert wire[8] == 0x80 and wire[9:12] == b"\0\0\0"
    assert struct.unpack("!II", wire[12:20]) == (2, 16)
    cdata = PbBatch(BatchType.CDATA).encode()
    assert cdata == b"\2\0\0\1\0\0\0\x08"


def _err(data: bytes, **kw: object) -> PbTncCodecError:
    with pytest.raises(PbTncCodecError) as ei:
        decode_batch(data, **kw)  # type: ignore[arg-type]
    return ei.value


def test_errors_carry_pb_error_codes() -> None:
    good = PbBatch(BatchType.CDATA, (PbReasonString("hi"),)).encode()
    e = _err(good[:5])
    assert (e.code, e.offset) == (PbErrorCode.INVALID_PARAMETER, 0)
    e = _err(b"\3" + good[1:])
    assert e.code == PbErrorCode.VERSION_NOT_SUPPORTED and e.bad_version == 3
    assert PbError.from_exception(e).parameters == b"\3\2\2\0"
    e = _err(good[:-1])  # batch length no longer matches
    assert (e.code, e.offset) == (PbErrorCode.INVALID_PARAMETER, 4)
    e = _err(good, expect_from_server=True)
    assert (e.code, e.offset) == (PbErrorCode.INVALID_PARAMETER, 1)
    wrong_dir = bytes([2, 0x80]) + good[2:]
    assert _err(wrong_dir).code == PbErrorCode.UNEXPECTED_BATCH_TYPE
    bad_type = good[:3] + b"\x09" + good[4:]
    assert (_err(bad_type).offset, _err(bad_type).code) == (3, PbErrorCode.INVALID_PARAMETER)
    huge = good[:4] + struct.pack("!I", 0xFFFFFFFF) + good[8:]
    assert _err(huge).code == PbErrorCode.LOCAL_ERROR


def test_message_length_checks() -> None:
    def batch(msg: bytes, btype: int = 1, d: int = 0) -> bytes:
        return struct.pack("!BBBBI", 2, d, 0, btype, 8 + len(msg)) + msg

    too_short = struct.pack("!III", 0, 7, 11)
    assert _err(batch(too_short)).offset == 16
    huge = struct.pack("!III", 0, 7, 0xFFFFFFF0)
    assert _err(batch(huge)).offset == 16
    wrong_exact = struct.pack("!III", 0x80000000, 2, 17) + b"\0" * 5
    assert _err(batch(wrong_exact, 3, 0x80)).code == PbErrorCode.INVALID_PARAMETER
    outside_result = PbAssessmentResult(0).encode()
    assert _err(batch(outside_result, 2, 0x80)).offset == 8
    bad_reason = struct.pack("!III", 0, 7, 12 + 5) + struct.pack("!I", 100) + b"\0"
    assert _err(batch(bad_reason)).offset == 20


def test_noskip_unknown_is_unsupported_mandatory() -> None:
    msg = PbRawMessage(77, 5, b"x", noskip=True).encode()
    wire = PbBatch(BatchType.CDATA, (PbReasonString("a"),)).encode()
    wire = wire[:4] + struct.pack("!I", len(wire) + len(msg)) + wire[8:] + msg
    e = _err(wire)
    assert e.code == PbErrorCode.UNSUPPORTED_MANDATORY_MESSAGE
    assert e.offset == len(wire) - len(msg)
    skip = PbRawMessage(77, 5, b"x")
    assert decode_batch(PbBatch(BatchType.CDATA, (skip,)).encode()).messages == (skip,)


def test_remediation_helpers() -> None:
    assert PbRemediationParameters.string("patch now", "de").text == "patch now"
    assert PbRemediationParameters.uri("https://r.example/").text == "https://r.example/"
    assert PbError.with_offset(PbErrorCode.INVALID_PARAMETER, 42).offset == 42


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_only_codec_errors(tail: bytes) -> None:
    data = struct.pack("!BBBBI", 2, 0, 0, 1, 8 + len(tail)) + tail
    try:
        decode_batch(data)
    except TncCodecError:
        pass
