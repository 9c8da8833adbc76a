"""A lean RADIUS codec for the packet path (RFC 2865/2866/3579/5080/5176).

Sans-I/O: bytes in, values or bytes out. pyrad serves dictionaries and rare attributes;
every packet passes through here, so this does the minimum, with plain tuples.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from operator import itemgetter
from typing import Any

try:  # CPython's own MD5: for packet-sized inputs about twice as fast as OpenSSL's EVP
    from _md5 import md5 as _md5
except ImportError:  # pragma: no cover - a Python built without it
    _md5 = hashlib.md5  # type: ignore[assignment]

# Codes
ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCOUNTING_REQUEST = 4
ACCOUNTING_RESPONSE = 5
ACCESS_CHALLENGE = 11
STATUS_SERVER = 12
DISCONNECT_REQUEST = 40
DISCONNECT_ACK = 41
DISCONNECT_NAK = 42
COA_REQUEST = 43
COA_ACK = 44
COA_NAK = 45

# Attribute types used on the packet path
USER_NAME = 1
USER_PASSWORD = 2
CHAP_PASSWORD = 3
NAS_IP_ADDRESS = 4
NAS_PORT = 5
SERVICE_TYPE = 6
FRAMED_IP_ADDRESS = 8
FILTER_ID = 11
REPLY_MESSAGE = 18
STATE = 24
CLASS = 25
VENDOR_SPECIFIC = 26
SESSION_TIMEOUT = 27
TERMINATION_ACTION = 29
CALLED_STATION_ID = 30
CALLING_STATION_ID = 31
NAS_IDENTIFIER = 32
PROXY_STATE = 33
ACCT_STATUS_TYPE = 40
ACCT_DELAY_TIME = 41
ACCT_INPUT_OCTETS = 42
ACCT_OUTPUT_OCTETS = 43
ACCT_SESSION_ID = 44
ACCT_SESSION_TIME = 46
ACCT_INPUT_PACKETS = 47
ACCT_OUTPUT_PACKETS = 48
ACCT_TERMINATE_CAUSE = 49
ACCT_INPUT_GIGAWORDS = 52
ACCT_OUTPUT_GIGAWORDS = 53
EVENT_TIMESTAMP = 55
NAS_PORT_TYPE = 61
TUNNEL_TYPE = 64
TUNNEL_MEDIUM_TYPE = 65
EAP_MESSAGE = 79
MESSAGE_AUTHENTICATOR = 80
TUNNEL_PRIVATE_GROUP_ID = 81
NAS_PORT_ID = 87
NAS_IPV6_ADDRESS = 95
FRAMED_IPV6_PREFIX = 97
ERROR_CAUSE = 101

SERVICE_TYPE_CALL_CHECK = 10
TERMINATION_ACTION_RADIUS_REQUEST = 1
TUNNEL_TYPE_VLAN = 13
TUNNEL_MEDIUM_IEEE_802 = 6

ACCT_START, ACCT_STOP, ACCT_INTERIM, ACCT_ON, ACCT_OFF = 1, 2, 3, 7, 8

VENDOR_MICROSOFT = 311
MS_MPPE_SEND_KEY = 16
MS_MPPE_RECV_KEY = 17

MAX_PACKET = 4096
HEADER = 20
_ZERO16 = bytes(16)

Attrs = list[tuple[int, bytes]]


_PADS: dict[bytes, tuple[Any, Any]] = {}


def _pads(secret: bytes) -> tuple[Any, Any]:
    pads = _PADS.get(secret)
    if pads is None:
        key = _md5(secret).digest() if len(secret) > 64 else secret
        key = key.ljust(64, b"\0")
        pads = (_md5(bytes(b ^ 0x36 for b in key)), _md5(bytes(b ^ 0x5C for b in key)))
        if len(_PADS) > 1024:
            _PADS.clear()
        _PADS[secret] = pads
    return pads


def hmac_md5(secret: bytes, msg: bytes, *more: bytes) -> bytes:
    """HMAC-MD5 (RFC 2104) of msg (+ more, appended) with the key's pads hashed once per
    secret: a copy of a ready MD5 state is several times cheaper than hmac.digest."""
    inner_pad, outer_pad = _PADS.get(secret) or _pads(secret)
    inner = inner_pad.copy()
    inner.update(msg)
    for m in more:
        inner.update(m)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.digest()  # type: ignore[no-any-return]


class MalformedPacket(ValueError):
    """The datagram is not a well-formed RADIUS packet; `reason` is a short counter label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplyTooLarge(ValueError):
    """The reply would exceed 4096 octets (e.g. a full EAP fragment plus a request's
    Proxy-State, which must be echoed): the request cannot be answered."""


class Packet:
    """A decoded packet: header fields plus attributes in wire order."""

    __slots__ = ("code", "ident", "authenticator", "_attrs", "raw", "ma_offset", "first",
                 "_types", "_values")

    def __init__(
        self,
        code: int,
        ident: int,
        authenticator: bytes,
        attrs: Attrs | None,
        raw: bytes,
        ma_offset: int,
        first: dict[int, bytes] | None = None,
        types: tuple[int, ...] = (),
        values: tuple[bytes, ...] = (),
    ) -> None:
        self.code = code
        self.ident = ident
        self.authenticator = authenticator
        # None: made from types and values when asked (a MAB request never asks).
        self._attrs = attrs
        self.raw = raw
        self.ma_offset = ma_offset  # offset of the Message-Authenticator value, -1 if absent
        # First value of each type; dict() over the reversed list keeps the first, in C.
        self.first: dict[int, bytes] = (dict(reversed(attrs)) if first is None  # type: ignore[arg-type]
                                        else first)
        self._types = types
        self._values = values

    @property
    def attrs(self) -> Attrs:
        attrs = self._attrs
        if attrs is None:  # zip stops at the types: a one-attribute layout pads its values
            attrs = self._attrs = list(zip(self._types, self._values, strict=False))
        return attrs

    def get(self, attr_type: int) -> bytes | None:
        return self.first.get(attr_type)

    def get_all(self, attr_type: int) -> list[bytes]:
        return [v for t, v in self.attrs if t == attr_type]

    def get_str(self, attr_type: int) -> str | None:
        v = self.get(attr_type)
        return None if v is None else v.decode("utf-8", "replace")

    def get_int(self, attr_type: int) -> int | None:
        v = self.first.get(attr_type)
        if v is None or len(v) != 4:
            return None
        return int.from_bytes(v, "big")


def decode(data: bytes) -> Packet:
    """Parse a datagram. Raises MalformedPacket with a short reason."""
    n = len(data)
    if n < HEADER:
        raise MalformedPacket("short")
    length = (data[2] << 8) | data[3]
    if length < HEADER or length > MAX_PACKET:
        raise MalformedPacket("bad_length")
    if length > n:
        raise MalformedPacket("truncated")
    if length < n:  # RFC 2865 3: octets beyond Length are padding, ignored
        data = data[:length]
    layout = _LAYOUTS.get(length)
    if layout is not None and layout[0](data) == layout[1]:
        # Same types and lengths, in the same order, as an earlier packet of this length
        # that the loop below accepted: its values are slices at known offsets, cut in C.
        # The first-value dict comes from a function made for the layout (a dict display
        # of its first values by position: ~3x cheaper than the list of pairs reversed
        # into dict()); the list of pairs itself only when someone asks for it.
        values = layout[3](data)
        return Packet(data[0], data[1], data[4:20], None, data, layout[4],
                      layout[5](values), layout[2], values)
    attrs: Attrs = []
    add = attrs.append
    pos = HEADER
    ma_offset = -1
    last = length - 1  # an attribute needs its type and length octets: pos <= last - 1
    # Every packet passes here: literals instead of module constants (79 EAP-Message,
    # 80 Message-Authenticator) and one comparison in the common case.
    while pos < length:
        if pos == last:
            raise MalformedPacket("attr_truncated")
        t = data[pos]
        end = pos + data[pos + 1]
        if end - pos < 3 or t == 80:
            alen = end - pos
            # 0 or 1 would loop or overlap; 2 carries no value, which only an EAP-Message
            # may do (RFC 3579 3.1: the EAP-Start a NAS sends to open a conversation).
            if alen < 3 and not (alen == 2 and t == 79):
                raise MalformedPacket("attr_length")
            if t == 80:
                if alen != 18:
                    raise MalformedPacket("bad_message_authenticator")
                if end > length:
                    raise MalformedPacket("attr_overrun")
                ma_offset = pos + 2
        if end > length:
            raise MalformedPacket("attr_overrun")
        add((t, data[pos + 2 : end]))
        pos = end
    if 0 < len(attrs) <= 32:
        _learn(data, length, attrs, ma_offset)
    return Packet(data[0], data[1], data[4:20], attrs, data, ma_offset)


# Packet length -> (type/length octets getter, their expected values, attribute types,
# values getter, Message-Authenticator offset, first-values function). A switch sends one
# attribute layout per kind of request, so decode() walks the attributes of the first
# packet of each length in Python and cuts the next ones in C (itemgetter): a MAB
# request's 7 attributes, 3.6 -> ~1 us. At most one layout per length (4096), the last
# one seen.
_LAYOUTS: dict[int, tuple[Any, tuple[int, ...], tuple[int, ...], Any, int, Any]] = {}
_FIRSTS: dict[tuple[int, ...], Any] = {}  # attribute types -> their first-values function


def _firsts(types: tuple[int, ...]) -> Any:
    """lambda v: {type: v[position of its first attribute], ...} for these types: made
    from integers only, once per attribute sequence (a switch sends a few)."""
    fn = _FIRSTS.get(types)
    if fn is None:
        at: dict[int, int] = {}
        for i, t in enumerate(types):
            at.setdefault(t, i)
        fn = eval("lambda v: {" + ", ".join(f"{t}: v[{i}]" for t, i in at.items()) + "}")
        if len(_FIRSTS) > 4096:
            _FIRSTS.clear()
        _FIRSTS[types] = fn
    return fn


def _learn(data: bytes, length: int, attrs: Attrs, ma_offset: int) -> None:
    heads: list[int] = []
    cuts: list[slice] = []
    pos = HEADER
    for _, value in attrs:
        heads += (pos, pos + 1)
        cuts.append(slice(pos + 2, pos + 2 + len(value)))
        pos += 2 + len(value)
    expected = tuple(data[i] for i in heads)
    # itemgetter of one index returns the item itself, not a 1-tuple: pad to two.
    if len(cuts) == 1:
        cuts.append(slice(0, 0))
    types = tuple(t for t, _ in attrs)
    _LAYOUTS[length] = (itemgetter(*heads), expected, types, itemgetter(*cuts), ma_offset,
                        _firsts(types))


def message_authenticator_ok(
    pkt: Packet, secret: bytes, authenticator: bytes | None = None
) -> bool:
    """RFC 3579 3.2: HMAC-MD5 over the packet with the MA value zeroed.

    `authenticator` replaces the header's for replies (the request's) and for accounting
    and CoA requests (zeros, RFC 5176 3.3 / RFC 3579 3.2).
    """
    off = pkt.ma_offset
    if off < 0:
        return False
    raw = pkt.raw
    inner_pad, outer_pad = _PADS.get(secret) or _pads(secret)
    inner = inner_pad.copy()
    # One update of the joined message: a copy of 4 kB at most costs less than the calls.
    if authenticator is None:
        inner.update(raw[:off] + _ZERO16 + raw[off + 16 :])
    else:
        inner.update(raw[:4] + authenticator + raw[20:off] + _ZERO16 + raw[off + 16 :])
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return hmac.compare_digest(outer.digest(), raw[off : off + 16])


def accounting_authenticator_ok(pkt: Packet, secret: bytes) -> bool:
    """RFC 2866 3: MD5(Code+Identifier+Length+16 zero octets+attributes+secret)."""
    raw = pkt.raw
    want = _md5(raw[:4] + _ZERO16 + raw[20:] + secret).digest()
    return hmac.compare_digest(want, pkt.authenticator)


def encode_attr(attr_type: int, value: bytes) -> bytes:
    if len(value) > 253:
        raise ValueError(f"attribute {attr_type} value too long ({len(value)} > 253)")
    return bytes((attr_type, len(value) + 2)) + value


def encode_int_attr(attr_type: int, value: int) -> bytes:
    return bytes((attr_type, 6)) + value.to_bytes(4, "big")


def encode_tagged_int(attr_type: int, tag: int, value: int) -> bytes:
    """RFC 2868 3.1/3.2: a tag octet then a 3-octet value."""
    return bytes((attr_type, 6, tag)) + value.to_bytes(3, "big")


def encode_tagged_str(attr_type: int, tag: int, value: bytes) -> bytes:
    return bytes((attr_type, len(value) + 3, tag)) + value


def encode_vsa(vendor: int, vendor_type: int, value: bytes) -> bytes:
    inner = bytes((vendor_type, len(value) + 2)) + value
    return bytes((VENDOR_SPECIFIC, len(inner) + 6)) + vendor.to_bytes(4, "big") + inner


_EAP_FULL = bytes((EAP_MESSAGE, 255))  # the header of a full 253-octet EAP-Message


def split_eap(eap: bytes) -> bytes:
    """RFC 3579 3.1: EAP-Message split into as many 253-octet attributes as needed."""
    n = len(eap)
    if n <= 253:  # most rounds but TLS flights: one attribute, no loop
        return bytes((EAP_MESSAGE, n + 2)) + eap if n else b""
    full = n - n % 253
    # A TLS round's ~1 kB reply: a list comprehension of the full parts costs about half
    # the generator of (header, slice) pairs it replaces, every Access-Challenge.
    parts = [_EAP_FULL + eap[i : i + 253] for i in range(0, full, 253)]
    if full < n:
        parts.append(bytes((EAP_MESSAGE, n - full + 2)) + eap[full:])
    return b"".join(parts)


def join_eap(pkt: Packet) -> bytes | None:
    if EAP_MESSAGE not in pkt.first:
        return None
    parts = [v for t, v in pkt.attrs if t == EAP_MESSAGE]
    return b"".join(parts) if parts else None


_MA_HEAD = bytes((MESSAGE_AUTHENTICATOR, 18))
_HEAD = struct.Struct("!BBH").pack  # code, identifier, length
_MA_PLACEHOLDER = _MA_HEAD + _ZERO16


def encode_reply(code: int, request: Packet, secret: bytes, attrs: bytes) -> bytes:
    """A reply with Message-Authenticator first, Proxy-State echoed, authenticators right.

    `attrs` are already-encoded attributes (precomputed where the packet path allows).
    """
    if PROXY_STATE in request.first:
        attrs += b"".join(bytes((PROXY_STATE, len(v) + 2)) + v
                          for t, v in request.attrs if t == PROXY_STATE)
    length = HEADER + 18 + len(attrs)
    if length > MAX_PACKET:
        raise ReplyTooLarge(f"reply of {length} octets exceeds 4096")
    head = _HEAD(code, request.ident, length)
    # Accounting-Response signs over a zeroed authenticator, like accounting requests;
    # Access and CoA/Disconnect replies over the request's (RFC 3579 3.2, RFC 5176 3.3).
    auth = request.authenticator
    inner_pad, outer_pad = _PADS.get(secret) or _pads(secret)
    inner = inner_pad.copy()
    inner.update(head + (_ZERO16 if code == ACCOUNTING_RESPONSE else auth)
                 + _MA_PLACEHOLDER + attrs)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    tail = _MA_HEAD + outer.digest() + attrs
    return head + _md5(head + auth + tail + secret).digest() + tail


def encode_request(
    code: int, ident: int, secret: bytes, attrs: bytes, *, authenticator: bytes | None = None
) -> bytes:
    """A request with Message-Authenticator (used by tests, bench and the CoA client).

    Access-Request: random authenticator. Accounting/CoA/Disconnect: the MD5 authenticator
    of RFC 2866 / RFC 5176, computed after the Message-Authenticator over zeros.
    """
    body = _MA_PLACEHOLDER + attrs
    length = HEADER + len(body)
    head = struct.pack("!BBH", code, ident, length)
    if code in (ACCESS_REQUEST, STATUS_SERVER):
        auth = authenticator or os.urandom(16)
        ma = hmac_md5(secret, head + auth + body)
        return head + auth + body[:2] + ma + body[18:]
    ma = hmac_md5(secret, head + _ZERO16 + body)
    body = body[:2] + ma + body[18:]
    auth = _md5(head + _ZERO16 + body + secret).digest()
    return head + auth + body


def _xor(a: bytes, b: bytes) -> bytes:
    """XOR of two 16-octet blocks, as integers: far cheaper than octet by octet."""
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(16)


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 5.2 User-Password hiding."""
    padded = password + bytes(-len(password) % 16 or (16 if not password else 0))
    out = []
    prev = authenticator
    for i in range(0, len(padded), 16):
        prev = _xor(padded[i : i + 16], _md5(secret + prev).digest())
        out.append(prev)
    return b"".join(out)


def unhide_password(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes | None:
    """Inverse of hide_password; None when the length is not a multiple of 16 (max 128)."""
    n = len(hidden)
    if not hidden or n % 16 or n > 128:
        return None
    # The key stream at once (block i is keyed by ciphertext block i-1), then one XOR of
    # the whole value as integers: every PAP request passes here.
    stream = _md5(secret + authenticator).digest()
    if n > 16:
        stream += b"".join([_md5(secret + hidden[i - 16 : i]).digest() for i in range(16, n, 16)])
    return (int.from_bytes(hidden) ^ int.from_bytes(stream)).to_bytes(n).rstrip(b"\x00")


def mppe_key_attr(
    vendor_type: int, key: bytes, secret: bytes, authenticator: bytes, salt: bytes | None = None
) -> bytes:
    """RFC 2548 2.4.2/2.4.3: an MS-MPPE-Send/Recv-Key VSA, salted and encrypted."""
    salt = salt or os.urandom(2)
    salt = bytes((salt[0] | 0x80, salt[1]))
    plain = bytes((len(key),)) + key
    plain += bytes(-len(plain) % 16)
    out = []
    prev = authenticator + salt
    for i in range(0, len(plain), 16):
        prev = _xor(plain[i : i + 16], _md5(secret + prev).digest())
        out.append(prev)
    return encode_vsa(VENDOR_MICROSOFT, vendor_type, salt + b"".join(out))
