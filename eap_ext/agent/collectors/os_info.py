"""The `os` section: os-release plus the running kernel."""

from __future__ import annotations

import os
import shlex

from ..hostroot import HostRoot


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines with shell quoting, as os-release(5) defines them."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        fields[key.strip()] = parts[0] if parts else ""
    return fields


def collect(root: HostRoot) -> dict[str, object] | str:
    # os-release(5): /etc/os-release first, /usr/lib/os-release as the fallback.
    text = root.read_text("etc/os-release") or root.read_text("usr/lib/os-release")
    if text is None:
        return "unknown"
    rel = parse_os_release(text)
    if root.rooted:
        # The kernel of an image is not running; proc/ of the root says what it would report.
        kernel = (root.read_text("proc/sys/kernel/osrelease") or "").strip() or None
        arch = (root.read_text("proc/sys/kernel/arch") or "").strip() or None
    else:
        uts = os.uname()
        kernel, arch = uts.release, uts.machine
    return {
        "family": "linux",
        "id": rel.get("ID", "linux"),
        "version_id": rel.get("VERSION_ID"),
        "version": rel.get("VERSION"),
        "pretty_name": rel.get("PRETTY_NAME"),
        "kernel": kernel,
        "arch": arch,
    }
