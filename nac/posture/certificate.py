"""Quarantine certificates (draft 5.2, 5.3): the server's signed word on an inspection.

After an inspection the server signs what it decided about which posture; the agent sends the
token back next time with its current posture digest, and the server may reuse the stored
result instead of re-evaluating while the certificate holds. It stops holding when it expires,
when the posture changed, or when the prevention feeds (epoch) or the policy (digest) changed.

Token: "qc1." + base64url(canonical JSON claims) + "." + base64url(Ed25519 signature over the
first two parts). The key lives at STATE/keys/quarantine-cert.key and is made on first use.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nac.posture.decision import Decision
from nac.posture.digest import canonical_json, posture_digest

PREFIX = "qc1"
KEY_FILE = Path("keys") / "quarantine-cert.key"
CLOCK_SKEW = 60.0  # seconds a certificate may appear to come from the future (clock drift)
# Tokens whose signature this signer issued or checked, with their claims: a host presents
# the same token at every re-authentication until it expires, and each authentication
# verifies it twice (the IMV's verdict, then the Access-Accept's decision). An Ed25519
# verification costs ~150 us here, a lookup nothing. Bounded; the oldest go first.
VERIFIED_CACHE = 20_000
# Digests in the claims are cut to what their job needs: the token crosses the tunnel in
# the result batch (base64 inside JSON inside base64), and every 4 characters here cost ~5
# there; that batch fits one 1 kB EAP piece with them cut (one EAP round trip fewer).
# Posture: 192 bits (the host picks both postures, so collisions count: 2^96 work).
# Policy: 128 bits (only the server makes policies; it names a version).
POSTURE_DIGEST_CHARS = 48
POLICY_DIGEST_CHARS = 32
MIN_DIGEST_CHARS = 32  # a certified digest shorter than this names nothing (full ones do)


@dataclass(frozen=True, slots=True)
class QuarantineCertificate:
    """What the server certified about one node's inspection."""

    node_id: str
    mac: str
    identity: str
    posture_digest: str
    segment: str
    feed_epoch: int
    policy_digest: str
    issued_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Verification:
    """ok, or the reason the certificate cannot be relied on."""

    ok: bool
    reason: str
    certificate: QuarantineCertificate | None = None

    def __bool__(self) -> bool:
        return self.ok


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)  # reject stray characters


class CertificateSigner:
    """Issues and verifies quarantine certificates with one Ed25519 key."""

    def __init__(self, key: Ed25519PrivateKey, *, cache_size: int = VERIFIED_CACHE) -> None:
        self._key = key
        self._public: Ed25519PublicKey = key.public_key()
        self._cache_size = cache_size
        # token -> its claims; only tokens whose signature holds under this key get in
        self._verified: dict[str, QuarantineCertificate] = {}

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> CertificateSigner:
        """Load STATE/keys/quarantine-cert.key, generating it (mode 0600) on first use."""
        return cls(load_or_create_key(Path(state_dir) / KEY_FILE))

    def issue(self, cert: QuarantineCertificate) -> str:
        signed = f"{PREFIX}.{_b64(canonical_json(asdict(cert)))}"
        token = f"{signed}.{_b64(self._key.sign(signed.encode('ascii')))}"
        self._remember(token, cert)  # signed here: no need to verify it when it comes back
        return token

    def _remember(self, token: str, cert: QuarantineCertificate) -> None:
        verified = self._verified
        if len(verified) >= self._cache_size:
            del verified[next(iter(verified))]
        verified[token] = cert

    def verify(
        self,
        token: str | bytes,
        *,
        posture_digest: str,
        now: float,
        feed_epoch: int,
        policy_digest: str,
    ) -> Verification:
        """Whether `token` still certifies this posture under these feeds and this policy."""
        cert = self.decode(token)
        if isinstance(cert, str):
            return Verification(False, cert)
        if not _same_digest(cert.posture_digest, posture_digest):
            return Verification(False, "posture changed since the inspection", cert)
        if now >= cert.expires_at:
            return Verification(False, "certificate expired", cert)
        if cert.issued_at > now + CLOCK_SKEW:
            return Verification(False, "certificate issued in the future", cert)
        if cert.feed_epoch != feed_epoch:
            return Verification(
                False,
                f"prevention feeds changed (epoch {cert.feed_epoch} -> {feed_epoch})",
                cert,
            )
        if not _same_digest(cert.policy_digest, policy_digest):
            return Verification(False, "site policy changed since the inspection", cert)
        return Verification(True, "valid", cert)

    def decode(self, token: str | bytes) -> QuarantineCertificate | str:
        """The certificate if the signature holds, else why not (a string)."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                return "malformed certificate"
        known = self._verified.get(token)
        if known is not None:  # the very bytes whose signature held before
            return known
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            return "malformed certificate"
        try:
            payload, signature = _unb64(parts[1]), _unb64(parts[2])
        except (binascii.Error, ValueError):
            return "malformed certificate"
        try:
            self._public.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
        except InvalidSignature:
            return "bad signature (tampered, or issued by another server key)"
        try:
            cert = QuarantineCertificate(**json.loads(payload))
        except (ValueError, TypeError):
            return "malformed certificate claims"
        self._remember(token, cert)
        return cert


def _same_digest(certified: str, current: str) -> bool:
    """The certified digest is the current one, or its prefix as certify() cuts it
    (tokens issued before the cut carry whole digests: still equal)."""
    return (bool(certified) and current.startswith(certified)
            and len(certified) >= min(len(current), MIN_DIGEST_CHARS))


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The PEM (PKCS#8) Ed25519 key at `path`; created atomically if absent."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, path)  # fails if another process won the race: use its key
        except FileExistsError:
            pem = path.read_bytes()
        finally:
            tmp.unlink()
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def certify(
    signer: CertificateSigner,
    decision: Decision,
    *,
    node_id: str,
    mac: str,
    identity: str,
    posture: dict[str, Any],
    feed_epoch: int,
    policy_digest: str,
    now: float,
) -> Decision:
    """The decision with a certificate for it attached (valid until the decision expires)."""
    cert = QuarantineCertificate(
        node_id="" if node_id == identity else node_id,  # "": the node is named by identity
        mac=mac.lower(),
        identity=identity,
        posture_digest=posture_digest(posture)[:POSTURE_DIGEST_CHARS],
        segment=decision.segment,
        feed_epoch=feed_epoch,
        policy_digest=policy_digest[:POLICY_DIGEST_CHARS],
        # whole seconds: the token travels in the agent's first EAP-TNC fragment, whose size
        # decides the round trips of every re-inspection (expiry rounded down, never later)
        issued_at=math.floor(now),
        expires_at=math.floor(decision.expires if decision.expires is not None
                              else now + 3600),
    )
    return replace(decision, certificate=signer.issue(cert).encode("ascii"))
