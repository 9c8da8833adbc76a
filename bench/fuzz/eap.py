"""EAP harnesses: the packet codec, the EAP-TLS fragment reassembly, the EAP service driven
through whole conversations, and the inside of PEAP/TTLS tunnels behind a real TLS peer."""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Iterator
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import lib as _lib  # SSL_session_reused has no wrapper

from fuzz import lab
from fuzz.core import (
    Finding,
    Harness,
    Target,
    join_records,
    mutate_records,
    records,
    register,
)
from nac.eap import avp, packet
from nac.eap.tls_engine import FLAG_L, FLAG_M, FLAG_S, MAX_MESSAGE, Framer

ACTIONS = ("challenge", "accept", "reject", "drop")


def _nas() -> Any:
    from nac.eap.service import NasInfo

    return NasInfo(address=lab.NAS_ADDR, group=None, vendor="generic",
                   calling_station_id="02-00-00-00-00-01", nas_port_id="ge-0/0/1")


def response(ident: int, type_: int, data: bytes) -> bytes:
    return packet.EapPacket(packet.RESPONSE, ident & 0xFF, type_, data).encode()


# --- eap_packet ------------------------------------------------------------------------------
def _packet_target() -> Target:
    def one(data: bytes) -> str | None:
        try:
            pkt = packet.parse(data)
        except packet.EapError:
            return "error"
        length = struct.unpack_from("!H", data, 2)[0]
        if pkt.encode() != data[:length]:
            raise Finding("parse/encode does not round-trip")
        return f"ok:{pkt.code}:{pkt.type}"

    return one


def _packet_seeds() -> Iterator[bytes]:
    yield response(1, packet.IDENTITY, b"demo")
    yield response(2, packet.NAK, bytes((packet.MD5, packet.TTLS)))
    yield packet.success(3)
    yield packet.failure(4)
    yield packet.request(5, packet.PEAP, bytes((FLAG_S,)))
    yield response(6, packet.TLS, bytes((FLAG_L | FLAG_M,)) + (3000).to_bytes(4, "big")
                   + bytes(40)) + b"pad"


# --- eap_avp (TTLS phase 2 attributes) -----------------------------------------------------
def _avp_target() -> Target:
    def one(data: bytes) -> str | None:
        try:
            avps = avp.parse(data)
        except avp.AvpError:
            return "error"
        again = avp.parse(b"".join(a.encode() for a in avps))
        if again != avps:
            raise Finding("AVPs do not survive encode/parse")
        kinds = sorted({"vendor" if a.vendor else "ietf" for a in avps})
        return "ok:" + "+".join(kinds or ["empty"])
    return one


def _avp_seeds() -> Iterator[bytes]:
    yield (avp.Avp(avp.USER_NAME, b"demo").encode()
           + avp.Avp(avp.USER_PASSWORD, b"demo-password" + bytes(3)).encode())
    yield (avp.Avp(avp.MS_CHAP_CHALLENGE, bytes(16), avp.MICROSOFT).encode()
           + avp.Avp(avp.MS_CHAP2_RESPONSE, bytes(50), avp.MICROSOFT).encode())
    yield avp.Avp(avp.EAP_MESSAGE, response(3, 38, b"\x01")).encode()


# --- eap_tls_framer --------------------------------------------------------------------------
# Record flags: bit 0 queue an outbound flight of `payload` length first (we are "sending"),
# bit 1 take one outbound fragment first. The payload is the Response type-data.
def _framer_target() -> Target:
    def one(data: bytes) -> str | None:
        fragment = 64 + (data[0] if data else 0) * 4
        fr = Framer(fragment)
        pending = b""  # what the model says has been received since the last message
        last = "none"
        for flags, payload in records(data[1:], limit=48):
            if flags & 1:
                fr.queue(bytes(len(payload) * 3))
            if flags & 2 and fr.sending:
                frag = fr.next_fragment()
                if len(frag) > fr.payload + 5:
                    raise Finding(f"fragment of {len(frag)} over payload {fr.payload}")
            sending = fr.sending
            frame = fr.receive(payload)
            last = frame.kind + ":" + frame.reason[:30]
            if frame.kind == "error":
                return last  # the method fails; the framer is not used again
            if not payload:
                raise Finding("empty type-data was not an error")
            body = payload[1:]
            if payload[0] & FLAG_L:
                body = body[4:]
            if frame.kind == "ack":
                if body or payload[0] & FLAG_M:
                    raise Finding("data or M flag taken as an ACK")
                continue
            if sending:
                raise Finding("data accepted while we were fragmenting")
            pending += body
            if len(pending) > MAX_MESSAGE:
                raise Finding(f"buffered {len(pending)} octets, over {MAX_MESSAGE}")
            if frame.kind == "message":
                if frame.data != pending:
                    raise Finding("reassembled message differs from the fragments")
                pending = b""
        return last

    return one


def _frag(data: bytes, size: int) -> list[bytes]:
    out = []
    for i in range(0, len(data), size):
        more = i + size < len(data)
        flags = (FLAG_M if more else 0) | (FLAG_L if i == 0 and more else 0)
        head = bytes((flags,)) + (len(data).to_bytes(4, "big") if flags & FLAG_L else b"")
        out.append(head + data[i : i + size])
    return out


def _framer_seeds() -> Iterator[bytes]:
    hello = client_hello("1.3")
    yield bytes((60,)) + join_records([(0, f) for f in _frag(hello, 100)])
    yield bytes((0,)) + join_records([(0, b"\x00" + hello)])
    yield bytes((0,)) + join_records([(1, b"\x00"), (2, b"\x00"), (2, b"\x00")])
    yield bytes((10,)) + join_records([(0, f) for f in _frag(bytes(range(256)) * 4, 300)]
                                      + [(0, b"\x80" + (5).to_bytes(4, "big") + b"hello")])


# --- a TLS peer over memory BIOs -------------------------------------------------------------
@functools.cache
def _client_ctx(version: str) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    v = SSL.TLS1_3_VERSION if version == "1.3" else SSL.TLS1_2_VERSION
    ctx.set_min_proto_version(v)
    ctx.set_max_proto_version(v)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)  # the server's identity is not tested here
    return ctx


def client_hello(version: str) -> bytes:
    conn = SSL.Connection(_client_ctx(version), None)
    conn.set_connect_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    return conn.bio_read(65536)


class PeerGaveUp(Exception):
    pass


class TlsPeer:
    """Just enough of a PEAP/TTLS client to reach the tunnel; what goes inside is the input."""

    def __init__(self, version: str, fragment: int, session: Any = None) -> None:
        self.conn = SSL.Connection(_client_ctx(version), None)
        self.conn.set_connect_state()
        if session is not None:
            self.conn.set_session(session)
        self.framer = Framer(fragment)
        self.established = False
        self.app: list[bytes] = []

    def _pump(self) -> None:
        try:
            if not self.established:
                self.conn.do_handshake()
                self.established = True
            while True:
                self.app.append(self.conn.recv(65536))
        except (SSL.WantReadError, SSL.ZeroReturnError):
            pass
        except SSL.Error as exc:
            raise PeerGaveUp(str(exc)) from None

    def _out(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self.conn.bio_read(65536))
            except SSL.WantReadError:
                return b"".join(chunks)

    def answer(self, type_data: bytes) -> tuple[bytes, bool]:
        """The type-data to answer a Request with, and whether the server's flight is whole
        and we had nothing more to say (a point where the input may speak next)."""
        frame = self.framer.receive(type_data)
        if frame.kind == "error":
            raise PeerGaveUp(frame.reason)
        if frame.kind == "partial":
            return self.framer.ack(), False
        if frame.kind == "ack" and self.framer.sending:
            return self.framer.next_fragment(), False
        if frame.kind == "message":
            self.conn.bio_write(frame.data)
        self._pump()
        out = self._out()
        if out:
            self.framer.queue(out)
            return self.framer.next_fragment(), False
        return self.framer.ack(), True

    def resumed(self) -> bool:
        return bool(_lib.SSL_session_reused(self.conn._ssl))  # noqa: SLF001

    def seal(self, plain: bytes) -> bytes:
        try:
            self.conn.sendall(plain)
        except SSL.Error as exc:
            raise PeerGaveUp(str(exc)) from None
        return self._out()


def check_result(res: Any, *, bypass_is_bug: bool) -> str:
    if res.action not in ACTIONS:
        raise Finding(f"unknown action {res.action!r}")
    if res.reason.startswith("internal error"):
        raise Finding(f"EapService.handle caught an exception: {res.reason}")
    if res.action == "challenge":
        if not res.state or len(res.state) != 16:
            raise Finding("challenge without a 16-octet State")
        req = packet.parse(res.eap or b"")
        if req.code != packet.REQUEST:
            raise Finding("challenge does not carry an EAP-Request")
        if len(res.eap or b"") > 65535:
            raise Finding("EAP-Request over 65535 octets")
    elif res.action == "accept":
        if bypass_is_bug:
            raise Finding(f"accepted without credentials: {res.method} {res.identity}")
        if packet.parse(res.eap or b"").code != packet.SUCCESS:
            raise Finding("accept without EAP-Success")
        if res.msk is not None and len(res.msk) != 64:
            raise Finding(f"MSK of {len(res.msk)} octets")
    elif res.action == "reject":
        if res.eap is not None and packet.parse(res.eap).code != packet.FAILURE:
            raise Finding("reject without EAP-Failure")
    elif res.eap is not None:
        raise Finding("drop with a packet to send")
    posture = ":posture" if res.action == "accept" and res.posture else ""
    return f"{res.action}:{res.method}:{res.reason[:40]}{posture}"


# --- eap_service -----------------------------------------------------------------------------
SERVICE_METHODS = ("peap", "ttls", "tls", "md5", "mschapv2")
FRAGMENTS = (1020, 100)
# Record flags: bit 0 the payload is type-data for a Response to the last Request (same
# identifier and type), else a whole EAP packet; bit 1 send no State; bit 2 a State that
# is not ours; bit 3 let the conversation idle out first; bit 4 an identifier off by one.
WRAP, NO_STATE, FOREIGN_STATE, IDLE, OFF_BY_ONE = 1, 2, 4, 8, 16


@functools.cache
def _service(method: str, fragment: int) -> Any:
    return lab.eap_service(default_method=method, fragment_size=fragment)


def _service_target() -> Target:
    _service("peap", 1020)

    def one(data: bytes) -> str | None:
        sel = data[0] if data else 0
        svc = _service(SERVICE_METHODS[sel % 5], FRAGMENTS[(sel >> 3) & 1])
        svc.expire(float("inf"))
        nas = _nas()
        now = lab.NOW
        state: bytes | None = None
        last: packet.EapPacket | None = None
        label = "none"
        for flags, payload in records(data[1:], limit=32):
            raw = payload
            if flags & WRAP:
                ident = last.identifier if last else 0
                if flags & OFF_BY_ONE:
                    ident += 1
                raw = response(ident, (last.type or 1) if last else packet.IDENTITY, payload)
            st = None if flags & NO_STATE else (bytes(16) if flags & FOREIGN_STATE else state)
            if flags & IDLE:
                now += svc.config.idle_timeout + 1
            res = svc.handle(state=st, eap=raw, nas=nas, now=now)
            label = check_result(res, bypass_is_bug=True)
            if res.action == "challenge":
                state, last = res.state, packet.parse(res.eap or b"")
            elif res.action in ("accept", "reject"):
                state, last = None, None
        return label

    return one


def _service_seeds() -> Iterator[bytes]:
    ident = response(1, packet.IDENTITY, lab.USER.encode())
    for sel in range(5):
        yield bytes((sel,)) + join_records([(0, ident)])
    # PEAP offered, NAK to MD5, a wrong MD5 answer.
    yield bytes((0,)) + join_records([(0, ident), (WRAP, bytes((packet.MD5,))),
                                      (WRAP, bytes((16,)) + bytes(16))])
    # EAP-Start, then Identity; MSCHAPv2 Response-shaped answer.
    ms = bytes((2, 0)) + (54).to_bytes(2, "big") + bytes((49,)) + bytes(49) + b"demo"
    yield bytes((4,)) + join_records([(0, b""), (WRAP, b"demo"), (WRAP, ms)])
    # TLS methods: a ClientHello whole and in fragments; an ACK; a stale retransmission.
    for sel, version in ((0, "1.3"), (1, "1.2"), (2, "1.3"), (2 | 8, "1.2")):
        hello = client_hello(version)
        yield bytes((sel,)) + join_records([(0, ident), (WRAP, b"\x00" + hello), (WRAP, b"\x00")])
        yield bytes((sel,)) + join_records([(0, ident)]
                                           + [(WRAP, f) for f in _frag(hello, 90)])
    yield bytes((3,)) + join_records([(0, ident), (WRAP | OFF_BY_ONE, b"\x10" + bytes(16)),
                                      (WRAP | IDLE, b"\x10" + bytes(16)), (0, ident)])


def _records_mutate(data: bytes, rng: random.Random) -> bytes:
    """Keep the selector octet and the framing; mutate one record (or its flags)."""
    return mutate_records(data, rng, head=1)


# --- eap_tunnel ------------------------------------------------------------------------------
# Selector octet: bit 0 TTLS (else PEAP), bit 1 TLS 1.3 (else 1.2), bit 2 small fragments.
# Record flags: bit 0 the payload goes into the TLS stream unencrypted (garbage records),
# bit 1 the payload is inner type-data, wrapped as the Response to the last inner Request,
# bit 2 answer an inner MSCHAPv2 Challenge/Success correctly (the harness knows the demo
# password), so the input also reaches what follows authentication: PEAP's Result TLV and
# the EAP-TNC posture exchange inside PEAP and TTLS/EAP-MSCHAPv2; bit 3 let the agent's
# own EAP-TNC peer (a compliant Debian 12 posture) answer an inner EAP-TNC request.
RAW_TLS, INNER_WRAP, MSCHAP_OK, TNC_PEER = 1, 2, 4, 8
EAP_TNC = 38
# The peer's Response/TLV with Result = Success (PEAPv0 sends this one with its header).
PEAP_RESULT_OK = bytes((2, 0, 0, 11, packet.TLV, 0x80, 3, 0, 2, 0, 1))


@functools.cache
def _tunnel_service(method: str, fragment: int) -> Any:
    return lab.eap_service(default_method=method, fragment_size=fragment)


def _inner_request(method: str, plain: bytes) -> tuple[int, int, bytes] | None:
    """(identifier, type, type-data) of the inner Request in tunnel data the server sent."""
    try:
        if method == "ttls":
            eap = b"".join(a.value for a in avp.parse(plain) if a.code == avp.EAP_MESSAGE)
            pkt = packet.parse(eap)
            return pkt.identifier, pkt.type or 0, pkt.data
        if plain:
            return 0, plain[0], plain[1:]  # PEAPv0: inner packets travel without a header
    except (avp.AvpError, packet.EapError):
        pass
    return None


def mschapv2_answer(type_data: bytes) -> bytes | None:
    """The demo account's correct answer to an MSCHAPv2 Challenge (or Success) request."""
    from nac.accounts import nt_hash
    from nac.eap import mschap

    if len(type_data) >= 21 and type_data[0] == 1 and type_data[4] == 16:
        ms_id, challenge = type_data[1], type_data[5:21]
        peer_challenge = bytes(range(16))
        nt = mschap.nt_response(challenge, peer_challenge, lab.USER, nt_hash(lab.PASSWORD))
        body = bytes((49,)) + peer_challenge + bytes(8) + nt + b"\x00" + lab.USER.encode()
        return struct.pack("!BBH", 2, ms_id, 4 + len(body)) + body
    if type_data[:1] == b"\x03":
        return b"\x03"  # acknowledge MSCHAPv2 Success
    return None


def wrap_inner(method: str, last: tuple[int, int, bytes] | None, type_data: bytes) -> bytes:
    ident, type_, _ = last or (0, packet.IDENTITY, b"")
    if method == "ttls":
        return avp.Avp(avp.EAP_MESSAGE, response(ident, type_, type_data)).encode()
    return bytes((type_,)) + type_data


class _Conv:
    def __init__(self, svc: Any) -> None:
        self.svc, self.state, self.now, self.nas = svc, None, lab.NOW, _nas()
        self.last: packet.EapPacket | None = None
        self.label = "none"

    def send(self, raw: bytes) -> Any:
        self.now += 0.01
        res = self.svc.handle(state=self.state, eap=raw, nas=self.nas, now=self.now)
        self.label = check_result(res, bypass_is_bug=False)
        if res.action == "challenge":
            self.state, self.last = res.state, packet.parse(res.eap or b"")
        else:
            self.last = None
        return res

    def reply(self, type_data: bytes) -> bool:
        """Answer the last Request; False once the conversation is over."""
        assert self.last is not None
        self.send(response(self.last.identifier, self.last.type or 0, type_data))
        return self.last is not None


def _exchange(conv: _Conv, peer: TlsPeer, first: bytes, rounds: int = 200) -> bool:
    """Send `first`, then answer until the server's flight is whole and the peer is quiet."""
    if not conv.reply(first):
        return False
    for _ in range(rounds):
        assert conv.last is not None
        td, quiet = peer.answer(conv.last.data)
        if quiet:
            return True
        if not conv.reply(td):
            return False
    return False


def _converse(svc: Any, method: str, version: str, fragment: int,
              recs: list[tuple[int, bytes]], session: Any = None) -> tuple[str, TlsPeer]:
    """One PEAP/TTLS conversation: handshake (resuming `session` if given), then the
    records inside the tunnel. Returns the outcome label and the peer."""
    svc.expire(float("inf"))
    conv = _Conv(svc)
    conv.send(response(1, packet.IDENTITY, b"anonymous"))
    peer = TlsPeer(version, fragment, session)
    try:
        if conv.last is None:
            return "no-start:" + conv.label, peer
        td, _ = peer.answer(conv.last.data)  # the Start: our ClientHello
        if not _exchange(conv, peer, td):
            return "handshake:" + conv.label, peer
        for _ in range(4):  # finish the handshake (TLS 1.2 Finished wants an ACK)
            if peer.established and (peer.app or method == "ttls"):
                break
            if not _exchange(conv, peer, peer.framer.ack()):
                return "handshake:" + conv.label, peer
        if not peer.established:
            return "no-tunnel:" + conv.label, peer
        agent = None
        for flags, payload in recs:
            inner = _inner_request(method, peer.app[-1]) if peer.app else None
            if flags & TNC_PEER:
                if inner is None or inner[1] != EAP_TNC:
                    continue  # nothing for the agent to answer: a no-op record
                agent = agent or tnc_agent()
                payload, flags = agent.process(inner[2]).data, flags | INNER_WRAP
            if flags & MSCHAP_OK and inner is not None:
                answer = mschapv2_answer(inner[2])
                if answer is not None:
                    payload, flags = answer, flags | INNER_WRAP
            if flags & INNER_WRAP:
                payload = wrap_inner(method, inner, payload)
            out = payload if flags & RAW_TLS else peer.seal(payload)
            peer.framer.queue(out)
            if not _exchange(conv, peer, peer.framer.next_fragment()):
                return "tunnel:" + conv.label, peer
        return "open:" + conv.label, peer
    except PeerGaveUp as exc:
        return "peer-gave-up:" + str(exc)[:30], peer


def _pap_avps() -> bytes:
    pad = lab.PASSWORD.encode() + bytes(-len(lab.PASSWORD) % 16)
    return (avp.Avp(avp.USER_NAME, lab.USER.encode()).encode()
            + avp.Avp(avp.USER_PASSWORD, pad).encode())


def _canned(method: str) -> list[tuple[int, bytes]]:
    """A conversation that authenticates and passes posture, to leave a session behind."""
    if method == "ttls":
        return [(0, _pap_avps())] + [(TNC_PEER, b"")] * 8
    return ([(INNER_WRAP, lab.USER.encode()), (MSCHAP_OK, b""), (MSCHAP_OK, b"")]
            + [(TNC_PEER, b"")] * 8 + [(0, PEAP_RESULT_OK)])


# Selector bit 3: first authenticate fully, then resume that TLS session; the input speaks
# in the resumed conversation (RFC 5281 8: a resuming TTLS peer may skip phase 2).
RESUME = 8


def _tunnel_target() -> Target:
    _tunnel_service("peap", 1020)

    def one(data: bytes) -> str | None:
        sel = data[0] if data else 0
        method = "ttls" if sel & 1 else "peap"
        version = "1.3" if sel & 2 else "1.2"
        fragment = 200 if sel & 4 else 1020
        svc = _tunnel_service(method, fragment)
        session = None
        if sel & RESUME:
            label, first = _converse(svc, method, version, fragment, _canned(method))
            if ":posture" not in label:
                raise Finding(f"the canned {method} conversation failed: {label}")
            session = first.conn.get_session()
        label, peer = _converse(svc, method, version, fragment,
                                records(data[1:], limit=16), session)
        return ("resumed:" if peer.resumed() else "") + label

    return one


def tnc_agent(protocol: str = "tnccs11") -> Any:
    """The agent's EAP-TNC peer with a compliant posture, as a host would run it."""
    import json

    from eap_ext.tnc.eap_method import EapTncPeer
    from eap_ext.tnc.session import ImcSession

    doc = json.loads((lab_root() / "tests" / "data" / "postures"
                      / "debian12_compliant.json").read_text())
    return EapTncPeer(ImcSession(doc, protocol=protocol))


def posture_first_frames(protocol: str = "tnccs11") -> bytes:
    """The host's first EAP-TNC Response type-data (its posture), from the agent's codec."""
    from eap_ext.tnc.eap_tnc import start_frame

    return tnc_agent(protocol).process(start_frame()).data


def lab_root() -> Any:
    from fuzz.core import ROOT

    return ROOT


def _tunnel_seeds() -> Iterator[bytes]:
    pap = _pap_avps()
    tnc = posture_first_frames()
    ms = bytes((2, 0, 0, 54, 49)) + bytes(49) + b"demo"  # MSCHAPv2 Response, wrong answer
    for sel in (0, 2, 4, 6):  # PEAP: inner Identity, then a wrong MSCHAPv2 answer
        yield bytes((sel,)) + join_records([(INNER_WRAP, b"demo"), (INNER_WRAP, ms)])
    for sel in (0, 3):  # PEAP and TTLS/EAP-MSCHAPv2 authenticated, then EAP-TNC posture
        yield bytes((sel,)) + join_records([(INNER_WRAP, b"demo"), (MSCHAP_OK, b""),
                                            (MSCHAP_OK, b""), (INNER_WRAP, tnc),
                                            (INNER_WRAP, b"\x01"), (0, b"")])
        yield bytes((sel,)) + join_records([(INNER_WRAP, b"demo"), (MSCHAP_OK, b""),
                                            (MSCHAP_OK, b"")] + [(TNC_PEER, b"")] * 8
                                           + [(0, PEAP_RESULT_OK)])
    yield bytes((1,)) + join_records([(0, pap)] + [(TNC_PEER, b"")] * 8)
    for sel in range(8):  # resumption, every method/version/fragment: the canned first
        yield bytes((sel | RESUME,)) + join_records(_canned("ttls" if sel & 1 else "peap"))
    for sel in (1, 3, 5, 7):  # TTLS: PAP, then EAP-TNC posture, then an ACK
        yield bytes((sel,)) + join_records([(0, pap), (INNER_WRAP, tnc),
                                            (INNER_WRAP, b"\x01")])
    yield bytes((1,)) + join_records([(INNER_WRAP, b"demo"), (INNER_WRAP, ms)])
    yield bytes((3,)) + join_records([(RAW_TLS, b"\x17\x03\x03\x00\x05hello")])


register(Harness("eap_packet", "nac.eap.packet.parse: only EapError; encode round-trips",
                 _packet_target, _packet_seeds, max_len=512))
register(Harness("eap_avp", "nac.eap.avp.parse (TTLS phase 2): only AvpError; round trip",
                 _avp_target, _avp_seeds, max_len=4096))
register(Harness("eap_tls_framer", "EAP-TLS L/M/S reassembly (tls_engine.Framer) against a "
                 "model: never raises, messages equal their fragments, bounded",
                 _framer_target, _framer_seeds, mutate=_records_mutate,
                 max_len=16384))
register(Harness("eap_service", "EapService.handle over whole conversations (every method): "
                 "never fails inside, well-formed results, no accept without credentials",
                 _service_target, _service_seeds, mutate=_records_mutate,
                 max_len=8192))
register(Harness("eap_tunnel", "PEAP/TTLS behind a real TLS handshake: the input speaks inside "
                 "the tunnel (inner EAP, AVPs, EAP-TNC posture)", _tunnel_target, _tunnel_seeds,
                 mutate=_records_mutate, max_len=8192))
