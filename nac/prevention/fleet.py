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

An entry is valid for the node's posture_at (node_postures: when the stored posture arrived).
The node's last_seen is compared first, and posture_at is read only for nodes seen since the
entry was checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nac.prevention import cache
from nac.prevention.packages import CompiledPosture, PackageTable, compile_posture

log = logging.getLogger("nac.prevention.fleet")

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
        self._synced = 0  # table ids below this are the file's; above, this process's own
        self._load_keys()

    def _load_keys(self) -> None:
        rows = self.conn.execute(
            "SELECT id, base, release, name, version FROM fleet_keys WHERE id >= ? ORDER BY id",
            (self._synced,)).fetchall()
        for row in rows:
            if self.table.intern(tuple(row[1:])) != row[0]:  # type: ignore[arg-type]
                raise RuntimeError("fleet_keys ids are not dense: drop the fleet_* tables")
        self._synced = len(self.table)

    def load(self) -> dict[str, Entry]:
        """Every stored entry. Call before compiling: entries compiled and not yet saved
        are invalid afterwards (the table follows the file's ids again)."""
        if len(self.table) != self._synced:
            self.table = PackageTable()
            self._synced = 0
        self._load_keys()  # ids other processes added meanwhile
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
                last_seen: float | None, soft_rules: Iterable[tuple[str, Any]] = ()) -> Entry:
        """An entry for this posture; `soft_rules` (digest, rule) are judged on it now."""
        soft = {}
        for digest, rule in soft_rules:
            outcome = rule.check(posture, None)
            soft[digest] = [outcome.status, outcome.reason]
        return Entry(mac, posture_at, last_seen, compile_posture(posture, self.table),
                     split_posture(posture), soft, dirty=True)

    def save(self, entries: Iterable[Entry], keep: set[str] | None = None) -> None:
        """Write the changed entries (and new package keys); with `keep`, forget other MACs.

        Several processes compile (the CLI, each server worker): package ids interned here
        since the last sync are given their ids in the file under the write lock, and the
        entries' id arrays translated, so concurrent writers never disagree."""
        entries = list(entries)
        dirty = [e for e in entries if e.dirty]
        conn = self.conn
        synced = self._synced
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            foreign = conn.execute(
                "SELECT id, base, release, name, version FROM fleet_keys WHERE id >= ? "
                "ORDER BY id", (synced,)).fetchall()
            in_file = {tuple(r[1:]): r[0] for r in foreign}
            next_id = synced + len(foreign)
            remap: dict[int, int] = {}
            inserts = []
            for i, key in enumerate(self.table.keys[synced:], start=synced):
                db_id = in_file.get(key)
                if db_id is None:
                    db_id, next_id = next_id, next_id + 1
                    inserts.append((db_id, *key))
                remap[i] = db_id
            conn.executemany("INSERT INTO fleet_keys (id, base, release, name, version) "
                             "VALUES (?, ?, ?, ?, ?)", inserts)
            moved = any(k != v for k, v in remap.items())
            rows = []
            for e in dirty:
                ids = e.compiled.ids
                if moved and e.compiled.max_id >= synced:
                    ids = array("I", sorted(remap.get(i, i) for i in ids))
                rows.append((e.mac, e.posture_at, e.last_seen, ids.tobytes(),
                             json.dumps(e.rest, separators=(",", ":")),
                             json.dumps(e.soft, separators=(",", ":"))))
            conn.executemany(
                "INSERT OR REPLACE INTO fleet_postures (mac, posture_at, last_seen, ids, rest, "
                "soft) VALUES (?, ?, ?, ?, ?, ?)", rows)
            if keep is not None:
                gone = [(m,) for (m,) in conn.execute("SELECT mac FROM fleet_postures")
                        if m not in keep]
                conn.executemany("DELETE FROM fleet_postures WHERE mac = ?", gone)
        if foreign or moved:  # the file's order differs from ours: start again from it
            self.table = PackageTable()
            self._synced = 0
            self._load_keys()
        else:
            self._synced = len(self.table)
        for e in dirty:
            e.dirty = False

    def touch(self, rows: list[tuple[float | None, float | None, str, str]]) -> list[str]:
        """Re-date entries whose posture is unchanged: rows (posture_at, last_seen, mac,
        stated digest). Only a row still holding a posture with that digest moves (another
        process may have replaced it meanwhile); returns the MACs that did not."""
        missed = []
        with self.conn:
            for row in rows:
                cur = self.conn.execute(
                    "UPDATE fleet_postures SET posture_at = ?, last_seen = ? WHERE mac = ? "
                    "AND json_extract(rest, '$.stated_digest') = ?", row)
                if cur.rowcount != 1:
                    missed.append(row[2])
        return missed

    def close(self) -> None:
        self.conn.close()


def _stated(posture: dict[str, Any]) -> str | None:
    digest = posture.get("stated_digest")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


class FleetIntake:
    """Compiles postures as the server records them (a background thread, in batches), so
    the re-evaluation after a feed change finds them compiled instead of decoding them.

    The entry's stamp is the decision's time: the store writes it as the node's posture_at
    and last_seen. Best effort: whatever is dropped (queue full, write error) the
    re-evaluation compiles from the store itself."""

    def __init__(self, db_path: Path, *, interval: float = 1.0,
                 max_pending: int = 20_000) -> None:
        self.db_path = db_path
        self.interval = interval
        self.max_pending = max_pending
        self._pending: deque[tuple[str, dict[str, Any], float, list[tuple[str, Any]]]] = (
            deque())
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.touched = 0
        # mac -> (stated digest, soft rule digests) of the entry this intake last wrote:
        # a host that reports the same posture again (its certificate went stale with a
        # feed change, or it leads with no certificate) needs a new date, not a compile
        self._written: dict[str, tuple[str, tuple[str, ...]]] = {}

    def observe(self, mac: str, posture: dict[str, Any], at: float,
                soft_rules: list[tuple[str, Any]] | None = None) -> None:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append((mac, posture, at, soft_rules or []))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fleet-intake",
                                            daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything observed so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (self._pending or self._busy) and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)

    _busy = False

    def _run(self) -> None:
        fleet: FleetCache | None = None
        while not (self._stop and not self._pending):
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._pending:
                continue
            self._busy = True
            try:
                if fleet is None:
                    fleet = FleetCache(self.db_path)
                batch: dict[str, Entry] = {}
                same: dict[str, tuple[float, float, str, str]] = {}
                todo: dict[str, tuple[dict[str, Any], float, list[tuple[str, Any]]]] = {}
                while self._pending and len(batch) + len(same) < 1000:
                    mac, posture, at, soft_rules = self._pending.popleft()
                    digest = _stated(posture)
                    key = (digest, tuple(d for d, _ in soft_rules))
                    todo[mac] = (posture, at, soft_rules)
                    if digest is not None and self._written.get(mac) == key:
                        same[mac] = (at, at, mac, digest)
                        batch.pop(mac, None)
                    else:
                        same.pop(mac, None)
                        batch[mac] = fleet.compile(mac, posture, at, at, soft_rules)
                for mac in fleet.touch(list(same.values())):
                    posture, at, soft_rules = todo[mac]
                    batch[mac] = fleet.compile(mac, posture, at, at, soft_rules)
                self.touched += len(same) - len(set(same) & set(batch))
                fleet.save(batch.values())
                self.written += len(batch)
                if len(self._written) > 200_000:
                    self._written.clear()
                for mac in batch:
                    digest = _stated(todo[mac][0])
                    if digest is not None:
                        self._written[mac] = (digest, tuple(d for d, _ in todo[mac][2]))
            except Exception:  # the re-evaluation falls back to the store: log, go on
                log.exception("fleet intake: could not write compiled postures")
                if fleet is not None:
                    fleet.close()
                fleet = None
                time.sleep(self.interval)
            finally:
                self._busy = False
        if fleet is not None:
            fleet.close()

    def close(self) -> None:
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join(timeout=10)


def connect(db_path: Path) -> FleetCache | None:
    try:
        return FleetCache(db_path)
    except sqlite3.Error:
        return None
