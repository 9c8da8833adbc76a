"""Codec properties: round trips, and every malformed datagram raises MalformedPacket.

pyrad (a third-party implementation) cross-checks what we encode.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrad.dictionary import Dictionary
from pyrad.packet import Packet as PyradPacket

from nac.mac import normalize_mac
from nac.radius import codec as c
from tests.conftest import ROOT

SECRET = b"testing123"
DICT = Dictionary(str(ROOT / "radius_dict" / "dictionary"))

attr = st.tuples(
    st.integers(min_value=1, max_value=255).filter(lambda t: t != c.MESSAGE_AUTHENTICATOR),
    st.binary(min_size=1, max_size=253),
)


@given(ident=st.integers(0, 255), attrs=st.lists(attr, max_size=12))
@settings(max_examples=200, deadline=None)
def test_request_round_trip(ident: int, attrs: list[tuple[int, bytes]]) -> None:
    raw = c.encode_request(c.ACCESS_REQUEST, ident, SECRET,
                           b"".join(c.encode_attr(t, v) for t, v in attrs))
    pkt = c.decode(raw)
    assert pkt.code == c.ACCESS_REQUEST and pkt.ident == ident
    assert pkt.attrs[1:] == attrs
    assert c.message_authenticator_ok(pkt, SECRET)
    assert not c.message_authenticator_ok(pkt, b"other")


@given(attrs=st.lists(attr, max_size=8), proxy=st.lists(st.binary(min_size=1, max_size=40),
                                                       max_size=3))
@settings(max_examples=100, deadline=None)
def test_reply_verifies_with_pyrad(attrs: list[tuple[int, bytes]], proxy: list[bytes]) -> None:
    body = b"".join(c.encode_attr(c.PROXY_STATE, p) for p in proxy)
    req = c.decode(c.encode_request(c.ACCESS_REQUEST, 1, SECRET, body))
    reply_attrs = b"".join(c.encode_attr(t, v) for t, v in attrs if t != c.PROXY_STATE)
    raw = c.encode_reply(c.ACCESS_ACCEPT, req, SECRET, reply_attrs)
    rep = c.decode(raw)
    assert rep.attrs[0][0] == c.MESSAGE_AUTHENTICATOR
    assert rep.get_all(c.PROXY_STATE) == proxy
    assert c.message_authenticator_ok(rep, SECRET, req.authenticator)
    # pyrad checks the Response Authenticator independently.
    ours = PyradPacket(packet=req.raw, dict=DICT, secret=SECRET)
    ours.authenticator = req.authenticator
    assert ours.VerifyReply(PyradPacket(packet=raw, dict=DICT, secret=SECRET), raw)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        c.decode(data)
    except c.MalformedPacket:
        pass


@given(eap=st.binary(min_size=4, max_size=3000))
def test_eap_split_join(eap: bytes) -> None:
    raw = c.encode_request(c.ACCESS_REQUEST, 1, SECRET, c.split_eap(eap))
    assert c.join_eap(c.decode(raw)) == eap


@pytest.mark.parametrize("n", [0, 1, 252, 253, 254, 505, 506, 507, 759, 1002, 1265, 4000])
def test_eap_split_fills_each_attribute_but_the_last(n: int) -> None:
    eap = bytes(i % 251 for i in range(n))
    raw = c.split_eap(eap)
    parts, pos = [], 0
    while pos < len(raw):
        assert raw[pos] == c.EAP_MESSAGE
        parts.append(raw[pos + 2:pos + raw[pos + 1]])
        pos += raw[pos + 1]
    assert pos == len(raw) and b"".join(parts) == eap
    assert [len(p) for p in parts] == [253] * (n // 253) + ([n % 253] if n % 253 else [])


@given(pw=st.binary(min_size=1, max_size=128).filter(lambda b: not b.endswith(b"\0")),
       auth=st.binary(min_size=16, max_size=16))
def test_password_hiding_round_trip(pw: bytes, auth: bytes) -> None:
    assert c.unhide_password(c.hide_password(pw, SECRET, auth), SECRET, auth) == pw


def test_password_hiding_matches_pyrad() -> None:
    from pyrad.packet import AuthPacket

    p = AuthPacket(code=1, id=1, secret=SECRET, dict=DICT)
    auth = p.CreateAuthenticator()
    p.authenticator = auth
    assert c.hide_password(b"demo-password", SECRET, auth) == p.PwCrypt("demo-password")


def test_mppe_key_decrypts_with_pyrad() -> None:
    auth = bytes(range(16))
    key = bytes(range(100, 132))
    raw_attr = c.mppe_key_attr(c.MS_MPPE_SEND_KEY, key, SECRET, auth)
    req = c.decode(c.encode_request(c.ACCESS_REQUEST, 3, SECRET, b"", authenticator=auth))
    reply = c.encode_reply(c.ACCESS_ACCEPT, req, SECRET, raw_attr)
    p = PyradPacket(packet=reply, dict=DICT, secret=SECRET)
    p.authenticator = auth  # pyrad decrypts salted attributes with the request authenticator
    assert p["MS-MPPE-Send-Key"][0] == key


@pytest.mark.parametrize("text", ["aabbccddeeff", "AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff",
                                  "aabb.ccdd.eeff", "AABBCC-DDEEFF", " aa:bb:cc:dd:ee:ff "])
def test_mac_notations(text: str) -> None:
    assert normalize_mac(text) == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize("text", ["", "demo", "aabbccddeef", "gg:bb:cc:dd:ee:ff",
                                  "aa:bb:cc:dd:ee:ff:00"])
def test_not_macs(text: str) -> None:
    assert normalize_mac(text) is None


def _walked(data: bytes) -> tuple[object, ...]:
    """decode() by its attribute walk alone (no learned layout): the reference."""
    saved = dict(c._LAYOUTS)
    c._LAYOUTS.clear()
    try:
        p = c.decode(data)
        return (p.code, p.ident, p.authenticator, p.attrs, p.ma_offset, p.first)
    except c.MalformedPacket as exc:
        return ("malformed", exc.reason)
    finally:
        c._LAYOUTS.clear()
        c._LAYOUTS.update(saved)


def _decoded(data: bytes) -> tuple[object, ...]:
    try:
        p = c.decode(data)
        return (p.code, p.ident, p.authenticator, p.attrs, p.ma_offset, p.first)
    except c.MalformedPacket as exc:
        return ("malformed", exc.reason)


@given(attrs=st.lists(attr, min_size=1, max_size=10), data=st.data())
@settings(max_examples=300, deadline=None)
def test_learned_layout_decodes_like_the_walk(attrs: list[tuple[int, bytes]],
                                               data: st.DataObject) -> None:
    """A packet of a length seen before is cut by the layout learned from it: every
    same-length packet, whatever its octets (other values, other types or lengths,
    broken attributes), decodes exactly as the walk over its attributes would."""
    raw = c.encode_request(c.ACCESS_REQUEST, 1, SECRET,
                           b"".join(c.encode_attr(t, v) for t, v in attrs))
    c._LAYOUTS.pop(len(raw), None)
    assert _decoded(raw) == _walked(raw)  # learns this length's layout
    assert len(raw) in c._LAYOUTS
    assert _decoded(raw) == _walked(raw)  # through the layout
    # Same length, some octets changed anywhere after the header (types, lengths, values).
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(c.HEADER, len(raw) - 1))
        mutated[i] = data.draw(st.integers(0, 255))
    assert _decoded(bytes(mutated)) == _walked(bytes(mutated))
    assert _decoded(raw) == _walked(raw)


def test_learned_layout_with_one_attribute() -> None:
    raw = c.encode_request(c.ACCESS_REQUEST, 1, SECRET, b"")  # just the Message-Authenticator
    c._LAYOUTS.pop(len(raw), None)
    first, second = c.decode(raw), c.decode(raw)
    assert first.attrs == second.attrs == [(c.MESSAGE_AUTHENTICATOR, raw[22:38])]
    assert second.ma_offset == 22
