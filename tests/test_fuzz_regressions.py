"""Bugs the fuzz harnesses found, pinned by their reproducers in tests/data/fuzz/crashes/.

A file named `<harness>-<anything>` is an input for that harness and must replay without a
finding. Bugs whose fix belongs to another module's owner are xfail(strict=True): when the
fix lands the test passes, strict turns that into a failure, and whoever fixed it removes
the mark here and the entry in bench/fuzz/core.py KNOWN_BUGS.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from fuzz import run  # noqa: E402
from fuzz.core import CRASH_DIR, REGISTRY  # noqa: E402

run.load()

# Reproducers of bugs not fixed yet: file name -> why (the xfail reason).
OPEN: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def _harness_files() -> list[object]:
    out: list[object] = []
    for f in sorted(CRASH_DIR.iterdir()):
        name = next((h for h in REGISTRY if f.name.startswith(h + "-")), None)
        if name is None:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=OPEN[f.name])] if f.name in OPEN else []
        out.append(pytest.param(name, f, marks=marks, id=f.name))
    return out


@pytest.mark.parametrize(("harness", "path"), _harness_files())
def test_crash_input_replays_cleanly(harness: str, path: Path) -> None:
    REGISTRY[harness].target()(path.read_bytes())


def test_tnc_reassembler_resets_after_a_malformed_frame() -> None:
    """The Reassembler's contract: "Any violation raises EapTncFramingError and resets the
    state". A frame with reserved flag bits (or L without its 4 octets) in the middle of a
    fragmented message raises from TncFrame.decode, which does not reset: the next frame
    is taken as a continuation of the half-received message. Fix: decode inside feed()'s
    error path (catch EapTncFramingError from TncFrame.decode and `raise self._fail(...)`)."""
    from eap_ext.tnc import eap_tnc
    from eap_ext.tnc.errors import EapTncFramingError

    rx = eap_tnc.Reassembler()
    assert rx.feed(eap_tnc.TncFrame(eap_tnc.FLAG_M, 1, 10, b"abc").encode()) is None
    with pytest.raises(EapTncFramingError):
        rx.feed(bytes([0x01 | 0x08]) + b"x")  # reserved bits 0x18 set
    assert not rx.in_progress
    # A fresh, whole message must now come out alone, not glued to "abc".
    got = rx.feed(b"\x01" + b"complete")
    assert got is not None and got.data == b"complete"


def test_eap_start_gets_an_identity_request() -> None:
    """RFC 3579 2.1/3.1: a NAS may start the conversation with an Access-Request holding
    one EAP-Message of length 2 (EAP-Start); the server answers with an Access-Challenge
    carrying EAP-Request/Identity. EapService.handle already does this for eap=b""
    (service.py `if not raw`), but codec.decode raises MalformedPacket("attr_length") for
    any attribute of length 2 before the engine can see it. Fix: accept length 2 in
    decode() (zero-length value; RFC 2865 5 allows empty values for string types), or at
    least for EAP-Message; join_eap then returns b"" and the service asks for Identity."""
    from fuzz import lab

    from nac.eap import packet
    from nac.radius import codec as c

    raw = (CRASH_DIR / "eap-start-access-request.radius").read_bytes()
    out = lab.engine().handle_auth(raw, lab.NAS_ADDR, 1812, lab.NOW)
    if out is not None and not isinstance(out, bytes):  # EAP runs as a Deferred (lane eap)
        out = out.finish(out.work(), lab.NOW)
    assert isinstance(out, bytes), "EAP-Start was dropped"
    reply = c.decode(out)
    assert reply.code == c.ACCESS_CHALLENGE
    eap = packet.parse(c.join_eap(reply) or b"")
    assert (eap.code, eap.type) == (packet.REQUEST, packet.IDENTITY)


def test_engine_never_raises_when_proxy_state_fills_the_reply() -> None:
    """A request near 4096 octets, most of it Proxy-State (proxies add one per hop; RFC
    2865 5.33 says the server MUST echo them), continuing a PEAP conversation: the reply is
    a 1020-octet EAP fragment + State + MA + all that Proxy-State, over the 4096-octet limit.
    codec.encode_reply raises ValueError("reply exceeds 4096 octets"), which escapes the
    engine (engine.py `_eap_reply` -> `c.encode_reply(c.ACCESS_CHALLENGE, ...)`, run from
    the EAP Deferred's finish()). server.py catches and logs it, but the NAS gets no
    answer, the dedup entry stays at its "in progress" placeholder (retransmissions are
    dropped as duplicates until it expires), and the conversation stalls with a logged
    traceback.
    Fix (engine): size the EAP fragment to the room left after the echoed Proxy-State (or
    catch the ValueError and drop with a counter such as drop_reply_too_large); the same
    guard is worth having for Accept/Reject, whose reply attributes can also outgrow the
    request's."""
    target = REGISTRY["radius_engine"].target()
    target((CRASH_DIR / "radius_engine-eap-challenge-with-proxy-state-over-4096").read_bytes())


def test_resumed_ttls_session_still_runs_posture() -> None:
    """Found with the eap_tunnel harness (selector bit 3 resumes a session that had
    authenticated by TTLS/PAP and passed EAP-TNC with a compliant posture). On TLS 1.2
    resumption TtlsMethod.on_established returns Step("success", outcome=self.resumed)
    (or succeeds on the ACK when a flight is pending): Outcome.posture is None, InnerEap's
    posture method is never started, and Authorizer decides "no posture reported ->
    quarantine". wpa_supplicant resumes TTLS sessions by default, so a compliant host
    drops to quarantine at its next re-authentication. PEAP does not skip phase 2 and is
    not affected. Fix: after a resumed handshake, start the posture method as
    _authenticated() does (InnerEap.authenticated(iid, self.resumed)), and succeed after it."""
    from fuzz import eap
    from fuzz.core import join_records

    target = REGISTRY["eap_tunnel"].target()
    sel = eap.RESUME | 1  # TTLS, TLS 1.2, 1020-octet fragments
    label = target(bytes((sel,)) + join_records([(eap.TNC_PEER, b"")] * 8))
    assert label is not None and label.startswith("resumed:"), label
    assert ":posture" in label, label
