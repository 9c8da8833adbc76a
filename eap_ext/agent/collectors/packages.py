"""The `packages` section: every package manager's database found on the host, merged."""

from __future__ import annotations

from ..hostroot import HostRoot
from . import packages_apk, packages_dpkg, packages_rpm
from .os_info import parse_os_release

MANAGERS = (packages_dpkg, packages_rpm, packages_apk)


def distro_of(root: HostRoot) -> tuple[str, str | None]:
    """(os id, 'id-version_id') for purl namespaces and the distro qualifier."""
    text = root.read_text("etc/os-release") or root.read_text("usr/lib/os-release") or ""
    rel = parse_os_release(text)
    distro_id = rel.get("ID", "linux")
    version_id = rel.get("VERSION_ID")
    return distro_id, f"{distro_id}-{version_id}" if version_id else None


def collect(root: HostRoot) -> list[dict[str, str]] | str:
    distro_id, distro = distro_of(root)
    found = [m.collect(root, distro_id, distro) for m in MANAGERS]
    if all(f is None for f in found):
        return "unknown"
    return [pkg for pkgs in found if pkgs for pkg in pkgs]
