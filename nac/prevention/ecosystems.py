"""Ecosystem names, release keys and each ecosystem's own version order.

OSV spells ecosystems with a release suffix ("Debian:12", "Ubuntu:22.04:LTS", "Alpine:v3.18",
"Red Hat:enterprise_linux:9::appstream"). We reduce every one to (base, release) so that an
advisory for Debian 12 applies only to hosts whose os-release says debian / 12 (draft 7.3).
Versions are ordered by univers, never by hand: dpkg epochs and tildes, rpm, apk, PEP 440 and
semver all have rules that hand-written comparisons get wrong.
"""

from __future__ import annotations

import re
from functools import lru_cache

from univers.versions import (
    AlpineLinuxVersion,
    DebianVersion,
    PypiVersion,
    RpmVersion,
    SemverVersion,
    Version,
)

DEBIAN = "Debian"
UBUNTU = "Ubuntu"
ALPINE = "Alpine"
REDHAT = "Red Hat"
ROCKY = "Rocky Linux"
ALMA = "AlmaLinux"
PYPI = "PyPI"
NPM = "npm"

VERSION_CLASSES: dict[str, type[Version]] = {
    DEBIAN: DebianVersion,
    UBUNTU: DebianVersion,
    ALPINE: AlpineLinuxVersion,
    REDHAT: RpmVersion,
    ROCKY: RpmVersion,
    ALMA: RpmVersion,
    PYPI: PypiVersion,
    NPM: SemverVersion,
}

# Distributions whose OSV records name the *source* package (Debian/Ubuntu source, apk origin).
# Red Hat family records name binary rpms, so those match on the binary name.
SOURCE_KEYED = frozenset({DEBIAN, UBUNTU, ALPINE})
RPM_FAMILY = frozenset({REDHAT, ROCKY, ALMA})
DISTROS = SOURCE_KEYED | RPM_FAMILY

# os-release ID -> OSV base ecosystem.
OS_IDS = {
    "debian": DEBIAN,
    "ubuntu": UBUNTU,
    "alpine": ALPINE,
    "rhel": REDHAT,
    "rocky": ROCKY,
    "almalinux": ALMA,
}

_NUMBER = re.compile(r"v?(\d+(?:\.\d+)*)$")


def split_ecosystem(ecosystem: str) -> tuple[str, str]:
    """OSV ecosystem string -> (base, release); release "" means every release."""
    parts = ecosystem.split(":")
    base = parts[0]
    if base not in DISTROS or len(parts) == 1:
        return base, ""
    for part in parts[1:]:
        m = _NUMBER.match(part)
        if m:
            return base, release_key(base, m.group(1))
    return base, ""


def release_key(base: str, version_id: str) -> str:
    """Normalise a release number the way both OSV and os-release can be compared.

    Alpine advisories are per branch (v3.18) while os-release says 3.18.4; the Red Hat family's
    are per major (9) while os-release says 9.3. Debian and Ubuntu use the number as is.
    """
    v = version_id.lstrip("v")
    if base == ALPINE:
        return ".".join(v.split(".")[:2])
    if base in RPM_FAMILY:
        return v.split(".")[0]
    return v


def host_release(os_info: object) -> tuple[str, str] | None:
    """The posture's "os" section -> (base, release) of its distribution, or None."""
    if not isinstance(os_info, dict):
        return None
    base = OS_IDS.get(str(os_info.get("id", "")).lower())
    if base is None:
        return None
    return base, release_key(base, str(os_info.get("version_id") or ""))


_PEP503 = re.compile(r"[-_.]+")


def normalize_name(base: str, name: str) -> str:
    """Package names as each ecosystem compares them (PyPI: PEP 503; others exact)."""
    if base == PYPI:
        return _PEP503.sub("-", name).lower()
    return name


class UnsupportedVersion(ValueError):
    """The ecosystem has no known version order, or the string does not parse in it."""


@lru_cache(maxsize=200_000)
def parse_version(base: str, version: str) -> Version:
    """Parse once, reuse: univers parsing costs microseconds and findings() is hot."""
    cls = VERSION_CLASSES.get(base)
    if cls is None:
        raise UnsupportedVersion(f"no version order known for ecosystem {base!r}")
    text = version
    if cls is SemverVersion:
        text = version.lstrip("v")
    try:
        return cls(text)
    except Exception as exc:  # univers raises several types for bad input
        raise UnsupportedVersion(f"{base} version {version!r}: {exc}") from exc


@lru_cache(maxsize=200_000)
def parse_semver(version: str) -> Version:
    """OSV "SEMVER" ranges use semver whatever the ecosystem."""
    try:
        return SemverVersion(version.lstrip("v"))
    except Exception as exc:
        raise UnsupportedVersion(f"semver {version!r}: {exc}") from exc
