"""The posture digest both ends compute: SHA-256 over a canonical JSON of the posture.

Kept free of any `nac` import so the agent (eap_ext/agent) can use the very same code: the
server compares the agent's digest with its own to decide whether a quarantine certificate
still describes the host (draft 5.3, step 3).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Fields that change on every collection without the host changing, or that carry the
# certificate itself (which must not be part of what it certifies).
VOLATILE_KEYS = ("collected_at", "certificate")


def canonical_json(obj: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8, no NaN.

    Numbers are written as Python's json writes them (5.0 stays "5.0"); an agent in another
    language must do the same. tests/test_policy_certificate.py pins a test vector.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def posture_digest(posture: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical posture document minus its volatile keys."""
    stable = {k: v for k, v in posture.items() if k not in VOLATILE_KEYS}
    return hashlib.sha256(canonical_json(stable)).hexdigest()
