"""The EAP service: negotiation, identifiers, MD5 and MSCHAPv2, bounds and hostile input."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nac.eap import mschap, packet
from nac.eap.service import EapService, NasInfo
from tests.test_eap_peer import (
    NAS,
    PASSWORD,
    Conversation,
    Lab,
    identity,
    mschapv2_response,
    nak,
    response,
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("eap-svc"))


def md5_answer(req: packet.EapPacket, secret: str) -> bytes:
    challenge = req.data[1 : 1 + req.data[0]]
    digest = hashlib.md5(bytes([req.identifier]) + secret.encode() + challenge).digest()
    return response(req.identifier, packet.MD5, bytes([16]) + digest)


def test_md5_via_nak_accepts(lab: Lab) -> None:
    conv = Conversation(lab.service())
    res = conv.send(identity(3, "demo"))
    assert res.action == "challenge" and res.state and len(res.state) == 16
    req = packet.parse(res.eap or b"")
    assert req.type == packet.PEAP and req.identifier == 4  # the default proposal
    res = conv.send(nak(req.identifier, packet.MD5))
    req = packet.parse(res.eap or b"")
    assert req.type == packet.MD5
    res = conv.send(md5_answer(req, PASSWORD))
    assert res.action == "accept", res.reason
    assert (res.identity, res.role, res.method, res.msk) == ("demo", "default", "md5", None)
    assert packet.parse(res.eap or b"") == packet.EapPacket(packet.SUCCESS, req.identifier)


def _first_proposal(svc: EapService, nas: NasInfo) -> tuple[Conversation, packet.EapPacket]:
    conv = Conversation(svc, nas=nas)
    return conv, packet.parse(conv.send(identity(3, "demo")).eap or b"")


def _md5_via_nak(svc: EapService, nas: NasInfo, secret: str = PASSWORD) -> str:
    conv, req = _first_proposal(svc, nas)
    if req.type != packet.MD5:
        req = packet.parse(conv.send(nak(req.identifier, packet.MD5)).eap or b"")
    return conv.send(md5_answer(req, secret)).action


def test_station_is_offered_the_method_it_last_succeeded_with(lab: Lab) -> None:
    svc = lab.service()
    station = NasInfo("127.0.0.1", None, "generic", "02-00-00-00-00-01", None)
    same = NasInfo("127.0.0.1", None, "generic", "02:00:00:00:00:01", None)  # other spelling
    other = NasInfo("127.0.0.1", None, "generic", "02-00-00-00-00-02", None)
    assert _first_proposal(svc, station)[1].type == packet.PEAP  # nothing known yet
    assert _md5_via_nak(svc, station, "wrong") == "reject"
    assert _first_proposal(svc, station)[1].type == packet.PEAP  # a failure teaches nothing
    assert _md5_via_nak(svc, station) == "accept"
    conv, req = _first_proposal(svc, same)
    assert req.type == packet.MD5  # no NAK round this time
    assert conv.send(md5_answer(req, PASSWORD)).action == "accept"
    assert _first_proposal(svc, other)[1].type == packet.PEAP
    # A remembered method no longer allowed is not offered; the station can still NAK.
    assert _first_proposal(lab.service(methods=["peap", "ttls"]), station)[1].type == \
        packet.PEAP
    # Off: every conversation starts with the default proposal.
    off = lab.service(remember_station_method=False)
    assert _md5_via_nak(off, station) == "accept"
    assert _first_proposal(off, station)[1].type == packet.PEAP


def test_station_memory_is_bounded(lab: Lab) -> None:
    svc = lab.service(max_conversations=4)
    stations = [NasInfo("127.0.0.1", None, "generic", f"02-00-00-00-01-{i:02x}", None)
                for i in range(6)]
    for nas in stations:
        assert _md5_via_nak(svc, nas) == "accept"
    offered = []
    for nas in stations:
        offered.append(_first_proposal(svc, nas)[1].type)
        svc.expire(5000.0)  # end it: live conversations share the bound
    # The two oldest were forgotten, the four newest are still offered MD5 first.
    assert offered == [packet.PEAP] * 2 + [packet.MD5] * 4


def test_md5_wrong_password_and_unknown_user(lab: Lab) -> None:
    for who, secret in (("demo", "wrong"), ("nobody", PASSWORD)):
        conv = Conversation(lab.service(default_method="md5"))
        req = packet.parse(conv.send(identity(1, who)).eap or b"")
        if req.type != packet.MD5:
            req = packet.parse(conv.send(nak(req.identifier, packet.MD5)).eap or b"")
        res = conv.send(md5_answer(req, secret))
        assert res.action == "reject"
        assert packet.parse(res.eap or b"").code == packet.FAILURE


def test_md5_not_offered_without_secret(lab: Lab) -> None:
    from nac.accounts import make_account

    accounts = {"nomd5": make_account("nomd5", "pw")}
    svc = EapService(lab.config(), accounts.get, lab.box)
    assert "md5" not in svc.allowed_methods("nomd5", NAS)
    conv = Conversation(svc)
    req = packet.parse(conv.send(identity(1, "nomd5")).eap or b"")
    res = conv.send(nak(req.identifier, packet.MD5))
    assert res.action == "reject" and "none allowed" in res.reason


def test_standalone_mschapv2(lab: Lab) -> None:
    conv = Conversation(lab.service(default_method="mschapv2"))
    req = packet.parse(conv.send(identity(9, "demo")).eap or b"")
    assert req.type == packet.MSCHAPV2 and req.data[0] == 1
    body, nt = mschapv2_response(req.data, "demo", PASSWORD)
    res = conv.send(response(req.identifier, packet.MSCHAPV2, body))
    req2 = packet.parse(res.eap or b"")
    assert req2.data[0] == 3  # Success request carrying the authenticator response
    from nac.accounts import nt_hash

    want = mschap.authenticator_response(nt_hash(PASSWORD), nt, body[5:21], req.data[5:21],
                                         "demo")
    assert want.encode() in req2.data
    res = conv.send(response(req2.identifier, packet.MSCHAPV2, b"\x03"))
    assert res.action == "accept" and res.method == "mschapv2"
    recv, send = mschap.server_keys(nt_hash(PASSWORD), nt)
    assert res.msk is not None and res.msk[:32] == recv + send


def test_standalone_mschapv2_wrong_password_fails_after_failure_request(lab: Lab) -> None:
    conv = Conversation(lab.service(default_method="mschapv2"))
    req = packet.parse(conv.send(identity(9, "demo")).eap or b"")
    body, _ = mschapv2_response(req.data, "demo", "nope")
    req2 = packet.parse(conv.send(response(req.identifier, packet.MSCHAPV2, body)).eap or b"")
    assert req2.data[0] == 4 and b"E=691" in req2.data
    res = conv.send(response(req2.identifier, packet.MSCHAPV2, b"\x04"))
    assert res.action == "reject" and "wrong password" in res.reason


def test_wrong_identifier_dropped_and_retransmission_repeated(lab: Lab) -> None:
    svc = lab.service()
    conv = Conversation(svc)
    first = conv.send(identity(1, "demo"))
    req = packet.parse(first.eap or b"")
    dropped = conv.send(nak((req.identifier + 5) & 0xFF, packet.MD5))
    assert (dropped.action, dropped.reason) == ("drop", "wrong identifier")
    md5_req = conv.send(nak(req.identifier, packet.MD5))
    # The same NAK again (the NAS lost our answer): the same MD5 request comes back.
    again = conv.send(nak(req.identifier, packet.MD5))
    assert again.action == "challenge" and again.eap == md5_req.eap
    res = conv.send(md5_answer(packet.parse(md5_req.eap or b""), PASSWORD))
    assert res.action == "accept"


def test_nak_only_right_after_the_proposal(lab: Lab) -> None:
    conv = Conversation(lab.service(default_method="md5"))
    req = packet.parse(conv.send(identity(1, "demo")).eap or b"")
    assert req.type == packet.MD5
    res = conv.send(nak(req.identifier, 0))  # type 0: nothing acceptable
    assert res.action == "reject"


def test_realm_and_nas_group_policy(lab: Lab) -> None:
    svc = lab.service(realm_methods={"corp.example": ["tls"]},
                      nas_group_methods={"legacy": ["md5", "peap"]})
    assert svc.allowed_methods("alice@corp.example", NAS) == ["tls"]
    legacy = NasInfo("10.0.0.1", "legacy", "generic", None, None)
    assert svc.allowed_methods("demo", legacy) == ["peap", "md5"]
    conv = Conversation(svc)
    req = packet.parse(conv.send(identity(1, "alice@corp.example")).eap or b"")
    assert req.type == packet.TLS  # default peap not allowed there: the first allowed


def test_account_methods_restrict(lab: Lab) -> None:
    from nac.accounts import make_account

    acc = make_account("pinned", "pw", allow_md5=True, box=lab.box)
    acc.methods = ("ttls",)
    svc = EapService(lab.config(), {"pinned": acc}.get, lab.box)
    assert svc.allowed_methods("pinned", NAS) == ["ttls"]


def test_unknown_state_and_non_response(lab: Lab) -> None:
    svc = lab.service()
    res = svc.handle(state=b"x" * 16, eap=response(1, packet.MD5, b"\x10" + b"0" * 16),
                     nas=NAS, now=0)
    assert res.action == "reject"
    req = packet.EapPacket(packet.REQUEST, 1, packet.IDENTITY, b"").encode()
    assert svc.handle(state=None, eap=req, nas=NAS, now=0).action == "drop"


@pytest.mark.parametrize("raw", [b"", b"\x02", b"\x02\x01\x00", b"\x02\x01\x00\x09\x01ab",
                                 b"\x02\x01\x00\x02", b"\x07\x01\x00\x05\x01",
                                 b"\x03\x01\x00\x05\x01"])
def test_truncated_or_bad_packets(lab: Lab, raw: bytes) -> None:
    svc = lab.service()
    res = svc.handle(state=None, eap=raw, nas=NAS, now=0)
    if raw == b"":  # EAP-Start: we ask for the identity
        assert res.action == "challenge"
        assert packet.parse(res.eap or b"").type == packet.IDENTITY
    else:
        assert res.action == "drop"


def test_idle_conversations_expire(lab: Lab) -> None:
    svc = lab.service(idle_timeout=5)
    a = svc.handle(state=None, eap=identity(1, "demo"), nas=NAS, now=100.0)
    svc.handle(state=None, eap=identity(1, "other"), nas=NAS, now=103.0)
    assert svc.live == 2
    assert svc.expire(104.0) == 0
    assert svc.expire(106.0) == 1
    assert svc.live == 1
    req = packet.parse(a.eap or b"")
    late = svc.handle(state=a.state, eap=nak(req.identifier, packet.MD5), nas=NAS, now=106.0)
    assert late.action == "reject" and "expired" in late.reason


def test_max_conversations(lab: Lab) -> None:
    svc = lab.service(max_conversations=3, idle_timeout=10)
    for i in range(3):
        assert svc.handle(state=None, eap=identity(i, f"u{i}"), nas=NAS, now=0).action == (
            "challenge")
    assert svc.handle(state=None, eap=identity(9, "u9"), nas=NAS, now=1).action == "drop"
    # Once the old ones are idle long enough, room is made by expiring them.
    assert svc.handle(state=None, eap=identity(9, "u9"), nas=NAS, now=20).action == "challenge"
    assert svc.live == 1


def test_states_are_unique_and_random(lab: Lab) -> None:
    svc = lab.service()
    states = {svc.handle(state=None, eap=identity(1, "demo"), nas=NAS, now=0).state
              for _ in range(200)}
    assert len(states) == 200


def test_conversation_byte_budget(lab: Lab) -> None:
    svc = lab.service(max_bytes_per_conversation=4096, default_method="md5")
    conv = Conversation(svc)
    res = conv.send(identity(1, "demo"))
    big = response(packet.parse(res.eap or b"").identifier, packet.MD5, b"\x10" + b"A" * 5000)
    res = conv.send(big)
    assert res.action == "reject" and "too big" in res.reason
    assert svc.live == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=6), st.booleans())
def test_hostile_input_never_raises(tmp_path_factory: pytest.TempPathFactory,
                                    blobs: list[bytes], keep_state: bool) -> None:
    svc = _fuzz_service(tmp_path_factory)
    state = None
    for i, blob in enumerate(blobs):
        # Half the time make it look like a Response so deeper code is reached.
        raw = blob if i % 2 else struct.pack("!BBH", 2, blob[:1][0] if blob else 0,
                                             5 + len(blob)) + bytes([1 + i % 30]) + blob
        res = svc.handle(state=state, eap=raw, nas=NAS, now=float(i))
        assert not res.reason.startswith("internal error"), res.reason
        if keep_state and res.state:
            state = res.state


_FUZZ: dict[str, EapService] = {}


def _fuzz_service(factory: pytest.TempPathFactory) -> EapService:
    if "svc" not in _FUZZ:
        _FUZZ["svc"] = Lab(Path(factory.mktemp("fuzz"))).service()
    return _FUZZ["svc"]


def test_config_from_server_settings(tmp_path: Path) -> None:
    from nac.config import EapSettings
    from nac.eap.service import config_from_settings
    from nac.pki import ensure_pki

    pki = ensure_pki(tmp_path)
    settings = EapSettings(fragment_size=300, methods=["peap", "tls"], idle_timeout=5,
                           tls_min_version="1.3")
    cfg = config_from_settings(settings, pki)
    assert (cfg.fragment_size, cfg.methods, cfg.idle_timeout) == (300, ["peap", "tls"], 5)
    assert cfg.tls_min_version == "1.3" and cfg.cert_file == pki.server_cert
    assert cfg.ca_file == pki.ca_cert and cfg.crl_file == pki.crl
    # Empty methods in the server config means every method this server has.
    assert config_from_settings(EapSettings(), pki).methods == ["peap", "ttls", "tls",
                                                                 "mschapv2", "md5"]
    # The PEAP round-trip savers are on by default, and the server config turns them off.
    default = config_from_settings(EapSettings(), pki)
    assert default.peap_fast_start and default.peap_fast_reconnect
    off = config_from_settings(EapSettings(peap_fast_start=False, peap_fast_reconnect=False), pki)
    assert not off.peap_fast_start and not off.peap_fast_reconnect
    svc = EapService(cfg, {}.get, None)
    assert svc.allowed_methods("x", NAS) == ["peap", "tls"]


def test_method_env_with_identity_keeps_every_other_field() -> None:
    """with_identity() lists MethodEnv's fields by position (dataclasses.replace costs
    several times more): a field added to MethodEnv and not to it would be dropped."""
    from dataclasses import fields, replace

    from nac.eap.config import EapConfig
    from nac.eap.methods.base import MethodEnv

    values: dict[str, object] = {f.name: object() for f in fields(MethodEnv)}
    values["config"] = EapConfig()
    env = MethodEnv(**values)  # type: ignore[arg-type]
    assert env.with_identity("inner@example") == replace(env, identity="inner@example")


def test_outcome_with_msk_keeps_every_other_field() -> None:
    """with_msk() lists Outcome's fields by position, like with_identity() above."""
    from dataclasses import fields, replace

    from nac.eap.methods.base import Outcome

    values: dict[str, object] = {f.name: object() for f in fields(Outcome)}
    out = Outcome(**values)  # type: ignore[arg-type]
    assert out.with_msk(b"k" * 64) == replace(out, msk=b"k" * 64)
