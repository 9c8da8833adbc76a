"""Installed RPM packages via the rpm CLI (the rpmdb format is not worth parsing by hand)."""

from __future__ import annotations

import logging
import shutil
import subprocess

from ..hostroot import HostRoot
from .purl import make_purl

log = logging.getLogger(__name__)

QUERYFORMAT = "%{NAME}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}\\n"
RPMDB_PATHS = ("var/lib/rpm", "usr/lib/sysimage/rpm")


def _split_srpm(srpm: str) -> tuple[str, str] | None:
    """'openssl-3.0.7-24.el9.src.rpm' -> ('openssl', '3.0.7-24.el9')."""
    if not srpm.endswith(".rpm"):
        return None
    base = srpm.removesuffix(".rpm").rsplit(".", 1)[0]
    parts = base.rsplit("-", 2)
    if len(parts) != 3:
        return None
    return parts[0], f"{parts[1]}-{parts[2]}"


def parse_query(text: str, distro_id: str, distro: str | None) -> list[dict[str, str]]:
    packages = []
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) != 6 or cols[0].startswith("gpg-pubkey"):
            continue
        name, epoch, ver, rel, arch, srpm = cols
        evr = f"{ver}-{rel}"
        version = evr if epoch in ("(none)", "", "0") else f"{epoch}:{evr}"
        source, source_version = _split_srpm(srpm) or (name, evr)
        # purl-spec puts an RPM epoch in the `epoch` qualifier, not the version.
        extra = {} if epoch in ("(none)", "") else {"epoch": epoch}
        packages.append({
            "name": name, "version": version, "arch": arch,
            "source": source, "source_version": source_version, "manager": "rpm",
            "purl": make_purl("rpm", distro_id, name, evr, arch, distro, extra),
        })
    return sorted(packages, key=lambda p: (p["name"], p["arch"]))


def collect(root: HostRoot, distro_id: str, distro: str | None) -> list[dict[str, str]] | None:
    """None when the host has no rpm database (or no rpm program to read it)."""
    if not any(root.path(p).is_dir() for p in RPMDB_PATHS):
        return None
    rpm = shutil.which("rpm")
    if rpm is None:
        log.debug("rpm database present but no rpm program")
        return None
    # `--root` makes rpm read only the image's database, so this is allowed when rooted.
    argv = [rpm, "-qa", "--queryformat", QUERYFORMAT]
    if root.rooted:
        argv[1:1] = ["--root", str(root.base)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("rpm query failed: %s", exc)
        return None
    return parse_query(proc.stdout, distro_id, distro)
