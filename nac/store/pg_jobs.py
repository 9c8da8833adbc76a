"""The durable enforcement job queue on PostgreSQL, shared by several servers.

Same public methods and semantics as enforcers.queue.JobQueue (read its docstring), same Job
rows. What differs is how concurrent servers are kept apart:

- ``claim`` selects due jobs ``FOR UPDATE SKIP LOCKED``: a job another server is claiming
  right now is skipped rather than waited for, and each job goes to exactly one server.
- "one claimed job per switch+port" spans servers: the claimer takes a transaction advisory
  lock on the port and re-checks for a claimed job on it before claiming.
- ``enqueue`` takes the same port lock, so "latest decision wins" holds when two servers
  queue for one port at once.
- a server that dies holding jobs stops renewing their leases; ``requeue_expired`` (run
  before every claim, by any server) hands them back.

The table comes from migration 3 (nac/store/migrations.py, `nac store migrate`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from enforcers.queue import PORT_KINDS, TABLE, Job
from nac.store.migrations import SchemaError, latest, postgres_version

log = logging.getLogger("enforcers.queue")

_COLUMNS = (
    "id, kind, switch, port, vlan, mac, session_id, payload, state, attempts, max_attempts, "
    "next_attempt_at, lease_owner, lease_expires_at, decided_at, created_at, claimed_at, "
    "applied_at, superseded_by, last_error, result"
)
_KINDS = sorted(PORT_KINDS)
JOBS_SCHEMA_VERSION = 3  # the migration that creates the table


F = TypeVar("F", bound=Callable[..., Any])


def _retry_conflicts(fn: F) -> F:
    """Two servers updating the same rows can deadlock; PostgreSQL then aborts one of the
    transactions, which is safe to run again from the start."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(4):
            try:
                return fn(*args, **kwargs)
            except psycopg.errors.TransactionRollbackError as exc:
                if attempt == 3:
                    raise
                log.info("job queue: %s; running the transaction again", exc)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


def _c(conn: Any) -> Any:
    # Tuple rows whatever the pool's row factory (a pool shared with the store has dicts).
    return conn.cursor(row_factory=tuple_row)


def _port_key(switch: str, port: str) -> str:
    return f"nac-port\x1f{switch}\x1f{port}"


class PgJobQueue:
    """The queue in a PostgreSQL database (URL, or a pool shared with other users).

    Parameters as JobQueue: base_delay/max_delay (backoff), max_attempts (before dead
    letter), lease (seconds a claim stays valid), owner, clock (injectable for tests).
    """

    def __init__(
        self,
        db: str | ConnectionPool,
        *,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        lease: float = 30.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        pool_size: int = 4,
    ) -> None:
        if isinstance(db, ConnectionPool):
            self.pool, self._own_pool = db, False
        else:
            self.pool = ConnectionPool(
                db, min_size=1, max_size=pool_size, open=True, name="nac-jobs",
                kwargs={"autocommit": True}, check=ConnectionPool.check_connection)
            self._own_pool = True
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.lease = lease
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        with self.pool.connection() as conn:
            have = postgres_version(conn)
        if have < JOBS_SCHEMA_VERSION:
            self.close()
            raise SchemaError(f"the PostgreSQL store has schema version {have}; the job queue "
                              f"needs {latest('postgresql')}: run `nac store migrate`")

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self.pool.connection() as conn:
            return _c(conn).execute(sql, args).fetchone()

    def _rowcount(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self.pool.connection() as conn:
            return _c(conn).execute(sql, args).rowcount

    # -- producer side ------------------------------------------------------------------
    @_retry_conflicts
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
        port = port or ""
        with self.pool.connection() as conn, conn.transaction():
            if kind in PORT_KINDS and port:
                _c(conn).execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                             (_port_key(switch, port),))
            row = _c(conn).execute(
                f"INSERT INTO {TABLE} (kind, switch, port, vlan, mac, session_id, payload, "
                "state, attempts, max_attempts, next_attempt_at, decided_at, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s, %s, %s) RETURNING id",
                (kind, switch, port, vlan, mac, session_id,
                 json.dumps(payload or {}, sort_keys=True),
                 max_attempts or self.max_attempts, now, decided, now),
            ).fetchone()
            assert row is not None
            job_id = int(row[0])
            if kind in PORT_KINDS and port:
                newer = _c(conn).execute(
                    f"SELECT id FROM {TABLE} WHERE switch = %s AND port = %s "
                    "AND state = 'pending' AND kind = ANY(%s) AND id <> %s AND decided_at > %s "
                    "ORDER BY decided_at DESC, id DESC LIMIT 1",
                    (switch, port, _KINDS, job_id, decided),
                ).fetchone()
                if newer is not None:
                    _c(conn).execute(f"UPDATE {TABLE} SET state = 'superseded', superseded_by = %s "
                                 "WHERE id = %s", (newer[0], job_id))
                    log.info("job %d superseded at once by newer job %d", job_id, newer[0])
                else:
                    n = _c(conn).execute(
                        f"UPDATE {TABLE} SET state = 'superseded', superseded_by = %s "
                        "WHERE switch = %s AND port = %s AND state = 'pending' "
                        "AND kind = ANY(%s) AND id <> %s",
                        (job_id, switch, port, _KINDS, job_id),
                    ).rowcount
                    if n:
                        log.info("job %d supersedes %d queued job(s) for %s %s",
                                 job_id, n, switch, port)
        return job_id

    # -- worker side --------------------------------------------------------------------
    @_retry_conflicts
    def requeue_expired(self) -> int:
        """Return claimed jobs whose lease expired to pending (or dead when out of attempts).

        Any server may run it: that is how a dead server's jobs reach a live one.
        """
        now = self.clock()
        with self.pool.connection() as conn, conn.transaction():
            _c(conn).execute(
                f"UPDATE {TABLE} j SET state = 'superseded', lease_owner = NULL "
                "WHERE j.state = 'claimed' AND j.lease_expires_at < %s AND j.kind = ANY(%s) "
                f"AND j.port <> '' AND EXISTS (SELECT 1 FROM {TABLE} n "
                "WHERE n.state = 'pending' AND n.switch = j.switch AND n.port = j.port "
                "AND n.kind = ANY(%s) AND n.id <> j.id AND n.decided_at >= j.decided_at)",
                (now, _KINDS, _KINDS),
            )
            dead = _c(conn).execute(
                f"UPDATE {TABLE} SET state = 'dead', lease_owner = NULL, "
                "last_error = COALESCE(last_error, 'lease expired') "
                "WHERE state = 'claimed' AND lease_expires_at < %s AND attempts >= max_attempts",
                (now,),
            ).rowcount
            back = _c(conn).execute(
                f"UPDATE {TABLE} SET state = 'pending', lease_owner = NULL, "
                "lease_expires_at = NULL, next_attempt_at = %s "
                "WHERE state = 'claimed' AND lease_expires_at < %s",
                (now, now),
            ).rowcount
        if back or dead:
            log.warning("lease expired: %d job(s) back to pending, %d dead", back, dead)
        return back

    @_retry_conflicts
    def claim(self, limit: int = 1) -> list[Job]:
        """Claim up to ``limit`` due jobs, oldest first, at most one per switch+port (across
        all servers). Jobs being claimed by another server right now are skipped."""
        self.requeue_expired()
        now = self.clock()
        claimed_ids: list[int] = []
        with self.pool.connection() as conn, conn.transaction():
            rows = _c(conn).execute(
                f"SELECT j.id, j.switch, j.port FROM {TABLE} j WHERE j.state = 'pending' "
                f"AND j.next_attempt_at <= %s AND NOT EXISTS (SELECT 1 FROM {TABLE} c "
                "WHERE c.state = 'claimed' AND c.switch = j.switch AND c.port = j.port "
                "AND j.port <> '') ORDER BY j.next_attempt_at, j.id LIMIT %s "
                "FOR UPDATE OF j SKIP LOCKED",
                (now, limit * 4),
            ).fetchall()
            seen: set[tuple[str, str]] = set()
            for job_id, sw, port in rows:
                if len(claimed_ids) >= limit:
                    break
                if port:
                    if (sw, port) in seen:
                        continue
                    # Another server may be claiming a different job of this port right now:
                    # the port lock orders us, and the re-check sees its committed claim.
                    got = _c(conn).execute(
                        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
                        (_port_key(sw, port),)).fetchone()
                    if not got or not got[0]:
                        continue
                    busy = _c(conn).execute(
                        f"SELECT 1 FROM {TABLE} WHERE state = 'claimed' AND switch = %s "
                        "AND port = %s LIMIT 1", (sw, port)).fetchone()
                    if busy:
                        continue
                n = _c(conn).execute(
                    f"UPDATE {TABLE} SET state = 'claimed', lease_owner = %s, "
                    "lease_expires_at = %s, claimed_at = %s, attempts = attempts + 1 "
                    "WHERE id = %s AND state = 'pending'",
                    (self.owner, now + self.lease, now, job_id),
                ).rowcount
                if n == 1:
                    seen.add((sw, port))
                    claimed_ids.append(int(job_id))
        jobs = [self.get(i) for i in claimed_ids]
        return [j for j in jobs if j is not None]

    def extend(self, job_id: int, seconds: float | None = None) -> bool:
        """Renew the lease of a job this owner holds."""
        until = self.clock() + (seconds or self.lease)
        return self._rowcount(
            f"UPDATE {TABLE} SET lease_expires_at = %s WHERE id = %s AND state = 'claimed' "
            "AND lease_owner = %s", (until, job_id, self.owner)) == 1

    def complete(self, job_id: int, result: str = "ok", applied_at: float | None = None) -> bool:
        """Mark a claimed job done. False if this owner no longer holds it."""
        applied = self.clock() if applied_at is None else applied_at
        n = self._rowcount(
            f"UPDATE {TABLE} SET state = 'done', applied_at = %s, result = %s, "
            "lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = %s AND state = 'claimed' AND lease_owner = %s",
            (applied, result, job_id, self.owner))
        if n != 1:
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
        """Record a failed attempt; returns the new state ('pending', 'dead' or 'superseded')."""
        job = self.get(job_id)
        if job is None or job.state != "claimed" or job.lease_owner != self.owner:
            log.warning("job %d: failure reported but lease was lost", job_id)
            return job.state if job else "missing"
        now = self.clock()
        newer = self._newer_pending(job)
        if newer is not None:
            # Retrying the old decision could undo the newer one queued meanwhile.
            self._rowcount(
                f"UPDATE {TABLE} SET state = 'superseded', superseded_by = %s, "
                "last_error = %s, lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = %s AND state = 'claimed' AND lease_owner = %s",
                (newer, error[:2000], job_id, self.owner))
            log.info("job %d failed (%s) and is superseded by job %d", job_id, error, newer)
            return "superseded"
        if not retryable or job.attempts >= job.max_attempts:
            state, nxt = "dead", job.next_attempt_at
        else:
            state, nxt = "pending", now + self.backoff(job.attempts)
        self._rowcount(
            f"UPDATE {TABLE} SET state = %s, next_attempt_at = %s, last_error = %s, "
            "lease_owner = NULL, lease_expires_at = NULL WHERE id = %s AND state = 'claimed' "
            "AND lease_owner = %s", (state, nxt, error[:2000], job_id, self.owner))
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
        row = self._one(
            f"SELECT id FROM {TABLE} WHERE switch = %s AND port = %s AND state = 'pending' "
            "AND kind = ANY(%s) AND id <> %s AND decided_at >= %s ORDER BY id DESC LIMIT 1",
            (job.switch, job.port, _KINDS, job.id, job.decided_at))
        return int(row[0]) if row else None

    # -- operator side ------------------------------------------------------------------
    def retry(self, job_id: int) -> bool:
        """Put a dead (or done/superseded) job back to pending with fresh attempts."""
        return self._rowcount(
            f"UPDATE {TABLE} SET state = 'pending', attempts = 0, next_attempt_at = %s, "
            "lease_owner = NULL, lease_expires_at = NULL WHERE id = %s AND state <> 'claimed'",
            (self.clock(), job_id)) == 1

    def get(self, job_id: int) -> Job | None:
        row = self._one(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = %s", (job_id,))
        return Job.from_row(row) if row else None

    def list_jobs(self, states: tuple[str, ...] | None = None, limit: int = 1000) -> list[Job]:
        with self.pool.connection() as conn:
            if states:
                rows = _c(conn).execute(
                    f"SELECT {_COLUMNS} FROM {TABLE} WHERE state = ANY(%s) ORDER BY id DESC "
                    "LIMIT %s", (list(states), limit)).fetchall()
            else:
                rows = _c(conn).execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY id DESC LIMIT %s",
                                    (limit,)).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            rows = _c(conn).execute(
                f"SELECT state, COUNT(*) FROM {TABLE} GROUP BY state").fetchall()
        return {s: int(n) for s, n in rows}

    def next_due(self) -> float | None:
        """Earliest next_attempt_at among pending jobs (for the worker's sleep)."""
        row = self._one(f"SELECT MIN(next_attempt_at) FROM {TABLE} WHERE state = 'pending'")
        return float(row[0]) if row and row[0] is not None else None
