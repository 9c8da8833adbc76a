"""Import feeds into the cache: added / updated / withdrawn accounting, one epoch bump per change.

`sync()` is the hook for re-evaluation: its SyncReport names the advisories that changed and the
(ecosystem, package) pairs they touched before and after, so the caller re-checks only nodes that
have one of those packages (draft 7.2: an update invalidates related nodes' certificates).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from nac.prevention import cache
from nac.prevention.cache import FeedSource
from nac.prevention.fetch import FeedBlob, FeedError, fetch, read_local, records
from nac.prevention.osv import Advisory, OsvError, parse_record

T = TypeVar("T")


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    unchanged: int = 0
    stale: int = 0  # older copies of advisories we already hold: ignored
    invalid: list[str] = field(default_factory=list)  # "origin: reason" for skipped records
    not_modified: list[str] = field(default_factory=list)  # sources that answered 304
    errors: list[str] = field(default_factory=list)  # sources rejected (signature, I/O)
    changed_packages: set[tuple[str, str]] = field(default_factory=set)  # (ecosystem, name)
    epoch: int = 0

    @property
    def changed_ids(self) -> set[str]:
        return set(self.added) | set(self.updated) | set(self.withdrawn)

    @property
    def changed(self) -> bool:
        return bool(self.changed_ids)


@contextlib.contextmanager
def _progress(items: Iterable[T], length: int, label: str, show: bool) -> Iterator[Iterable[T]]:
    """A progress bar on stderr, only for people watching a terminal (never in logs or CI)."""
    if show and sys.stderr.isatty() and length > 1:
        with click.progressbar(items, length=length, label=label, file=sys.stderr) as bar:
            yield bar
    else:
        yield items


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sync(db_path: Path, name: str | None = None, *, progress: bool = False) -> SyncReport:
    """Fetch, verify and import one source (or every source with a url/path)."""
    report = SyncReport()
    with cache.opened(db_path) as conn:
        if name is not None:
            src = cache.get_source(conn, name)
            if src is None:
                raise FeedError(f"no feed source named {name!r}")
            sources = [src]
        else:
            sources = [s for s in cache.list_sources(conn) if s.url or s.path]
        for src in sources:
            try:
                fetched = fetch(src)
            except FeedError as exc:
                report.errors.append(str(exc))
                continue
            if fetched.not_modified:
                report.not_modified.append(src.name)
            _import(conn, src, fetched.blobs, report, progress)
            with conn:
                conn.execute(
                    "UPDATE feed_sources SET etag = ?, last_modified = ?, last_sync = ?"
                    " WHERE name = ?",
                    (fetched.etag, fetched.last_modified, _now(), src.name),
                )
        report.epoch = cache.get_epoch(conn)
    return report


def import_path(
    db_path: Path,
    path: Path,
    source_name: str = "local",
    trust: str = "local",
    *,
    progress: bool = False,
) -> SyncReport:
    """One-off import of a local file, directory or zip under source_name.

    If the source already exists with a public key, the files must be signed by it.
    """
    report = SyncReport()
    with cache.opened(db_path) as conn:
        src = cache.get_source(conn, source_name)
        if src is None:
            if trust not in cache.TRUST_LEVELS:
                raise ValueError(f"trust must be one of {', '.join(cache.TRUST_LEVELS)}")
            src = FeedSource(source_name, None, None, trust, None, None, None, None, None)
            with conn:
                conn.execute(
                    "INSERT INTO feed_sources (name, trust, last_sync) VALUES (?, ?, ?)",
                    (source_name, trust, _now()),
                )
        _import(conn, src, read_local(path, src), report, progress)
        report.epoch = cache.get_epoch(conn)
    return report


def _import(
    conn: sqlite3.Connection,
    src: FeedSource,
    blobs: list[FeedBlob],
    report: SyncReport,
    progress: bool,
) -> None:
    """All blobs of one source in one transaction: a sync is applied whole or not at all."""
    changed = False
    counted = [records(blob) for blob in blobs]
    total = sum(n for n, _ in counted)
    all_records = itertools.chain.from_iterable(recs for _, recs in counted)
    with conn, _progress(all_records, total, f"importing {src.name}", progress) as items:
        for origin, rec in items:
            try:
                adv = parse_record(rec)
            except OsvError as exc:
                report.invalid.append(f"{origin}: {exc}")
                continue
            changed |= _upsert(conn, src.name, adv, report)
        if changed:
            cache.bump_epoch(conn)


def _affected_pairs(conn: sqlite3.Connection, source: str, adv_id: str) -> set[tuple[str, str]]:
    rows = conn.execute(
        "SELECT ecosystem, package FROM affected WHERE source = ? AND advisory_id = ?",
        (source, adv_id),
    )
    return {(e, p) for e, p in rows}


def _upsert(conn: sqlite3.Connection, source: str, adv: Advisory, report: SyncReport) -> bool:
    """Apply one record; True if the index would change (added, updated or retracted)."""
    row = conn.execute(
        "SELECT modified, withdrawn, digest FROM advisories WHERE source = ? AND id = ?",
        (source, adv.id),
    ).fetchone()
    if row is not None:
        old_modified, old_withdrawn, old_digest = row
        if old_digest == adv.digest:
            report.unchanged += 1
            return False
        # RFC 3339 UTC strings order lexically; an older copy must not undo a newer one
        # (e.g. resurrect an advisory that was withdrawn meanwhile).
        if adv.modified < old_modified:
            report.stale += 1
            return False
    before = _affected_pairs(conn, source, adv.id) if row is not None else set()
    values: tuple[Any, ...] = (
        adv.modified,
        adv.published,
        adv.withdrawn,
        json.dumps(list(adv.aliases)),
        adv.summary,
        adv.severity,
        adv.digest,
        source,
        adv.id,
    )
    if row is None:
        conn.execute(
            "INSERT INTO advisories (modified, published, withdrawn, aliases, summary, severity,"
            " digest, source, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    else:
        conn.execute(
            "UPDATE advisories SET modified = ?, published = ?, withdrawn = ?, aliases = ?,"
            " summary = ?, severity = ?, digest = ? WHERE source = ? AND id = ?",
            values,
        )
    conn.execute("DELETE FROM affected WHERE source = ? AND advisory_id = ?", (source, adv.id))
    after: set[tuple[str, str]] = set()
    if adv.withdrawn is None:
        conn.executemany(
            "INSERT INTO affected (source, advisory_id, ecosystem, package, ranges, versions)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    source,
                    adv.id,
                    a.ecosystem,
                    a.name,
                    json.dumps(list(a.ranges)),
                    json.dumps(list(a.versions)),
                )
                for a in adv.affected
            ],
        )
        after = {(a.ecosystem, a.name) for a in adv.affected}
        (report.added if row is None else report.updated).append(adv.id)
    elif row is not None and row[1] is None:
        report.withdrawn.append(adv.id)
    else:
        # Withdrawn on first sight, or re-published while withdrawn: nothing to retract.
        report.unchanged += 1
        return False
    report.changed_packages |= before | after
    return True


def remove_source(db_path: Path, name: str) -> SyncReport:
    """Drop a source and everything it brought; its advisories count as withdrawn."""
    report = SyncReport()
    with cache.opened(db_path) as conn:
        if cache.get_source(conn, name) is None:
            raise FeedError(f"no feed source named {name!r}")
        with conn:
            report.withdrawn = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM advisories WHERE source = ? AND withdrawn IS NULL ORDER BY id",
                    (name,),
                )
            ]
            report.changed_packages = {
                (e, p)
                for e, p in conn.execute(
                    "SELECT ecosystem, package FROM affected WHERE source = ?", (name,)
                )
            }
            conn.execute("DELETE FROM affected WHERE source = ?", (name,))
            conn.execute("DELETE FROM advisories WHERE source = ?", (name,))
            conn.execute("DELETE FROM feed_sources WHERE name = ?", (name,))
            if report.withdrawn:
                cache.bump_epoch(conn)
        report.epoch = cache.get_epoch(conn)
    return report
