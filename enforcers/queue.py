"""Durable enforcement job queue: one set of semantics and SQL for SQLite and PostgreSQL.

Semantics:
- at-least-once: a job leaves the queue only when a worker completes it; a worker that dies
  holding a job loses its lease, and the job goes back to pending when the lease expires
  (also on restart: ``requeue_expired`` runs before a claim, at most once a second).
- per-port ordering, latest decision wins: a job for a switch+port supersedes older queued
  (pending) jobs for the same switch+port; a job whose decision is older than one already
  queued is recorded as superseded at once. A port never has two jobs claimed at a time.
- retries with exponential backoff (base * 2**(attempt-1), capped), dead letter after
  ``max_attempts`` attempts or on a non-retryable failure; ``retry`` revives a job.
- every job records ``decided_at`` (when the decision was taken) and ``applied_at``, the
  switching delay of draft section 9.6.

States: pending -> claimed -> done | pending (retry) | dead; pending -> superseded.

``SqlJobQueue`` holds the semantics and every statement, written once with ``?``
placeholders and no backend-only SQL. A backend supplies connections and transactions, its
placeholder style and how claimers on several processes/servers are kept apart:
``JobQueue`` (SQLite, below: ``BEGIN IMMEDIATE`` serialises writers on one file) and
``nac.store.pg_jobs.PgJobQueue`` (PostgreSQL: ``FOR UPDATE SKIP LOCKED`` and per-port
advisory locks). The table is defined in nac/store/migrations.py (``jobs_table``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

TABLE = "enforcement_jobs"

STATES = ("pending", "claimed", "done", "dead", "superseded")
# Kinds that act on a port's configuration: for these the latest decision supersedes.
PORT_KINDS = frozenset({"set_vlan", "bounce"})
_KINDS = tuple(sorted(PORT_KINDS))
_KIND_MARKS = ",".join("?" * len(_KINDS))

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


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


# Runs one statement (``?`` placeholders) on the connection of the current unit of work.
Exec = Callable[[str, Sequence[Any]], Cursor]


@lru_cache(maxsize=256)
def format_style(sql: str) -> str:
    """``?`` -> ``%s`` (psycopg). The queue's SQL has no other ``?`` nor ``%``."""
    return sql.replace("?", "%s")


# ---- the statements, shared by both backends -------------------------------------------
_INSERT = (
    f"INSERT INTO {TABLE} (kind, switch, port, vlan, mac, session_id, payload, state, "
    "attempts, max_attempts, next_attempt_at, decided_at, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)"
)
_INSERT_WITH_ID = (  # the id taken beforehand from the table's sequence (PgJobQueue)
    f"INSERT INTO {TABLE} (id, kind, switch, port, vlan, mac, session_id, payload, state, "
    "attempts, max_attempts, next_attempt_at, decided_at, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)"
)
_NEWER_QUEUED = (  # a queued decision for the port taken after this one
    f"SELECT id FROM {TABLE} WHERE switch = ? AND port = ? AND state = 'pending' "
    f"AND kind IN ({_KIND_MARKS}) AND id <> ? AND decided_at > ? "
    "ORDER BY decided_at DESC, id DESC LIMIT 1"
)
_SUPERSEDE_ONE = f"UPDATE {TABLE} SET state = 'superseded', superseded_by = ? WHERE id = ?"
_SUPERSEDE_OLDER = (
    f"UPDATE {TABLE} SET state = 'superseded', superseded_by = ? WHERE switch = ? AND port = ?"
    f" AND state = 'pending' AND kind IN ({_KIND_MARKS}) AND id <> ?"
)
_EXPIRED_SUPERSEDED = (  # an expired claim whose port has a newer decision queued: drop it
    f"UPDATE {TABLE} SET state = 'superseded', lease_owner = NULL "
    f"WHERE state = 'claimed' AND lease_expires_at < ? AND kind IN ({_KIND_MARKS}) "
    f"AND port <> '' AND EXISTS (SELECT 1 FROM {TABLE} n WHERE n.state = 'pending'"
    f" AND n.switch = {TABLE}.switch AND n.port = {TABLE}.port"
    f" AND n.kind IN ({_KIND_MARKS}) AND n.id <> {TABLE}.id"
    f" AND n.decided_at >= {TABLE}.decided_at)"
)
_EXPIRED_DEAD = (
    f"UPDATE {TABLE} SET state = 'dead', lease_owner = NULL, "
    "last_error = COALESCE(last_error, 'lease expired') "
    "WHERE state = 'claimed' AND lease_expires_at < ? AND attempts >= max_attempts"
)
_EXPIRED_BACK = (
    f"UPDATE {TABLE} SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, "
    "next_attempt_at = ? WHERE state = 'claimed' AND lease_expires_at < ?"
)
_CANDIDATES = (  # due jobs whose port has no claimed job, oldest first
    f"SELECT j.id, j.switch, j.port FROM {TABLE} j WHERE j.state = 'pending' "
    f"AND j.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM {TABLE} c "
    "WHERE c.state = 'claimed' AND c.switch = j.switch AND c.port = j.port "
    "AND j.port <> '') ORDER BY j.next_attempt_at, j.id LIMIT ?"
)
_PORT_BUSY = (
    f"SELECT 1 FROM {TABLE} WHERE state = 'claimed' AND switch = ? AND port = ? LIMIT 1"
)
_CLAIM = (
    f"UPDATE {TABLE} SET state = 'claimed', lease_owner = ?, lease_expires_at = ?, "
    "claimed_at = ?, attempts = attempts + 1 WHERE id = ? AND state = 'pending'"
)
_EXTEND = (
    f"UPDATE {TABLE} SET lease_expires_at = ? WHERE id = ? AND state = 'claimed' "
    "AND lease_owner = ?"
)
_COMPLETE = (
    f"UPDATE {TABLE} SET state = 'done', applied_at = ?, result = ?, lease_owner = NULL, "
    "lease_expires_at = NULL WHERE id = ? AND state = 'claimed' AND lease_owner = ?"
)
_FAIL_SUPERSEDED = (
    f"UPDATE {TABLE} SET state = 'superseded', superseded_by = ?, last_error = ?, "
    "lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND state = 'claimed' "
    "AND lease_owner = ?"
)
_FAIL = (
    f"UPDATE {TABLE} SET state = ?, next_attempt_at = ?, last_error = ?, lease_owner = NULL, "
    "lease_expires_at = NULL WHERE id = ? AND state = 'claimed' AND lease_owner = ?"
)
_NEWER_THAN_CLAIMED = (
    f"SELECT id FROM {TABLE} WHERE switch = ? AND port = ? AND state = 'pending' "
    f"AND kind IN ({_KIND_MARKS}) AND id <> ? AND decided_at >= ? ORDER BY id DESC LIMIT 1"
)
_RETRY = (
    f"UPDATE {TABLE} SET state = 'pending', attempts = 0, next_attempt_at = ?, "
    "lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND state <> 'claimed'"
)
_RELEASE = (  # claimed, never applied: back to pending at once, the attempt not counted
    f"UPDATE {TABLE} SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, "
    "attempts = attempts - 1 WHERE id = ? AND state = 'claimed' AND lease_owner = ?"
)
_GET = f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?"
_LIST_ALL = f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY id DESC LIMIT ?"
_COUNTS = f"SELECT state, COUNT(*) FROM {TABLE} GROUP BY state"
_NEXT_DUE = f"SELECT MIN(next_attempt_at) FROM {TABLE} WHERE state = 'pending'"
_CLAIMED_OWNERS = f"SELECT id, lease_owner FROM {TABLE} WHERE state = 'claimed'"
_LATENCIES = (
    f"SELECT applied_at - decided_at FROM {TABLE} WHERE state = 'done' "
    "AND applied_at IS NOT NULL ORDER BY applied_at DESC LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job as enqueue() takes it, before it has a row: the INSERT's arguments."""

    kind: str
    switch: str
    port: str
    vlan: int | None
    mac: str | None
    session_id: str | None
    payload: str
    max_attempts: int
    created_at: float
    decided_at: float

    @property
    def per_port(self) -> bool:
        return self.kind in PORT_KINDS and bool(self.port)

    def args(self) -> tuple[Any, ...]:
        return (self.kind, self.switch, self.port, self.vlan, self.mac, self.session_id,
                self.payload, self.max_attempts, self.created_at, self.decided_at,
                self.created_at)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def default_owner() -> str:
    """host:pid:nonce: ``release_dead_local_claims`` reads host and pid back."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SqlJobQueue:
    """The queue's semantics over any SQL backend (see the module docstring).

    base_delay/max_delay: backoff between attempts, seconds. max_attempts: attempts before
    dead letter. lease: seconds a claim stays valid; a worker must finish (or ``extend``)
    within it. clock: injectable for tests.

    A backend implements ``_tx`` (a transaction that serialises with other claimers and
    enqueuers), ``_auto`` (one statement at a time) and ``_insert``; it may take a port
    lock in ``_lock_port`` and add a row-locking clause to the claim's SELECT.
    """

    # Row-locking clause appended to the claim's candidate SELECT (PostgreSQL).
    claim_lock_clause = ""
    # Errors after which a whole transaction may simply run again (PostgreSQL deadlocks).
    conflicts: tuple[type[BaseException], ...] = ()
    # Seconds between two requeue_expired sweeps by one claimer: a lease is tens of
    # seconds, so a sweep per claim (3 UPDATEs) bought nothing but write-lock time.
    requeue_interval = 1.0

    def __init__(self, *, max_attempts: int = 8, base_delay: float = 1.0,
                 max_delay: float = 60.0, lease: float = 30.0, owner: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.lease = lease
        self.owner = owner or default_owner()
        self.clock = clock
        self._swept_at: float | None = None
        #: run inside each enqueue's transaction (e.g. a PostgreSQL NOTIFY, sent at commit)
        self.enqueue_hooks: list[Callable[[Exec], object]] = []
        #: run after each enqueue committed (e.g. a datagram poke to the server's enforcer)
        self.enqueued_hooks: list[Callable[[], object]] = []
        #: wake this process's enforcer, from any thread (enforcers.wake.Listener adds its
        #: own): called when jobs queued here committed, or an off-loop claim got jobs
        self.wakers: list[Callable[[], object]] = []

    def for_worker(self) -> SqlJobQueue:
        """The queue as the enforcer's worker loop should call it (on its event loop): the
        same queue here; SQLite gives a connection that waits less for a locked file."""
        return self

    # -- what a backend provides ----------------------------------------------------------
    def _tx(self) -> Any:
        """Context manager: an Exec inside one transaction (committed on exit)."""
        raise NotImplementedError

    def _auto(self) -> Any:
        """Context manager: an Exec whose statements commit one by one."""
        raise NotImplementedError

    def _insert(self, x: Exec, sql: str, args: Sequence[Any]) -> int:
        """Run an INSERT of one row; its id."""
        raise NotImplementedError

    def _lock_port(self, x: Exec, switch: str, port: str, *, wait: bool) -> bool:
        """Serialise enqueuers/claimers of one port across processes; False: busy, skip it.
        Nothing to do where the transaction already excludes every other writer."""
        return True

    def close(self) -> None:
        raise NotImplementedError

    def _transact(self, work: Callable[[Exec], Any]) -> Any:
        for attempt in range(4):
            try:
                with self._tx() as x:
                    return work(x)
            except self.conflicts as exc:
                # Two servers updating the same rows can deadlock; the database aborts one
                # transaction, which is safe to run again from the start.
                if attempt == 3:
                    raise
                log.info("job queue: %s; running the transaction again", exc)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._auto() as x:
            return x(sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._auto() as x:
            return list(x(sql, args).fetchall())

    def _rowcount(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self._auto() as x:
            return int(x(sql, args).rowcount)

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
        job = self.new_job(kind, switch, port, vlan=vlan, mac=mac, session_id=session_id,
                           payload=payload, decided_at=decided_at, max_attempts=max_attempts)
        job_id = int(self._transact(lambda x: self._put_all(x, [(None, job)])[0]))
        self._enqueued()
        return job_id

    def new_job(self, kind: str, switch: str, port: str = "", *, vlan: int | None = None,
                mac: str | None = None, session_id: str | None = None,
                payload: dict[str, Any] | None = None, decided_at: float | None = None,
                max_attempts: int | None = None) -> NewJob:
        """enqueue()'s arguments as the row they make, dated now."""
        now = self.clock()
        return NewJob(kind, switch, port or "", vlan, mac, session_id,
                      json.dumps(payload or {}, sort_keys=True),
                      max_attempts or self.max_attempts, now,
                      now if decided_at is None else decided_at)

    def _put_all(self, x: Exec, jobs: Sequence[tuple[int | None, NewJob]]) -> list[int]:
        """Insert jobs (with their id, or None for the table's next) in one transaction, each
        superseding as enqueue() says; then the enqueue hooks, once. Their ids."""
        ids = [self._put(x, job, job_id) for job_id, job in jobs]
        for hook in self.enqueue_hooks:
            hook(x)
        return ids

    def _put(self, x: Exec, job: NewJob, job_id: int | None) -> int:
        switch, port, decided = job.switch, job.port, job.decided_at
        if job.per_port:
            self._lock_port(x, switch, port, wait=True)
        if job_id is None:
            job_id = self._insert(x, _INSERT, job.args())
        else:
            x(_INSERT_WITH_ID, (job_id, *job.args()))
        if not job.per_port:
            return job_id
        newer = x(_NEWER_QUEUED, (switch, port, *_KINDS, job_id, decided)).fetchone()
        if newer is not None:
            x(_SUPERSEDE_ONE, (newer[0], job_id))
            log.info("job %d superseded at once by newer job %d", job_id, newer[0])
        else:
            n = x(_SUPERSEDE_OLDER, (job_id, switch, port, *_KINDS, job_id)).rowcount
            if n:
                log.info("job %d supersedes %d queued job(s) for %s %s", job_id, n, switch,
                         port)
        return job_id

    def _enqueued(self) -> None:
        """After jobs committed: the hooks that tell other processes, and this process's
        own waiting enforcer (``wakers``)."""
        for after in (*self.enqueued_hooks, *self.wakers):
            try:
                after()
            except Exception as exc:  # noqa: BLE001 - the job is queued; the poll finds it
                log.debug("job queued; wake-up not sent: %s", exc)

    # -- worker side --------------------------------------------------------------------
    def release_dead_local_claims(self) -> int:
        """Expire at once the leases held by processes of this host that no longer run
        (a server SIGKILLed mid-push): its restart need not wait out their lease."""
        host = socket.gethostname()
        gone = []
        for job_id, owner in self._all(_CLAIMED_OWNERS):
            parts = str(owner or "").split(":")
            if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                gone.append(int(job_id))
            except PermissionError:
                pass  # alive, another user's
        if gone:
            sql = (f"UPDATE {TABLE} SET lease_expires_at = ? WHERE state = 'claimed' "
                   f"AND id IN ({_marks(len(gone))})")
            self._transact(lambda x: x(sql, (self.clock() - 1, *gone)))
            self._swept_at = None  # the next claim hands them back, not a second later
            log.info("released %d job(s) claimed by dead processes of this host", len(gone))
        return len(gone)

    def requeue_expired(self) -> int:
        """Return claimed jobs whose lease expired to pending (or dead when out of attempts).

        Called before a claim (at most every ``requeue_interval`` seconds), by any process
        or server: that is how a dead one's jobs reach a live one.
        """
        now = self.clock()
        self._swept_at = now

        def work(x: Exec) -> tuple[int, int]:
            x(_EXPIRED_SUPERSEDED, (now, *_KINDS, *_KINDS))
            dead = x(_EXPIRED_DEAD, (now,)).rowcount
            back = x(_EXPIRED_BACK, (now, now)).rowcount
            return int(back), int(dead)

        back, dead = self._transact(work)
        if back or dead:
            log.warning("lease expired: %d job(s) back to pending, %d dead", back, dead)
        return back

    def claim(self, limit: int = 1) -> list[Job]:
        """Claim up to ``limit`` due jobs, oldest first, at most one per switch+port across
        every process on the queue, so jobs of one port apply in order."""
        now = self.clock()
        last = self._swept_at
        if last is None or not last <= now < last + self.requeue_interval:
            self.requeue_expired()
            now = self.clock()  # a job it handed back is due from the sweep's time

        def work(x: Exec) -> list[int]:
            rows = x(_CANDIDATES + self.claim_lock_clause, (now, limit * 4)).fetchall()
            ids: list[int] = []
            seen: set[tuple[str, str]] = set()
            for job_id, sw, port in rows:
                if len(ids) >= limit:
                    break
                if port:
                    if (sw, port) in seen:
                        continue
                    # Another claimer may be taking a different job of this port right now:
                    # the port lock orders us, and the re-check sees its committed claim.
                    if not self._lock_port(x, sw, port, wait=False):
                        continue
                    if x(_PORT_BUSY, (sw, port)).fetchone():
                        continue
                n = x(_CLAIM, (self.owner, now + self.lease, now, job_id)).rowcount
                if n == 1:
                    seen.add((sw, port))
                    ids.append(int(job_id))
            return ids

        ids = self._transact(work)
        if not ids:
            return []
        # One read for every claimed row (not one per job): loop-side calls stay short.
        rows = self._all(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id IN ({_marks(len(ids))})",
                         ids)
        by_id = {int(r[0]): Job.from_row(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def extend(self, job_id: int, seconds: float | None = None) -> bool:
        """Renew the lease of a job this owner holds."""
        until = self.clock() + (seconds or self.lease)
        return self._rowcount(_EXTEND, (until, job_id, self.owner)) == 1

    def complete(self, job_id: int, result: str = "ok", applied_at: float | None = None) -> bool:
        """Mark a claimed job done. False if this owner no longer holds it."""
        applied = self.clock() if applied_at is None else applied_at
        if self._rowcount(_COMPLETE, (applied, result, job_id, self.owner)) != 1:
            log.warning("job %d: completed but lease was lost (another worker may redo it)",
                        job_id)
            return False
        job = self.get(job_id)
        if job is not None:
            log.info("job %d %s %s %s vlan=%s applied: %s; decision->applied %.3f s",
                     job.id, job.kind, job.switch, job.port, job.vlan, result,
                     job.latency or 0.0)
        return True

    def release(self, job_ids: Sequence[int]) -> int:
        """Hand claimed jobs this owner never applied back to pending at once (a worker
        stopping with jobs it had claimed ahead); how many went back."""
        if not job_ids:
            return 0
        return int(self._transact(lambda x: sum(
            int(x(_RELEASE, (job_id, self.owner)).rowcount) for job_id in job_ids)))

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
            self._rowcount(_FAIL_SUPERSEDED, (newer, error[:2000], job_id, self.owner))
            log.info("job %d failed (%s) and is superseded by job %d", job_id, error, newer)
            return "superseded"
        if not retryable or job.attempts >= job.max_attempts:
            state, nxt = "dead", job.next_attempt_at
        else:
            state, nxt = "pending", now + self.backoff(job.attempts)
        self._rowcount(_FAIL, (state, nxt, error[:2000], job_id, self.owner))
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
        row = self._one(_NEWER_THAN_CLAIMED,
                        (job.switch, job.port, *_KINDS, job.id, job.decided_at))
        return int(row[0]) if row else None

    # -- operator side ------------------------------------------------------------------
    def retry(self, job_id: int) -> bool:
        """Put a dead (or done/superseded) job back to pending with fresh attempts."""
        return self._rowcount(_RETRY, (self.clock(), job_id)) == 1

    def get(self, job_id: int) -> Job | None:
        row = self._one(_GET, (job_id,))
        return Job.from_row(row) if row else None

    def list_jobs(self, states: tuple[str, ...] | None = None, limit: int = 1000) -> list[Job]:
        if states:
            rows = self._all(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE state IN ({_marks(len(states))}) "
                "ORDER BY id DESC LIMIT ?", (*states, limit))
        else:
            rows = self._all(_LIST_ALL, (limit,))
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        return {s: int(n) for s, n in self._all(_COUNTS)}

    def next_due(self) -> float | None:
        """Earliest next_attempt_at among pending jobs (for the worker's sleep)."""
        row = self._one(_NEXT_DUE)
        return float(row[0]) if row and row[0] is not None else None

    def latencies(self, limit: int = 1000) -> list[float]:
        """decision -> applied seconds of the latest ``limit`` done jobs (for /metrics)."""
        return [float(r[0]) for r in self._all(_LATENCIES, (limit,))]


class JobQueue(SqlJobQueue):
    """The queue over one SQLite database file (or an open connection).

    Parameters as SqlJobQueue; synchronous: SQLite's PRAGMA for a file path ("FULL" to
    survive power loss, at the cost of an fsync per state change); busy_timeout: seconds a
    statement waits for another process's write lock before it fails. defer_enqueue is
    accepted for PgJobQueue's sake and changes nothing: an enqueue here is a commit to a
    local file.
    """

    # The worker loop's connection: a claim waits this long for a locked file, then fails
    # and the enforcer backs off (it runs on the event loop, which must not stall).
    worker_busy_timeout = 0.1

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
        busy_timeout: float = 10.0,
        defer_enqueue: bool = False,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"bad synchronous mode {synchronous!r}")
        super().__init__(max_attempts=max_attempts, base_delay=base_delay,
                         max_delay=max_delay, lease=lease, owner=owner, clock=clock)
        self.synchronous = synchronous
        #: the database file (None when given an open connection): wake-ups key on it
        self.path: Path | None = None
        if isinstance(db, sqlite3.Connection):
            self.conn = db
        else:
            self.path = Path(db)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode; we group statements in explicit transactions where needed.
            self.conn = sqlite3.connect(str(db), timeout=busy_timeout, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA busy_timeout={max(0, int(busy_timeout * 1000))}")
            # WAL + NORMAL: a committed job survives a process crash (the at-least-once
            # promise); only an OS crash or power cut may lose the last commits. FULL
            # would fsync every claim/complete and cost milliseconds per job.
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
        # One connection for every thread (the enforcer on the event loop, /metrics in a
        # worker thread): a lock keeps a statement out of another thread's transaction.
        self._lock = threading.RLock()
        self.ensure_schema(self.conn)

    @staticmethod
    def ensure_schema(conn: sqlite3.Connection) -> None:
        """Bring the file to the store's schema, which has the jobs table (idempotent)."""
        from nac.store.migrations import migrate_sqlite

        migrate_sqlite(conn)

    def close(self) -> None:
        self.conn.close()

    def for_worker(self) -> JobQueue:
        """A second connection to the file, same owner and settings, that waits at most
        ``worker_busy_timeout`` for the write lock (a producer's 10 s wait would stall the
        enforcer's event loop). Close it when done."""
        if self.path is None:
            return self
        return JobQueue(self.path, max_attempts=self.max_attempts, base_delay=self.base_delay,
                        max_delay=self.max_delay, lease=self.lease, owner=self.owner,
                        clock=self.clock, synchronous=self.synchronous,
                        busy_timeout=self.worker_busy_timeout)

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(args))

    @contextmanager
    def _tx(self) -> Iterator[Exec]:
        # IMMEDIATE takes the write lock up front: every enqueuer and claimer on the file
        # runs alone, so no port lock is needed.
        with self._lock:
            if not self.conn.in_transaction:
                self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._exec
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    @contextmanager
    def _auto(self) -> Iterator[Exec]:
        with self._lock:
            yield self._exec

    def _insert(self, x: Exec, sql: str, args: Sequence[Any]) -> int:
        cur = x(sql, args)
        return int(getattr(cur, "lastrowid", 0) or 0)



class OffLoopWorker:
    """The queue as the enforcer's event loop calls it, with every database call made by one
    thread of its own: a slow or restarting database never stalls the loop (nor the RADIUS
    answers sharing it). ``queue.for_worker()`` gives it where a call may block (PostgreSQL).

    - ``claim(n)`` returns jobs a background claim already took (at most ``n``), and starts
      the next one; when that one gets jobs it calls the queue's ``wakers`` (the enforcer's
      wake-up), so the loop claims again at once. A failed background claim is raised by
      the next ``claim`` (the enforcer logs it and backs off), once.
    - ``complete``/``fail``/``extend`` return at once; the thread records them in order,
      before any later claim (a finished job frees its port first), retrying a failing call
      for up to one lease (past it the claim is void and the job is applied again).
    - ``next_due`` answers from the last background claim.
    - ``close`` waits (a few seconds) for what is still to record, and hands jobs claimed
      ahead but never given out back to pending.
    """

    record_backoff = 0.5
    record_backoff_max = 10.0
    close_timeout = 5.0

    def __init__(self, queue: SqlJobQueue) -> None:
        self.queue = queue
        self.lease = queue.lease
        self.clock = queue.clock
        self.owner = queue.owner
        self._ops: deque[Callable[[], None]] = deque()
        self._cv = threading.Condition()
        self._ready: deque[Job] = deque()
        self._claiming = False
        self._again = False
        self._error: BaseException | None = None
        self._due: float | None = None
        self._stopping = False
        #: calls that failed in the background (tests, logs)
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="enforcer-queue", daemon=True)
        self._thread.start()

    # -- what the enforcer calls ------------------------------------------------------
    def claim(self, limit: int = 1) -> list[Job]:
        with self._cv:
            if self._error is not None:
                exc, self._error = self._error, None
                raise exc
            out = [self._ready.popleft() for _ in range(min(limit, len(self._ready)))]
            want = limit - len(out)
            # A claim asked for while one runs may be about jobs that one cannot see (it
            # began before they were committed): it wakes the enforcer again when done.
            self._again = self._claiming
            if want > 0 and not self._claiming and not self._stopping:
                self._claiming = True
                self._ops.append(lambda: self._claim(want))
                self._cv.notify()
        return out

    def next_due(self) -> float | None:
        return self._due

    def complete(self, job_id: int, result: str = "ok", applied_at: float | None = None) -> bool:
        applied = self.clock() if applied_at is None else applied_at
        self._submit(f"job {job_id}: recording it done",
                     lambda: self.queue.complete(job_id, result, applied))
        return True

    def fail(self, job_id: int, error: str, *, retryable: bool = True) -> str:
        self._submit(f"job {job_id}: recording its failure",
                     lambda: self.queue.fail(job_id, error, retryable=retryable))
        return "recording"

    def extend(self, job_id: int, seconds: float | None = None) -> bool:
        self._submit(f"job {job_id}: renewing its lease",
                     lambda: self.queue.extend(job_id, seconds), retry=False)
        return True

    def release_dead_local_claims(self) -> int:
        self._submit("releasing dead processes' claims", self.queue.release_dead_local_claims,
                     retry=False)
        return 0

    def close(self) -> None:
        with self._cv:
            self._stopping = True
            self._ops.append(self._release_ready)
            self._cv.notify()
        self._thread.join(self.close_timeout)
        if self._thread.is_alive():
            log.error("job queue: %d outcome(s) not recorded at stop; their jobs are applied "
                      "again when their leases expire", len(self._ops))

    # -- the thread -------------------------------------------------------------------
    def _submit(self, what: str, call: Callable[[], object], retry: bool = True) -> None:
        deadline = time.monotonic() + (self.lease if retry else 0.0)

        def op() -> None:
            delay = self.record_backoff
            while True:
                try:
                    call()
                    return
                except Exception as exc:  # noqa: BLE001 - any store error: retry, then log
                    self.errors += 1
                    if time.monotonic() + delay > deadline or self._stopping:
                        log.error("%s failed (%s: %s); giving up", what, type(exc).__name__,
                                  exc)
                        return
                    log.warning("%s failed (%s: %s); retrying in %.1f s", what,
                                type(exc).__name__, exc, delay)
                    time.sleep(delay)
                    delay = min(self.record_backoff_max, delay * 2)

        with self._cv:
            self._ops.append(op)
            self._cv.notify()

    def _claim(self, limit: int) -> None:
        got = 0
        while True:
            try:
                jobs = self.queue.claim(limit - got)
                due = self.queue.next_due()
            except Exception as exc:  # noqa: BLE001 - given to the enforcer by the next claim()
                self.errors += 1
                with self._cv:
                    self._error, self._claiming = exc, False
                self._wake()
                return
            got += len(jobs)
            with self._cv:
                self._ready.extend(jobs)
                # Asked for again meanwhile (a wake-up for jobs this claim may have begun
                # too early to see): claim once more now, rather than via the loop.
                again, self._again = self._again, False
                if again and got < limit and not self._stopping:
                    continue
                # Before the enforcer sleeps on it, a retry sooner than it was told wakes it.
                earlier = due is not None and (self._due is None or due < self._due)
                self._due, self._claiming = due, False
            if got or earlier:
                self._wake()
            return

    def _release_ready(self) -> None:
        with self._cv:
            ids = [j.id for j in self._ready]
            self._ready.clear()
        if ids:
            try:
                self.queue.release(ids)
            except Exception as exc:  # noqa: BLE001 - their leases expire instead
                log.warning("job queue: %d job(s) claimed ahead not handed back: %s",
                            len(ids), exc)

    def _wake(self) -> None:
        for wake in self.queue.wakers:
            try:
                wake()
            except Exception as exc:  # noqa: BLE001 - the poll still finds the jobs
                log.debug("enforcer wake-up failed: %s", exc)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._ops:
                    if self._stopping:
                        return
                    self._cv.wait()
                op = self._ops.popleft()
            op()
