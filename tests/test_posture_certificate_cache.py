"""Quarantine certificates: the signature of a token is checked once per token, not at every
use (a host presents the same token at every re-authentication until it expires)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from nac.posture.certificate import CertificateSigner, QuarantineCertificate

NOW = 1_800_000_000.0
ARGS = {"posture_digest": "d", "feed_epoch": 1, "policy_digest": "p"}


def _tamper(token: str) -> str:
    prefix, claims, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    data["segment"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{sig}"


class _CountingKey:
    """Wraps a public key to count signature verifications."""

    def __init__(self, key: object) -> None:
        self.key, self.calls = key, 0

    def verify(self, signature: bytes, data: bytes) -> None:
        self.calls += 1
        self.key.verify(signature, data)  # type: ignore[attr-defined]


def test_signature_checked_once_per_token(tmp_path: Path) -> None:
    """Tokens signed here are never verified; others once. Tampered or foreign tokens are
    still refused each time, and the claims (expiry, digest, feeds) checked at every use."""
    issuer = CertificateSigner.from_state_dir(tmp_path)
    token = issuer.issue(QuarantineCertificate("n", "m", "i", "d", "normal", 1, "p", NOW,
                                               NOW + 60))
    later = CertificateSigner.from_state_dir(tmp_path)  # a restarted server: same key
    for signer, first in ((issuer, 0), (later, 1)):
        counter = _CountingKey(signer._public)
        signer._public = counter  # type: ignore[assignment]
        assert signer.verify(token, now=NOW, **ARGS).ok
        assert signer.verify(token.encode(), now=NOW + 1, **ARGS).ok
        assert "expired" in signer.verify(token, now=NOW + 60, **ARGS).reason
        assert "posture changed" in signer.verify(
            token, now=NOW, **(ARGS | {"posture_digest": "e"})).reason
        assert counter.calls == first
        for _ in range(2):  # refusals are not remembered
            assert "bad signature" in signer.verify(_tamper(token), now=NOW, **ARGS).reason
        assert counter.calls == first + 2
    other = CertificateSigner.from_state_dir(tmp_path / "other")
    assert "bad signature" in other.verify(token, now=NOW, **ARGS).reason


def test_verified_cache_is_bounded(tmp_path: Path) -> None:
    signer = CertificateSigner(CertificateSigner.from_state_dir(tmp_path)._key, cache_size=3)
    tokens = [signer.issue(QuarantineCertificate("n", "m", "i", f"d{i}", "normal", 1, "p",
                                                 NOW, NOW + 60)) for i in range(5)]
    assert list(signer._verified) == tokens[2:]
    cert = signer.decode(tokens[0])  # verified again, and remembered again
    assert isinstance(cert, QuarantineCertificate) and cert.posture_digest == "d0"
    assert list(signer._verified) == [*tokens[3:], tokens[0]]


def test_certified_digests_are_cut_and_still_bind(tmp_path: Path) -> None:
    """certify() keeps 48 hex digits of the posture digest and 32 of the policy digest (the
    token crosses the tunnel in the result batch); verify() holds them to the current
    digests' prefixes, accepts tokens with whole digests, and refuses any other posture."""
    from nac.posture.certificate import certify
    from nac.posture.decision import Decision
    from nac.posture.digest import posture_digest

    signer = CertificateSigner.from_state_dir(tmp_path)
    posture = {"schema": 1, "os": {"id": "debian", "version_id": "12"}}
    policy = "ab" * 32
    decision = Decision(segment="normal", reasons=(), expires=NOW + 600)
    token = certify(signer, decision, node_id="demo", mac="", identity="demo",
                    posture=posture, feed_epoch=1, policy_digest=policy, now=NOW).certificate
    assert token is not None
    cert = signer.decode(token)
    assert not isinstance(cert, str)
    whole = posture_digest(posture)
    assert (cert.posture_digest, cert.policy_digest) == (whole[:48], policy[:32])
    assert cert.node_id == ""  # the same as the identity: not said twice
    args = {"now": NOW, "feed_epoch": 1}
    assert signer.verify(token, posture_digest=whole, policy_digest=policy, **args)
    other = posture_digest({**posture, "forwarding": {"ipv4": True}})
    refused = signer.verify(token, posture_digest=other, policy_digest=policy, **args)
    assert not refused and "posture changed" in refused.reason
    refused = signer.verify(token, posture_digest=whole, policy_digest="cd" * 32, **args)
    assert not refused and "policy changed" in refused.reason
    # a certificate issued before the cut (whole digests) still holds
    old = signer.issue(QuarantineCertificate("demo", "", "demo", whole, "normal", 1, policy,
                                             NOW, NOW + 60))
    assert signer.verify(old, posture_digest=whole, policy_digest=policy, **args)
    # a certified digest too short to name anything never matches a whole one
    short = signer.issue(QuarantineCertificate("", "", "demo", whole[:8], "normal", 1, policy,
                                               NOW, NOW + 60))
    assert not signer.verify(short, posture_digest=whole, policy_digest=policy, **args)
