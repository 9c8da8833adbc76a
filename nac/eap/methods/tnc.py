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

Posture memory: when the certificate is not relied on only because time, feeds or policy
moved (every feed sync does that to every host's certificate), the host's posture often has
not changed. The method keeps, per authenticated identity and stated posture digest, the
last whole posture that identity reported in its tunnel (the inventory as its deflated
compact attribute, ~7 bytes a package), and a digest-only document that names one of them is
judged on it afresh: a new evaluation and a new certificate, without the ~20 EAP round trips
of the inventory. A digest it does not know (another worker, evicted, changed posture) is
asked for as before. Only our own agent's documents, which state their digest, are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eap_ext.tnc.eap_method import EapTncServer
from eap_ext.tnc.errors import PaTncCodecError
from eap_ext.tnc.pa_tnc import VendorAttribute, VendorAttrType
from eap_ext.tnc.posture_attrs import is_digest_only
from eap_ext.tnc.session import ImvSession
from nac.eap.methods.base import Method, MethodEnv, Outcome, Step, fail, request
from nac.posture.digest import stated_digest

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
# (digest-only document, outcome) -> does the certificate it presents still hold (the judge
# would reuse it)? Lets a stale certificate skip the judge: judging a document without
# sections only evaluates and certifies what is then thrown away.
CertificateHolds = Callable[[dict[str, Any], Outcome], bool]


# Whole postures kept per worker process (see "Posture memory" above): ~10-20 kB each.
MEMORY_ENTRIES = 4096
MEMORY_BYTES = 64 << 20


class PostureMemory:
    """(identity, stated digest) -> (posture without packages, deflated compact inventory),
    bounded by entries and bytes; the least recently used go first."""

    def __init__(self, entries: int = MEMORY_ENTRIES, max_bytes: int = MEMORY_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self.size = 0
        self._items: dict[tuple[str, str], tuple[dict[str, Any], bytes]] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, identity: str, doc: dict[str, Any], attrs: list[Any]) -> None:
        """Keep `doc` if our agent's compact inventory carried its package list."""
        digest = stated_digest(doc)
        if digest is None or is_digest_only(doc):
            return
        packages = doc.get("packages")
        wire = next((a.wire for a in attrs if isinstance(a, VendorAttribute)
                     and a.kind == VendorAttrType.PACKAGES_COMPACT and a.data is packages), None)
        if wire is None:
            return
        rest = {k: v for k, v in doc.items() if k != "packages"}
        rest["certificate"] = None  # the one it held then; the next one travels anyway
        key = (identity, digest)
        self._drop(key)
        self._items[key] = (rest, wire)
        self.size += len(wire)
        while self._items and (len(self._items) > self.entries or self.size > self.max_bytes):
            self._drop(next(iter(self._items)))

    def get(self, identity: str, digest: str | None,
            vendor_id: int) -> dict[str, Any] | None:
        """The whole posture `identity` reported with this digest, rebuilt; None if unknown."""
        item = self._items.pop((identity, digest), None) if digest else None
        if item is None:
            self.misses += 1
            return None
        self._items[(identity, digest)] = item  # most recently used last
        rest, wire = item
        try:
            attr = VendorAttribute.from_wire(VendorAttrType.PACKAGES_COMPACT, wire, vendor_id)
        except PaTncCodecError:  # it decoded once: cannot happen, but never trust it
            self._drop((identity, digest))
            self.misses += 1
            return None
        self.hits += 1
        return {**rest, "packages": attr.data}

    def _drop(self, key: tuple[str, str]) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old[1])


class TncMethod(Method):
    name = "tnc"
    type = EAP_TNC

    def __init__(self, env: MethodEnv, outcome: Outcome, judge: PostureJudge, *,
                 digest_first: bool = False, memory: PostureMemory | None = None,
                 holds: CertificateHolds | None = None) -> None:
        super().__init__(env)
        self.outcome = outcome
        self.judge = judge
        self.holds = holds
        self.digest_first = digest_first
        self.memory = memory
        self._certified: Verdict | None = None  # the verdict a certificate carried
        self._remembered: dict[str, Any] | None = None  # the whole posture a digest named
        imv = ImvSession(self._evaluate, identity=outcome.identity,
                         want_full_posture=self._want_full_posture, digest_first=digest_first)
        self.server = EapTncServer(imv, max_fragment=INNER_FRAGMENT)

    def _want_full_posture(self, doc: dict[str, Any]) -> bool:
        if not is_digest_only(doc):
            return False
        if not self.digest_first:
            return True
        if self.holds is None or self.holds(doc, self.outcome):
            verdict = self.judge(doc, self.outcome)
            if verdict[3] is None:  # the judge relies on the certificate: that verdict stands
                self._certified = verdict
                return False
        if self.memory is not None:  # not relied on, but the posture may be one we know
            self._remembered = self.memory.get(self.outcome.identity, stated_digest(doc),
                                               self.server.imv.vendor_id)
            if self._remembered is not None:
                return False
        return True  # ask for the inventory and judge that

    def _evaluate(self, doc: dict[str, Any], _identity: str | None) -> Verdict:
        if self._remembered is not None and is_digest_only(doc):
            return self.judge(self._remembered, self.outcome)
        if is_digest_only(doc):
            # still digest-only after our request: no inventory, nothing to certify
            return self._certified or ("none", 3, [], None)
        verdict = self.judge(doc, self.outcome)
        if self.memory is not None:
            self.memory.put(self.outcome.identity, doc, self.server.imv.attributes)
        return verdict

    def start(self, ident: int) -> bytes:
        return self.server.start()

    def process(self, ident: int, data: bytes) -> Step:
        st = self.server.process(data)
        if st.kind == "request":
            return request(st.data)
        doc = self.server.imv.document
        if st.kind == "success" and doc is not None:
            if is_digest_only(doc) and self._remembered is not None:
                doc = self._remembered  # what was judged: the Access-Accept decides on it
            elif is_digest_only(doc) and self._certified is None:
                return fail("digest-only posture without a certificate the server relies on")
            self.posture = doc
            return Step("success", outcome=self.outcome)
        return fail(st.reason or "posture handshake failed")


def tnc_posture(judge: PostureJudge, *, digest_first: bool = False,
                memory: PostureMemory | None = None, holds: CertificateHolds | None = None
                ) -> Callable[[MethodEnv, Outcome], Method | None]:
    """A PostureFactory for EapService: run EAP-TNC after every tunnel authentication. With
    digest_first, whole postures are remembered (one PostureMemory per factory unless one
    is given) so that an unchanged host whose certificate expired or whose feeds changed
    is judged again without sending its inventory. With `holds`, a digest-only document
    goes to the judge only when its certificate holds (else the judge evaluates and
    certifies a document without sections for nothing)."""
    if memory is None and digest_first:
        memory = PostureMemory()

    def factory(env: MethodEnv, outcome: Outcome) -> Method | None:
        return TncMethod(env, outcome, judge, digest_first=digest_first, memory=memory,
                         holds=holds)

    return factory
