"""EAP-TNC / PT-EAP framing: fragmentation round trips, bounds, protocol detection."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap_ext.tnc.eap_tnc import (
    EAP_RESPONSE,
    EAP_TYPE_TNC,
    FLAG_L,
    FLAG_M,
    FLAG_S,
    Fragmenter,
    Reassembler,
    TncFrame,
    ack_frame,
    build_eap,
    detect_tnccs,
    fragment,
    parse_eap,
    start_frame,
)
from eap_ext.tnc.errors import EapTncFramingError, TncCodecError
from eap_ext.tnc.pb_tnc import BatchType, PbBatch
from eap_ext.tnc.tnccs11 import Tnccs11Batch


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(6, 1400), st.sampled_from([1, 2]))
def test_fragment_round_trip(message: bytes, max_fragment: int, version: int) -> None:
    frames = fragment(message, max_fragment=max_fragment, version=version)
    assert all(len(f) <= max_fragment for f in frames)
    r = Reassembler(version=version)
    results = [r.feed(f) for f in frames]
    assert all(x is None for x in results[:-1])
    assert results[-1] is not None and results[-1].data == message
    assert not r.in_progress
    if len(frames) > 1:
        assert frames[0][0] & (FLAG_L | FLAG_M) == FLAG_L | FLAG_M
        assert struct.unpack("!I", frames[0][1:5])[0] == len(message)
        assert all(f[0] & FLAG_M and not f[0] & FLAG_L for f in frames[1:-1])
        assert not frames[-1][0] & (FLAG_M | FLAG_L)


def test_small_message_is_one_frame_without_length() -> None:
    assert fragment(b"abc") == [b"\x01abc"]
    f = Fragmenter(b"abc", start=True)
    assert f.next_frame() == bytes([FLAG_S | 1]) + b"abc" and f.done
    with pytest.raises(EapTncFramingError):
        f.next_frame()


def test_start_ack_and_frame_flags() -> None:
    assert start_frame() == b"\x21"
    assert TncFrame.decode(start_frame()).start
    assert ack_frame() == b"\x01" and TncFrame.decode(ack_frame()).is_ack
    assert TncFrame.decode(b"").is_ack   # wpa_supplicant also accepts an empty ack
    r = Reassembler()
    got = r.feed(start_frame())
    assert got is not None and got.start and got.data == b""


@pytest.mark.parametrize("frames", [
    [b"\x41abc"],                                          # M without L on first fragment
    [b"\xc1" + struct.pack("!I", 10**9) + b"abc"],          # declared length over bound
    [b"\xc1" + struct.pack("!I", 2) + b"abc"],              # fragment longer than declared
    [b"\xc1" + struct.pack("!I", 10) + b"abc", b"\x01abcdefghij"],   # overrun
    [b"\xc1" + struct.pack("!I", 10) + b"abc", b"\x01ab"],  # last fragment short
    [b"\xc1" + struct.pack("!I", 6) + b"abc", b"\x41abc"],  # M set yet complete
    [b"\xc1" + struct.pack("!I", 6) + b"abc", b"\x21abc"],  # S inside fragmented message
    [b"\xc1" + struct.pack("!I", 6) + b"abc", b"\x81" + struct.pack("!I", 6) + b"abc"],
    [b"\x81\0\0"],                                         # L without 4-byte length
    [b"\x81" + struct.pack("!I", 9) + b"abc"],              # unfragmented, length mismatch
    [b"\x02abc"],                                          # wrong version
    [b"\x09abc"],                                          # reserved flag bits
])
def test_bad_framing_raises(frames: list[bytes]) -> None:
    r = Reassembler(max_message=1000)
    with pytest.raises(EapTncFramingError):
        for f in frames:
            r.feed(f)
    assert not r.in_progress


def test_total_bound_applies_to_unfragmented_messages() -> None:
    with pytest.raises(EapTncFramingError):
        Reassembler(max_message=10).feed(b"\x01" + b"x" * 11)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_fuzz_reassembler(frames: list[bytes]) -> None:
    r = Reassembler(max_message=100)
    for f in frames:
        try:
            out = r.feed(f)
        except EapTncFramingError:
            continue
        assert out is None or len(out.data) <= 100


def test_detect_tnccs() -> None:
    assert detect_tnccs(Tnccs11Batch(1, "TNCS").encode()) == "tnccs11"
    assert detect_tnccs(b"\xef\xbb\xbf  <TNCCS-Batch") == "tnccs11"
    assert detect_tnccs(PbBatch(BatchType.CDATA).encode()) == "pb-tnc"
    for junk in (b"", b"\x01\0\0\0", b"hello"):
        with pytest.raises(TncCodecError):
            detect_tnccs(junk)


def test_eap_packet_helpers() -> None:
    pkt = build_eap(EAP_RESPONSE, 7, EAP_TYPE_TNC, ack_frame())
    assert pkt == b"\x02\x07\x00\x06\x26\x01"
    assert parse_eap(pkt) == (EAP_RESPONSE, 7, EAP_TYPE_TNC, b"\x01")
    for bad in (b"\x02\x07\x00", b"\x02\x07\x00\x09\x26\x01", b"\x03\x07\x00\x05\x26"):
        with pytest.raises(EapTncFramingError):
            parse_eap(bad)
