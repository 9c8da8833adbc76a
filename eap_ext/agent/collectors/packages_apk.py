"""Installed Alpine packages from the apk database (lib/apk/db/installed)."""

from __future__ import annotations

from ..hostroot import HostRoot
from .purl import make_purl

INSTALLED = "lib/apk/db/installed"


def parse_installed(text: str, distro_id: str, distro: str | None) -> list[dict[str, str]]:
    """One-letter-key stanzas: P name, V version, A arch, o origin (the source package)."""
    packages = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:]
        name, version = fields.get("P"), fields.get("V")
        if not name or not version:
            continue
        arch = fields.get("A", "noarch")
        packages.append({
            "name": name, "version": version, "arch": arch,
            "source": fields.get("o", name), "source_version": version, "manager": "apk",
            "purl": make_purl("apk", distro_id, name, version, arch, distro),
        })
    return sorted(packages, key=lambda p: (p["name"], p["arch"]))


def collect(root: HostRoot, distro_id: str, distro: str | None) -> list[dict[str, str]] | None:
    text = root.read_text(INSTALLED)
    if text is None:
        return None
    return parse_installed(text, distro_id, distro)
