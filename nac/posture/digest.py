"""The posture digest both ends compute: SHA-256 over a canonical JSON of the posture.

Kept free of any `nac` import so the agent (eap_ext/agent) can use the very same code: the
server compares the agent's digest with its own to decide whether a quarantine certificate
still describes the host (draft 5.3, step 3).

An agent holding a certificate leads with a digest-only document (eap_ext/POSTURE_SCHEMA.md):
no sections, "digest_only": true, and its current digest beside the token. A full document
from our agent carries its digest too ("stated_digest"). Either way the digest is the one the
agent states: the posture is the agent's own report, whose digest it computes from the same
document, and the certificate is bound to the tunnel's authenticated identity. Taking it
saves the server the canonical JSON of every inventory it certifies (~3-5 ms for 1,500
packages); documents without one are hashed here.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# Fields that change on every collection without the host changing, or that carry the
# certificate itself (which must not be part of what it certifies).
VOLATILE_KEYS = ("collected_at", "certificate", "stated_digest")
# What a digest-only document may hold besides the certificate (and nothing else).
DIGEST_ONLY_KEYS = frozenset({"schema", "collected_at", "certificate", "digest_only"})
_HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical_json(obj: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8, no NaN.

    Numbers are written as Python's json writes them (5.0 stays "5.0"); an agent in another
    language must do the same. tests/test_policy_certificate.py pins a test vector.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def stated_digest(posture: dict[str, Any]) -> str | None:
    """The digest the document states: a digest-only document's (beside its certificate)
    or a full document's "stated_digest"; None when it states none (validly)."""
    if posture.get("digest_only") is True:
        if not set(posture) <= DIGEST_ONLY_KEYS:
            return None
        cert = posture.get("certificate")
        digest = cert.get("posture_digest") if isinstance(cert, dict) else None
    else:
        digest = posture.get("stated_digest")
    return digest if isinstance(digest, str) and _HEX64.fullmatch(digest) else None


def posture_digest(posture: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical posture document minus its volatile keys, or the
    digest the document states (stated_digest())."""
    stated = stated_digest(posture)
    if stated is not None:
        return stated
    stable = {k: v for k, v in posture.items() if k not in VOLATILE_KEYS}
    return hashlib.sha256(canonical_json(stable)).hexdigest()
