"""Installed Debian packages from the dpkg status database (var/lib/dpkg/status)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ..hostroot import HostRoot
from .purl import make_purl

log = logging.getLogger(__name__)

STATUS = "var/lib/dpkg/status"


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """RFC822-like stanzas; continuation lines are kept only for the fields we do not use."""
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip().lower()
            fields[last] = value.strip()
    if fields:
        yield fields


def parse_status(text: str, distro_id: str, distro: str | None) -> list[dict[str, str]]:
    """Packages whose status is installed, with their source package (draft 7.3 keys)."""
    packages = []
    for st in _stanzas(text):
        # Status: want flag state; only "installed" means the files are on disk.
        status = st.get("status", "").split()
        if len(status) != 3 or status[2] != "installed":
            continue
        name, version = st.get("package"), st.get("version")
        if not name or not version:
            continue
        arch = st.get("architecture", "all")
        source, source_version = name, version
        if st.get("source"):
            # "Source: openssl" or "Source: glibc (2.36-9)" when the versions differ.
            src = st["source"].split()
            source = src[0]
            if len(src) > 1:
                source_version = src[1].strip("()")
        packages.append({
            "name": name, "version": version, "arch": arch,
            "source": source, "source_version": source_version, "manager": "dpkg",
            "purl": make_purl("deb", distro_id, name, version, arch, distro),
        })
    return sorted(packages, key=lambda p: (p["name"], p["arch"]))


def collect(root: HostRoot, distro_id: str, distro: str | None) -> list[dict[str, str]] | None:
    """None when this host has no dpkg database."""
    text = root.read_text(STATUS)
    if text is None:
        return None
    return parse_status(text, distro_id, distro)
