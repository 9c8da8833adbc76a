"""EAP-TLS, PEAP and TTLS state machines driven in-process by a pyOpenSSL peer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nac.eap import avp, packet
from nac.eap.tls_engine import TLS12_LABELS, TLS13_LABEL
from nac.pki import revoke
from tests.test_eap_peer import Lab, TlsPeer, run_tls


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("eap-tls"))


def peer_msk(peer: TlsPeer) -> bytes:
    """What an RFC 5216/9190/5281/9427 peer derives from its side of the same TLS session."""
    if peer.conn.get_protocol_version_name() == "TLSv1.3":
        return peer.conn.export_keying_material(TLS13_LABEL, 128, bytes([peer.type]))[:64]
    return peer.conn.export_keying_material(TLS12_LABELS[peer.method], 128)[:64]


CASES = [
    ("tls", "", "tls", "demo"),
    ("peap", "", "peap/mschapv2", "demo"),
    ("ttls", "pap", "ttls/pap", "demo"),
    ("ttls", "mschapv2", "ttls/mschapv2", "demo"),
]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize(("method", "inner", "full", "who"), CASES)
@pytest.mark.parametrize("fragment", [1020, 300])
def test_tls_methods_accept_with_matching_msk(lab: Lab, method: str, inner: str, full: str,
                                              who: str, version: str, fragment: int) -> None:
    service = lab.service(fragment_size=fragment)
    peer = TlsPeer(lab, method, version=version, fragment=fragment, cert=method == "tls",
                   inner=inner)
    res, conv = run_tls(lab, service, peer)
    assert res.action == "accept", res.reason
    assert res.identity == who and res.role == "default" and res.method == full
    assert res.msk is not None and len(res.msk) == 64
    assert res.msk == peer_msk(peer)
    assert res.eap is not None and packet.parse(res.eap).code == packet.SUCCESS
    assert service.live == 0
    if fragment == 300:
        assert conv.rounds > 6  # the certificate flights really were fragmented


@pytest.mark.parametrize("fast", [True, False])
def test_peap_tls12_inner_identity_rides_with_finished(lab: Lab, fast: bool) -> None:
    # peap_fast_start (default): the inner Identity request goes in the flight that carries
    # the server's Finished; off, the server waits for the peer's ACK of Finished first.
    service = lab.service(peap_fast_start=fast)
    peer = TlsPeer(lab, "peap", version="1.2")
    res, conv = run_tls(lab, service, peer)
    assert res.action == "accept", res.reason
    # Identity, ClientHello, Finished (+ ACK), inner Identity, MSCHAPv2, Success, TLV.
    assert conv.rounds == (7 if fast else 8)


def test_tls13_tickets_only_with_resumption(lab: Lab) -> None:
    # Without resumption no ticket is sent (OpenSSL would send two useless ones), so TTLS
    # succeeds on the round that brings the password instead of delivering tickets first.
    rounds = {}
    for resumption in (True, False):
        service = lab.service(tls_resumption=resumption)
        peer = TlsPeer(lab, "ttls", version="1.3")
        res, conv = run_tls(lab, service, peer)
        assert res.action == "accept", res.reason
        rounds[resumption] = conv.rounds
        again = TlsPeer(lab, "ttls", version="1.3", resume=peer)
        res, _ = run_tls(lab, service, again)
        assert res.action == "accept" and again.resumed() == resumption
    assert rounds[True] == rounds[False] + 1  # the round that delivers the ticket


def test_every_request_fits_the_fragment_size(lab: Lab) -> None:
    service = lab.service(fragment_size=300)
    peer = TlsPeer(lab, "tls", version="1.2", fragment=300, cert=True)
    sizes: list[int] = []
    original = service.handle

    def spy(**kw):  # type: ignore[no-untyped-def]
        r = original(**kw)
        if r.eap:
            sizes.append(len(r.eap))
        return r

    service.handle = spy  # type: ignore[method-assign]
    res, _ = run_tls(lab, service, peer)
    assert res.action == "accept"
    assert max(sizes) <= 300


def test_tls13_eap_tls_sends_commitment_message(lab: Lab) -> None:
    peer = TlsPeer(lab, "tls", version="1.3", cert=True)
    res, _ = run_tls(lab, lab.service(), peer)
    assert res.action == "accept"
    assert b"\x00" in peer.app_seen  # RFC 9190 2.5


def test_wrong_inner_password_rejected(lab: Lab) -> None:
    for method, inner in (("peap", ""), ("ttls", "pap"), ("ttls", "mschapv2")):
        peer = TlsPeer(lab, method, inner=inner, password="wrong")
        res, _ = run_tls(lab, lab.service(), peer)
        assert res.action == "reject", method
        assert "wrong password" in res.reason


def test_eap_tls_without_client_certificate_rejected(lab: Lab) -> None:
    res, _ = run_tls(lab, lab.service(), TlsPeer(lab, "tls", cert=False))
    assert res.action == "reject"
    assert "TLS" in res.reason


def test_revoked_certificate_rejected(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    revoke(tmp_path, "demo")
    res, _ = run_tls(lab, lab.service(), TlsPeer(lab, "tls", version="1.2", cert=True))
    assert res.action == "reject"
    assert "revoked" in res.reason


def test_session_resumption_for_fast_reauthentication(lab: Lab) -> None:
    service = lab.service()
    for version in ("1.2", "1.3"):
        first = TlsPeer(lab, "tls", version=version, cert=True)
        res1, conv1 = run_tls(lab, service, first)
        assert res1.action == "accept"
        second = TlsPeer(lab, "tls", version=version, cert=True, resume=first)
        res2, conv2 = run_tls(lab, service, second)
        assert res2.action == "accept", res2.reason
        assert _reused(second)
        assert res2.identity == "demo"
        assert conv2.rounds < conv1.rounds
        assert res2.msk == peer_msk(second)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_peap_fast_reconnect_skips_the_inner_method(lab: Lab, version: str) -> None:
    rounds: dict[bool, int] = {}
    for fast in (True, False):
        service = lab.service(peap_fast_reconnect=fast)
        first = TlsPeer(lab, "peap", version=version)
        assert run_tls(lab, service, first)[0].action == "accept"
        again = TlsPeer(lab, "peap", version=version, resume=first)
        res, conv = run_tls(lab, service, again)
        assert res.action == "accept", res.reason
        assert _reused(again)
        assert (res.identity, res.role, res.method) == ("demo", "default", "peap/mschapv2")
        assert res.msk == peer_msk(again)
        # The peer answered an MSCHAPv2 challenge only when the inner method ran.
        assert any(d[:1] == bytes([packet.MSCHAPV2]) for d in again.app_seen) == (not fast)
        rounds[fast] = conv.rounds
    assert rounds[True] == rounds[False] - 3  # inner Identity, Challenge, Success


def test_peap_fast_reconnect_runs_phase2_when_the_account_is_gone(lab: Lab) -> None:
    service = lab.service()
    first = TlsPeer(lab, "peap", version="1.3")
    assert run_tls(lab, service, first)[0].action == "accept"
    service.lookup = lambda name: None  # the account was removed since
    again = TlsPeer(lab, "peap", version="1.3", resume=first)
    res, _ = run_tls(lab, service, again)
    assert _reused(again)
    assert res.action == "reject"  # the inner method ran again and found no account


def _reused(peer: TlsPeer) -> bool:
    return peer.resumed()


@pytest.mark.parametrize("inner", ["pap", "mschapv2"])
def test_ttls_resumption_skips_phase2_and_keeps_identity(lab: Lab, inner: str) -> None:
    service = lab.service()
    first = TlsPeer(lab, "ttls", version="1.3", inner=inner)
    res1, _ = run_tls(lab, service, first)
    assert res1.action == "accept"
    second = TlsPeer(lab, "ttls", version="1.3", inner=inner, resume=first)
    res2, _ = run_tls(lab, service, second)
    assert second.resumed()
    assert res2.action == "accept", res2.reason
    assert (res2.identity, res2.method) == ("demo", f"ttls/{inner}")
    assert res2.msk == peer_msk(second) and res2.msk != res1.msk
    # Resuming the resumed session works too (its result was remembered again) ...
    third = TlsPeer(lab, "ttls", version="1.3", inner=inner, resume=second)
    assert run_tls(lab, service, third)[0].action == "accept"
    # ... but a session whose phase 2 result is gone (evicted) is refused, not trusted.
    assert service.tls is not None
    service.tls.resumption._entries.clear()
    fourth = TlsPeer(lab, "ttls", version="1.3", inner=inner, resume=third)
    res4, _ = run_tls(lab, service, fourth)
    assert fourth.resumed() and res4.action == "reject"


def test_tls_min_version_enforced(lab: Lab) -> None:
    res, _ = run_tls(lab, lab.service(tls_min_version="1.3"),
                     TlsPeer(lab, "peap", version="1.2"))
    assert res.action == "reject"


def test_tls_garbage_rejected_not_raised(lab: Lab) -> None:
    from tests.test_eap_peer import Conversation, identity, nak, response

    service = lab.service()
    conv = Conversation(service)
    res = conv.send(identity(1, "x"))
    req = packet.parse(res.eap or b"")
    res = conv.send(nak(req.identifier, packet.TTLS))
    req = packet.parse(res.eap or b"")
    res = conv.send(response(req.identifier, packet.TTLS, b"\x00" + b"\x16\x03\x01garbage" * 9))
    assert res.action == "reject"
    assert res.reason.startswith("TLS")
    assert service.live == 0


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_forged_record_inside_the_tunnel_rejected_not_raised(lab: Lab, version: str) -> None:
    # Once the handshake is done, records are read straight from OpenSSL: an application
    # record that fails its AEAD check must end the conversation with a TLS reason.
    from tests.test_eap_peer import Conversation, identity, nak, response

    service = lab.service()
    peer = TlsPeer(lab, "peap", version=version)
    conv = Conversation(service)
    res = conv.send(identity(1, "anonymous"))
    req = packet.parse(res.eap or b"")
    res = conv.send(nak(req.identifier, packet.PEAP)) if req.type != packet.PEAP else res
    while not peer.established:
        req = packet.parse(res.eap or b"")
        res = conv.send(response(req.identifier, packet.PEAP, peer.respond(req.data)))
        assert res.action == "challenge"
    req = packet.parse(res.eap or b"")
    forged = b"\x17\x03\x03\x00\x30" + bytes(range(48))  # application data, bad tag
    res = conv.send(response(req.identifier, packet.PEAP, b"\x00" + forged))
    assert res.action == "reject"
    assert res.reason.startswith("TLS: "), res.reason
    assert service.live == 0


def test_fragment_flood_beyond_limit_fails(lab: Lab) -> None:
    from tests.test_eap_peer import Conversation, identity, nak, response

    service = lab.service(max_bytes_per_conversation=8192)
    conv = Conversation(service)
    res = conv.send(identity(1, "x"))
    req = packet.parse(res.eap or b"")
    res = conv.send(nak(req.identifier, packet.TLS))
    for _ in range(100):
        req = packet.parse(res.eap or b"")
        res = conv.send(response(req.identifier, packet.TLS, b"\x40" + b"A" * 1000))  # M set
        if res.action != "challenge":
            break
    assert res.action == "reject"
    assert "too big" in res.reason or "long" in res.reason
    assert service.live == 0


def test_announced_length_too_long_fails(lab: Lab) -> None:
    from tests.test_eap_peer import Conversation, identity, nak, response

    service = lab.service()
    conv = Conversation(service)
    res = conv.send(identity(1, "x"))
    req = packet.parse(res.eap or b"")
    res = conv.send(nak(req.identifier, packet.PEAP))
    req = packet.parse(res.eap or b"")
    res = conv.send(response(req.identifier, packet.PEAP, b"\xc0\x7f\xff\xff\xff" + b"A" * 10))
    assert res.action == "reject"


@pytest.mark.parametrize(("method", "inner"), [("ttls", "pap"), ("ttls", "mschapv2"),
                                               ("peap", "")])
@pytest.mark.parametrize("nak", [False, True])
def test_posture_method_runs_inside_the_tunnel(lab: Lab, method: str, inner: str,
                                               nak: bool) -> None:
    from nac.eap.service import EapService
    from tests.test_eap_peer import fake_posture

    service = EapService(lab.config(), lab.accounts.get, lab.box, posture=fake_posture)
    peer = TlsPeer(lab, method, inner=inner)
    peer.posture_nak = nak
    res, _ = run_tls(lab, service, peer)
    assert res.action == "accept", res.reason
    assert res.identity == "demo" and res.msk == peer_msk(peer)
    # A peer without a posture agent NAKs: still authenticated, posture unknown.
    assert res.posture == (None if nak else {"report": "firewall=on"})


def test_ttls_mschapv2_success_carries_the_posture_request(lab: Lab) -> None:
    """MS-CHAP2-Success and the posture method's first request travel in one tunnel
    message (one round trip fewer); without posture, EAP-Success waits for the peer's ack
    of MS-CHAP2-Success."""
    from nac.eap.service import EapService
    from tests.test_eap_peer import fake_posture

    def together(peer: TlsPeer) -> list[tuple[bool, bool]]:
        seen = []
        for data in peer.app_seen:
            avps = avp.parse(data)
            seen.append((avp.find(avps, avp.MS_CHAP2_SUCCESS, avp.MICROSOFT) is not None,
                         avp.find(avps, avp.EAP_MESSAGE) is not None))
        return seen

    rounds = {}
    for posture in (fake_posture, None):
        service = EapService(lab.config(), lab.accounts.get, lab.box, posture=posture)
        peer = TlsPeer(lab, "ttls", inner="mschapv2")
        res, conv = run_tls(lab, service, peer)
        assert res.action == "accept", res.reason
        rounds[posture is not None] = conv.rounds
        if posture is not None:
            assert res.posture == {"report": "firewall=on"}
            assert together(peer) == [(True, True)]
        else:
            assert together(peer) == [(True, False)]
    # The posture round (request, report) takes the place of the ack of MS-CHAP2-Success:
    # a one-round posture method costs no round at all (it cost one when the request
    # waited for that ack).
    assert rounds[True] == rounds[False]


def test_rsa_pki_all_tls_methods(tmp_path: Path) -> None:
    from nac.pki import init_pki, issue_client

    lab = Lab(tmp_path)
    init_pki(tmp_path, use_rsa=True, force=True)
    lab.client_cert, lab.client_key, _ = issue_client(tmp_path, "demo", tmp_path / "rsa",
                                                      use_rsa=True)
    service = lab.service()
    for method, inner in (("tls", ""), ("peap", ""), ("ttls", "pap")):
        for version in ("1.2", "1.3"):
            peer = TlsPeer(lab, method, version=version, cert=method == "tls", inner=inner)
            res, _ = run_tls(lab, service, peer)
            assert res.action == "accept", (method, version, res.reason)
            assert res.msk == peer_msk(peer)


def test_server_certificate_cannot_log_in_as_a_client(lab: Lab) -> None:
    # serverAuth-only EKU: OpenSSL checks the ssl_client purpose of client certificates.
    peer = TlsPeer(lab, "tls", version="1.2", cert=(lab.pki.server_cert, lab.pki.server_key))
    res, _ = run_tls(lab, lab.service(), peer)
    assert res.action == "reject"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([packet.TLS, packet.PEAP, packet.TTLS]),
       st.lists(st.binary(max_size=40), min_size=1, max_size=8))
def test_tls_framing_fuzz_never_raises(lab: Lab, eap_type: int, blobs: list[bytes]) -> None:
    from tests.test_eap_peer import Conversation, identity, nak, response

    service = _fuzz_service(lab)
    conv = Conversation(service)
    res = conv.send(identity(1, "x"))
    req = packet.parse(res.eap or b"")
    res = conv.send(nak(req.identifier, eap_type))
    for blob in blobs:
        if res.action != "challenge":
            break
        req = packet.parse(res.eap or b"")
        res = conv.send(response(req.identifier, eap_type, blob))
        assert not res.reason.startswith("internal error"), res.reason


_SERVICES: dict[int, object] = {}


def _fuzz_service(lab: Lab):  # type: ignore[no-untyped-def]
    if id(lab) not in _SERVICES:
        _SERVICES[id(lab)] = lab.service()
    return _SERVICES[id(lab)]


@pytest.mark.parametrize("inner", ["pap", "mschapv2"])
def test_station_that_abandons_posture_is_then_authenticated_without_it(lab: Lab,
                                                                        inner: str) -> None:
    from nac.eap.service import EapService, NasInfo
    from tests.test_eap_peer import Abandon, fake_posture

    service = EapService(lab.config(idle_timeout=30, posture_fallback_seconds=600),
                         lab.accounts.get, lab.box, posture=fake_posture)
    host = NasInfo("10.0.0.2", None, "generic", "02-00-00-00-00-07", None)
    other = NasInfo("10.0.0.2", None, "generic", "02-00-00-00-00-08", None)

    def agentless(nas: NasInfo, now: float) -> object:
        peer = TlsPeer(lab, "ttls", inner=inner)
        peer.posture_abandon = True
        try:
            return run_tls(lab, service, peer, nas=nas, now=now)[0]
        except Abandon:
            return None

    assert agentless(host, 1000.0) is None  # gave up at the posture method's first request
    # Retry (before the idle timeout), via a NAS that spells MACs differently: no posture.
    res = agentless(NasInfo("10.0.0.3", None, "generic", "0200.0000.0007", None), 1010.0)
    assert res is not None and res.action == "accept" and res.posture is None
    # Detected by expiry too: another station abandons, its conversation times out.
    assert agentless(other, 1000.0) is None
    service.expire(1100.0)
    res = agentless(other, 1101.0)
    assert res is not None and res.action == "accept"
    # After the fallback period the posture method is offered again.
    assert agentless(host, 1000.0 + 700) is None
    # A station with an agent is unaffected.
    peer = TlsPeer(lab, "ttls", inner=inner)
    res2, _ = run_tls(lab, service, peer,
                      nas=NasInfo("10.0.0.2", None, "generic", "02-00-00-00-00-09", None))
    assert res2.posture == {"report": "firewall=on"}


def test_posture_only_after_configured_methods(lab: Lab) -> None:
    from nac.eap.service import EapService
    from tests.test_eap_peer import fake_posture

    service = EapService(lab.config(posture_methods=["ttls/eap-mschapv2"]), lab.accounts.get,
                         lab.box, posture=fake_posture)
    res, _ = run_tls(lab, service, TlsPeer(lab, "ttls", inner="pap"))
    assert res.action == "accept" and res.posture is None


def test_revocation_while_running_takes_effect_on_reload(tmp_path: Path) -> None:
    import os

    lab = Lab(tmp_path)
    service = lab.service()
    assert service.reload_crl_if_changed() is False  # nothing changed since start
    res, _ = run_tls(lab, service, TlsPeer(lab, "tls", version="1.3", cert=True))
    assert res.action == "accept"
    revoke(tmp_path, "demo")
    later = lab.pki.crl.stat().st_mtime + 1  # the same second would look unchanged
    os.utime(lab.pki.crl, (later, later))
    assert service.reload_crl_if_changed() is True
    res, _ = run_tls(lab, service, TlsPeer(lab, "tls", version="1.3", cert=True))
    assert res.action == "reject" and "revoked" in res.reason


@pytest.mark.parametrize("password", ["demo-password", "wrong-password"])
def test_ttls_pap_password_hash_leaves_the_round_as_slow_work(lab: Lab, password: str) -> None:
    """With defer_slow (the server's packet loop), a TTLS/PAP password the memo does not
    know comes back as EapResult("slow"): the hash runs elsewhere, resume() finishes the
    round; a second conversation with the same good password needs no hash at all."""
    service = lab.service()
    service.defer_slow = True
    slow_rounds = 0
    original = service.handle

    def driver(**kw):  # type: ignore[no-untyped-def]
        nonlocal slow_rounds
        res = original(**kw)
        if res.action == "slow":
            slow_rounds += 1
            assert res.work is not None and res.resume is not None
            # A retransmission while the hash runs is dropped, not answered twice.
            again = original(**kw)
            assert again.action == "drop" and again.reason == "round in progress"
            res = res.resume(res.work(), kw["now"])
        return res

    service.handle = driver  # type: ignore[method-assign]
    res, _ = run_tls(lab, service, TlsPeer(lab, "ttls", version="1.2", inner="pap",
                                           password=password))
    assert slow_rounds == 1
    if password != "demo-password":
        assert res.action == "reject" and "wrong password" in res.reason
        return
    assert res.action == "accept" and res.method == "ttls/pap" and res.identity == "demo"
    res, _ = run_tls(lab, service, TlsPeer(lab, "ttls", version="1.3", inner="pap"))
    assert res.action == "accept" and slow_rounds == 1  # the memo knew it this time


def test_a_message_that_fits_goes_in_one_piece_without_length() -> None:
    """Unfragmented, a TLS message needs no Length field: 4 more bytes in the one piece
    (fragment_size counts the EAP header, type and flags)."""
    from nac.eap.tls_engine import FLAG_L, FLAG_M, Framer

    framer = Framer(1020)
    framer.queue(b"x" * 1014)
    piece = framer.next_fragment()
    assert len(piece) + 5 == 1020 and piece[0] == 0 and not framer.sending
    framer.queue(b"x" * 1015)
    first = framer.next_fragment()
    assert first[0] == FLAG_L | FLAG_M and len(first) + 5 <= 1020
    rest = framer.next_fragment()
    assert rest[0] == 0 and len(first) - 5 + len(rest) - 1 == 1015 and not framer.sending


def test_one_piece_takes_only_a_whole_unfragmented_response() -> None:
    """The round fast path: a response with no M flag, and no L flag or one announcing
    exactly the octets that follow (wpa_supplicant's ClientHello and Finished), while
    nothing is half received or still being sent is the message itself; anything else is
    left to receive()."""
    from nac.eap.tls_engine import FLAG_L, FLAG_M, Framer

    framer = Framer(1020)
    assert framer.one_piece(b"\x00" + b"hello") == b"hello"
    assert framer.one_piece(b"\x00") is None  # an ACK
    assert framer.one_piece(bytes([FLAG_L]) + b"\x00\x00\x00\x05hello") == b"hello"
    for length in (0, 4, 6, 2**32 - 1):  # a length that is not what follows: receive()
        assert framer.one_piece(bytes([FLAG_L]) + length.to_bytes(4, "big") + b"hello") is None
    assert framer.one_piece(bytes([FLAG_L]) + b"\x00\x00\x00\x00") is None  # empty body
    assert framer.one_piece(bytes([FLAG_L | FLAG_M]) + b"\x00\x00\x00\x05hel") is None
    assert framer.one_piece(bytes([FLAG_L]) + b"\x00\x00") is None  # truncated length
    assert framer.one_piece(bytes([FLAG_M]) + b"hel") is None
    assert framer.receive(bytes([FLAG_M]) + b"hel").kind == "partial"
    assert framer.one_piece(b"\x00" + b"lo") is None  # the rest of a fragmented message
    assert framer.receive(b"\x00" + b"lo").data == b"hello"
    framer.queue(b"y" * 3000)
    framer.next_fragment()
    assert framer.one_piece(b"\x00" + b"data") is None  # we are still sending
    assert framer.receive(b"\x00" + b"data").kind == "error"


@pytest.mark.parametrize("method", ["peap", "ttls", "tls"])
def test_tunnels_run_without_a_pyopenssl_connection(lab: Lab, method: str) -> None:
    """PEAP and TTLS make their SSL object directly (no peer to verify); EAP-TLS keeps
    pyOpenSSL's Connection for its verify callback. Both map OpenSSL's errors alike."""
    from nac.eap.tls_engine import TlsContexts, TlsError, TlsSession

    contexts = TlsContexts(lab.config())
    session = TlsSession(contexts, method)
    assert (session.conn is None) == (method != "tls")
    assert session.peer_certificate() is None
    with pytest.raises(TlsError, match="^TLS: "):
        session.feed(b"\x16\x03\x01\x00\x05garbage-not-a-hello")


def test_a_proposal_the_peer_naks_makes_no_ssl_object(lab: Lab) -> None:
    """The SSL object comes with the first response: a TTLS station NAKing the PEAP
    proposal leaves nothing to build and free; the conversation still succeeds."""
    from tests.test_eap_peer import Conversation, identity, nak

    service = lab.service(default_method="peap")
    conv = Conversation(service)
    res = conv.send(identity(1, "anonymous"))
    proposed = service._convs[res.state].method  # noqa: SLF001
    assert proposed is not None and proposed.name == "peap" and proposed.tls is None
    res = conv.send(nak(packet.parse(res.eap or b"").identifier, packet.TTLS))
    assert res.action == "challenge"
    assert service._convs[res.state].method.tls is None  # noqa: SLF001  (TTLS: Start sent)
    res, _ = run_tls(lab, service, TlsPeer(lab, "ttls", version="1.3", inner="pap"))
    assert res.action == "accept" and res.method == "ttls/pap"
