"""Quarantine certificates: issued after an inspection, refused once anything they bind changes."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from nac.posture.certificate import (
    KEY_FILE,
    CertificateSigner,
    QuarantineCertificate,
    certify,
)
from nac.posture.digest import VOLATILE_KEYS, canonical_json, posture_digest
from nac.posture.evaluate import evaluate
from nac.posture.policy import Policy

DATA = Path(__file__).parent / "data" / "postures"
NOW = 1_800_000_000.0


@pytest.fixture
def posture() -> dict:
    return json.loads((DATA / "debian12_compliant.json").read_text())


@pytest.fixture
def signer(tmp_path: Path) -> CertificateSigner:
    return CertificateSigner.from_state_dir(tmp_path)


def issue(signer: CertificateSigner, posture: dict, policy: Policy, epoch: int = 3) -> bytes:
    decision = evaluate(policy, posture, role="default", index=None, now=NOW)
    certified = certify(
        signer, decision, node_id="n1", mac="52:54:00:12:34:56", identity="alice",
        posture=posture, feed_epoch=epoch, policy_digest=policy.digest, now=NOW,
    )  # fmt: skip
    assert certified.certificate is not None
    assert certified.segment == decision.segment
    return certified.certificate


def check(signer: CertificateSigner, token: bytes | str, posture: dict, policy: Policy, **kw):
    args = {"posture_digest": posture_digest(posture), "now": NOW + 10, "feed_epoch": 3,
            "policy_digest": policy.digest} | kw  # fmt: skip
    return signer.verify(token, **args)


def test_valid_certificate(signer: CertificateSigner, posture: dict) -> None:
    policy = Policy.sample()
    result = check(signer, issue(signer, posture, policy), posture, policy)
    assert result.ok, result.reason
    cert = result.certificate
    assert cert is not None
    assert (cert.node_id, cert.mac, cert.identity, cert.segment) == (
        "n1", "52:54:00:12:34:56", "alice", "normal",
    )  # fmt: skip
    assert cert.expires_at == NOW + 3600


def test_volatile_fields_do_not_change_the_digest(signer: CertificateSigner, posture: dict) -> None:
    policy = Policy.sample()
    token = issue(signer, posture, policy)
    later = posture | {"collected_at": "2026-11-28T00:30:00Z", "certificate": {"token": "x"}}
    assert check(signer, token, later, policy).ok
    assert posture_digest(later) == posture_digest(dict(reversed(list(posture.items()))))


def _tamper(token: bytes) -> str:
    prefix, claims, sig = token.decode().split(".")
    data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    data["segment"] = "normal" if data["segment"] != "normal" else "admin"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{sig}"


def test_refusals(signer: CertificateSigner, posture: dict, tmp_path: Path) -> None:
    policy = Policy.sample()
    token = issue(signer, posture, policy)
    changed = posture | {"forwarding": {"ipv4": True, "ipv6": False, "bridges": []}}
    other_policy = Policy.sample().model_copy(update={"require_posture": False})
    other_signer = CertificateSigner.from_state_dir(tmp_path / "other")
    cases = {
        "tampered": (check(signer, _tamper(token), posture, policy), "bad signature"),
        "other key": (check(other_signer, token, posture, policy), "bad signature"),
        "feed epoch": (check(signer, token, posture, policy, feed_epoch=4), "epoch 3 -> 4"),
        "expired": (check(signer, token, posture, policy, now=NOW + 3600), "expired"),
        "posture": (check(signer, token, changed, policy), "posture changed"),
        "policy": (
            check(signer, token, posture, policy, policy_digest=other_policy.digest),
            "policy changed",
        ),
        "garbage": (check(signer, "qc1.!!.??", posture, policy), "malformed"),
        "future": (check(signer, token, posture, policy, now=NOW - 3600), "future"),
    }
    for name, (result, reason) in cases.items():
        assert not result.ok, name
        assert reason in result.reason, (name, result.reason)
    assert other_policy.digest != policy.digest


def test_key_is_made_once_and_private(tmp_path: Path) -> None:
    a = CertificateSigner.from_state_dir(tmp_path)
    key_path = tmp_path / KEY_FILE
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    b = CertificateSigner.from_state_dir(tmp_path)  # same key on restart
    cert = QuarantineCertificate("n", "m", "i", "d", "normal", 1, "p", NOW, NOW + 60)
    assert b.verify(a.issue(cert), posture_digest="d", now=NOW, feed_epoch=1, policy_digest="p")


def test_posture_digest_test_vector() -> None:
    """Pinned: the agent computes the same bytes; changing them breaks deployed agents."""
    doc = {
        "schema": 1, "collected_at": "x", "certificate": None, "note": "\u00fc",
        "os": {"version_id": "12", "id": "debian"}, "pending_updates": {"security": 2},
        "security_software": [{"name": "clamav", "signature_age_hours": 5.0}],
    }  # fmt: skip
    assert canonical_json({k: v for k, v in doc.items() if k not in VOLATILE_KEYS}) == (
        b'{"note":"\xc3\xbc","os":{"id":"debian","version_id":"12"},'
        b'"pending_updates":{"security":2},"schema":1,'
        b'"security_software":[{"name":"clamav","signature_age_hours":5.0}]}'
    )
    assert posture_digest(doc) == "33a50cd0969e77ba9330799f83ea3e007fae79b2a69c34c1c4cb07e7cf8f442c"


def test_digest_module_stands_alone() -> None:
    """The agent ships without `nac`: digest.py must import nothing from it."""
    source = (Path(__file__).parent.parent / "nac" / "posture" / "digest.py").read_text()
    assert "import nac" not in source and "from nac" not in source


def test_digest_only_document_is_checked_by_the_digest_it_states(
    signer: CertificateSigner, posture: dict
) -> None:
    """The agent leads with certificate + digest and no inventory: the certificate issued
    for the full posture holds for that document, and only for that exact shape."""
    policy = Policy.sample()
    token = issue(signer, posture, policy)
    stated = {"schema": 1, "digest_only": True,
              "certificate": {"token": token.decode(), "posture_digest": posture_digest(posture)}}
    assert posture_digest(stated) == posture_digest(posture)
    assert check(signer, token, stated, policy).ok
    # a stated digest counts only in a document with no section beside it
    assert posture_digest({**stated, "os": posture["os"]}) != posture_digest(posture)
    assert posture_digest({**stated, "digest_only": 1}) != posture_digest(posture)
    bad = {**stated, "certificate": {"token": "x", "posture_digest": "not hex"}}
    assert posture_digest(bad) != "not hex"
    # whole seconds in the claims: shorter tokens, expiry never later than the decision's
    cert = signer.decode(token)
    assert not isinstance(cert, str) and cert.issued_at == int(cert.issued_at)


def test_full_document_states_its_digest(posture: dict) -> None:
    """Our agent sends its digest along; the server certifies it instead of hashing the
    inventory again. A malformed one is ignored, and the key never enters the digest."""
    mine = posture_digest(posture)
    assert posture_digest({**posture, "stated_digest": "ab" * 32}) == "ab" * 32
    assert posture_digest({**posture, "stated_digest": "AB" * 32}) == mine
    assert posture_digest({**posture, "stated_digest": 7}) == mine
