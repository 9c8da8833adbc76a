"""The in-memory vulnerability index the posture evaluator asks: which advisories hit a host.

Built once per cache epoch (load_index). Advisories are keyed by (ecosystem, release, package);
verdicts are memoised per package identity and version, since a fleet runs few distinct
versions. Two ways in:
- findings(posture): one node, e.g. at authentication. Debian/Ubuntu/Alpine postures take a
  C-level path (itemgetter/map over the package list); others a general per-package loop.
- findings_compiled(compile_posture(posture)): a whole fleet after a feed change. Postures are
  compiled to package ids once at intake; re-evaluation is one pass over an int array.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from univers.versions import Version

from nac.prevention import cache
from nac.prevention.ecosystems import (
    DISTROS,
    SOURCE_KEYED,
    VERSION_CLASSES,
    UnsupportedVersion,
    host_release,
    normalize_name,
    parse_semver,
    parse_version,
    split_ecosystem,
)
from nac.prevention.packages import (
    DEFAULT_TABLE,
    DISTRO_MANAGERS,
    SOURCE_PAIR,
    CompiledPosture,
    PackageTable,
    all_source_managed,
    package_keys,
    source_columns,
)


@dataclass(frozen=True)
class Finding:
    advisory_id: str
    aliases: tuple[str, ...]
    ecosystem: str
    package: str  # the matched package name (source or binary)
    installed: str
    fixed: str | None
    severity: str  # "critical"|"high"|"medium"|"low"|"unknown"
    summary: str
    source: str
    trust: str


# When two sources carry the same advisory id, the finding names the most trusted one: the
# operator's own ("local") overrides a vendor, which overrides a community feed.
_TRUST_ORDER = {"local": 0, "vendor": 1, "community": 2}

# (lo, hi, hi_inclusive, fixed): lo None = from the beginning, hi None = no known end.
_Interval = tuple[Version | None, Version | None, bool, str | None]


@dataclass(frozen=True)
class _Entry:
    advisory_id: str
    aliases: tuple[str, ...]
    ecosystem: str  # as the advisory spells it, e.g. "Debian:12"
    severity: str
    summary: str
    source: str
    trust: str
    intervals: tuple[_Interval, ...]  # in the ecosystem's own order
    semver_intervals: tuple[_Interval, ...]  # OSV "SEMVER" ranges
    versions: frozenset[str]  # explicitly listed affected versions


def _intervals(events: list[Any], parse: Any) -> tuple[_Interval, ...]:
    """OSV events -> affected intervals, following the spec's sorted-events evaluation."""
    parsed: list[tuple[Version | None, int, str, str]] = []
    for ev in events:
        if not isinstance(ev, dict) or len(ev) != 1:
            continue
        ((kind, text),) = ev.items()
        text = str(text)
        if kind == "introduced" and text == "0":
            parsed.append((None, 0, kind, text))
        elif kind in ("introduced", "fixed", "last_affected", "limit"):
            parsed.append((parse(text), 1, kind, text))
    # "0" sorts first; at equal versions a fix closes before an introduction reopens.
    order = {"fixed": 0, "limit": 0, "last_affected": 1, "introduced": 2}
    ordered = sorted(
        parsed,
        key=lambda p: (p[1], _Sortable(p[0]), order[p[2]]),
    )
    out: list[_Interval] = []
    start: Version | None = None
    open_ = False
    for ver, _, kind, text in ordered:
        if kind == "introduced":
            if not open_:
                start, open_ = ver, True
        elif open_:
            if kind == "fixed":
                out.append((start, ver, False, text))
            elif kind == "last_affected":
                out.append((start, ver, True, None))
            else:  # limit
                out.append((start, ver, False, None))
            open_ = False
    if open_:
        out.append((start, None, False, None))
    return tuple(out)


class _Sortable:
    """Wrap a Version (or None = lowest) so sorted() uses univers' order."""

    __slots__ = ("v",)

    def __init__(self, v: Version | None) -> None:
        self.v = v

    def __lt__(self, other: _Sortable) -> bool:
        if self.v is None:
            return other.v is not None
        if other.v is None:
            return False
        return bool(self.v < other.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sortable) and (
            (self.v is None and other.v is None)
            or (self.v is not None and other.v is not None and self.v == other.v)
        )


def _hit(intervals: tuple[_Interval, ...], v: Version) -> tuple[bool, str | None]:
    for lo, hi, incl, fixed in intervals:
        if lo is not None and v < lo:
            continue
        if hi is None or v < hi or (incl and v == hi):
            return True, fixed
    return False, None


_VERDICT_CACHE_MAX = 2_000_000
_SOURCE = itemgetter("source")


class _NotFast(Exception):
    """A package the source-keyed hot path does not handle."""


_Key = tuple[str, str, str]  # (base ecosystem, release or "", package name)


class VulnIndex:
    """Advisories of one cache epoch, ready to match posture documents."""

    def __init__(
        self,
        epoch: int,
        entries: dict[_Key, list[_Entry]],
        skipped: int = 0,
        table: PackageTable = DEFAULT_TABLE,
    ) -> None:
        self.epoch = epoch
        self.table = table  # the package ids findings_compiled() understands
        self._by_id: list[tuple[Finding, ...]] = []
        self.skipped = skipped  # affected entries we cannot evaluate (unknown ecosystem/version)
        self._by_key = entries
        self._names = {k[2] for k in entries}
        by_adv: dict[str, set[str]] = {}
        for (_, _, name), lst in entries.items():
            for e in lst:
                by_adv.setdefault(e.advisory_id, set()).add(name)
        self._by_advisory = by_adv
        self._verdicts: dict[tuple[str, str, str, str], tuple[Finding, ...]] = {}
        self._host_verdicts: dict[tuple[str, str], dict[Any, tuple[Finding, ...]]] = {}

    def with_table(self, table: PackageTable) -> VulnIndex:
        """The same advisories for postures compiled against `table` (fresh verdict memo)."""
        return VulnIndex(self.epoch, self._by_key, self.skipped, table)

    @property
    def advisory_count(self) -> int:
        return len(self._by_advisory)

    def affected_sources(self, advisory_ids: Iterable[str]) -> set[str]:
        """Package names (source packages for distributions) the advisories touch.

        Withdrawn advisories are gone from the index; SyncReport.changed_packages covers them.
        """
        out: set[str] = set()
        for adv in advisory_ids:
            out |= self._by_advisory.get(adv, set())
        return out

    def findings(self, posture: dict[str, Any]) -> list[Finding]:
        pkgs = posture.get("packages")
        if not isinstance(pkgs, list) or not pkgs:
            return []
        host = host_release(posture.get("os"))
        if host is not None and host[0] in SOURCE_KEYED:
            try:
                fast = self._source_keyed(pkgs, host)
            except (TypeError, AttributeError):
                fast = None  # malformed entries: the general path below copes
            if fast is not None:
                return fast
        try:
            names, sources, managers, hits = self._prefilter(pkgs)
        except (AttributeError, TypeError):
            # Malformed entries (not objects, non-string names): drop them, keep the rest.
            pkgs = [p for p in pkgs if _well_formed(p)]
            names, sources, managers, hits = self._prefilter(pkgs)
        # Language packages need name normalisation first (PEP 503), so they always go through.
        lang = not managers <= DISTRO_MANAGERS
        if not hits and not lang:
            return []
        out: list[Finding] = []
        seen: set[tuple[str, str, str]] = set()
        for pkg, name, source in zip(pkgs, names, sources, strict=True):
            if not (
                name in hits
                or source in hits
                or (lang and pkg.get("manager") not in DISTRO_MANAGERS)
            ):
                continue
            for f in self._package_findings(host, pkg):
                key = (f.advisory_id, f.package, f.installed)
                if key not in seen:
                    seen.add(key)
                    out.append(f)
        return out

    def _source_keyed(self, pkgs: list[Any], host: tuple[str, str]) -> list[Finding] | None:
        """Hot path for Debian/Ubuntu/Alpine hosts whose packages carry source and
        source_version (what our agent reports), in C-level passes. A freshly decoded posture
        has fresh strings whose hashes are not computed yet, so hash as few as possible: each
        source once (most have no advisory at all), then (source, source_version) only for
        the sources an advisory names; that pair is the verdict key, decided once per index
        and then only looked up. Returns None when the list does not fit (other managers,
        missing or odd fields): the general path handles those."""
        columns = source_columns(pkgs)
        if columns is not None:  # the decoder's own columns (our agent's usual rows)
            sources, versions = columns
            named = list(compress(zip(sources, versions, strict=True),
                                  map(self._names.__contains__, sources)))
        else:
            try:
                sources = list(map(_SOURCE, pkgs))
                if not all_source_managed(pkgs):
                    return None
            except (KeyError, TypeError):
                return None
            if set(map(type, sources)) != {str} or not all(sources):
                return None
            try:
                named = list(map(SOURCE_PAIR, compress(pkgs, map(self._names.__contains__,
                                                                  sources))))
            except (KeyError, TypeError):
                return None
        if not named:
            return []
        verdicts = self._host_verdicts.get(host)
        if verdicts is None:
            verdicts = self._host_verdicts[host] = {}
        try:
            found = list(map(verdicts.__getitem__, named))
        except (KeyError, TypeError):
            # A missing or unhashable version, or first sight of a (source, version).
            try:
                found = [self._pair_verdict(host, verdicts, p) for p in named]
            except (KeyError, TypeError, _NotFast):
                return None
        out: list[Finding] = []
        # Binaries of one source version (openssl, libssl3) share one verdict tuple: report once.
        for verdict in {id(v): v for v in filter(None, found)}.values():
            out.extend(verdict)
        return out

    def _pair_verdict(
        self, host: tuple[str, str], verdicts: dict[Any, tuple[Finding, ...]], pair: Any
    ) -> tuple[Finding, ...]:
        cached = verdicts.get(pair)
        if cached is not None:
            return cached
        source, version = pair
        if not isinstance(version, str) or not version:
            raise _NotFast
        if len(verdicts) >= _VERDICT_CACHE_MAX:
            verdicts.clear()  # bounded memory; an index lives for one feed epoch anyway
        result = verdicts[pair] = self._verdict(host[0], host[1], source, version)
        return result

    def _prefilter(self, pkgs: list[Any]) -> tuple[list[Any], list[Any], set[Any], set[str]]:
        """Names, sources, managers, and the names that have any advisory: all C-level loops,
        since most installed packages have no advisory at all."""
        # map(dict.get, ...) runs in C, several times faster than a comprehension; a non-dict
        # raises TypeError and sends the caller to its cleaning path.
        names = list(map(dict.get, pkgs, repeat("name")))
        sources = list(map(dict.get, pkgs, repeat("source")))
        managers = set(map(dict.get, pkgs, repeat("manager")))
        hits = self._names.intersection(names)
        hits.update(self._names.intersection(sources))
        return names, sources, managers, hits

    def _package_findings(self, host: tuple[str, str] | None, pkg: dict[str, Any]) -> list[Finding]:
        out: list[Finding] = []
        for key in package_keys(host, pkg):
            out.extend(self._verdict(*key))
        return out

    def findings_compiled(self, posture: CompiledPosture) -> list[Finding]:
        """findings() for a posture compiled at intake (packages.compile_posture): one C-level
        pass over its ids. Meant for re-evaluating a whole fleet after a feed change."""
        if posture.table is not self.table:
            raise ValueError("posture compiled against another PackageTable")
        by_id = self._by_id
        if posture.max_id >= len(by_id):
            self._fill()
        return list(chain.from_iterable(filter(None, map(by_id.__getitem__, posture.ids))))

    def verdicts(self) -> list[tuple[Finding, ...]]:
        """Findings per package id of `table`, every id interned so far decided."""
        if len(self._by_id) < len(self.table):
            self._fill()
        return self._by_id

    def _fill(self) -> None:
        """Decide every interned package key not yet decided (cheap for keys no advisory names)."""
        by_id, keys, names = self._by_id, self.table.keys, self._names
        for i in range(len(by_id), len(keys)):
            key = keys[i]
            by_id.append(self._verdict(*key) if key[2] in names else ())

    def _verdict(self, base: str, release: str, name: str, version: str) -> tuple[Finding, ...]:
        vkey = (base, release, name, version)
        cached = self._verdicts.get(vkey)
        if cached is not None:
            return cached
        entries = list(self._by_key.get((base, release, name), ()))
        if release:
            entries += self._by_key.get((base, "", name), ())
        best: dict[str, tuple[int, Finding]] = {}
        try:
            parsed: Version | None = parse_version(base, version)
        except UnsupportedVersion:
            parsed = None  # only explicit version lists can still match
        for e in entries:
            hit, fixed = version in e.versions, None
            if not hit and parsed is not None and e.intervals:
                hit, fixed = _hit(e.intervals, parsed)
            if not hit and e.semver_intervals:
                try:
                    hit, fixed = _hit(e.semver_intervals, parse_semver(version))
                except UnsupportedVersion:
                    pass
            if not hit:
                continue
            rank = _TRUST_ORDER.get(e.trust, 9)
            prev = best.get(e.advisory_id)
            if prev is None or rank < prev[0]:
                best[e.advisory_id] = (
                    rank,
                    Finding(
                        advisory_id=e.advisory_id,
                        aliases=e.aliases,
                        ecosystem=e.ecosystem,
                        package=name,
                        installed=version,
                        fixed=fixed,
                        severity=e.severity,
                        summary=e.summary,
                        source=e.source,
                        trust=e.trust,
                    ),
                )
        result = tuple(f for _, f in sorted(best.values(), key=lambda rf: rf[1].advisory_id))
        if len(self._verdicts) >= _VERDICT_CACHE_MAX:
            self._verdicts.clear()
        self._verdicts[vkey] = result
        return result


def _well_formed(p: object) -> bool:
    return (
        isinstance(p, dict)
        and isinstance(p.get("name"), str)
        and isinstance(p.get("source"), str | None)
        and isinstance(p.get("manager"), str | None)
    )


def build_entry(row: tuple[Any, ...]) -> tuple[_Key, _Entry] | None:
    """One joined cache row -> index key and entry, or None if we cannot evaluate it."""
    (
        adv_id,
        aliases,
        severity,
        summary,
        source,
        trust,
        ecosystem,
        package,
        ranges_json,
        versions_json,
    ) = row
    base, release = split_ecosystem(ecosystem)
    if base not in VERSION_CLASSES:
        return None
    ranges = json.loads(ranges_json)
    intervals: list[_Interval] = []
    semver: list[_Interval] = []
    for r in ranges:
        rtype = r.get("type")
        try:
            if rtype == "ECOSYSTEM":
                intervals.extend(_intervals(r["events"], lambda s, b=base: parse_version(b, s)))
            elif rtype == "SEMVER":
                semver.extend(_intervals(r["events"], parse_semver))
        except UnsupportedVersion:
            continue  # one bad bound must not hide the advisory's other ranges
        # GIT ranges need commit history we do not have; the versions list covers them.
    versions = frozenset(json.loads(versions_json))
    if not intervals and not semver and not versions:
        return None
    entry = _Entry(
        advisory_id=adv_id,
        aliases=tuple(json.loads(aliases)),
        ecosystem=ecosystem,
        severity=severity,
        summary=summary,
        source=source,
        trust=trust,
        intervals=tuple(intervals),
        semver_intervals=tuple(semver),
        versions=versions,
    )
    name = normalize_name(base, package)
    if base not in DISTROS:
        release = ""
    return (base, release, name), entry


_QUERY = """
SELECT a.id, a.aliases, a.severity, a.summary, a.source, s.trust,
       f.ecosystem, f.package, f.ranges, f.versions
FROM advisories a
JOIN affected f ON f.source = a.source AND f.advisory_id = a.id
JOIN feed_sources s ON s.name = a.source
WHERE a.withdrawn IS NULL
"""


def load_index(db_path: Path) -> VulnIndex:
    """Build an in-memory index from the cache (read in one consistent snapshot)."""
    conn = cache.connect(db_path)
    try:
        with conn:  # one transaction: epoch and rows agree even if a sync runs meanwhile
            conn.execute("BEGIN")
            epoch = cache.get_epoch(conn)
            rows = conn.execute(_QUERY).fetchall()
    finally:
        conn.close()
    return index_from_rows(epoch, rows)


def index_from_rows(epoch: int, rows: Iterable[Any]) -> VulnIndex:
    entries: dict[_Key, list[_Entry]] = {}
    skipped = 0
    for row in rows:
        built = build_entry(tuple(row))
        if built is None:
            skipped += 1
            continue
        key, entry = built
        entries.setdefault(key, []).append(entry)
    return VulnIndex(epoch, entries, skipped)


def refresh(index: VulnIndex | None, db_path: Path) -> VulnIndex:
    """The current index: `index` itself while the cache epoch has not moved, else a new one.

    Compiled postures stay valid across epochs (same PackageTable)."""
    with cache.opened(db_path) as conn:
        epoch = cache.get_epoch(conn)
    if index is not None and index.epoch == epoch:
        return index
    fresh = load_index(db_path)
    if index is not None and index.table is not fresh.table:
        fresh = VulnIndex(fresh.epoch, fresh._by_key, fresh.skipped, index.table)
    return fresh
