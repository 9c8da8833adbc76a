"""Purl patterns for the software rule: compiled once, verdicts remembered per purl."""

from __future__ import annotations

import fnmatch
import operator
import re
from typing import Any


def purl_pattern(pattern: str) -> str:
    """Validate one allow/deny pattern (a pydantic after-validator)."""
    if not pattern.startswith("pkg:"):
        raise ValueError(f"{pattern!r} is not a purl pattern (must start with 'pkg:')")
    return pattern


def _compile_patterns(patterns: list[str]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """Two regexes: patterns with a version ('@') match whole purls, the rest match names."""
    full = [fnmatch.translate(p) for p in patterns if "@" in p]
    name = [fnmatch.translate(p) for p in patterns if "@" not in p]
    return (
        re.compile("|".join(full)) if full else None,
        re.compile("|".join(name)) if name else None,
    )


_PURL_TYPES = {"dpkg": "deb", "rpm": "rpm", "apk": "apk"}
DENIED, NOT_ALLOWED, FINE = "deny", "unknown", ""
_GET_PURL = operator.itemgetter("purl")
_GET_NAME = operator.itemgetter("name")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$")


def _literal_name(pattern: str) -> str | None:
    """The exact package name a versionless distribution pattern names, else None.

    Only deb/rpm/apk: their purl names are the package names as the posture reports them
    (language ecosystems normalise case, so a name test could miss).
    """
    if "@" in pattern:
        return None
    kind, _, path = pattern.removeprefix("pkg:").partition("/")
    name = path.rsplit("/", 1)[-1]
    return name if kind in ("deb", "rpm", "apk") and _PLAIN_NAME.match(name) else None


class PurlMatcher:
    """Allow/deny purl patterns compiled once, with verdicts remembered per purl.

    A plain class, not a pydantic model: it runs over thousands of packages per host. Purls
    repeat across hosts, so a host is mostly one C-level set difference against the purls
    already known to be fine; only new purls meet the regexes.
    """

    __slots__ = ("_deny_full", "_deny_name", "_allow_full", "_allow_name", "_has_allow",
                 "_fine", "_flagged", "_key", "_deny_names")  # fmt: skip
    MAX_REMEMBERED = 500_000  # bounds memory on sites with very diverse hosts

    def __init__(self, deny: list[str], allow: list[str]) -> None:
        self._key = (tuple(deny), tuple(allow))
        self._deny_full, self._deny_name = _compile_patterns(deny)
        self._allow_full, self._allow_name = _compile_patterns(allow)
        self._has_allow = bool(allow)
        self._fine: set[str] = set()
        self._flagged: dict[str, str] = {}
        # Deny-only lists of plain names ("pkg:deb/*/telnetd") let most hosts pass on one
        # set test over their (short) package names, before any purl is hashed.
        names = [_literal_name(p) for p in deny]
        literal = not allow and all(names)
        self._deny_names = frozenset(n for n in names if n) if literal else None

    def __eq__(self, other: object) -> bool:  # same patterns, same matcher (Policy equality)
        return isinstance(other, PurlMatcher) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def verdict(self, purl: str) -> str:
        base = purl.split("@", 1)[0].split("?", 1)[0]
        if (self._deny_full and self._deny_full.match(purl)) or (
            self._deny_name and self._deny_name.match(base)
        ):
            return DENIED
        if self._has_allow and not (
            (self._allow_full and self._allow_full.match(purl))
            or (self._allow_name and self._allow_name.match(base))
        ):
            return NOT_ALLOWED
        return FINE

    def scan(self, packages: list[Any], namespace: str = "") -> tuple[list[str], list[str]]:
        """(denied purls, purls not on the allow list) among `packages`, sorted."""
        try:  # the common cases, all in C: no denied name / every purl known to be fine
            if self._deny_names is not None and self._deny_names.isdisjoint(
                map(_GET_NAME, packages)
            ):
                return [], []
            if self._fine.issuperset(map(_GET_PURL, packages)):
                return [], []
        except (KeyError, TypeError):  # a package without name or purl, or not an object
            pass
        purls = {_purl_of(p, namespace) for p in packages if isinstance(p, dict)}
        fresh = purls - self._fine
        if not fresh:
            return [], []
        if len(self._fine) + len(self._flagged) > self.MAX_REMEMBERED:
            self._fine.clear()
            self._flagged.clear()
        denied: list[str] = []
        unknown: list[str] = []
        for purl in fresh:
            verdict = self._flagged.get(purl)
            if verdict is None:
                verdict = self.verdict(purl)
                if verdict == FINE:
                    self._fine.add(purl)
                else:
                    self._flagged[purl] = verdict
            if verdict == DENIED:
                denied.append(purl)
            elif verdict == NOT_ALLOWED:
                unknown.append(purl)
        return sorted(denied), sorted(unknown)


def _purl_of(pkg: dict[str, Any], namespace: str) -> str:
    """The package's purl; built from its fields (namespace = distribution id) if absent."""
    purl = pkg.get("purl")
    if isinstance(purl, str) and purl:
        return purl
    kind = _PURL_TYPES.get(str(pkg.get("manager")))
    prefix = f"pkg:{kind}/{namespace}/" if kind and namespace else f"pkg:{kind or 'generic'}/"
    return f"{prefix}{pkg.get('name')}@{pkg.get('version')}"
