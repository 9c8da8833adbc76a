"""EAP-TTLSv0 (RFC 5281; RFC 9427 for TLS 1.3) with inner PAP, MSCHAPv2 (AVPs) or
EAP-MSCHAPv2 (EAP-Message AVPs). The client speaks first inside the tunnel."""

from __future__ import annotations

from nac.accounts import Account
from nac.eap import avp, mschap, packet
from nac.eap.inner import InnerEap
from nac.eap.methods.base import MethodEnv, Outcome, Slow, Step, account_permits, fail, request
from nac.eap.methods.tlsbase import TlsMethodBase

MAX_PROMPTS = 3  # empty requests sent to nudge a quiet peer into phase 2


class TtlsMethod(TlsMethodBase):
    name = "ttls"
    type = packet.TTLS
    tls_name = "ttls"
    framer_version = 0

    def __init__(self, env: MethodEnv) -> None:
        super().__init__(env)
        self.inner: InnerEap | None = None
        self.iid = 0
        self.prompts = 0
        self.pending: Outcome | None = None  # MSCHAPv2: success once the peer acks
        self.resumed: Outcome | None = None  # phase 2 skipped: success once the peer acks
        self.decided: Step | None = None  # what follows MS-CHAP2-Success, already decided

    def on_established(self, flight_pending: bool) -> Step | bytes | None:
        if not self.tls.resumed:
            return None
        # RFC 5281 8: a peer resuming a session may skip phase 2; take the earlier result.
        hit = self.resumed_identity()
        if hit is None:
            return fail("TTLS: resumed a session whose phase 2 result is unknown")
        identity, method = hit
        account, why = self._account(identity, method)
        if account is None:
            return fail(why)
        self.resumed = Outcome(account.name, account.role, method, self.msk)
        if flight_pending:
            return None
        # The account is known from the earlier session, the posture is not: the posture
        # method (if any) runs again, as after a full phase 2.
        outcome, self.resumed = self.resumed, None
        return self._authenticated(outcome)

    def on_idle(self) -> Step:
        if not self.tls.established or self.prompts >= MAX_PROMPTS:
            return fail("TTLS: handshake stalled")
        self.prompts += 1
        return request(self.framer.ack())

    def on_flight_acked(self) -> Step:
        if self.resumed is not None:
            outcome, self.resumed = self.resumed, None
            result = self._authenticated(outcome)
            return self.send_app(result) if isinstance(result, bytes) else result
        if self.pending is not None:
            return self._after_mschapv2(send_now=True)
        return self.on_idle()

    def _after_mschapv2(self, send_now: bool) -> Step:
        outcome, self.pending = self.pending, None
        assert outcome is not None
        result = self._authenticated(outcome)
        if send_now and isinstance(result, bytes):
            return self.send_app(result)
        assert isinstance(result, Step)
        return result

    def _authenticated(self, outcome: Outcome) -> Step | bytes:
        """Inner authentication done: success, or the posture method's first request."""
        if self.decided is not None:
            step, self.decided = self.decided, None
            return step
        self.inner = self.inner or InnerEap(self.env, "ttls")
        self.iid = (self.iid + 1) & 0xFF
        step = self.inner.authenticated(self.iid, outcome)
        if step.kind == "request":
            return avp.Avp(avp.EAP_MESSAGE, step.data).encode()
        return step

    def on_app(self, plain: bytes) -> Step | bytes | Slow | None:
        if self.pending is not None:  # the peer acknowledged MS-CHAP2-Success with data
            outcome, self.pending = self.pending, None
            return self._authenticated(outcome)
        try:
            avps = avp.parse(plain)
        except avp.AvpError as exc:
            return fail(f"TTLS: {exc}")
        eap_parts = [a.value for a in avps if a.code == avp.EAP_MESSAGE and not a.vendor]
        if eap_parts:
            return self._eap(b"".join(eap_parts))
        user = avp.find(avps, avp.USER_NAME)
        if user is None:
            return fail("TTLS: no User-Name in phase 2")
        name = user.decode("utf-8", "replace")
        password = avp.find(avps, avp.USER_PASSWORD)
        if password is not None:
            return self._pap(name, password)
        challenge = avp.find(avps, avp.MS_CHAP_CHALLENGE, avp.MICROSOFT)
        response = avp.find(avps, avp.MS_CHAP2_RESPONSE, avp.MICROSOFT)
        if challenge is not None and response is not None:
            return self._mschapv2(name, challenge, response)
        return fail("TTLS: unsupported phase 2 attributes")

    def _account(self, name: str, method: str) -> tuple[Account | None, str]:
        if not self.env.inner_allowed(method):
            return None, f"{method} is not allowed"
        account = self.env.lookup(name)
        if account is None:
            return None, f"{method}: unknown user"
        if not account_permits(account, method):
            return None, f"{method}: method not allowed for account"
        return account, ""

    def _pap(self, name: str, password: bytes) -> Step | bytes | Slow:
        account, why = self._account(name, "ttls/pap")
        if account is None:
            return fail(why)
        # RFC 5281 11.2.5: the password is NUL-padded to a multiple of 16 octets.
        plain = password.rstrip(b"\x00").decode("utf-8", "replace")
        verdict = self.env.check_password(account, plain)
        if isinstance(verdict, Slow):  # the hash runs elsewhere; continue with its verdict
            return Slow(verdict.work,
                        lambda result: self._pap_checked(account, verdict.resume(result)))
        return self._pap_checked(account, verdict)

    def _pap_checked(self, account: Account, ok: bool) -> Step | bytes:
        if not ok:
            return fail("ttls/pap: wrong password")
        return self._authenticated(Outcome(account.name, account.role, "ttls/pap", self.msk))

    def _mschapv2(self, name: str, challenge: bytes, response: bytes) -> Step | bytes:
        account, why = self._account(name, "ttls/mschapv2")
        if account is None:
            return fail(why)
        # RFC 5281 11.2.4: challenge and ident come from the tunnel, not from the peer.
        implicit = self.tls.export(b"ttls challenge", 17)
        if challenge != implicit[:16] or len(response) != 50 or response[0] != implicit[16]:
            return fail("ttls/mschapv2: challenge does not match the tunnel")
        if account.nt_hash is None:
            return fail("ttls/mschapv2: account has no NT hash")
        peer_challenge, nt_resp = response[2:18], response[26:50]
        if not mschap.verify_nt_response(challenge, peer_challenge, name, account.nt_hash, nt_resp):
            return fail("ttls/mschapv2: wrong password")
        auth = mschap.authenticator_response(
            account.nt_hash, nt_resp, peer_challenge, challenge, name
        )
        value = bytes([response[0]]) + auth.encode()
        success = avp.Avp(avp.MS_CHAP2_SUCCESS, value, avp.MICROSOFT).encode()
        outcome = Outcome(account.name, account.role, "ttls/mschapv2", self.msk)
        if self.env.posture is not None:
            # The posture method's first request rides with MS-CHAP2-Success: one round trip
            # fewer (wpa_supplicant's eap_ttls.c starts EAP-TNC from that same message).
            follow = self._authenticated(outcome)
            if isinstance(follow, bytes):
                return success + follow
            if follow.kind != "success":
                return follow
            self.decided = follow  # no posture for this station: succeed on the ack
        # EAP-Success only after the peer has checked MS-CHAP2-Success (it acks it).
        self.pending = outcome
        return success

    def _eap(self, raw: bytes) -> Step | bytes:
        try:
            pkt = packet.parse(raw)
        except packet.EapError as exc:
            return fail(f"TTLS: bad inner EAP: {exc}")
        if self.inner is None:
            self.inner = InnerEap(self.env, "ttls")
        self.iid = (self.iid + 1) & 0xFF
        step = self.inner.process(self.iid, pkt)
        if step.kind == "request":
            return avp.Avp(avp.EAP_MESSAGE, step.data).encode()
        if step.kind == "failure":
            return step
        assert step.outcome is not None
        return Step("success", outcome=step.outcome.with_msk(self.msk))
