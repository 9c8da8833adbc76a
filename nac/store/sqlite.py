"""SQLite store in WAL mode; packet-path writes go through one writer thread in batches."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nac.events import AccountingRecord, DecisionRecord
from nac.store.migrations import latest, migrate_sqlite
from nac.store.queries import ReadQueries
from nac.store.rows import decision_row, node_row, session_row

log = logging.getLogger("nac.store")

SCHEMA_VERSION = latest("sqlite")  # the tables themselves: nac/store/migrations.py

_NODE_UPSERT = """
INSERT INTO nodes (mac, first_seen, last_seen, segment, vlan, reason, identity, role,
                   last_nas, last_port, posture, posture_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (mac) DO UPDATE SET
    last_seen = excluded.last_seen, segment = excluded.segment, vlan = excluded.vlan,
    reason = excluded.reason, identity = COALESCE(excluded.identity, nodes.identity),
    role = COALESCE(excluded.role, nodes.role), last_nas = excluded.last_nas,
    last_port = excluded.last_port, posture = COALESCE(excluded.posture, nodes.posture),
    posture_at = COALESCE(excluded.posture_at, nodes.posture_at)
"""

_DECISION_INSERT = """
INSERT INTO decisions (at, mac, identity, role, nas, nas_port, method, source, segment, vlan,
                       reasons, remediation)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_ACCT_UPSERT = """
INSERT INTO sessions (nas, acct_session_id, mac, user_name, nas_port, nas_port_id, framed_ip,
                      framed_ipv6_prefix, started_at, updated_at, stopped_at, input_octets,
                      output_octets, session_time, terminate_cause)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (nas, acct_session_id) DO UPDATE SET
    mac = COALESCE(excluded.mac, sessions.mac),
    user_name = COALESCE(excluded.user_name, sessions.user_name),
    nas_port = COALESCE(excluded.nas_port, sessions.nas_port),
    nas_port_id = COALESCE(excluded.nas_port_id, sessions.nas_port_id),
    framed_ip = COALESCE(excluded.framed_ip, sessions.framed_ip),
    framed_ipv6_prefix = COALESCE(excluded.framed_ipv6_prefix, sessions.framed_ipv6_prefix),
    started_at = COALESCE(sessions.started_at, excluded.started_at),
    updated_at = excluded.updated_at,
    stopped_at = COALESCE(excluded.stopped_at, sessions.stopped_at),
    input_octets = COALESCE(excluded.input_octets, sessions.input_octets),
    output_octets = COALESCE(excluded.output_octets, sessions.output_octets),
    session_time = COALESCE(excluded.session_time, sessions.session_time),
    terminate_cause = COALESCE(excluded.terminate_cause, sessions.terminate_cause)
"""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.row_factory = sqlite3.Row
    return conn


class SqliteStore(ReadQueries):
    """Store on one SQLite file. Thread-safe: reads use a lock-guarded connection, packet
    path writes are queued to a writer thread that commits them in batches."""

    def __init__(self, path: Path, *, flush_interval: float = 0.05) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(path)
        self._lock = threading.Lock()
        # One server per file: pending migrations apply on open (nac/store/migrations.py).
        migrate_sqlite(self._conn)
        self._pending: deque[tuple[str, object]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._interval = flush_interval
        self._writer: threading.Thread | None = None
        # Only the event loop enqueues and only the writer commits, so two plain counters
        # tell flush() when everything queued so far is on disk, without a lock per record.
        self._queued = 0
        self._committed = 0
        self._commit_callbacks: list[Callable[[int], None]] = []
        self.write_errors = 0
        self.dropped = 0  # records the database refused (logged); the rest went in
        self.last_write_error: str | None = None

    # ---- packet-path writes -------------------------------------------------------------
    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="store-writer",
                                        daemon=True)
        self._writer.start()

    def record_decision(self, rec: DecisionRecord) -> None:
        self._pending.append(("decision", rec))
        self._queued += 1
        if self._writer is None:
            self._start_writer()

    def record_accounting(self, rec: AccountingRecord) -> int:
        """Queue an accounting record; returns its ticket: the record is on disk once
        `committed` reaches it (RFC 2866: answer only what was recorded)."""
        self._pending.append(("acct", rec))
        self._queued += 1
        if self._writer is None:
            self._start_writer()
        self._wake.set()  # accounting replies wait for this commit: do not sleep on it
        return self._queued

    @property
    def committed(self) -> int:
        return self._committed

    def on_commit(self, callback: Callable[[int], None]) -> None:
        """Call `callback(committed)` from the writer thread after every commit."""
        self._commit_callbacks.append(callback)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every write queued so far is committed (tests, shutdown)."""
        if self._writer is None:
            return
        target = self._queued
        deadline = time.monotonic() + timeout
        while self._committed < target:
            if time.monotonic() > deadline:
                raise TimeoutError("store writes still pending")
            self._wake.set()
            time.sleep(0.002)

    def _write_loop(self) -> None:
        conn = connect(self.path)
        while not (self._stop and not self._pending):
            self._wake.wait(self._interval)
            self._wake.clear()
            while self._pending:
                batch: list[tuple[str, object]] = []
                try:
                    while len(batch) < 5000:
                        batch.append(self._pending.popleft())
                except IndexError:
                    pass
                try:
                    self._commit(conn, batch)
                except sqlite3.OperationalError as exc:
                    # Locked, full or read-only: keep the batch for a later try; say why
                    # once per kind of failure.
                    self.write_errors += 1
                    if self.last_write_error != str(exc):
                        log.error("store write failed, will retry: %s", exc)
                    self.last_write_error = str(exc)
                    self._pending.extendleft(reversed(batch))
                    time.sleep(0.5)
                    break
                except Exception:  # a record the database refuses must not stall the rest
                    self._commit_each(conn, batch)
                self.last_write_error = None
                self._committed += len(batch)
                for cb in self._commit_callbacks:
                    cb(self._committed)
        conn.close()

    def _commit_each(self, conn: sqlite3.Connection, batch: list[tuple[str, object]]) -> None:
        """Commit record by record; set aside (count and log) only those that fail."""
        for item in batch:
            try:
                self._commit(conn, [item])
            except Exception:
                self.dropped += 1
                log.exception("store: a %s record was refused and set aside", item[0])

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[tuple[str, object]]) -> None:
        decisions = []
        nodes: dict[str, tuple[object, ...]] = {}  # one upsert per MAC per batch, last wins
        accts = []
        touches = []
        for kind, rec in batch:
            if kind == "decision":
                d: DecisionRecord = rec  # type: ignore[assignment]
                decisions.append(decision_row(d))
                if d.mac:
                    nodes[d.mac] = node_row(d)
            else:
                a: AccountingRecord = rec  # type: ignore[assignment]
                accts.append(session_row(a))
                if a.mac:
                    touches.append((a.at, a.mac))
        with conn:
            if decisions:
                conn.executemany(_DECISION_INSERT, decisions)
            if nodes:
                conn.executemany(_NODE_UPSERT, list(nodes.values()))
            if accts:
                conn.executemany(_ACCT_UPSERT, accts)
                conn.executemany("UPDATE nodes SET last_seen = MAX(last_seen, ?) WHERE mac = ?",
                                 touches)

    # ---- administrative -----------------------------------------------------------------
    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, args).fetchall()]

    def register_node(self, mac: str, segment: str | None, reason: str) -> None:
        now = time.time()
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO nodes (mac, first_seen, last_seen, registered_segment, reason) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET "
                "registered_segment = excluded.registered_segment",
                (mac, now, now, segment, reason),
            )
            self._conn.execute(
                "INSERT INTO node_changes (mac, registered_segment, at) VALUES (?, ?, ?)",
                (mac, segment, now),
            )

    def registrations_since(self, seq: int) -> tuple[int, list[tuple[str, str | None]]]:
        """Registrations changed after `seq` (seq 0: all of them) and the newest seq."""
        if seq == 0:
            rows = self._query(
                "SELECT mac, registered_segment FROM nodes WHERE registered_segment IS NOT NULL"
            )
            top = self._query("SELECT COALESCE(MAX(seq), 0) AS s FROM node_changes")[0]["s"]
            return top, [(r["mac"], r["registered_segment"]) for r in rows]
        rows = self._query(
            "SELECT seq, mac, registered_segment FROM node_changes WHERE seq > ? ORDER BY seq",
            (seq,),
        )
        if not rows:
            return seq, []
        return rows[-1]["seq"], [(r["mac"], r["registered_segment"]) for r in rows]

    def decisions_for(self, mac: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT * FROM decisions WHERE mac = ? ORDER BY id DESC LIMIT ?", (mac, limit)
        )
        for r in rows:
            r["reasons"] = json.loads(r["reasons"])
            r["remediation"] = json.loads(r["remediation"])
        return rows

    def healthy(self) -> bool:
        try:
            self._query("SELECT 1 AS ok")
        except sqlite3.Error:
            return False
        return self.last_write_error is None

    def close(self) -> None:
        if self._writer is not None:
            self.flush(timeout=30)
            self._stop = True
            self._wake.set()
            self._writer.join(timeout=5)
        self._conn.close()
