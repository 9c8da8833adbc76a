"""The agent's state file: what the server said last time (read by `nac-agent status`).

$NAC_AGENT_STATE_DIR (default /var/lib/nac-agent)/last.json, written atomically (temp file +
rename) because the IMC child and `status` may run at the same time.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE_ENV = "NAC_AGENT_STATE_DIR"
DEFAULT_STATE_DIR = "/var/lib/nac-agent"
STATE_FILE = "last.json"


def state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(STATE_ENV) or DEFAULT_STATE_DIR)


def state_path(environ: dict[str, str] | None = None) -> Path:
    return state_dir(environ) / STATE_FILE


def load(path: Path | None = None) -> dict[str, Any] | None:
    path = path or state_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save(data: dict[str, Any], path: Path | None = None) -> Path:
    path = path or state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".last-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


HANDSHAKE_KEYS = ("assessment", "recommendation", "segment", "remediation")


def begin_handshake(path: Path | None = None, interface: str | None = None) -> None:
    """Forget the previous handshake's answer (not the certificate, which is reused): a new
    result without remediation must not show the old remediation."""
    data = load(path)
    if data is None:
        return
    targets = [data]
    if interface and isinstance(data.get("by_interface"), dict):
        targets.append(data["by_interface"].get(interface) or {})
    for target in targets:
        for key in HANDSHAKE_KEYS:
            target.pop(key, None)
    save(data, path)


def update(changes: dict[str, Any], path: Path | None = None,
           interface: str | None = None) -> dict[str, Any]:
    """Merge `changes` into the state (None values are dropped) and stamp the time.

    Draft 5.4.1: each interface is inspected on its own and may get its own result, so with
    `interface` the changes also go under "by_interface"[interface]; the top level always
    holds the latest answer, whichever interface it came for.
    """
    data = load(path) or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kept = {k: v for k, v in changes.items() if v is not None}
    data.update(kept)
    data["updated_at"] = now
    if interface:
        per = data.setdefault("by_interface", {})
        per.setdefault(interface, {}).update({**kept, "updated_at": now})
        data["interface"] = interface
    save(data, path)
    return data
