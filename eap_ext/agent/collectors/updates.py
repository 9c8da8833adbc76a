"""The `pending_updates` section: {"security": n, "total": n} where the host can tell.

Decision (documented in README): on a live Debian-family host we ask apt itself with a
simulation (`apt-get -s upgrade`, no lock, no download, only the lists apt already has); that
is the only source that applies apt's pinning and version order. Its "Inst" lines name the
archive, so updates from a "*-security" suite are the security ones. The simulation takes
seconds and runs inside the 802.1X exchange, so its result is cached in the state directory
(pending_updates.json) together with the mtimes of what it depends on (dpkg status, the apt
lists directory, apt's configuration); it is rerun only when one of those changed. Under
NAC_AGENT_ROOT no
command runs; the only source then is update-notifier's cache file (Ubuntu), else "unknown".
RPM/apk hosts: "unknown" (dnf/apk would need network metadata).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from .. import state
from ..hostroot import HostRoot

log = logging.getLogger(__name__)

NOTIFIER_CACHE = "var/lib/update-notifier/updates-available"
CACHE_FILE = "pending_updates.json"
# apt's answer depends only on these (installed state, package lists, pinning/sources).
APT_INPUTS = ("var/lib/dpkg/status", "var/lib/apt/lists", "etc/apt", "etc/apt/preferences.d",
              "etc/apt/sources.list.d", "etc/apt/sources.list")
_INST = re.compile(r"^Inst \S+ (?:\[[^\]]*\] )?\((\S+) (?P<origins>[^\[)]*)")


def parse_apt_simulation(text: str) -> dict[str, int]:
    total = security = 0
    for line in text.splitlines():
        match = _INST.match(line)
        if not match:
            continue
        total += 1
        # e.g. "(3.0.15-1~deb12u1 Debian-Security:12/stable-security [amd64])"
        if "-security" in match.group("origins").lower():
            security += 1
    return {"security": security, "total": total}


def parse_notifier_cache(text: str) -> dict[str, int] | None:
    total = re.search(r"(\d+) (?:updates?|packages?) can be (?:applied|updated)", text)
    if total is None:
        return None
    security = re.search(r"(\d+) (?:of these )?updates? (?:is a|are) (?:standard )?security", text)
    return {"security": int(security.group(1)) if security else 0, "total": int(total.group(1))}


def apt_inputs(root: HostRoot) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for rel in APT_INPUTS:
        try:
            found[rel] = root.path(rel).stat().st_mtime_ns
        except OSError:
            found[rel] = None
    return found


def _cached(cache: Path, inputs: dict[str, int | None]) -> dict[str, int] | None:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("inputs") == inputs:
        result = data.get("result")
        return result if isinstance(result, dict) else None
    return None


def _store(cache: Path, inputs: dict[str, int | None], result: dict[str, int]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"inputs": inputs, "result": result}))
        os.replace(tmp, cache)
    except OSError as exc:
        log.debug("cannot cache pending updates: %s", exc)


def apt_pending(root: HostRoot, cache: Path | None) -> dict[str, int] | None:
    inputs = apt_inputs(root)
    if cache is not None and (hit := _cached(cache, inputs)) is not None:
        return hit
    out = root.run(["apt-get", "-s", "-o", "Debug::NoLocking=1", "upgrade"], timeout=60)
    if out is None:
        return None
    result = parse_apt_simulation(out)
    if cache is not None:
        _store(cache, inputs, result)
    return result


def collect(root: HostRoot, cache: Path | None = None) -> dict[str, int] | str:
    if not root.rooted and root.can_run("apt-get"):
        result = apt_pending(root, cache or state.state_dir() / CACHE_FILE)
        if result is not None:
            return result
    cache = root.read_text(NOTIFIER_CACHE)
    if cache is not None:
        parsed = parse_notifier_cache(cache)
        if parsed is not None:
            return parsed
    return "unknown"
