"""Posture memory in the EAP-TNC method: a host whose certificate is no longer relied on
(expired, feeds or policy changed) but whose posture is one it reported before, under the
same identity, is judged again on that posture without sending its inventory."""

from __future__ import annotations

import base64
from typing import Any

from eap_ext.tnc.eap_method import EapTncPeer
from eap_ext.tnc.session import ImcSession
from nac.eap.config import EapConfig
from nac.eap.methods.base import MethodEnv, Outcome
from nac.eap.methods.tnc import PostureMemory, TncMethod, tnc_posture
from nac.posture.digest import posture_digest

try:
    from tests.test_tnc_packages_compact import debian_packages
    from tests.test_tnc_posture_attrs import SCHEMA_EXAMPLE
except ImportError:  # tests/ collected as plain directories
    from test_tnc_packages_compact import debian_packages  # type: ignore[no-redef]
    from test_tnc_posture_attrs import SCHEMA_EXAMPLE  # type: ignore[no-redef]

TOKEN = "qc1.eyJzZWdtZW50Ijoibm9ybWFsIn0.c2ln"


class Judge:
    """Never relies on the certificate (as after a feed change): always a new one."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def __call__(self, doc: dict[str, Any], outcome: Outcome) -> tuple:
        self.docs.append(doc)
        return "isolate", 2, ["https://fix.example/"], f"qc1.new.{len(self.docs)}".encode()


def host(version: str = "1.0") -> dict[str, Any]:
    """What our agent reports: its digest stated, its certificate beside it."""
    doc = dict(SCHEMA_EXAMPLE, packages=debian_packages())
    doc["packages"][0] = dict(doc["packages"][0], version=version)
    doc.pop("certificate", None)
    digest = posture_digest(doc)
    doc["stated_digest"] = digest
    doc["certificate"] = {"token": base64.b64encode(TOKEN.encode()).decode(),
                          "posture_digest": digest}
    return doc


def method(judge: Judge, memory: PostureMemory | None, identity: str = "demo") -> TncMethod:
    env = MethodEnv(config=EapConfig(), lookup=lambda _n: None, box=None, identity=identity)
    return TncMethod(env, Outcome(identity, "default", "ttls/eap-mschapv2"), judge,
                     digest_first=True, memory=memory)


def converse(m: TncMethod, imc: ImcSession) -> tuple[str, int]:
    peer = EapTncPeer(imc, max_fragment=1398)
    req, rounds = m.start(1), 0
    while True:
        rounds += 1
        step = m.process(1, peer.process(req).data)
        if step.kind != "request":
            return step.kind, rounds
        req = step.data


def test_unchanged_host_is_judged_again_without_its_inventory() -> None:
    memory, judge, doc = PostureMemory(), Judge(), host()
    first = method(judge, memory)
    kind, first_rounds = converse(first, ImcSession(doc))  # first contact: whole posture
    assert kind == "success" and len(memory) == 1 and first_rounds >= 8
    again = method(judge, memory)
    imc = ImcSession(doc, certificate_only=True)
    kind, rounds = converse(again, imc)
    assert kind == "success" and rounds == 2 and not imc.sent_inventory
    digest_only, remembered = judge.docs[1:]
    assert digest_only["digest_only"] and "packages" not in digest_only
    # judged on the whole posture it reported, which the Access-Accept then decides on
    assert remembered["packages"] == doc["packages"] and remembered["os"] == doc["os"]
    assert remembered["stated_digest"] == doc["stated_digest"]
    assert remembered["certificate"] is None
    assert again.posture is remembered
    assert imc.certificate == b"qc1.new.3" and imc.recommendation == "isolate"
    assert imc.remediation == ["https://fix.example/"]
    assert (memory.hits, memory.misses) == (1, 0)


def test_another_identity_or_a_changed_posture_sends_the_inventory() -> None:
    memory, judge = PostureMemory(), Judge()
    converse(method(judge, memory), ImcSession(host()))
    for who, doc in (("mallory", host()), ("demo", host("2.0"))):
        imc = ImcSession(doc, certificate_only=True)
        m = method(judge, memory, who)
        kind, _ = converse(m, imc)
        assert kind == "success" and imc.sent_inventory
        assert m.posture is not None and m.posture["packages"] == doc["packages"]
    assert memory.hits == 0 and memory.misses == 2
    assert len(memory) == 3  # what they sent is remembered in turn


def test_documents_without_a_stated_digest_are_not_kept() -> None:
    memory = PostureMemory()
    doc = host()
    del doc["stated_digest"]
    converse(method(Judge(), memory), ImcSession(doc))
    assert len(memory) == 0


def test_memory_is_bounded() -> None:
    judge = Judge()
    memory = PostureMemory(entries=2)
    for v in ("1", "2", "3"):
        converse(method(judge, memory), ImcSession(host(v)))
    assert len(memory) == 2 and memory.get("demo", host("1")["stated_digest"], 32473) is None
    assert memory.get("demo", host("3")["stated_digest"], 32473) is not None
    size = memory.size
    assert 0 < size < 2 * 15 * len(debian_packages())  # deflated, not Python objects
    small = PostureMemory(max_bytes=size // 2 + 1)
    for v in ("1", "2"):
        converse(method(judge, small), ImcSession(host(v)))
    assert len(small) == 1


def test_without_digest_first_nothing_is_remembered() -> None:
    judge = Judge()
    factory = tnc_posture(judge, digest_first=False)
    env = MethodEnv(config=EapConfig(), lookup=lambda _n: None, box=None, identity="demo")
    m = factory(env, Outcome("demo", "default", "ttls"))
    assert isinstance(m, TncMethod) and m.memory is None
    shared = tnc_posture(judge, digest_first=True)
    a, b = shared(env, Outcome("demo", "default", "ttls")), shared(env, Outcome("x", "d", "t"))
    assert isinstance(a, TncMethod) and isinstance(b, TncMethod)
    assert a.memory is not None and a.memory is b.memory  # one per server process


class Relying(Judge):
    """Relies on the certificate a digest-only document presents (no new one for it)."""

    def __call__(self, doc: dict[str, Any], outcome: Outcome) -> tuple:
        if doc.get("digest_only"):
            self.docs.append(doc)
            return "allow", 0, [], None
        return super().__call__(doc, outcome)


def test_a_stale_certificate_skips_the_judge_of_the_digest_only_document() -> None:
    memory, judge, doc = PostureMemory(), Relying(), host()
    converse(method(judge, memory), ImcSession(doc))
    env = MethodEnv(config=EapConfig(), lookup=lambda _n: None, box=None, identity="demo")
    outcome = Outcome("demo", "default", "ttls/eap-mschapv2")
    asked: list[dict[str, Any]] = []

    def stale(d: dict[str, Any], _o: Outcome) -> bool:
        asked.append(d)
        return False

    judged = len(judge.docs)
    m = TncMethod(env, outcome, judge, digest_first=True, memory=memory, holds=stale)
    imc = ImcSession(doc, certificate_only=True)
    kind, rounds = converse(m, imc)
    assert kind == "success" and rounds == 2 and not imc.sent_inventory
    assert len(asked) == 1 and asked[0]["digest_only"]
    # only the remembered whole posture was judged (a new certificate), not the digest-only
    (remembered,) = judge.docs[judged:]
    assert "digest_only" not in remembered and m.posture is remembered
    assert imc.certificate is not None and imc.certificate.startswith(b"qc1.new.")

    # A certificate that holds: the judge's verdict on the digest-only document stands.
    judged = len(judge.docs)
    m = TncMethod(env, outcome, judge, digest_first=True, memory=memory,
                  holds=lambda _d, _o: True)
    imc = ImcSession(doc, certificate_only=True)
    kind, rounds = converse(m, imc)
    assert kind == "success" and not imc.sent_inventory and imc.recommendation == "allow"
    (digest_only,) = judge.docs[judged:]
    assert digest_only["digest_only"] and m.posture == digest_only

    # Unknown posture, stale certificate: the inventory is asked for and judged.
    other = host("9.9")
    judged = len(judge.docs)
    m = TncMethod(env, outcome, judge, digest_first=True, memory=memory, holds=stale)
    imc = ImcSession(other, certificate_only=True)
    kind, _ = converse(m, imc)
    assert kind == "success" and imc.sent_inventory
    (whole,) = judge.docs[judged:]
    assert whole["packages"] == other["packages"] and m.posture is whole
