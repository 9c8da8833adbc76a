"""Compiled postures of the fleet, kept beside the feed cache (STATE/nac.db).

A feed or policy change re-evaluates every inspected node (draft 6.4.2). Decoding 10,000
stored posture documents of 1,500 packages each takes tens of seconds (most of it reading
300 kB JSON texts), so each node's posture is kept here a second time, compiled once:
- `ids`: its package identities as ids of one persistent PackageTable (table fleet_keys),
  which VulnIndex.findings_compiled() turns into findings in one C-level pass;
- `rest`: the posture document without its package list, for the rules that read the other
  sections (OS, firewall, forwarding...);
- `soft`: outcomes of the rules that read the package list themselves (software allow/deny),
  keyed by each rule's own digest, so a policy change that keeps the rule keeps them.

An entry is valid for the node's posture_at. That column sits after the posture text in the
nodes row, so reading it walks the text's overflow pages: last_seen (before it) is compared
first, and posture_at is read only for nodes seen since the entry was checked.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nac.prevention import cache
from nac.prevention.packages import CompiledPosture, PackageTable, compile_posture

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fleet_keys (
        id INTEGER PRIMARY KEY,
        base TEXT NOT NULL,
        release TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS fleet_postures (
        mac TEXT PRIMARY KEY,
        posture_at REAL,
        last_seen REAL,
        ids BLOB NOT NULL,
        rest TEXT NOT NULL,
        soft TEXT NOT NULL
    )""",
)

# Outcome as stored: [status or None, reason].
StoredOutcome = list[Any]


def rule_digest(rule: Any) -> str:
    """A rule's identity for cached outcomes: its full settings, not its place in a policy."""
    data = rule.model_dump(mode="json", by_alias=True)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Entry:
    mac: str
    posture_at: float | None
    last_seen: float | None
    compiled: CompiledPosture
    rest: dict[str, Any]
    soft: dict[str, StoredOutcome] = field(default_factory=dict)
    dirty: bool = False


def split_posture(posture: dict[str, Any]) -> dict[str, Any]:
    """The posture without its package list; `packages` stays a list (empty) if it was one,
    so rules that only ask "was the inventory collected?" answer alike."""
    rest = dict(posture)
    if isinstance(rest.get("packages"), list):
        rest["packages"] = []
    return rest


class FleetCache:
    """Compiled postures by MAC in the SQLite file of the feed cache."""

    def __init__(self, db_path: Path) -> None:
        self.conn = cache.connect(db_path)
        with self.conn:
            for stmt in SCHEMA:
                self.conn.execute(stmt)
        self.table = PackageTable()
        self._saved_keys = 0
        self._load_keys()

    def _load_keys(self) -> None:
        rows = self.conn.execute(
            "SELECT id, base, release, name, version FROM fleet_keys WHERE id >= ? ORDER BY id",
            (self._saved_keys,)).fetchall()
        for row in rows:
            if self.table.intern(tuple(row[1:])) != row[0]:  # type: ignore[arg-type]
                raise RuntimeError("fleet_keys out of step with the package table")
        self._saved_keys = len(self.table)

    def load(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        rows = self.conn.execute(
            "SELECT mac, posture_at, last_seen, ids, rest, soft FROM fleet_postures")
        table = self.table
        for mac, posture_at, last_seen, blob, rest, soft in rows:
            ids = array("I")
            ids.frombytes(blob)
            out[mac] = Entry(mac, posture_at, last_seen,
                             CompiledPosture(ids, ids[-1] if ids else -1, table),
                             json.loads(rest), json.loads(soft))
        return out

    def compile(self, mac: str, posture: dict[str, Any], posture_at: float | None,
                last_seen: float | None) -> Entry:
        return Entry(mac, posture_at, last_seen, compile_posture(posture, self.table),
                     split_posture(posture), {}, dirty=True)

    def save(self, entries: Iterable[Entry], keep: set[str] | None = None) -> None:
        """Write the changed entries (and new package keys); with `keep`, forget other MACs."""
        rows = [(e.mac, e.posture_at, e.last_seen, e.compiled.ids.tobytes(),
                 json.dumps(e.rest, separators=(",", ":")),
                 json.dumps(e.soft, separators=(",", ":")))
                for e in entries if e.dirty]
        conn = self.conn
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            # Another process may have saved keys meanwhile: ids are only valid in one order.
            known = conn.execute("SELECT COUNT(*) FROM fleet_keys").fetchone()[0]
            if known != self._saved_keys:
                conn.execute("DELETE FROM fleet_keys")
                conn.execute("DELETE FROM fleet_postures")  # rebuilt from this process's view
                self._saved_keys = 0
                rows = [(e.mac, e.posture_at, e.last_seen, e.compiled.ids.tobytes(),
                         json.dumps(e.rest, separators=(",", ":")),
                         json.dumps(e.soft, separators=(",", ":")))
                        for e in entries]
            new = self.table.keys[self._saved_keys:]
            conn.executemany(
                "INSERT INTO fleet_keys (id, base, release, name, version) VALUES (?, ?, ?, ?, ?)",
                [(self._saved_keys + i, *k) for i, k in enumerate(new)])
            conn.executemany(
                "INSERT OR REPLACE INTO fleet_postures (mac, posture_at, last_seen, ids, rest, "
                "soft) VALUES (?, ?, ?, ?, ?, ?)", rows)
            if keep is not None:
                gone = [(m,) for (m,) in conn.execute("SELECT mac FROM fleet_postures")
                        if m not in keep]
                conn.executemany("DELETE FROM fleet_postures WHERE mac = ?", gone)
        self._saved_keys = len(self.table)
        for e in entries:
            e.dirty = False

    def close(self) -> None:
        self.conn.close()


def connect(db_path: Path) -> FleetCache | None:
    try:
        return FleetCache(db_path)
    except sqlite3.Error:
        return None
