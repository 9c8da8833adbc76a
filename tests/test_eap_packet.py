"""EAP codec (RFC 3748 section 4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nac.eap import packet


def test_roundtrip_and_padding_ignored() -> None:
    p = packet.EapPacket(packet.RESPONSE, 7, packet.IDENTITY, b"demo")
    raw = p.encode()
    assert raw == b"\x02\x07\x00\x09\x01demo"
    assert packet.parse(raw + b"\x00\x00") == p  # octets past Length are padding
    assert packet.parse(packet.success(300)) == packet.EapPacket(packet.SUCCESS, 44)


@pytest.mark.parametrize("raw", [b"", b"\x01\x01\x00", b"\x01\x01\x00\x06\x01",
                                 b"\x03\x01\x00\x05\x00", b"\x09\x01\x00\x04",
                                 b"\x02\x01\x00\x04", b"\x01\x01\x00\x03"])
def test_malformed(raw: bytes) -> None:
    with pytest.raises(packet.EapError):
        packet.parse(raw)


@given(st.binary(max_size=64))
def test_parse_only_raises_eaperror(raw: bytes) -> None:
    try:
        p = packet.parse(raw)
    except packet.EapError:
        return
    assert packet.parse(p.encode()) == p
