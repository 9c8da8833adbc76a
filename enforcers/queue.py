"""Durable enforcement job queue on SQLite (portable SQL, PostgreSQL later).

Semantics:
- at-least-once: a job leaves the queue only when a worker completes it; a worker that dies
  holding a job loses its lease, and the job goes back to pending when the lease expires
  (also on restart: ``requeue_expired`` runs before every claim).
- per-port ordering, latest decision wins: a job for a switch+port supersedes older queued
  (pending) jobs for the same switch+port; a job whose decision is older than one already
  queued is recorded as superseded at once. A port never has two jobs claimed at a time.
- retries with exponential backoff (base * 2**(attempt-1), capped), dead letter after
  ``max_attempts`` attempts or on a non-retryable failure; ``retry`` revives a job.
- every job records ``decided_at`` (when the decision was taken) and ``applied_at``, the
  switching delay of draft section 9.6.

States: pending -> claimed -> done | pending (retry) | dead; pending -> superseded.

The SQL is plain: no UPSERT, no RETURNING, no SQLite-only functions; ``claim`` is a SELECT
of candidates followed by a conditional ``UPDATE ... WHERE id = ? AND state = 'pending'``
whose rowcount tells which worker won. Only the id column differs on PostgreSQL
(``BIGSERIAL`` / identity); see ``SCHEMA``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

TABLE = "enforcement_jobs"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    switch TEXT NOT NULL,
    port TEXT NOT NULL DEFAULT '',
    vlan INTEGER,
    mac TEXT,
    session_id TEXT,
    payload TEXT NOT NULL DEFAULT '{{}}',
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_expires_at DOUBLE PRECISION,
    decided_at DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    claimed_at DOUBLE PRECISION,
    applied_at DOUBLE PRECISION,
    superseded_by INTEGER,
    last_error TEXT,
    result TEXT
)
"""
INDEXES = [
    f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (state, next_attempt_at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_port ON {TABLE} (switch, port, state)",
]

STATES = ("pending", "claimed", "done", "dead", "superseded")
# Kinds that act on a port's configuration: for these the latest decision supersedes.
PORT_KINDS = frozenset({"set_vlan", "bounce"})

_COLUMNS = (
    "id, kind, switch, port, vlan, mac, session_id, payload, state, attempts, max_attempts, "
    "next_attempt_at, lease_owner, lease_expires_at, decided_at, created_at, claimed_at, "
    "applied_at, superseded_by, last_error, result"
)


@dataclass(slots=True)
class Job:
    """One row of the queue. ``port`` is '' for jobs not tied to a port (e.g. reauth)."""

    id: int
    kind: str
    switch: str
    port: str
    vlan: int | None
    mac: str | None
    session_id: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    decided_at: float
    created_at: float
    claimed_at: float | None
    applied_at: float | None
    superseded_by: int | None
    last_error: str | None
    result: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Job:
        vals = list(row)
        vals[7] = json.loads(vals[7] or "{}")
        return cls(*vals)

    @property
    def latency(self) -> float | None:
        """decision -> applied seconds (draft 9.6), once done."""
        if self.applied_at is None:
            return None
        return self.applied_at - self.decided_at

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _COLUMNS.replace(" ", "").split(",")}
        d["latency"] = self.latency
        return d


class Queue(Protocol):
    """What the Enforcer and the CLI need from a queue: JobQueue (SQLite) and the store's
    PostgreSQL queue both provide it."""

    lease: float
    clock: Callable[[], float]

    def enqueue(self, kind: str, switch: str, port: str = "", *, vlan: int | None = None,
                mac: str | None = None, session_id: str | None = None,
                payload: dict[str, Any] | None = None, decided_at: float | None = None,
                max_attempts: int | None = None) -> int: ...
    def claim(self, limit: int = 1) -> list[Job]: ...
    def extend(self, job_id: int, seconds: float | None = None) -> bool: ...
    def complete(self, job_id: int, result: str = "ok",
                 applied_at: float | None = None) -> bool: ...
    def fail(self, job_id: int, error: str, *, retryable: bool = True) -> str: ...
    def retry(self, job_id: int) -> bool: ...
    def get(self, job_id: int) -> Job | None: ...
    def list_jobs(self, states: tuple[str, ...] | None = None,
                  limit: int = 1000) -> list[Job]: ...
    def counts(self) -> dict[str, int]: ...
    def next_due(self) -> float | None: ...


class JobQueue:
    """The queue over one SQLite database file (or an open connection).

    base_delay/max_delay: backoff between attempts, seconds. max_attempts: attempts before
    dead letter. lease: seconds a claim stays valid; a worker must finish (or ``extend``)
    within it. clock: injectable for tests. synchronous: SQLite's PRAGMA for a file path
    ("FULL" to survive power loss, at the cost of an fsync per state change).
    """

    def __init__(
        self,
        db: str | Path | sqlite3.Connection,
        *,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        lease: float = 30.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"bad synchronous mode {synchronous!r}")
        if isinstance(db, sqlite3.Connection):
            self.conn = db
        else:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode; we group statements in explicit transactions where needed.
            self.conn = sqlite3.connect(str(db), timeout=10.0, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            # WAL + NORMAL: a committed job survives a process crash (the at-least-once
            # promise); only an OS crash or power cut may lose the last commits. FULL
            # would fsync every claim/complete and cost milliseconds per job.
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.lease = lease
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.ensure_schema(self.conn)

    @staticmethod
    def ensure_schema(conn: sqlite3.Connection) -> None:
        """Create the jobs table and its indexes if missing (idempotent)."""
        conn.execute(SCHEMA)
        for stmt in INDEXES:
            conn.execute(stmt)

    def close(self) -> None:
        self.conn.close()

    # -- transactions -------------------------------------------------------------------
    def _begin(self) -> None:
        # IMMEDIATE takes the write lock up front so two processes cannot interleave the
        # read and the write of enqueue (PostgreSQL: plain BEGIN + the conditional UPDATEs).
        if self.conn.in_transaction:
            return
        self.conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # -- producer side ------------------------------------------------------------------
    def enqueue(
        self,
        kind: str,
        switch: str,
        port: str = "",
        *,
        vlan: int | None = None,
        mac: str | None = None,
        session_id: str | None = None,
        payload: dict[str, Any] | None = None,
        decided_at: float | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Add a job; returns its id. Supersedes older pending jobs for the same port."""
        now = self.clock()
        decided = now if decided_at is None else decided_at
        self._begin()
        try:
            cur = self.conn.execute(
                f"INSERT INTO {TABLE} (kind, switch, port, vlan, mac, session_id, payload, "
                "state, attempts, max_attempts, next_attempt_at, decided_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
                (kind, switch, port or "", vlan, mac, session_id,
                 json.dumps(payload or {}, sort_keys=True),
                 max_attempts or self.max_attempts, now, decided, now),
            )
            job_id = int(cur.lastrowid or 0)
            if kind in PORT_KINDS and port:
                kinds = tuple(PORT_KINDS)
                marks = ",".join("?" * len(kinds))
                # Is there a queued decision newer than this one? Then this one lost already.
                newer = self.conn.execute(
                    f"SELECT id FROM {TABLE} WHERE switch = ? AND port = ? AND state = 'pending'"
                    f" AND kind IN ({marks}) AND id <> ? AND decided_at > ?"
                    " ORDER BY decided_at DESC, id DESC",
                    (switch, port, *kinds, job_id, decided),
                ).fetchone()
                if newer is not None:
                    self.conn.execute(
                        f"UPDATE {TABLE} SET state = 'superseded', superseded_by = ? "
                        "WHERE id = ?", (newer[0], job_id))
                    log.info("job %d superseded at once by newer job %d", job_id, newer[0])
                else:
                    n = self.conn.execute(
                        f"UPDATE {TABLE} SET state = 'superseded', superseded_by = ? "
                        f"WHERE switch = ? AND port = ? AND state = 'pending'"
                        f" AND kind IN ({marks}) AND id <> ?",
                        (job_id, switch, port, *kinds, job_id),
                    ).rowcount
                    if n:
                        log.info("job %d supersedes %d queued job(s) for %s %s",
                                 job_id, n, switch, port)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return job_id

    # -- worker side --------------------------------------------------------------------
    def release_dead_local_claims(self) -> int:
        """Expire at once the leases held by processes of this host that no longer run
        (a server SIGKILLed mid-push): its restart need not wait out their lease."""
        host = socket.gethostname()
        rows = self.conn.execute(
            f"SELECT id, lease_owner FROM {TABLE} WHERE state = 'claimed'").fetchall()
        gone = []
        for job_id, owner in rows:
            parts = str(owner or "").split(":")
            if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                gone.append(job_id)
            except PermissionError:
                pass  # alive, another user's
        if gone:
            marks = ",".join("?" * len(gone))
            self._begin()
            try:
                self.conn.execute(
                    f"UPDATE {TABLE} SET lease_expires_at = ? WHERE state = 'claimed' "
                    f"AND id IN ({marks})", (self.clock() - 1, *gone))
                self._commit()
            except Exception:
                self._rollback()
                raise
            log.info("released %d job(s) claimed by dead processes of this host", len(gone))
        return len(gone)

    def requeue_expired(self) -> int:
        """Return claimed jobs whose lease expired to pending (or dead when out of attempts).

        Called before every claim, so a restarted process resumes what a dead one held.
        """
        now = self.clock()
        kinds = tuple(PORT_KINDS)
        marks = ",".join("?" * len(kinds))
        self._begin()
        try:
            # A newer decision for the same port queued meanwhile: drop the stale one.
            self.conn.execute(
                f"UPDATE {TABLE} SET state = 'superseded', lease_owner = NULL "
                f"WHERE state = 'claimed' AND lease_expires_at < ? AND kind IN ({marks}) "
                f"AND port <> '' AND EXISTS (SELECT 1 FROM {TABLE} n WHERE n.state = 'pending'"
                f" AND n.switch = {TABLE}.switch AND n.port = {TABLE}.port"
                f" AND n.kind IN ({marks}) AND n.id <> {TABLE}.id"
                f" AND n.decided_at >= {TABLE}.decided_at)",
                (now, *kinds, *kinds),
            )
            dead = self.conn.execute(
                f"UPDATE {TABLE} SET state = 'dead', lease_owner = NULL, "
                "last_error = COALESCE(last_error, 'lease expired') "
                "WHERE state = 'claimed' AND lease_expires_at < ? AND attempts >= max_attempts",
                (now,),
            ).rowcount
            back = self.conn.execute(
                f"UPDATE {TABLE} SET state = 'pending', lease_owner = NULL, "
                "lease_expires_at = NULL, next_attempt_at = ? "
                "WHERE state = 'claimed' AND lease_expires_at < ?",
                (now, now),
            ).rowcount
            self._commit()
        except BaseException:
            self._rollback()
            raise
        if back or dead:
            log.warning("lease expired: %d job(s) back to pending, %d dead", back, dead)
        return back

    def claim(self, limit: int = 1) -> list[Job]:
        """Claim up to ``limit`` due jobs, oldest first, at most one per switch+port.

        A job is skipped while another job for the same switch+port is claimed, so jobs of
        one port apply in order.
        """
        self.requeue_expired()
        now = self.clock()
        rows = self.conn.execute(
            f"SELECT j.id, j.switch, j.port FROM {TABLE} j WHERE j.state = 'pending' "
            "AND j.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM "
            f"{TABLE} c WHERE c.state = 'claimed' AND c.switch = j.switch AND c.port = j.port "
            "AND j.port <> '') ORDER BY j.next_attempt_at, j.id LIMIT ?",
            (now, limit * 4),
        ).fetchall()
        claimed: list[Job] = []
        seen: set[tuple[str, str]] = set()
        for job_id, sw, port in rows:
            if len(claimed) >= limit:
                break
            if port and (sw, port) in seen:
                continue
            cur = self.conn.execute(
                f"UPDATE {TABLE} SET state = 'claimed', lease_owner = ?, lease_expires_at = ?, "
                "claimed_at = ?, attempts = attempts + 1 WHERE id = ? AND state = 'pending'",
                (self.owner, now + self.lease, now, job_id),
            )
            if cur.rowcount == 1:
                seen.add((sw, port))
                job = self.get(job_id)
                if job is not None:
                    claimed.append(job)
        return claimed

    def extend(self, job_id: int, seconds: float | None = None) -> bool:
        """Renew the lease of a job this owner holds."""
        until = self.clock() + (seconds or self.lease)
        cur = self.conn.execute(
            f"UPDATE {TABLE} SET lease_expires_at = ? WHERE id = ? AND state = 'claimed' "
            "AND lease_owner = ?", (until, job_id, self.owner))
        return cur.rowcount == 1

    def complete(self, job_id: int, result: str = "ok", applied_at: float | None = None) -> bool:
        """Mark a claimed job done. False if this owner no longer holds it."""
        applied = self.clock() if applied_at is None else applied_at
        cur = self.conn.execute(
            f"UPDATE {TABLE} SET state = 'done', applied_at = ?, result = ?, lease_owner = NULL,"
            " lease_expires_at = NULL WHERE id = ? AND state = 'claimed' AND lease_owner = ?",
            (applied, result, job_id, self.owner),
        )
        if cur.rowcount != 1:
            log.warning("job %d: completed but lease was lost (another worker may redo it)",
                        job_id)
            return False
        job = self.get(job_id)
        if job is not None:
            log.info("job %d %s %s %s vlan=%s applied: %s; decision->applied %.3f s",
                     job.id, job.kind, job.switch, job.port, job.vlan, result,
                     job.latency or 0.0)
        return True

    def backoff(self, attempts: int) -> float:
        """Delay before attempt ``attempts + 1``."""
        return min(self.max_delay, self.base_delay * (2 ** max(0, attempts - 1)))

    def fail(self, job_id: int, error: str, *, retryable: bool = True) -> str:
        """Record a failed attempt; returns the new state ('pending', 'dead' or 'superseded').

        A job superseded while in flight is not retried (a newer decision is queued)."""
        job = self.get(job_id)
        if job is None or job.state != "claimed" or job.lease_owner != self.owner:
            log.warning("job %d: failure reported but lease was lost", job_id)
            return job.state if job else "missing"
        now = self.clock()
        newer = self._newer_pending(job)
        if newer is not None:
            # A newer decision for this port was queued while this one was in flight:
            # retrying the old one could undo it, so it is superseded instead.
            self.conn.execute(
                f"UPDATE {TABLE} SET state = 'superseded', superseded_by = ?, last_error = ?, "
                "lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND state = 'claimed'"
                " AND lease_owner = ?", (newer, error[:2000], job_id, self.owner))
            log.info("job %d failed (%s) and is superseded by job %d", job_id, error, newer)
            return "superseded"
        if not retryable or job.attempts >= job.max_attempts:
            state, nxt = "dead", job.next_attempt_at
        else:
            state, nxt = "pending", now + self.backoff(job.attempts)
        self.conn.execute(
            f"UPDATE {TABLE} SET state = ?, next_attempt_at = ?, last_error = ?, "
            "lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND state = 'claimed' "
            "AND lease_owner = ?", (state, nxt, error[:2000], job_id, self.owner))
        if state == "dead":
            log.error("job %d %s %s %s dead after %d attempt(s): %s", job_id, job.kind,
                      job.switch, job.port, job.attempts, error)
        else:
            log.warning("job %d attempt %d failed (%s); retry in %.1f s", job_id,
                        job.attempts, error, nxt - now)
        return state

    def _newer_pending(self, job: Job) -> int | None:
        if job.kind not in PORT_KINDS or not job.port:
            return None
        kinds = tuple(PORT_KINDS)
        marks = ",".join("?" * len(kinds))
        row = self.conn.execute(
            f"SELECT id FROM {TABLE} WHERE switch = ? AND port = ? AND state = 'pending' "
            f"AND kind IN ({marks}) AND id <> ? AND decided_at >= ? ORDER BY id DESC",
            (job.switch, job.port, *kinds, job.id, job.decided_at)).fetchone()
        return int(row[0]) if row else None

    # -- operator side ------------------------------------------------------------------
    def retry(self, job_id: int) -> bool:
        """Put a dead (or done/superseded) job back to pending with fresh attempts."""
        cur = self.conn.execute(
            f"UPDATE {TABLE} SET state = 'pending', attempts = 0, next_attempt_at = ?, "
            "lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND state <> 'claimed'",
            (self.clock(), job_id))
        return cur.rowcount == 1

    def get(self, job_id: int) -> Job | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def list_jobs(self, states: tuple[str, ...] | None = None, limit: int = 1000) -> list[Job]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE state IN ({marks}) ORDER BY id DESC "
                "LIMIT ?", (*states, limit)).fetchall()
        else:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute(
            f"SELECT state, COUNT(*) FROM {TABLE} GROUP BY state").fetchall()
        return {s: n for s, n in rows}

    def next_due(self) -> float | None:
        """Earliest next_attempt_at among pending jobs (for the worker's sleep)."""
        row = self.conn.execute(
            f"SELECT MIN(next_attempt_at) FROM {TABLE} WHERE state = 'pending'").fetchone()
        return row[0] if row and row[0] is not None else None
