"""EapTncServer <-> EapTncPeer: whole EAP-TNC / PT-EAP conversations on Type-Data."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap_ext.tnc.eap_method import EapTncPeer, EapTncServer, MethodStep
from eap_ext.tnc.eap_tnc import FLAG_L, FLAG_M, FLAG_S, TncFrame, ack_frame
from eap_ext.tnc.session import ImcSession, ImvSession

try:
    from tests.test_tnc_posture_attrs import SCHEMA_EXAMPLE
except ImportError:  # tests/ collected as plain directories
    from test_tnc_posture_attrs import SCHEMA_EXAMPLE  # type: ignore[no-redef]


def converse(server: EapTncServer, peer: EapTncPeer, limit: int = 2000
             ) -> tuple[MethodStep, list[tuple[bytes, bytes]]]:
    """Drive Request/Response pairs until the server finishes; return its last step."""
    req = server.start()
    pairs = []
    for _ in range(limit):
        resp = peer.process(req)
        assert resp.kind == "response", resp.reason
        pairs.append((req, resp.data))
        step = server.process(resp.data)
        if step.kind != "request":
            return step, pairs
        req = step.data
    raise AssertionError("conversation did not end")


def _evaluator(rec: str, seen: list[dict[str, Any]]):
    def evaluate(doc: dict[str, Any], identity: str | None) -> tuple:
        seen.append(doc)
        return rec, 0 if rec == "allow" else 2, ["https://fix.example/"], b"cert"
    return evaluate


@pytest.mark.parametrize("protocol", ["tnccs11", "pb-tnc"])
@pytest.mark.parametrize("rec,kind", [("allow", "success"), ("isolate", "success"),
                                      ("none", "failure")])
def test_conversation(protocol: str, rec: str, kind: str) -> None:
    seen: list[dict[str, Any]] = []
    server = EapTncServer(ImvSession(_evaluator(rec, seen)), max_fragment=200)
    imc = ImcSession(SCHEMA_EXAMPLE, protocol=protocol)  # type: ignore[arg-type]
    peer = EapTncPeer(imc, max_fragment=150)
    step, pairs = converse(server, peer)
    assert step.kind == kind and server.finished
    assert seen == [SCHEMA_EXAMPLE]
    assert imc.recommendation == rec and imc.certificate == b"cert"
    first_req, first_resp = pairs[0]
    assert TncFrame.decode(first_req).start
    # the posture needs several fragments: L+M first, acked with a bare flags octet
    assert first_resp[0] & (FLAG_L | FLAG_M) == FLAG_L | FLAG_M
    assert pairs[1][0] == ack_frame()
    assert all(len(r) <= 200 for r, _ in pairs) and all(len(p) <= 150 for _, p in pairs)


def test_like_wpa_supplicant_the_last_batch_is_acknowledged() -> None:
    server = EapTncServer(ImvSession(_evaluator("allow", [])), max_fragment=4000)
    peer = EapTncPeer(ImcSession(SCHEMA_EXAMPLE), max_fragment=4000)
    step, pairs = converse(server, peer)
    assert step.kind == "success"
    assert pairs[-1][1] == b"\x01"  # flags octet only, as eap_tnc.c sends when TNCS is done
    assert len(pairs) == 2            # Start -> posture, results+recommendation -> ack


@settings(max_examples=25, deadline=None)
@given(st.integers(20, 600), st.integers(20, 600), st.sampled_from(["tnccs11", "pb-tnc"]))
def test_any_fragment_sizes(server_frag: int, peer_frag: int, protocol: str) -> None:
    seen: list[dict[str, Any]] = []
    server = EapTncServer(ImvSession(_evaluator("allow", seen)), max_fragment=server_frag)
    peer = EapTncPeer(ImcSession(SCHEMA_EXAMPLE, protocol=protocol),  # type: ignore[arg-type]
                      max_fragment=peer_frag)
    step, _ = converse(server, peer, limit=5000)
    assert step.kind == "success" and seen == [SCHEMA_EXAMPLE]


def test_protocol_violations_fail_the_method() -> None:
    server = EapTncServer(ImvSession(_evaluator("allow", [])))
    server.start()
    assert server.process(bytes([FLAG_S | 1])).kind == "failure"
    server = EapTncServer(ImvSession(_evaluator("allow", [])), max_message=100)
    server.start()
    huge = bytes([FLAG_L | FLAG_M | 1]) + (10**6).to_bytes(4, "big") + b"x" * 10
    assert server.process(huge).kind == "failure"
    peer = EapTncPeer(ImcSession(SCHEMA_EXAMPLE))
    assert peer.process(b"\x01<x/>").kind == "failure"  # no Start first
