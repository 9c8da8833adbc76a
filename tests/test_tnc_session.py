"""ImcSession <-> ImvSession: full exchanges in IF-TNCCS 1.1 and PB-TNC, over EAP-TNC framing."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap_ext.tnc import pb_tnc, tnccs11
from eap_ext.tnc.eap_tnc import Fragmenter, Reassembler, detect_tnccs, start_frame
from eap_ext.tnc.pa_tnc import (
    AssessmentResult,
    AttributeRequest,
    PaTncMessage,
    ProductInformation,
    RawAttribute,
    decode_message,
)
from eap_ext.tnc.session import (
    AttributesRequested,
    CertificateReceived,
    Evaluated,
    HandshakeDone,
    ImcSession,
    ImvSession,
    PeerError,
    PostureCollected,
    ProtocolError,
    RecommendationReceived,
    RemediationReceived,
)

try:
    from tests.test_tnc_posture_attrs import SCHEMA_EXAMPLE, documents
except ImportError:  # tests/ collected as plain directories
    from test_tnc_posture_attrs import SCHEMA_EXAMPLE, documents  # type: ignore[no-redef]

CERT = b"\x30\x82signed-quarantine-certificate"
REMEDIATION = ["https://remediation.example/openssl", "apt-get install --only-upgrade openssl"]


class Evaluator:
    def __init__(self, rec: str = "isolate") -> None:
        self.calls: list[tuple[dict[str, Any], str | None]] = []
        self.rec = rec

    def __call__(self, doc: dict[str, Any], identity: str | None
                 ) -> tuple[str, int, list[str], bytes | None]:
        self.calls.append((copy.deepcopy(doc), identity))
        return self.rec, 2, list(REMEDIATION), CERT


def run(imc: ImcSession, imv: ImvSession, max_rounds: int = 10) -> list[bytes]:
    """Alternate batches until neither side has anything to say; return the wire trace."""
    trace = [imc.begin()]
    out: bytes | None = trace[0]
    for _ in range(max_rounds):
        reply, _ = imv.receive(out)
        if reply is None:
            break
        trace.append(reply)
        out, _ = imc.receive(reply)
        if out is None:
            break
        trace.append(out)
    return trace


@pytest.mark.parametrize("protocol", ["tnccs11", "pb-tnc"])
def test_full_exchange(protocol: str) -> None:
    ev = Evaluator()
    imc = ImcSession(SCHEMA_EXAMPLE, protocol=protocol)  # type: ignore[arg-type]
    imv = ImvSession(ev, identity="alice@example.org")
    trace = run(imc, imv)
    assert ev.calls == [(SCHEMA_EXAMPLE, "alice@example.org")]
    assert imv.done and not imv.failed and imv.protocol == protocol
    assert imc.done and imc.recommendation == "isolate" and imc.assessment == 2
    assert imc.remediation == REMEDIATION and imc.certificate == CERT
    # any certificate travels base64-encoded; our "qc1." tokens as they are (below)
    assert imc.certificate_data == {"token": base64.b64encode(CERT).decode()}
    if protocol == "tnccs11":
        assert len(trace) == 2  # posture, then results + recommendation
        assert all(detect_tnccs(b) == "tnccs11" for b in trace)
        assert [tnccs11.decode_batch(b).batch_id for b in trace] == [1, 2]
    else:
        kinds = [pb_tnc.decode_batch(b).batch_type for b in trace]
        assert kinds == [pb_tnc.BatchType.CDATA, pb_tnc.BatchType.SDATA,
                         pb_tnc.BatchType.CDATA, pb_tnc.BatchType.RESULT,
                         pb_tnc.BatchType.CLOSE]
        result = pb_tnc.decode_batch(trace[3])
        assert pb_tnc.PbAccessRecommendation(3) in result.messages
        assert pb_tnc.PbAssessmentResult(2) in result.messages


@pytest.mark.parametrize("protocol", ["tnccs11", "pb-tnc"])
@pytest.mark.parametrize("rec", ["allow", "none"])
def test_events_on_both_sides(protocol: str, rec: str) -> None:
    imc = ImcSession(SCHEMA_EXAMPLE, protocol=protocol)  # type: ignore[arg-type]
    imv = ImvSession(Evaluator(rec), protocol=protocol)  # type: ignore[arg-type]
    out: bytes | None = imc.begin()
    imv_events: list[Any] = []
    imc_events: list[Any] = []
    while out is not None:
        reply, ev = imv.receive(out)
        imv_events += ev
        if reply is None:
            break
        out, ev = imc.receive(reply)
        imc_events += ev
    assert [type(e) for e in imv_events if not isinstance(e, PeerError)] == [
        PostureCollected, Evaluated, HandshakeDone]
    assert isinstance(imv_events[1], Evaluated) and imv_events[1].recommendation == rec
    types = {type(e) for e in imc_events}
    assert {RemediationReceived, CertificateReceived, RecommendationReceived,
            HandshakeDone} <= types
    assert imc.recommendation == rec


@settings(max_examples=40, deadline=None)
@given(documents, st.sampled_from(["tnccs11", "pb-tnc"]), st.integers(40, 400))
def test_posture_arrives_intact_through_eap_fragments(doc: dict, protocol: str,
                                                      frag: int) -> None:
    """Each batch crosses EAP-TNC framing in small fragments, as over RADIUS."""
    ev = Evaluator("allow")
    imc = ImcSession(doc, protocol=protocol)  # type: ignore[arg-type]
    imv = ImvSession(ev)

    def carry(batch: bytes) -> bytes:
        f = Fragmenter(batch, max_fragment=frag)
        r = Reassembler()
        got = None
        while not f.done:
            got = r.feed(f.next_frame())
        assert got is not None
        return got.data

    assert Reassembler().feed(start_frame()).start  # type: ignore[union-attr]
    run_out: bytes | None = imc.begin()
    while run_out is not None:
        reply, _ = imv.receive(carry(run_out))
        if reply is None:
            break
        run_out, _ = imc.receive(carry(reply))
    assert len(ev.calls) == 1 and ev.calls[0][0] == doc
    assert imc.recommendation == "allow"


def _foreign_first_batch(protocol: str, attrs: tuple) -> bytes:
    body = PaTncMessage(77, attrs).encode()
    if protocol == "tnccs11":
        return tnccs11.Tnccs11Batch(1, "TNCS", (tnccs11.ImcImvMessage(1, body),)).encode()
    return pb_tnc.PbBatch(pb_tnc.BatchType.CDATA,
                          (pb_tnc.PbPa(0, 1, 5, 0xFFFF, body),)).encode()


@pytest.mark.parametrize("protocol", ["tnccs11", "pb-tnc"])
def test_imv_requests_attributes_from_a_foreign_imc(protocol: str) -> None:
    ev = Evaluator()
    imv = ImvSession(ev)
    first = _foreign_first_batch(protocol, (ProductInformation(0, 0, "Other OS"),))
    reply, events = imv.receive(first)
    assert reply is not None and not ev.calls and not events
    if protocol == "tnccs11":
        req_body = tnccs11.decode_batch(reply).messages[0].body  # type: ignore[union-attr]
    else:
        req_body = pb_tnc.decode_batch(reply).messages[0].body  # type: ignore[union-attr]
    req = decode_message(req_body).attributes
    assert isinstance(req[0], AttributeRequest) and len(req[0].entries) >= 10
    # our IMC answers that request with exactly the attributes asked for
    imc = ImcSession(SCHEMA_EXAMPLE, protocol=protocol)  # type: ignore[arg-type]
    imc.begin()
    answer, imc_events = imc.receive(reply)
    assert any(isinstance(e, AttributesRequested) for e in imc_events)
    assert answer is not None
    # a third-party IMC that cannot answer: the IMV decides on what it has
    if protocol == "tnccs11":
        empty = tnccs11.Tnccs11Batch(3, "TNCS").encode()
    else:
        empty = pb_tnc.PbBatch(pb_tnc.BatchType.CDATA).encode()
    imv.receive(empty)
    doc = ev.calls[0][0]
    assert doc["os"] == {"pretty_name": "Other OS"} and doc["packages"] == "unknown"


def test_tnccs11_like_wpa_supplicant_without_imc() -> None:
    """tncc with no IMC loaded sends an empty batch 1, then empty batch 3."""
    ev = Evaluator("none")
    imv = ImvSession(ev)
    first = (b'<?xml version="1.0"?>\n<TNCCS-Batch BatchId="1" Recipient="TNCS" '
             b'xmlns="http://www.trustedcomputinggroup.org/IWG/TNC/1_0/IF_TNCCS#">\n'
             b"\n</TNCCS-Batch>")
    reply, _ = imv.receive(first)
    assert reply is not None and tnccs11.decode_batch(reply).batch_id == 2
    third = first.replace(b'BatchId="1"', b'BatchId="3"')
    reply, events = imv.receive(third)
    assert imv.done and ev.calls and any(isinstance(e, HandshakeDone) for e in events)
    msgs = tnccs11.decode_batch(reply).messages  # type: ignore[arg-type]
    assert tnccs11.TnccsRecommendation("none") in msgs


def test_bad_batch_id_and_garbage_get_error_batches() -> None:
    imv = ImvSession(Evaluator())
    bad = tnccs11.Tnccs11Batch(5, "TNCS").encode()
    reply, events = imv.receive(bad)
    assert imv.failed and isinstance(events[0], ProtocolError)
    msgs = tnccs11.decode_batch(reply).messages  # type: ignore[arg-type]
    assert isinstance(msgs[0], tnccs11.TnccsError)
    assert msgs[-1] == tnccs11.TnccsRecommendation("none")

    imv = ImvSession(Evaluator(), protocol="pb-tnc")
    reply, events = imv.receive(b"\x02\x80\x00\x01\x00\x00\x00\x08")  # server D flag
    batch = pb_tnc.decode_batch(reply)  # type: ignore[arg-type]
    assert batch.batch_type == pb_tnc.BatchType.CLOSE
    assert isinstance(batch.messages[0], pb_tnc.PbError) and imv.failed

    with pytest.raises(ValueError):
        ImvSession(Evaluator(), protocol="xml")  # type: ignore[arg-type]


def test_pa_error_answered_with_pa_tnc_error() -> None:
    ev = Evaluator()
    imv = ImvSession(ev, protocol="tnccs11")
    bad_pa = PaTncMessage(1, (RawAttribute(9, 9, b"x", noskip=True),)).encode()
    first = tnccs11.Tnccs11Batch(1, "TNCS", (tnccs11.ImcImvMessage(1, bad_pa),)).encode()
    reply, events = imv.receive(first)
    assert any(isinstance(e, ProtocolError) for e in events)
    body = tnccs11.decode_batch(reply).messages[0].body  # type: ignore[union-attr]
    attrs = decode_message(body).attributes
    assert attrs[0].attr_type == 8 and isinstance(attrs[1], AttributeRequest)


def test_imc_ignores_other_pa_types_and_reports_peer_errors() -> None:
    imc = ImcSession(SCHEMA_EXAMPLE)
    imc.begin()
    other = PaTncMessage(1, (AssessmentResult(0),)).encode()
    batch = tnccs11.Tnccs11Batch(2, "TNCC", (tnccs11.ImcImvMessage(0x2, other),
                                             tnccs11.TnccsError("other", "boom"))).encode()
    reply, events = imc.receive(batch)
    assert imc.assessment is None and isinstance(events[0], PeerError)
    assert reply is not None and tnccs11.decode_batch(reply).batch_id == 3


@pytest.mark.parametrize("protocol", ["tnccs11", "pb-tnc"])
@pytest.mark.parametrize("trusted", [True, False])
def test_certificate_only_first_batch(protocol: str, trusted: bool) -> None:
    """Draft 5.3 step 3: an unchanged host sends only its certificate; the server either
    relies on it or asks for the whole posture."""
    posture = dict(SCHEMA_EXAMPLE, factory_default_password="unknown")
    ev = Evaluator("allow")
    asked: list[dict[str, Any]] = []

    def want_full(doc: dict[str, Any]) -> bool:
        asked.append(doc)
        return not trusted

    imc = ImcSession(posture, protocol=protocol, certificate_only=True)  # type: ignore[arg-type]
    imv = ImvSession(ev, want_full_posture=want_full)
    first = imc.begin()
    if protocol == "tnccs11":
        body = tnccs11.decode_batch(first).messages[0].body  # type: ignore[union-attr]
    else:
        body = pb_tnc.decode_batch(first).messages[0].body  # type: ignore[union-attr]
    kinds = [a.attr_type for a in decode_message(body).attributes]
    assert kinds == [10, 7]  # DOCUMENT_META and CERTIFICATE only
    run_out: bytes | None = first
    while run_out is not None:
        reply, _ = imv.receive(run_out)
        if reply is None:
            break
        run_out, _ = imc.receive(reply)
    assert asked == [{"schema": 1, "certificate": posture["certificate"],
                      "digest_only": True}]
    assert imc.sent_inventory is not trusted
    assert len(ev.calls) == 1 and imc.recommendation == "allow"
    assert ev.calls[0][0] == (asked[0] if trusted else posture)


def test_our_certificate_tokens_travel_unwrapped() -> None:
    """A "qc1." token goes into the CERTIFICATE attribute as it is (no base64 around it:
    the result batch stays in one EAP piece) and the IMC gets the same bytes back."""
    token = b"qc1.eyJzZWdtZW50Ijoibm9ybWFsIn0.c2lnbmF0dXJl"

    def evaluate(doc: dict, ident: str | None) -> tuple[str, int, list[str], bytes]:
        return "allow", 0, [], token

    imc = ImcSession(SCHEMA_EXAMPLE)
    imv = ImvSession(evaluate, identity="alice@example.org", digest_first=True)
    run(imc, imv)
    assert imc.certificate == token
    assert imc.certificate_data == {"token": token.decode(), "digest_first": True}
