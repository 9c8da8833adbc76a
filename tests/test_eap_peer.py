"""An in-process EAP peer for unit tests of the EAP service (MD5, MSCHAPv2, and the TLS
methods via a pyOpenSSL client over memory BIOs), plus tests of the peer's own arithmetic.

The real peer is eapol_test (tests/test_eap_eapol.py); this one lets the state machines be
driven deterministically without sockets."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from OpenSSL import SSL

from nac.accounts import SecretBox, make_account, nt_hash
from nac.eap import avp, mschap, packet
from nac.eap.config import EapConfig
from nac.eap.methods.base import Method, MethodEnv, Outcome, Step
from nac.eap.service import EapResult, EapService, NasInfo
from nac.eap.tls_engine import Framer
from nac.pki import init_pki, issue_client

NAS = NasInfo(address="127.0.0.1", group=None, vendor="generic", calling_station_id=None,
              nas_port_id=None)
PASSWORD = "demo-password"
POSTURE_TYPE = 38  # EAP-TNC's type; the fake posture method below borrows it


class FakePosture(Method):
    """Stands in for the EAP-TNC method: one round trip, reports what the peer said."""

    name = "tnc"
    type = POSTURE_TYPE

    def start(self, ident: int) -> bytes:
        return b"report?"

    def process(self, ident: int, data: bytes) -> Step:
        self.posture = {"report": data.decode()}
        return Step("success")


def fake_posture(env: MethodEnv, outcome: Outcome) -> Method | None:
    return FakePosture(env)


@dataclass
class Lab:
    """A PKI, a demo account and a service factory, under one directory."""

    root: Path
    box: SecretBox = field(init=False)

    def __post_init__(self) -> None:
        self.pki = init_pki(self.root, force=True)
        self.client_cert, self.client_key, _ = issue_client(self.root, "demo", self.root / "cl")
        self.box = SecretBox(self.root / "keys" / "accounts.key")
        self.accounts = {"demo": make_account("demo", PASSWORD, allow_md5=True, box=self.box)}

    def config(self, **kw: object) -> EapConfig:
        base: dict[str, object] = dict(cert_file=self.pki.server_cert,
                                       key_file=self.pki.server_key, ca_file=self.pki.ca_cert,
                                       crl_file=self.pki.crl)
        base.update(kw)
        return EapConfig.model_validate(base)

    def service(self, **kw: object) -> EapService:
        return EapService(self.config(**kw), self.accounts.get, self.box)


def identity(ident: int, name: str) -> bytes:
    return packet.EapPacket(packet.RESPONSE, ident, packet.IDENTITY, name.encode()).encode()


def response(ident: int, type_: int, data: bytes) -> bytes:
    return packet.EapPacket(packet.RESPONSE, ident, type_, data).encode()


class Conversation:
    """Feeds one peer's responses to the service, tracking State and identifiers."""

    def __init__(self, service: EapService, now: float = 1000.0, nas: NasInfo = NAS) -> None:
        self.service = service
        self.nas = nas
        self.state: bytes | None = None
        self.now = now
        self.rounds = 0

    def send(self, raw: bytes) -> EapResult:
        self.rounds += 1
        res = self.service.handle(state=self.state, eap=raw, nas=self.nas, now=self.now)
        if res.action == "challenge":
            self.state = res.state
        return res


def nak(ident: int, *types: int) -> bytes:
    return response(ident, packet.NAK, bytes(types))


def mschapv2_response(req: bytes, name: str, password: str) -> tuple[bytes, bytes]:
    """The peer's MSCHAPv2 Response type-data for a Challenge; also the NT-Response."""
    ms_id = req[1]
    challenge = req[5:21]
    peer_challenge = os.urandom(16)
    nt = mschap.nt_response(challenge, peer_challenge, name,
                            nt_hash(password))
    value = peer_challenge + b"\x00" * 8 + nt + b"\x00"
    body = bytes([49]) + value + name.encode()
    return struct.pack("!BBH", 2, ms_id, 4 + len(body)) + body, nt


class TlsPeer:
    """Client side of EAP-TLS/PEAP/TTLS: pyOpenSSL over memory BIOs plus EAP-TLS framing."""

    def __init__(self, lab: Lab, method: str, *, version: str = "1.3", fragment: int = 1020,
                 cert: bool | tuple[Path, Path] = False, inner: str = "pap",
                 password: str = PASSWORD, resume: TlsPeer | None = None) -> None:
        ctx = resume.ctx if resume else SSL.Context(SSL.TLS_CLIENT_METHOD)
        v = SSL.TLS1_3_VERSION if version == "1.3" else SSL.TLS1_2_VERSION
        if resume is None:
            ctx.set_min_proto_version(v)
            ctx.set_max_proto_version(v)
            ctx.load_verify_locations(str(lab.pki.ca_cert))
            ctx.set_verify(SSL.VERIFY_PEER, lambda *a: a[-1])
            if cert:
                cert_file, key_file = cert if isinstance(cert, tuple) else (
                    lab.client_cert, lab.client_key)
                ctx.use_certificate_file(str(cert_file))
                ctx.use_privatekey_file(str(key_file))
        self.ctx = ctx
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_connect_state()
        if resume is not None:  # offer the previous session (ticket or id) again
            self.conn.set_session(resume.conn.get_session())
        self.method = method
        self.type = {"tls": packet.TLS, "peap": packet.PEAP, "ttls": packet.TTLS}[method]
        self.framer = Framer(fragment)
        self.inner = inner
        self.password = password
        self.established = False
        self.inner_done = False
        self.app_seen: list[bytes] = []
        self.posture_nak = False
        self.posture_abandon = False

    def _out(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self.conn.bio_read(65536))
            except SSL.WantReadError:
                return b"".join(chunks)

    def _handshake(self) -> None:
        if self.established:
            return
        try:
            self.conn.do_handshake()
            self.established = True
            if self.method == "ttls" and not self.resumed():  # RFC 5281 8: may skip
                self.conn.sendall(self._ttls_phase2())
        except SSL.WantReadError:
            pass

    def resumed(self) -> bool:
        from OpenSSL._util import lib

        return bool(lib.SSL_session_reused(self.conn._ssl))

    def _ttls_phase2(self) -> bytes:
        name = avp.Avp(avp.USER_NAME, b"demo").encode()
        if self.inner == "pap":
            pw = self.password.encode()
            pw += b"\x00" * (-len(pw) % 16)
            return name + avp.Avp(avp.USER_PASSWORD, pw).encode()
        # TTLS/MSCHAPv2: the challenge comes from the tunnel (RFC 5281 11.2.4).
        implicit = self.conn.export_keying_material(b"ttls challenge", 17)
        chal, ident = implicit[:16], implicit[16]
        peer_chal = os.urandom(16)
        pw_hash = nt_hash(self.password)
        nt = mschap.nt_response(chal, peer_chal, "demo", pw_hash)
        resp = bytes([ident, 0]) + peer_chal + b"\x00" * 8 + nt
        return (name + avp.Avp(avp.MS_CHAP_CHALLENGE, chal, avp.MICROSOFT).encode()
                + avp.Avp(avp.MS_CHAP2_RESPONSE, resp, avp.MICROSOFT).encode())

    def _app(self) -> bytes:
        """Answer whatever arrived inside the tunnel; returns plaintext to send back."""
        try:
            data = self.conn.recv(65536)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            return b""
        self.app_seen.append(data)
        if self.method == "ttls":
            eap = b"".join(a.value for a in avp.parse(data) if a.code == avp.EAP_MESSAGE)
            if eap and eap[4] == POSTURE_TYPE:
                return avp.Avp(avp.EAP_MESSAGE, self._posture(packet.parse(eap))).encode()
            return b""
        if self.method != "peap":
            return b""
        if data[:1] == bytes([POSTURE_TYPE]):
            hdr = struct.pack("!BBH", packet.REQUEST, 0, 4 + len(data))
            return self._posture(packet.parse(hdr + data))[4:]
        if len(data) >= 5 and data[0] == packet.REQUEST and data[4] == packet.TLV:
            # Result TLV: confirm with the same status (full header, PEAPv0 rule for TLV).
            return packet.EapPacket(packet.RESPONSE, data[1], packet.TLV, data[5:]).encode()
        if len(data) >= 5 and data[0] == packet.REQUEST and int.from_bytes(data[2:4],
                                                                          "big") == len(data):
            # A request with its full EAP header (the first inner request rides that way
            # with Finished): what follows the header is the method; Request's code 1 is
            # also Identity's type 1, so it must not be read as one.
            data = data[4:]
        if data[:1] == bytes([packet.IDENTITY]):
            return bytes([packet.IDENTITY]) + b"demo"
        if data[:1] == bytes([packet.MSCHAPV2]):
            op = data[1]
            if op == 1:
                body, _ = mschapv2_response(data[1:], "demo", self.password)
                return bytes([packet.MSCHAPV2]) + body
            return bytes([packet.MSCHAPV2, op])  # ack Success (3) or Failure (4)
        return b""

    def _posture(self, req: packet.EapPacket) -> bytes:
        if self.posture_abandon:
            raise Abandon
        if self.posture_nak:
            return response(req.identifier, packet.NAK, bytes([packet.MSCHAPV2]))
        return response(req.identifier, POSTURE_TYPE, b"firewall=on")

    def respond(self, req_data: bytes) -> bytes:
        """Type-data of our Response to a Request's type-data."""
        if req_data and req_data[0] & 0x20:  # Start
            self._handshake()
            self.framer.queue(self._out())
            return self.framer.next_fragment()
        frame = self.framer.receive(req_data)
        if frame.kind == "partial":
            return self.framer.ack()
        if frame.kind == "ack":
            if self.framer.sending:
                return self.framer.next_fragment()
            if self.established and self.method == "ttls":
                return self.framer.ack()
            return self.framer.ack()
        assert frame.kind == "message", frame
        self.conn.bio_write(frame.data)
        self._handshake()
        if self.established:
            reply = self._app()
            while reply:
                self.conn.sendall(reply)
                reply = self._app()
        out = self._out()
        if not out:
            return self.framer.ack()
        self.framer.queue(out)
        return self.framer.next_fragment()


class Abandon(Exception):
    """The peer gives up silently (as wpa_supplicant's TTLS does without TNC configured)."""


def run_tls(lab: Lab, service: EapService, peer: TlsPeer, name: str = "anonymous",
            nas: NasInfo = NAS, now: float = 1000.0) -> tuple[EapResult, Conversation]:
    conv = Conversation(service, now, nas)
    res = conv.send(identity(7, name))
    for _ in range(500):
        if res.action != "challenge":
            return res, conv
        req = packet.parse(res.eap or b"")
        if req.type != peer.type:  # the default proposal differs: NAK to ours
            res = conv.send(nak(req.identifier, peer.type))
            continue
        res = conv.send(response(req.identifier, peer.type, peer.respond(req.data)))
    raise AssertionError("conversation did not end")
