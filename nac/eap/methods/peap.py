"""PEAPv0 (draft-kamath-pppext-peapv0) with EAP-MSCHAPv2 inside.

Inner packets travel without their 4-octet EAP header, except EAP-TLV (type 33), which the
server uses to report the result (Result TLV) before the outer EAP-Success. Crypto binding is
optional for wpa_supplicant and not offered, so the MSK is the TLS key material.

Statement of Health (nac/eap/soh.py): when the posture method was offered after the inner
authentication and the peer NAKed it (no EAP-TNC agent), the server asks for an SoH
([MS-PEAP] SoH EAP Extensions Method); an answer becomes the posture the policy judges and
gets its SoH Response with the Result TLV. A NAK, a bare acknowledgement or a malformed SoH
leaves the posture unknown, as without SoH (EapConfig.peap_soh, off by default: a peer
without SoH pays a round trip for its NAK)."""

from __future__ import annotations

import logging
import struct

from nac.eap import packet, soh
from nac.eap.inner import InnerEap
from nac.eap.methods.base import MethodEnv, Outcome, Step, account_permits, fail
from nac.eap.methods.tlsbase import TlsMethodBase

log = logging.getLogger(__name__)

RESULT_TLV = 3
RESULT_SUCCESS, RESULT_FAILURE = 1, 2


def result_tlv(ident: int, status: int, extra: bytes = b"") -> bytes:
    # Mandatory bit | Result TLV, length 2, status; `extra`: further TLVs (SoH Response).
    return packet.request(ident, packet.TLV,
                          struct.pack("!HHH", 0x8000 | RESULT_TLV, 2, status) + extra)


def parse_result(data: bytes) -> int | None:
    pos = 0
    while pos + 4 <= len(data):
        tlv_type, length = struct.unpack_from("!HH", data, pos)
        value = data[pos + 4 : pos + 4 + length]
        if tlv_type & 0x3FFF == RESULT_TLV and len(value) == 2:
            return int(struct.unpack("!H", value)[0])
        pos += 4 + length
    return None


class PeapMethod(TlsMethodBase):
    name = "peap"
    type = packet.PEAP
    tls_name = "peap"
    framer_version = 0

    def __init__(self, env: MethodEnv) -> None:
        super().__init__(env)
        self.phase = "handshake"
        self.inner = InnerEap(env, "peap")
        self.iid = 0
        self.outcome: Outcome | None = None

    def _next_id(self) -> int:
        self.iid = (self.iid + 1) & 0xFF
        return self.iid

    def _first_inner(self, full: bool = False) -> bytes:
        self.phase = "inner"
        ident = self._next_id()
        packet_ = None
        if self.env.config.peap_skip_inner_identity:
            # The MSCHAPv2 Challenge at once: the Response's Name is the inner identity.
            packet_ = self.inner.start_method(ident)
        if packet_ is None:
            packet_ = self.inner.start(ident)
        return packet_ if full else packet_[4:]

    def on_established(self, flight_pending: bool) -> Step | bytes | None:
        if self.tls.resumed and self.env.config.peap_fast_reconnect:
            quick = self._fast_reconnect()
            if quick is not None:
                return quick
        if flight_pending and self.tls.version == "1.2" and not self.env.config.peap_fast_start:
            # Let the peer take our Finished first; inner traffic starts after its ACK.
            self.phase = "wait_ack"
            return None
        # TLS 1.2 with peap_fast_start: the inner Identity request rides behind our Finished
        # (as TLS 1.3 does anyway), saving the round trip that only acknowledges Finished.
        # wpa_supplicant reads data that arrives with Finished only with its EAP header
        # (FreeRADIUS sends the Identity request that way; PEAPv0 peers take either form).
        return self._first_inner(full=flight_pending and self.tls.version == "1.2")

    def _fast_reconnect(self) -> Step | bytes | None:
        """The peer resumed a session whose inner authentication we remember: the Result
        TLV straight away, no inner method (PEAP fast reconnect; the posture method, if any,
        still runs). None: not remembered or no longer allowed, so phase 2 runs in full."""
        hit = self.resumed_identity()
        if hit is None:
            return None
        identity, method = hit
        account = self.env.lookup(identity)
        if account is None or not account_permits(account, method) \
                or not self.env.inner_allowed(method):
            return None
        self.phase = "inner"
        step = self.inner.authenticated(self._next_id(),
                                        Outcome(account.name, account.role, method, self.msk))
        if step.kind == "request":  # the posture method's first packet
            return step.data[4:]
        if step.kind != "success" or step.outcome is None:
            return step
        self.outcome = step.outcome
        self.phase = "result"
        return result_tlv(self._next_id(), RESULT_SUCCESS)

    def on_flight_acked(self) -> Step:
        if self.phase == "wait_ack":
            return self.send_app(self._first_inner())
        if self.phase == "soh":  # acknowledged, not answered: no SoH, as a NAK says
            return self.send_app(self._soh(None))
        return fail("PEAP: unexpected acknowledgement")

    @property
    def awaiting_posture(self) -> bool:
        # The SoH request counts as the posture method's: a peer that gives up there (fails
        # instead of NAKing) gets the service's fallback to no posture, as for EAP-TNC.
        return self.phase == "soh" or super().awaiting_posture

    def on_app(self, plain: bytes) -> Step | bytes | None:
        if self.phase == "inner":
            return self._inner(plain)
        if self.phase == "soh":
            return self._soh(plain)
        if self.phase == "result":
            try:
                pkt = packet.parse(plain)
            except packet.EapError as exc:
                return fail(f"PEAP: bad Result TLV response: {exc}")
            if pkt.type != packet.TLV or parse_result(pkt.data) != RESULT_SUCCESS:
                return fail("PEAP: peer did not confirm success")
            assert self.outcome is not None
            return Step("success", outcome=self.outcome)
        return fail(f"PEAP: unexpected data in phase {self.phase}")

    def _inner(self, plain: bytes) -> Step | bytes | None:
        full = len(plain) >= 5 and plain[0] == packet.RESPONSE and plain[4] == packet.TLV
        raw = (
            plain
            if full
            else struct.pack("!BBH", packet.RESPONSE, self.iid, 4 + len(plain)) + plain
        )
        try:
            pkt = packet.parse(raw)
        except packet.EapError as exc:
            return fail(f"PEAP: bad inner packet: {exc}")
        step = self.inner.process(self._next_id(), pkt)
        if step.kind == "request":
            return step.data[4:]
        if step.kind == "failure":
            return step
        o = step.outcome
        assert o is not None
        self.outcome = o.with_msk(self.msk)
        if pkt.type == packet.NAK and o.posture is None and self.env.config.peap_soh:
            # The peer refused the posture method: no agent. Ask for its SoH instead.
            self.phase = "soh"
            return soh.soh_request()
        self.phase = "result"
        return result_tlv(self._next_id(), RESULT_SUCCESS)

    def _soh(self, plain: bytes | None) -> bytes:
        """The peer's answer to the SoH request: its SoH, a NAK or (None) a bare
        acknowledgement. Only a well-formed SoH becomes the posture; the Result TLV
        follows either way (and carries our SoH Response to an SoH)."""
        assert self.outcome is not None
        data = plain or b""
        if len(data) >= 5 and data[0] == packet.RESPONSE \
                and int.from_bytes(data[2:4], "big") == len(data):
            data = data[4:]  # sent with its EAP header (wpa_supplicant does)
        extra = b""
        if plain is None or data[:1] == bytes([packet.NAK]) or soh.is_expanded_nak(data):
            log.info("PEAP %s: no Statement of Health (the peer %s the request)",
                     self.outcome.identity, "acknowledged" if plain is None else "NAKed")
        else:
            try:
                statement = soh.parse_soh(soh.parse_soh_response(data))
            except soh.SohError as exc:
                log.warning("PEAP %s: malformed Statement of Health, posture unknown: %s",
                            self.outcome.identity, exc)
            else:
                o = self.outcome
                self.outcome = Outcome(o.identity, o.role, o.method, o.msk,
                                       soh.posture_of(statement))
                extra = soh.soh_response_tlv(soh.build_sohr(statement))
        self.phase = "result"
        return result_tlv(self._next_id(), RESULT_SUCCESS, extra)
