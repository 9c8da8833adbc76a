"""EAP-MSCHAPv2 (draft-kamath-pppext-eap-mschapv2-02) with RFC 2759 authentication and
RFC 3079 keys. Used alone and as the inner method of PEAP and TTLS."""

from __future__ import annotations

import os
import struct

from nac.eap import mschap, packet
from nac.eap.methods.base import Method, MethodEnv, Outcome, Step, account_permits, fail

CHALLENGE, RESPONSE, SUCCESS, FAILURE = 1, 2, 3, 4


def _msg(opcode: int, ms_id: int, body: bytes) -> bytes:
    # MS-Length covers the whole MSCHAPv2 packet from OpCode on.
    return struct.pack("!BBH", opcode, ms_id, 4 + len(body)) + body


class MschapV2Method(Method):
    name = "mschapv2"
    type = packet.MSCHAPV2

    def __init__(self, env: MethodEnv, *, full_name: str = "mschapv2",
                 identity_from_name: bool = False) -> None:
        super().__init__(env)
        self.full_name = full_name
        # Inside PEAP without an inner Identity round: the Response's Name is the identity
        # whose account is looked up, checked and authenticated.
        self.identity_from_name = identity_from_name
        self._state = "challenge"
        self._outcome: Outcome | None = None
        self._failure = ""

    def start(self, ident: int) -> bytes:
        self._challenge = os.urandom(16)
        self._ms_id = ident
        body = bytes([16]) + self._challenge + self.env.config.server_name.encode()
        return _msg(CHALLENGE, ident, body)

    def process(self, ident: int, data: bytes) -> Step:
        if not data:
            return fail("EAP-MSCHAPv2: empty response")
        op = data[0]
        if self._state == "challenge":
            if op != RESPONSE:
                return fail(f"EAP-MSCHAPv2: expected Response, got opcode {op}")
            return self._check(ident, data)
        if self._state == "success" and op == SUCCESS and self._outcome:
            return Step("success", outcome=self._outcome)
        if self._state == "failure" and op == FAILURE:
            return fail(self._failure)
        return fail(f"EAP-MSCHAPv2: unexpected opcode {op} in state {self._state}")

    def _check(self, ident: int, data: bytes) -> Step:
        # OpCode, MS-CHAPv2-ID, MS-Length(2), Value-Size(1)=49, Value(49), Name
        if len(data) < 5 + 49 or data[4] != 49:
            return fail("EAP-MSCHAPv2: malformed Response")
        value = data[5:54]
        peer_challenge, nt_resp = value[:16], value[24:48]
        name = data[54:].decode("utf-8", "replace")
        identity = name if self.identity_from_name else self.env.identity
        account = self.env.lookup(identity)
        if account is None or account.nt_hash is None:
            return self._fail(ident, "EAP-MSCHAPv2: unknown user or no NT hash")
        if not account_permits(account, self.full_name):
            return self._fail(ident, "EAP-MSCHAPv2: method not allowed for account")
        ph = account.nt_hash
        if not mschap.verify_nt_response(self._challenge, peer_challenge, name, ph, nt_resp):
            return self._fail(ident, "EAP-MSCHAPv2: wrong password")
        auth = mschap.authenticator_response(ph, nt_resp, peer_challenge, self._challenge, name)
        recv, send = mschap.server_keys(ph, nt_resp)
        self.isk = recv + send  # 32 octets: what a tunnel would bind (MSK of this method)
        self._outcome = Outcome(account.name, account.role, self.full_name, _msk(recv, send))
        self._state = "success"
        return Step("request", _msg(SUCCESS, self._ms_id, f"{auth} M=OK".encode()))

    def _fail(self, ident: int, reason: str) -> Step:
        self._state, self._failure = "failure", reason
        # E=691 authentication failure, R=0 no retry, V=3 MSCHAPv2.
        text = f"E=691 R=0 C={'0' * 32} V=3 M=Authentication failed"
        return Step("request", _msg(FAILURE, self._ms_id, text.encode()))


def _msk(recv: bytes, send: bytes) -> bytes:
    """Standalone EAP-MSCHAPv2 has a 32-octet MSK (recv|send, as hostapd and wpa_supplicant
    do); laid out so MSK[0:32] becomes MS-MPPE-Recv-Key, the peer's 32-octet PMK."""
    return recv + send + b"\x00" * 32
