"""EAP-TNC (type 38) as the posture method inside PEAP/TTLS, after the account is
authenticated (draft 5.3, 8.1.3): the host's IMC reports its posture, our IMV evaluates it.

The codecs and the TNCCS state machines are eap_ext/tnc's, shared with the agent; this
module adapts them to the method interface. Posture is accepted only here, inside a tunnel
that authenticated `outcome.identity`, and the IMV is bound to that identity (draft 9.2).
A peer that NAKs EAP-TNC (no agent, or PEAP clients) is handled by InnerEap: unknown
posture, so the policy keeps it in quarantine (draft 5.4.2).

Re-inspection (draft 5.3 step 3), with digest_first: the certificates we issue say so, and
an agent holding one leads with a digest-only document (certificate + digest of its current
posture, no inventory). The judge sees it first; if its verdict rests on the certificate (it
returns no new certificate) that verdict stands and the inventory never crosses the tunnel.
Otherwise (certificate refused, expired, feeds or policy changed, posture changed) the IMV
asks for the whole posture and the judge decides on that. The method's posture is then the
digest-only document: whoever stores postures for re-evaluation must keep the last whole
one (digest_only documents carry no section). Without digest_first agents send the whole
posture with their certificate, and a digest-only document is always answered with a
request for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eap_ext.tnc.eap_method import EapTncServer
from eap_ext.tnc.posture_attrs import is_digest_only
from eap_ext.tnc.session import ImvSession
from nac.eap.methods.base import Method, MethodEnv, Outcome, Step, fail, request

EAP_TNC = 38
# Our EAP-TNC messages go unfragmented: inside the tunnel the TTLS/PEAP layer already cuts
# its records to the link's fragment_size, and an EAP-TNC fragment of that size does not fit
# one TTLS fragment once wrapped (AVP + TLS record), so it cost three round trips where the
# TTLS fragments alone cost two (the ~1.5 KB result with a certificate). One TLS record.
INNER_FRAGMENT = 8192

# (posture document, authenticated outcome) ->
#   (recommendation "allow"|"isolate"|"none", assessment 0-4, remediation, certificate).
# The certificate is None exactly when the verdict rests on the quarantine certificate the
# host presented (nothing new to certify); a fresh evaluation comes with a new one.
Verdict = tuple[str, int, list[str], "bytes | None"]
PostureJudge = Callable[[dict[str, Any], Outcome], Verdict]


class TncMethod(Method):
    name = "tnc"
    type = EAP_TNC

    def __init__(self, env: MethodEnv, outcome: Outcome, judge: PostureJudge, *,
                 digest_first: bool = False) -> None:
        super().__init__(env)
        self.outcome = outcome
        self.judge = judge
        self.digest_first = digest_first
        self._certified: Verdict | None = None  # the verdict a certificate carried
        imv = ImvSession(self._evaluate, identity=outcome.identity,
                         want_full_posture=self._want_full_posture, digest_first=digest_first)
        self.server = EapTncServer(imv, max_fragment=INNER_FRAGMENT)

    def _want_full_posture(self, doc: dict[str, Any]) -> bool:
        if not is_digest_only(doc):
            return False
        if not self.digest_first:
            return True
        verdict = self.judge(doc, self.outcome)
        if verdict[3] is None:
            self._certified = verdict
            return False
        return True  # not relied on: ask for the inventory and judge that

    def _evaluate(self, doc: dict[str, Any], _identity: str | None) -> Verdict:
        if is_digest_only(doc):
            # still digest-only after our request: no inventory, nothing to certify
            return self._certified or ("none", 3, [], None)
        return self.judge(doc, self.outcome)

    def start(self, ident: int) -> bytes:
        return self.server.start()

    def process(self, ident: int, data: bytes) -> Step:
        st = self.server.process(data)
        if st.kind == "request":
            return request(st.data)
        doc = self.server.imv.document
        if st.kind == "success" and doc is not None:
            if is_digest_only(doc) and self._certified is None:
                return fail("digest-only posture without a certificate the server relies on")
            self.posture = doc
            return Step("success", outcome=self.outcome)
        return fail(st.reason or "posture handshake failed")


def tnc_posture(judge: PostureJudge, *, digest_first: bool = False
                ) -> Callable[[MethodEnv, Outcome], Method | None]:
    """A PostureFactory for EapService: run EAP-TNC after every tunnel authentication."""

    def factory(env: MethodEnv, outcome: Outcome) -> Method | None:
        return TncMethod(env, outcome, judge, digest_first=digest_first)

    return factory
