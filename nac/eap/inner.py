"""A small EAP server run inside a PEAP or TTLS tunnel: inner Identity, then the
authentication method, then (optionally) a posture method such as EAP-TNC.

The tunnel authenticates the inner identity, so the account is looked up by that name and
the outer (often anonymous) identity is ignored. PEAP may skip the inner Identity
(start_method): the MSCHAPv2 Response's Name is then the identity looked up and
authenticated; a peer that NAKs that first Challenge is asked for its Identity instead."""

from __future__ import annotations

from dataclasses import replace

from nac.eap import packet
from nac.eap.methods.base import Method, MethodEnv, Outcome, Step, fail, request
from nac.eap.methods.mschapv2 import MschapV2Method


class InnerEap:
    def __init__(self, env: MethodEnv, outer: str) -> None:
        self.env = env
        self.outer = outer
        self.identity: str | None = None
        self.method: Method | None = None
        self.auth: Outcome | None = None  # set once authentication succeeded
        # The posture method's first request is out and unanswered: a peer that silently
        # gives up here (wpa_supplicant TTLS without TNC configuration) has no agent.
        self.awaiting_posture = False

    def start(self, ident: int) -> bytes:
        """The full inner EAP-Request/Identity packet."""
        return packet.request(ident, packet.IDENTITY)

    def start_method(self, ident: int) -> bytes | None:
        """The full inner MSCHAPv2 Challenge, sent without asking the inner Identity first;
        None when the method is not allowed (then ask the Identity, as start() does)."""
        full = f"{self.outer}/mschapv2" if self.outer == "peap" else "ttls/eap-mschapv2"
        if not self.env.inner_allowed(full):
            return None
        self.method = MschapV2Method(self.env, full_name=full, identity_from_name=True)
        return packet.request(ident, self.method.type, self.method.start(ident))

    def authenticated(self, ident: int, outcome: Outcome) -> Step:
        """Authentication is done (by an inner EAP method or by TTLS AVPs): run the posture
        method if there is one; a "request" Step carries its first full inner packet."""
        self.auth = outcome
        method = self.env.posture(self.env, outcome) if self.env.posture else None
        if method is None:
            return Step("success", outcome=outcome)
        self.method = method
        self.awaiting_posture = True
        return request(packet.request(ident, method.type, method.start(ident)))

    def process(self, ident: int, pkt: packet.EapPacket) -> Step:
        """Handle an inner Response; a "request" Step carries the full next inner packet,
        sent with identifier `ident`."""
        if pkt.code != packet.RESPONSE:
            return fail(f"{self.outer}: inner packet is not a Response")
        self.awaiting_posture = False
        if self.method is None:
            if pkt.type != packet.IDENTITY:
                return fail(f"{self.outer}: expected inner Identity")
            self.identity = pkt.data.decode("utf-8", "replace").strip("\x00")
            full = f"{self.outer}/mschapv2" if self.outer == "peap" else "ttls/eap-mschapv2"
            if not self.env.inner_allowed(full):
                return fail(f"{full} is not allowed")
            self.method = MschapV2Method(self.env.with_identity(self.identity),
                                         full_name=full)
            return request(packet.request(ident, self.method.type, self.method.start(ident)))
        if pkt.type == packet.NAK:
            if self.auth is not None:  # the peer has no posture agent: unknown posture
                return Step("success", outcome=self.auth)
            if self.identity is None:
                # Refused the Challenge we sent without an inner Identity (start_method):
                # perhaps it wants the Identity asked first. Start over as usual.
                self.method = None
                return request(self.start(ident))
            return fail(f"{self.outer}: peer refused inner {self.method.name}")
        if pkt.type != self.method.type:
            return fail(f"{self.outer}: inner type {pkt.type} does not answer the request")
        step = self.method.process(ident, pkt.data)
        if step.kind == "request":
            return request(packet.request(ident, self.method.type, step.data))
        if self.auth is None:
            if step.kind == "success" and step.outcome is not None:
                return self.authenticated(ident, step.outcome)
            return step
        # The posture method ended: a failed inspection is unknown posture, not a reject.
        return Step("success", outcome=replace(self.auth, posture=self.method.posture))
