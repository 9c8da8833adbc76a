"""Package identity (draft 7.3) and compiled postures for fleet-wide re-evaluation.

A package is identified by (ecosystem, release, name, version): the name is the *source*
package on Debian/Ubuntu/Alpine (their advisories are keyed by source), the binary rpm name on
the Red Hat family, the PEP 503 name on PyPI. These keys do not depend on any advisory, so a
posture can be compiled once, when it arrives, into small integers: re-evaluating it against a
new feed epoch is then one C-level pass over an int array (VulnIndex.findings_compiled).
"""

from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

from nac.prevention.ecosystems import (
    NPM,
    PYPI,
    RPM_FAMILY,
    SOURCE_KEYED,
    host_release,
    normalize_name,
)

VerdictKey = tuple[str, str, str, str]  # (base ecosystem, release or "", name, version)

DISTRO_MANAGERS = frozenset({"dpkg", "rpm", "apk"})
SOURCE_MANAGERS = frozenset({"dpkg", "apk"})
_LANG_MANAGERS = {"pip": PYPI, "pypi": PYPI, "npm": NPM}
_PURL_TYPES = {"pypi": PYPI, "npm": NPM}
SOURCE_PAIR = itemgetter("source", "source_version")  # a source-keyed package's verdict key
_MANAGER = itemgetter("manager")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def language_ecosystem(pkg: dict[str, Any]) -> str | None:
    manager = pkg.get("manager")
    if isinstance(manager, str) and manager.lower() in _LANG_MANAGERS:
        return _LANG_MANAGERS[manager.lower()]
    purl = pkg.get("purl")
    if isinstance(purl, str) and purl.startswith("pkg:"):
        return _PURL_TYPES.get(purl[4:].split("/", 1)[0].lower())
    return None


def package_keys(host: tuple[str, str] | None, pkg: object) -> list[VerdictKey]:
    """The identities one posture package is checked under (none if it cannot be placed)."""
    if not isinstance(pkg, dict):
        return []
    name = pkg.get("name")
    if not isinstance(name, str) or not name:
        return []
    if pkg.get("manager") in DISTRO_MANAGERS:
        if host is None:
            return []  # unknown release: a Debian 12 advisory cannot be applied safely
        base, release = host
        source = pkg.get("source")
        if base in RPM_FAMILY:
            version = pkg.get("version")
            names = [name]
            if isinstance(source, str) and source and source != name:
                names.append(source)
        else:
            # Debian/Ubuntu/Alpine advisories name the source package and its version.
            version = pkg.get("source_version") or pkg.get("version")
            names = [source if isinstance(source, str) and source else name]
    else:
        lang = language_ecosystem(pkg)
        if lang is None:
            return []
        base, release, version = lang, "", pkg.get("version")
        names = [normalize_name(lang, name)]
    if not isinstance(version, str) or not version:
        return []
    return [(base, release, n, version) for n in names]


class PackageTable:
    """Interns verdict keys as dense integers, shared by all postures and index epochs."""

    def __init__(self) -> None:
        self._ids: dict[VerdictKey, int] = {}
        self.keys: list[VerdictKey] = []
        self._lock = threading.Lock()
        # (base, release) -> {(source, source_version): id}: a source-keyed host's packages
        # looked up by the pair the posture holds, no 4-tuple built per package
        self._pairs: dict[tuple[str, str], dict[tuple[str, str], int]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def intern(self, key: VerdictKey) -> int:
        found = self._ids.get(key)
        if found is not None:
            return found
        with self._lock:  # ids must stay dense and unique if intake runs in threads
            found = self._ids.get(key)
            if found is None:
                found = self._ids[key] = len(self.keys)
                self.keys.append(key)
            return found

    def pair_ids(self, host: tuple[str, str], sources: list[str],
                 versions: list[str]) -> set[int]:
        """The ids of (host base, host release, source, version) for each package."""
        by_pair = self._pairs.get(host)
        if by_pair is None:
            by_pair = self._pairs.setdefault(host, {})
        try:
            return set(map(by_pair.__getitem__, zip(sources, versions, strict=True)))
        except KeyError:  # some package version this table has not seen yet
            pass
        base, release = host
        out = set()
        for pair in zip(sources, versions, strict=True):
            found = by_pair.get(pair)
            if found is None:
                found = by_pair[pair] = self.intern((base, release, *pair))
            out.add(found)
        return out


DEFAULT_TABLE = PackageTable()


@dataclass(frozen=True)
class CompiledPosture:
    """A posture's packages as sorted unique ids of `table` (binaries of one source collapse)."""

    ids: array[int]
    max_id: int
    table: PackageTable


def compile_posture(
    posture: dict[str, Any], table: PackageTable = DEFAULT_TABLE
) -> CompiledPosture:
    pkgs = posture.get("packages")
    if not isinstance(pkgs, list):
        pkgs = []
    host = host_release(posture.get("os"))
    keys: list[VerdictKey] | None = None
    if host is not None and host[0] in SOURCE_KEYED:
        columns = source_columns(pkgs)
        if columns is not None:  # what the decoder already had: no dict read per package
            ids = sorted(table.pair_ids(host, *columns))
            return CompiledPosture(array("I", ids), ids[-1] if ids else -1, table)
        keys = _source_keyed(pkgs, host)
    if keys is None:
        unique: set[VerdictKey] = set()
        for pkg in pkgs:
            unique.update(package_keys(host, pkg))
        keys = list(unique)
    try:
        ids = list(map(table._ids.__getitem__, keys))
    except KeyError:  # some package version this server has not seen yet
        ids = [table.intern(k) for k in keys]
    ids.sort()
    return CompiledPosture(array("I", ids), ids[-1] if ids else -1, table)


def source_columns(pkgs: Any) -> tuple[list[str], list[str]] | None:
    """(sources, source_versions) of a package list the compact decoder built from our
    agent's usual rows (PackageList.columns) when its one manager is source-keyed and every
    source and version is non-empty: the hot paths read these instead of 1,500 dicts."""
    columns = getattr(pkgs, "columns", None)
    if columns is None or columns[0] not in SOURCE_MANAGERS:
        return None
    _, sources, versions = columns
    if not all(sources) or not all(versions):
        return None
    return sources, versions


def all_source_managed(pkgs: list[Any]) -> bool:
    """Is every package's manager a source-keyed one (dpkg, apk)? KeyError or TypeError for
    a package without a manager. Hot path: list.count compares without hashing each
    package's manager string (a freshly decoded posture's strings have no hash yet)."""
    managers = list(map(_MANAGER, pkgs))
    return sum(map(managers.count, SOURCE_MANAGERS)) == len(managers)


def _source_keyed(pkgs: list[Any], host: tuple[str, str]) -> list[VerdictKey] | None:
    """Usual Debian/Ubuntu/Alpine case in C-level passes: unique (source, source_version)
    keys. None if any package does not fit (then the general loop decides everything)."""
    try:
        if not all_source_managed(pkgs):
            return None
        pairs = set(map(SOURCE_PAIR, pkgs))
    except (KeyError, TypeError):
        return None
    sources = list(map(_FIRST, pairs))
    versions = list(map(_SECOND, pairs))
    if set(map(type, sources)) | set(map(type, versions)) != {str}:
        return None
    if not all(sources) or not all(versions):
        return None
    base, release = host
    return list(zip(repeat(base), repeat(release), sources, versions))
