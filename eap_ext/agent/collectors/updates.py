"""The `pending_updates` section: {"security": n, "total": n} where the host can tell.

Decision (documented in README): on a live Debian-family host we ask apt itself with a
simulation (`apt-get -s upgrade`, no lock, no download, only the lists apt already has); that
is the only source that applies apt's pinning and version order. Its "Inst" lines name the
archive, so updates from a "*-security" suite are the security ones. Under NAC_AGENT_ROOT no
command runs; the only source then is update-notifier's cache file (Ubuntu), else "unknown".
RPM/apk hosts: "unknown" (dnf/apk would need network metadata).
"""

from __future__ import annotations

import re

from ..hostroot import HostRoot

NOTIFIER_CACHE = "var/lib/update-notifier/updates-available"
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


def collect(root: HostRoot) -> dict[str, int] | str:
    if not root.rooted and root.can_run("apt-get"):
        out = root.run(["apt-get", "-s", "-o", "Debug::NoLocking=1", "upgrade"], timeout=60)
        if out is not None:
            return parse_apt_simulation(out)
    cache = root.read_text(NOTIFIER_CACHE)
    if cache is not None:
        parsed = parse_notifier_cache(cache)
        if parsed is not None:
            return parsed
    return "unknown"
