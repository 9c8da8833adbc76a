"""PEAP with eap.peap_skip_inner_identity: phase 2 opens with the MSCHAPv2 Challenge, and
the Response's Name is the identity that is looked up, checked and authenticated."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from nac.accounts import make_account
from nac.eap import packet
from nac.eap.config import EapConfig
from nac.eap.service import config_from_settings
from tests.test_eap_peer import (
    PASSWORD,
    POSTURE_TYPE,
    Lab,
    TlsPeer,
    fake_posture,
    mschapv2_response,
    run_tls,
)
from tests.test_eap_tls_methods import peer_msk


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("eap-peap-skip"))
    lab.accounts["alice"] = make_account("alice", "alice-pw", role="staff")
    # Allowed only TTLS: PEAP-MSCHAPv2 must be refused for this account.
    lab.accounts["ttlsonly"] = replace(make_account("ttlsonly", "t-pw"), methods=["ttls"])
    return lab


class PeapPeer(TlsPeer):
    """A PEAPv0 peer that takes inner requests with or without their EAP header (as
    wpa_supplicant does), sends `name` as its inner Identity and MSCHAPv2 Name, and can NAK
    the first MSCHAPv2 Challenge that comes without an Identity request before it."""

    def __init__(self, lab: Lab, *, name: str = "demo", password: str = PASSWORD,
                 nak_unasked: bool = False, **kw: object) -> None:
        super().__init__(lab, "peap", inner="", password=password, **kw)  # type: ignore[arg-type]
        self.name = name
        self.nak_unasked = nak_unasked
        self.asked: list[int] = []  # inner request types in order (Identity = 1)

    def _app(self) -> bytes:
        from OpenSSL import SSL

        try:
            data = self.conn.recv(65536)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            return b""
        self.app_seen.append(data)
        if len(data) >= 5 and data[0] == packet.REQUEST \
                and int.from_bytes(data[2:4], "big") == len(data):
            if data[4] == packet.TLV:  # Result TLV: confirm with the same status
                return packet.EapPacket(packet.RESPONSE, data[1], packet.TLV,
                                        data[5:]).encode()
            data = data[4:]  # a request sent with its header
        if data[0] == POSTURE_TYPE:
            hdr = struct.pack("!BBH", packet.REQUEST, 0, 4 + len(data))
            return self._posture(packet.parse(hdr + data))[4:]
        self.asked.append(data[0])
        if data[0] == packet.IDENTITY:
            return bytes([packet.IDENTITY]) + self.name.encode()
        if data[0] == packet.MSCHAPV2:
            op = data[1]
            if op == 1:
                if self.nak_unasked and packet.IDENTITY not in self.asked:
                    return bytes([packet.NAK, packet.MSCHAPV2])
                body, _ = mschapv2_response(data[1:], self.name, self.password)
                return bytes([packet.MSCHAPV2]) + body
            return bytes([packet.MSCHAPV2, op])  # ack Success (3) or Failure (4)
        return b""


def test_off_by_default() -> None:
    assert EapConfig().peap_skip_inner_identity is False

    class Settings:
        peap_skip_inner_identity = True

    assert config_from_settings(Settings()).peap_skip_inner_identity is True


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("fragment", [1020, 300])
def test_challenge_first_saves_the_identity_round(lab: Lab, version: str,
                                                  fragment: int) -> None:
    rounds: dict[bool, int] = {}
    for skip in (True, False):
        service = lab.service(peap_skip_inner_identity=skip, fragment_size=fragment)
        peer = PeapPeer(lab, name="alice", password="alice-pw", version=version,
                        fragment=fragment)
        res, conv = run_tls(lab, service, peer, name="anonymous")
        assert res.action == "accept", res.reason
        # The MSCHAPv2 Name authenticated, not the anonymous outer identity.
        assert (res.identity, res.role, res.method) == ("alice", "staff", "peap/mschapv2")
        assert res.outer_identity == "anonymous"
        assert res.msk == peer_msk(peer)
        assert peer.asked[0] == (packet.MSCHAPV2 if skip else packet.IDENTITY)
        assert (packet.IDENTITY in peer.asked) == (not skip)
        rounds[skip] = conv.rounds
    if fragment == 1020:
        assert rounds[True] == rounds[False] - 1
        if version == "1.2":
            assert rounds == {False: 7, True: 6}
    else:  # the Challenge is longer than the Identity request: a flight may need a piece more
        assert rounds[True] <= rounds[False]


@pytest.mark.parametrize(("name", "password", "why"), [
    ("alice", "wrong", "wrong password"),
    ("nobody", "x", "unknown user"),
    ("", PASSWORD, "unknown user"),
    ("ttlsonly", "t-pw", "method not allowed"),
])
def test_the_name_is_checked_as_the_inner_identity_was(lab: Lab, name: str, password: str,
                                                       why: str) -> None:
    service = lab.service(peap_skip_inner_identity=True)
    peer = PeapPeer(lab, name=name, password=password, version="1.3")
    # The outer identity names a real account: it must not be what authenticates.
    res, _ = run_tls(lab, service, peer, name="demo")
    assert res.action == "reject"
    assert why in res.reason and res.identity is None
    assert peer.asked[0] == packet.MSCHAPV2


def test_a_nak_to_the_unasked_challenge_falls_back_to_the_identity(lab: Lab) -> None:
    service = lab.service(peap_skip_inner_identity=True)
    peer = PeapPeer(lab, name="alice", password="alice-pw", version="1.2", nak_unasked=True)
    res, conv = run_tls(lab, service, peer)
    assert res.action == "accept", res.reason
    assert res.identity == "alice"
    assert peer.asked[:3] == [packet.MSCHAPV2, packet.IDENTITY, packet.MSCHAPV2]
    assert conv.rounds == 8  # the NAK's round on top of today's 7


def test_a_second_nak_is_a_refusal(lab: Lab) -> None:
    service = lab.service(peap_skip_inner_identity=True)

    class Refuser(PeapPeer):
        def _app(self) -> bytes:
            out = super()._app()
            if out[:1] == bytes([packet.MSCHAPV2]) and self.asked[-1] == packet.MSCHAPV2 \
                    and out[1:2] == b"\x02":
                return bytes([packet.NAK, 6])  # wants GTC, never MSCHAPv2
            return out

    peer = Refuser(lab, name="alice", password="alice-pw", nak_unasked=True)
    res, _ = run_tls(lab, service, peer)
    assert res.action == "reject"
    assert "refused inner mschapv2" in res.reason
    assert peer.asked[:3] == [packet.MSCHAPV2, packet.IDENTITY, packet.MSCHAPV2]


def test_mschapv2_not_allowed_inside_asks_the_identity_as_today(lab: Lab) -> None:
    service = lab.service(peap_skip_inner_identity=True, inner_methods=["ttls/pap"])
    peer = PeapPeer(lab, name="alice", password="alice-pw")
    res, _ = run_tls(lab, service, peer)
    assert res.action == "reject"
    assert "peap/mschapv2 is not allowed" in res.reason
    assert peer.asked == [packet.IDENTITY]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_fast_reconnect_still_skips_the_inner_method(lab: Lab, version: str) -> None:
    service = lab.service(peap_skip_inner_identity=True)
    first = PeapPeer(lab, name="alice", password="alice-pw", version=version)
    res1, conv1 = run_tls(lab, service, first)
    assert res1.action == "accept" and res1.identity == "alice"
    again = PeapPeer(lab, name="alice", password="alice-pw", version=version, resume=first)
    res, conv = run_tls(lab, service, again)
    assert res.action == "accept", res.reason
    assert (res.identity, res.role) == ("alice", "staff")  # remembered from the Name
    assert again.asked == []  # no Identity, no Challenge: the Result TLV at once
    assert conv.rounds < conv1.rounds


def test_posture_runs_for_the_name_that_authenticated(lab: Lab) -> None:
    service = lab.service(peap_skip_inner_identity=True)
    seen: list[str] = []

    def factory(env, outcome):  # type: ignore[no-untyped-def]
        seen.append(outcome.identity)
        return fake_posture(env, outcome)

    service.posture = factory
    peer = PeapPeer(lab, name="alice", password="alice-pw", version="1.3")
    res, _ = run_tls(lab, service, peer, name="anonymous")
    assert res.action == "accept", res.reason
    assert seen == ["alice"] and res.identity == "alice"
    assert res.posture == {"report": "firewall=on"}
