"""Collectors: one module per posture section. `collect_posture` builds the whole document.

A collector returns its section or "unknown"; an exception inside one is logged at debug
level and turned into "unknown", so one broken probe never fails the agent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..hostroot import HostRoot
from . import (
    credentials,
    firewall,
    forwarding,
    interfaces,
    listening,
    os_info,
    packages,
    security_software,
    updates,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

SECTIONS: dict[str, Callable[[HostRoot], Any]] = {
    "os": os_info.collect,
    "packages": packages.collect,
    "pending_updates": updates.collect,
    "forwarding": forwarding.collect,
    "firewall": firewall.collect,
    "listening": listening.collect,
    "security_software": security_software.collect,
    "interfaces": interfaces.collect,
    "factory_default_password": credentials.collect,
}


def run_section(name: str, fn: Callable[[HostRoot], Any], root: HostRoot) -> Any:
    try:
        return fn(root)
    except Exception as exc:  # noqa: BLE001 - a probe must never take the agent down
        log.debug("collector %s failed: %r", name, exc, exc_info=True)
        return "unknown"


def posture_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of the posture without its volatile keys (time, certificate), canonical JSON."""
    stable = {k: v for k, v in doc.items() if k not in ("collected_at", "certificate")}
    canon = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                       allow_nan=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def collect_posture(root: HostRoot | None = None, certificate_token: str | None = None,
                    sections: dict[str, Callable[[HostRoot], Any]] | None = None,
                    now: datetime | None = None) -> dict[str, Any]:
    """The posture document of POSTURE_SCHEMA.md (schema 1)."""
    root = root or HostRoot.from_env()
    now = now or datetime.now(UTC)
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "collected_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for name, fn in (sections or SECTIONS).items():
        doc[name] = run_section(name, fn, root)
    doc["certificate"] = None
    if certificate_token:
        doc["certificate"] = {"token": certificate_token, "posture_digest": posture_digest(doc)}
    return doc
