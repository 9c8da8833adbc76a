"""EAP-TNC (type 38) as the posture method inside PEAP/TTLS, after the account is
authenticated (draft 5.3, 8.1.3): the host's IMC reports its posture, our IMV evaluates it.

The codecs and the TNCCS state machines are eap_ext/tnc's, shared with the agent; this
module adapts them to the method interface. Posture is accepted only here, inside a tunnel
that authenticated `outcome.identity`, and the IMV is bound to that identity (draft 9.2).
A peer that NAKs EAP-TNC (no agent, or PEAP clients) is handled by InnerEap: unknown
posture, so the policy keeps it in quarantine (draft 5.4.2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eap_ext.tnc.eap_method import EapTncServer
from eap_ext.tnc.session import ImvSession
from nac.eap.methods.base import Method, MethodEnv, Outcome, Step, fail, request

EAP_TNC = 38

# (posture document, authenticated outcome) ->
#   (recommendation "allow"|"isolate"|"none", assessment 0-4, remediation, certificate)
PostureJudge = Callable[[dict[str, Any], Outcome], "tuple[str, int, list[str], bytes | None]"]


class TncMethod(Method):
    name = "tnc"
    type = EAP_TNC

    def __init__(self, env: MethodEnv, outcome: Outcome, judge: PostureJudge) -> None:
        super().__init__(env)
        self.outcome = outcome
        imv = ImvSession(lambda doc, _identity: judge(doc, outcome), identity=outcome.identity)
        self.server = EapTncServer(imv, max_fragment=max(200, env.config.fragment_size - 20))

    def start(self, ident: int) -> bytes:
        return self.server.start()

    def process(self, ident: int, data: bytes) -> Step:
        st = self.server.process(data)
        if st.kind == "request":
            return request(st.data)
        doc = self.server.imv.document
        if st.kind == "success" and doc is not None:
            self.posture = doc
            return Step("success", outcome=self.outcome)
        return fail(st.reason or "posture handshake failed")


def tnc_posture(judge: PostureJudge) -> Callable[[MethodEnv, Outcome], Method | None]:
    """A PostureFactory for EapService: run EAP-TNC after every tunnel authentication."""

    def factory(env: MethodEnv, outcome: Outcome) -> Method | None:
        return TncMethod(env, outcome, judge)

    return factory
