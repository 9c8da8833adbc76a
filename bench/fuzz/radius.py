"""RADIUS harnesses: the codec alone, and the whole request path of nac.radius.engine."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from fuzz import lab
from fuzz.core import Finding, Harness, Target, join_records, mutate_records, records, register
from nac.radius import codec as c

ZERO16 = bytes(16)
AUTH = bytes(range(16))  # a fixed Request Authenticator keeps seeds reproducible


# --- radius_decode -------------------------------------------------------------------------
def _decode_target() -> Target:
    def one(data: bytes) -> str | None:
        try:
            pkt = c.decode(data)
        except c.MalformedPacket as exc:
            return "malformed:" + exc.reason
        length = int.from_bytes(data[2:4], "big")
        if pkt.raw != data[:length]:
            raise Finding("raw is not the packet up to Length")
        rebuilt = data[:20] + b"".join(bytes((t, len(v) + 2)) + v for t, v in pkt.attrs)
        if rebuilt != pkt.raw:
            raise Finding("attributes do not re-encode to the packet")
        if pkt.ma_offset >= 0 and pkt.raw[pkt.ma_offset - 2 : pkt.ma_offset] != b"\x50\x12":
            raise Finding("ma_offset does not point at a Message-Authenticator value")
        # The accessors the engine uses on every packet must take any value.
        for t in (c.USER_NAME, c.CALLING_STATION_ID, c.NAS_PORT_ID):
            pkt.get_str(t)
        for t in (c.ACCT_STATUS_TYPE, c.SERVICE_TYPE, c.NAS_PORT):
            pkt.get_int(t)
        c.join_eap(pkt)
        c.message_authenticator_ok(pkt, lab.SECRET)
        c.message_authenticator_ok(pkt, lab.SECRET, ZERO16)
        c.accounting_authenticator_ok(pkt, lab.SECRET)
        return f"ok:{pkt.code}:{len(pkt.attrs) > 0}:{pkt.ma_offset >= 0}"

    return one


# --- seeds -----------------------------------------------------------------------------------
def _a(t: int, v: bytes) -> bytes:
    return c.encode_attr(t, v)


def _common(mac: str = "02-00-00-00-00-01") -> bytes:
    return (_a(c.NAS_IP_ADDRESS, bytes((127, 0, 0, 1))) + c.encode_int_attr(c.NAS_PORT, 7)
            + _a(c.NAS_PORT_ID, b"ge-0/0/7") + _a(c.CALLING_STATION_ID, mac.encode())
            + _a(c.CALLED_STATION_ID, b"00-11-22-33-44-55:corp")
            + c.encode_int_attr(c.NAS_PORT_TYPE, 15))


def _eap_resp(ident: int, type_: int, data: bytes) -> bytes:
    return bytes((2, ident)) + (5 + len(data)).to_bytes(2, "big") + bytes((type_,)) + data


def auth_packets() -> Iterator[bytes]:
    """Valid Access-Requests: MAB (both styles), PAP, CHAP-less junk, EAP starts."""
    s = lab.SECRET
    mac = "02-00-00-00-00-01"
    yield c.encode_request(c.ACCESS_REQUEST, 1, s, _a(c.USER_NAME, b"020000000001") + _common()
                           + c.encode_int_attr(c.SERVICE_TYPE, c.SERVICE_TYPE_CALL_CHECK),
                           authenticator=AUTH)
    yield c.encode_request(c.ACCESS_REQUEST, 2, s, _a(c.USER_NAME, mac.encode()) + _common(),
                           authenticator=AUTH)
    yield c.encode_request(c.ACCESS_REQUEST, 3, s, _a(c.USER_NAME, lab.USER.encode())
                           + _a(c.USER_PASSWORD,
                                c.hide_password(lab.PASSWORD.encode(), s, AUTH))
                           + _common() + _a(c.PROXY_STATE, b"proxy-1"), authenticator=AUTH)
    yield c.encode_request(c.ACCESS_REQUEST, 4, s, _a(c.USER_NAME, b"nobody")
                           + _a(c.USER_PASSWORD, c.hide_password(b"x" * 40, s, AUTH)),
                           authenticator=AUTH)
    yield c.encode_request(c.ACCESS_REQUEST, 5, s, _a(c.USER_NAME, lab.USER.encode())
                           + _common() + c.split_eap(_eap_resp(7, 1, lab.USER.encode())),
                           authenticator=AUTH)
    # EAP-Start (empty EAP-Message, RFC 3579 2.6.1 sends one zero-length attribute).
    yield c.encode_request(c.ACCESS_REQUEST, 6, s, _common() + bytes((c.EAP_MESSAGE, 2)),
                           authenticator=AUTH)
    # An EAP-Message split over several attributes, and a State.
    yield c.encode_request(c.ACCESS_REQUEST, 7, s, _common() + _a(c.STATE, bytes(16))
                           + c.split_eap(_eap_resp(8, 13, b"\x80" + (600).to_bytes(4, "big")
                                                   + b"\x16\x03\x01" + bytes(400))),
                           authenticator=AUTH)
    yield c.encode_request(c.STATUS_SERVER, 8, s, b"", authenticator=AUTH)


def acct_packets() -> Iterator[bytes]:
    s = lab.SECRET
    base = _common() + _a(c.ACCT_SESSION_ID, b"sess-0001") + _a(c.USER_NAME, b"demo")
    for status in (c.ACCT_START, c.ACCT_INTERIM, c.ACCT_STOP):
        extra = b""
        if status != c.ACCT_START:
            extra = b"".join(c.encode_int_attr(t, v) for t, v in (
                (c.ACCT_INPUT_OCTETS, 1000), (c.ACCT_OUTPUT_OCTETS, 2000),
                (c.ACCT_INPUT_GIGAWORDS, 1), (c.ACCT_SESSION_TIME, 60),
                (c.ACCT_DELAY_TIME, 2), (c.ACCT_TERMINATE_CAUSE, 1)))
            extra += _a(c.FRAMED_IP_ADDRESS, bytes((10, 0, 0, 7)))
            extra += _a(c.FRAMED_IPV6_PREFIX, bytes((0, 64)) + bytes.fromhex("20010db8") * 2)
        yield c.encode_request(c.ACCOUNTING_REQUEST, 20 + status, s,
                               c.encode_int_attr(c.ACCT_STATUS_TYPE, status) + base + extra)
    yield c.encode_request(c.ACCOUNTING_REQUEST, 30, s,
                           c.encode_int_attr(c.ACCT_STATUS_TYPE, c.ACCT_ON))


def _decode_seeds() -> Iterator[bytes]:
    yield from auth_packets()
    yield from acct_packets()
    yield bytes((1, 0, 0, 20)) + AUTH


# --- radius_engine ---------------------------------------------------------------------------
# Record flags: bits 0-1 how to send (0 raw Access, 1 re-signed Access, 2 re-signed
# Accounting, 3 raw Accounting); bit 2 keep the packet's own Length field; bit 4 add the
# State of the last Access-Challenge.
MODE_RAW_AUTH, MODE_AUTH, MODE_ACCT, MODE_RAW_ACCT = 0, 1, 2, 3
KEEP_LENGTH, ADD_STATE = 4, 16


def _walk_ma(data: bytes | bytearray) -> int:
    """Offset of the first well-formed Message-Authenticator value, or -1."""
    pos = 20
    while pos + 2 <= len(data):
        t, n = data[pos], data[pos + 1]
        if n < 2:
            return -1
        if t == c.MESSAGE_AUTHENTICATOR and n == 18 and pos + 18 <= len(data):
            return pos + 2
        pos += n
    return -1


def resign(packet: bytes, *, accounting: bool, keep_length: bool = False,
           secret: bytes = lab.SECRET) -> bytes:
    """Make a mutated packet pass the authenticator checks, so the fuzzer reaches the
    attribute handling behind them (what a NAS that knows the secret could send)."""
    data = bytearray(packet[: c.MAX_PACKET])
    if len(data) < 20:
        return bytes(data)
    if not keep_length:
        data[2:4] = len(data).to_bytes(2, "big")
    ma = _walk_ma(data)
    if accounting:
        data[0] = c.ACCOUNTING_REQUEST
        if ma >= 0:
            data[ma : ma + 16] = ZERO16
            data[ma : ma + 16] = c.hmac_md5(secret, bytes(data[:4]) + ZERO16 + bytes(data[20:]))
        data[4:20] = hashlib.md5(bytes(data[:4]) + ZERO16 + bytes(data[20:]) + secret).digest()
    elif ma >= 0:
        data[ma : ma + 16] = ZERO16
        data[ma : ma + 16] = c.hmac_md5(secret, bytes(data))
    return bytes(data)


def check_reply(reply: bytes, request: bytes) -> str:
    """Every reply must be a packet the NAS accepts: decodable, signed both ways."""
    try:
        rep = c.decode(reply)
    except c.MalformedPacket as exc:
        raise Finding(f"reply does not decode: {exc.reason}") from None
    req_auth = request[4:20]
    if rep.ident != request[1]:
        raise Finding("reply identifier differs from the request's")
    want = hashlib.md5(reply[:4] + req_auth + reply[20:] + lab.SECRET).digest()
    if rep.authenticator != want:
        raise Finding("bad Response Authenticator")
    ma_auth = ZERO16 if rep.code == c.ACCOUNTING_RESPONSE else req_auth
    if not c.message_authenticator_ok(rep, lab.SECRET, ma_auth):
        raise Finding("reply without a valid Message-Authenticator")
    return f"reply:{rep.code}"


def _engine_target() -> Target:
    lab.engine()  # build the PKI, accounts and TLS contexts before the first timed input

    def one(data: bytes) -> str | None:
        eng = lab.engine()
        now = lab.NOW
        state: bytes | None = None
        labels = []
        for flags, payload in records(data, limit=12):
            mode = flags & 3
            now += 1.0
            if flags & ADD_STATE and state is not None and len(payload) >= 20:
                payload = payload + c.encode_attr(c.STATE, state)
            if mode == MODE_AUTH:
                payload = resign(payload, accounting=False, keep_length=bool(flags & KEEP_LENGTH))
            elif mode == MODE_ACCT:
                payload = resign(payload, accounting=True, keep_length=bool(flags & KEEP_LENGTH))
            if mode in (MODE_ACCT, MODE_RAW_ACCT):
                out = eng.handle_acct(payload, lab.NAS_ADDR, 40000, now)
            else:
                out = eng.handle_auth(payload, lab.NAS_ADDR, 40000, now)
                if out is not None and not isinstance(out, bytes):
                    # A Deferred (PAP, EAP): run the work inline, as the server's thread
                    # would (the lab's account hash is cheap scrypt); one that waits on the
                    # same work for another request takes that result, as the server does.
                    wait = getattr(out, "wait", None)
                    out = out.finish(wait.result() if wait is not None else out.work(), now)
            if out is None:
                labels.append("drop")
                continue
            if not isinstance(out, bytes):
                raise Finding(f"engine returned {type(out).__name__}")
            labels.append(check_reply(out, payload))
            rep = c.decode(out)
            if rep.code == c.ACCESS_CHALLENGE:
                state = rep.get(c.STATE)
        drops = sorted(k for k in eng.counters if k.startswith("drop_"))
        return "|".join(labels[:4]) + "/" + ",".join(drops)

    return one


def _engine_seeds() -> Iterator[bytes]:
    for p in auth_packets():
        yield join_records([(MODE_AUTH, p)])
        yield join_records([(MODE_RAW_AUTH, p)])
    for p in acct_packets():
        yield join_records([(MODE_ACCT, p)])
    # An EAP conversation: Identity, then a NAK to MD5 answering the challenge's identifier.
    s = lab.SECRET
    ident = c.encode_request(c.ACCESS_REQUEST, 40, s, _common() + c.split_eap(
        _eap_resp(1, 1, b"demo")), authenticator=AUTH)
    nak = c.encode_request(c.ACCESS_REQUEST, 41, s, _common() + c.split_eap(
        _eap_resp(2, 3, bytes((4,)))), authenticator=bytes(16 * [7]))
    md5 = c.encode_request(c.ACCESS_REQUEST, 42, s, _common() + c.split_eap(
        _eap_resp(3, 4, bytes((16,)) + bytes(16))), authenticator=bytes(16 * [9]))
    yield join_records([(MODE_AUTH, ident), (MODE_AUTH | ADD_STATE, nak),
                        (MODE_AUTH | ADD_STATE, md5)])
    # A retransmission and an accounting duplicate hit the dedup cache.
    p = next(iter(auth_packets()))
    yield join_records([(MODE_AUTH, p), (MODE_AUTH, p)])


# Attribute types worth inserting: echoed (Proxy-State), steering (State, EAP-Message,
# Service-Type, User-Name, Calling-Station-Id), parsed (Framed-IPv6-Prefix, VSA), and MA.
ATTR_TYPES = (c.PROXY_STATE, c.STATE, c.EAP_MESSAGE, c.SERVICE_TYPE, c.USER_NAME,
              c.USER_PASSWORD, c.CALLING_STATION_ID, c.NAS_PORT_ID, c.FRAMED_IPV6_PREFIX,
              c.VENDOR_SPECIFIC, c.MESSAGE_AUTHENTICATOR, c.ACCT_STATUS_TYPE, c.CLASS)


def _attr_mutate(packet: bytes, rng: random.Random) -> bytes:
    """Whole attributes in and out: long and repeated ones make the size limits (4096-octet
    packets, echoed Proxy-State) reachable, which byte flips almost never do."""
    if len(packet) < 20:
        return packet
    op = rng.randrange(4)
    if op == 0:  # many copies of one large attribute
        t = rng.choice(ATTR_TYPES)
        n = rng.choice((1, 2, 4, 8, 12, 15, 16))
        size = rng.choice((0, 1, 4, 16, 100, 200, 253))
        return packet + c.encode_attr(t, rng.randbytes(size)) * n
    if op == 1:  # pad to near the 4096 limit with Proxy-State
        room = c.MAX_PACKET - len(packet) - rng.choice((0, 1, 2, 18, 40, 300))
        out = packet
        while room >= 3:
            n = min(255, room)
            out += c.encode_attr(c.PROXY_STATE, bytes(n - 2))
            room -= n
        return out
    if op == 2:  # a small attribute of an interesting type
        t = rng.choice(ATTR_TYPES)
        return packet + c.encode_attr(t, rng.randbytes(rng.choice((0, 1, 2, 4, 6, 16, 18))))
    cut = rng.randrange(20, len(packet) + 1)  # drop the tail
    return packet[:cut]


def _engine_mutate(data: bytes, rng: random.Random) -> bytes:
    """Mutate inside one record so the framing (and re-signing) survives; half the payload
    mutations are whole attributes."""
    return mutate_records(data, rng, max_len=c.MAX_PACKET, payload=_attr_mutate,
                          empty_flags=MODE_AUTH)


register(Harness("radius_decode", "nac.radius.codec.decode: only MalformedPacket; attributes "
                 "re-encode to the packet", _decode_target, _decode_seeds))
register(Harness("radius_engine", "Engine.handle_auth/handle_acct with re-signed packets: "
                 "never raises, every reply is well-formed and signed", _engine_target,
                 _engine_seeds, mutate=_engine_mutate, max_len=8192))
