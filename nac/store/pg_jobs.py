"""The durable enforcement job queue on PostgreSQL, shared by several servers.

The semantics and every statement are enforcers.queue.SqlJobQueue's (read its docstring),
the table is migration 3 (nac/store/migrations.py, ``jobs_table``). What is PostgreSQL's
own is how concurrent servers are kept apart:

- ``claim`` selects due jobs ``FOR UPDATE SKIP LOCKED``: a job another server is claiming
  right now is skipped rather than waited for, and each job goes to exactly one server.
- "one claimed job per switch+port" spans servers: the claimer takes a transaction advisory
  lock on the port and re-checks for a claimed job on it before claiming.
- ``enqueue`` takes the same port lock, so "latest decision wins" holds when two servers
  queue for one port at once.
- a server that dies holding jobs stops renewing their leases; ``requeue_expired`` (run
  before a claim, at most once a second per claimer, by any server) hands them back.
- a transaction PostgreSQL aborts on a deadlock or serialisation conflict runs again.

Off the event loop (a database that is slow or restarting must not hold up RADIUS answers):

- ``for_worker()`` gives the enforcer an ``OffLoopWorker``: claims, outcomes and lease
  renewals run on a thread of its own.
- ``defer_enqueue=True`` (the server) makes ``enqueue`` return at once: the job gets an id
  from a reserve taken ahead from the table's sequence and goes to an outbox that a writer
  thread commits, every job queued meanwhile in one transaction with one NOTIFY. The loss
  window is the decision rows': a job whose enqueue returned a few milliseconds before a
  SIGKILL of the server may not be committed. While the database is away the outbox keeps
  the jobs (up to ``OUTBOX_MAX``) and the writer retries; ``flush()`` waits for it, and
  ``close()`` flushes. Without the flag (the CLI) ``enqueue`` commits before it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from enforcers.queue import Exec, NewJob, OffLoopWorker, SqlJobQueue, format_style
from nac.store.migrations import SchemaError, latest, postgres_version

log = logging.getLogger("enforcers.queue")

JOBS_SCHEMA_VERSION = 3  # the migration that creates the table
# Job ids a deferring queue holds ready: enough for a long outage's pushes from one server.
ID_RESERVE = 1024
OUTBOX_MAX = 100_000  # jobs a deferring queue keeps while the database is away, at most
# What a row's data earns (a NUL in a text column, ...); anything else is retried.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)
_TAKE_IDS = ("SELECT nextval(pg_get_serial_sequence('enforcement_jobs', 'id')) "
             "FROM generate_series(1, %s)")


def _port_key(switch: str, port: str) -> str:
    return f"nac-port\x1f{switch}\x1f{port}"


def _executor(conn: psycopg.Connection[Any]) -> Exec:
    # Tuple rows whatever the pool's row factory (a pool shared with the store has dicts).
    cur = conn.cursor(row_factory=tuple_row)

    def run(sql: str, args: Sequence[Any] = ()) -> Any:
        return cur.execute(format_style(sql), tuple(args))

    return run


class PgJobQueue(SqlJobQueue):
    """The queue in a PostgreSQL database (URL, or a pool shared with other users).

    Parameters as JobQueue: base_delay/max_delay (backoff), max_attempts (before dead
    letter), lease (seconds a claim stays valid), owner, clock (injectable for tests).
    """

    claim_lock_clause = " FOR UPDATE OF j SKIP LOCKED"
    conflicts = (psycopg.errors.TransactionRollback,)

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
        connect_timeout: float = 5.0,
        defer_enqueue: bool = False,
    ) -> None:
        super().__init__(max_attempts=max_attempts, base_delay=base_delay,
                         max_delay=max_delay, lease=lease, owner=owner, clock=clock)
        if isinstance(db, ConnectionPool):
            self.pool, self._own_pool = db, False
        else:
            self.pool = ConnectionPool(
                db, min_size=1, max_size=pool_size, open=True, name="nac-jobs",
                kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
                # A pooled connection may be dead after a database restart: test it on
                # checkout; and wait no longer than a store read would.
                check=ConnectionPool.check_connection, timeout=connect_timeout)
            self._own_pool = True
        with self.pool.connection() as conn:
            have = postgres_version(conn)
        if have < JOBS_SCHEMA_VERSION:
            self.close()
            raise SchemaError(f"the PostgreSQL store has schema version {have}; the job queue "
                              f"needs {latest('postgresql')}: run `nac store migrate`")
        self.defer_enqueue = defer_enqueue
        self._ids: deque[int] = deque()
        self._outbox: deque[tuple[int | None, NewJob]] = deque()
        self._outbox_cv = threading.Condition()
        self._in_flight = 0  # jobs the writer took from the outbox and has not committed
        self._closing = False
        self._writer: threading.Thread | None = None
        #: commits of deferred jobs that failed and were retried (tests, logs)
        self.write_errors = 0
        if defer_enqueue:
            self._take_ids()
            self._writer = threading.Thread(target=self._write_loop, name="jobs-writer",
                                            daemon=True)
            self._writer.start()

    def close(self) -> None:
        if getattr(self, "_writer", None) is not None:  # (None: closed by __init__'s check)
            try:
                self.flush()
            except TimeoutError:
                log.error("job queue: %d queued job(s) not committed at close",
                          len(self._outbox) + self._in_flight)
            with self._outbox_cv:
                self._closing = True
                self._outbox_cv.notify_all()
            self._writer.join(5.0)  # type: ignore[union-attr]
            self._writer = None
        if self._own_pool:
            self.pool.close()

    def for_worker(self) -> OffLoopWorker:  # type: ignore[override]
        return OffLoopWorker(self)

    # -- deferred enqueue -----------------------------------------------------------------
    def enqueue(self, kind: str, switch: str, port: str = "", *, vlan: int | None = None,
                mac: str | None = None, session_id: str | None = None,
                payload: dict[str, Any] | None = None, decided_at: float | None = None,
                max_attempts: int | None = None) -> int:
        """As SqlJobQueue.enqueue; with ``defer_enqueue`` it returns before the commit (see
        the module docstring), and 0 when the id reserve ran out during an outage (the job
        is queued all the same and gets its id at commit)."""
        if not self.defer_enqueue:
            return super().enqueue(kind, switch, port, vlan=vlan, mac=mac,
                                   session_id=session_id, payload=payload,
                                   decided_at=decided_at, max_attempts=max_attempts)
        job = self.new_job(kind, switch, port, vlan=vlan, mac=mac, session_id=session_id,
                           payload=payload, decided_at=decided_at, max_attempts=max_attempts)
        with self._outbox_cv:
            if len(self._outbox) >= OUTBOX_MAX:
                raise ConnectionError(f"job queue: {OUTBOX_MAX} jobs wait for the database "
                                      "already")
            try:
                job_id: int | None = self._ids.popleft()
            except IndexError:
                job_id = None
            self._outbox.append((job_id, job))
            self._outbox_cv.notify()
        return job_id or 0

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every job enqueued so far is committed (deferring queue)."""
        deadline = time.monotonic() + timeout
        with self._outbox_cv:
            while self._outbox or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0 or self._writer is None:
                    raise TimeoutError("queued jobs still not committed")
                self._outbox_cv.wait(min(left, 0.05))

    def _take_ids(self) -> None:
        with self.pool.connection() as conn:
            rows = _executor(conn)(_TAKE_IDS, (ID_RESERVE,)).fetchall()
        with self._outbox_cv:
            self._ids.extend(int(r[0]) for r in rows)

    def _write_loop(self) -> None:
        delay = 0.1
        while True:
            with self._outbox_cv:
                while not self._outbox and not self._closing:
                    self._outbox_cv.wait()
                if not self._outbox:
                    return
                batch = list(self._outbox)
                self._outbox.clear()
                self._in_flight = len(batch)
            try:
                self._commit_jobs(batch)
            except Exception as exc:  # noqa: BLE001 - the database is away: keep, retry
                self.write_errors += 1
                with self._outbox_cv:
                    self._outbox.extendleft(reversed(batch))
                    self._in_flight = 0
                    closing = self._closing
                log.warning("job queue: %d job(s) not committed yet (%s: %s); retrying in "
                            "%.1f s", len(batch), type(exc).__name__, exc, delay)
                if closing and delay >= 2.0:
                    log.error("job queue: closing with %d job(s) not committed",
                              len(self._outbox))
                    return
                time.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            delay = 0.1
            with self._outbox_cv:
                self._in_flight = 0
                self._outbox_cv.notify_all()
            self._enqueued()
            if len(self._ids) < ID_RESERVE // 2:
                try:
                    self._take_ids()
                except Exception as exc:  # noqa: BLE001 - jobs queue without ids meanwhile
                    log.warning("job queue: no job ids taken ahead: %s", exc)

    def _commit_jobs(self, batch: list[tuple[int | None, NewJob]]) -> None:
        """One transaction for the batch; a job the database refuses (its data, not the
        connection) is found by committing one at a time, logged and dropped."""
        try:
            self._transact(lambda x: self._put_all(x, batch))
            return
        except _REFUSED as exc:  # the data's fault, not the connection's: sort it out below
            if len(batch) == 1:
                log.error("job queue: job %s for %s %s dropped, the database refuses it: %s",
                          batch[0][0], batch[0][1].switch, batch[0][1].port, exc)
                return
        for one in batch:
            self._commit_jobs([one])

    def database_back(self) -> None:
        """After a database restart (the wake-up listener reconnected): drop the pooled
        connections it closed now. Left to the checkout check, a dead one costs the next
        claim psycopg_pool's back-off after a failed check (about a second)."""
        try:
            self.pool.check()
        except Exception as exc:  # noqa: BLE001 - the checkout check still guards every use
            log.debug("job queue: pool check after reconnect: %s", exc)

    @contextmanager
    def _tx(self) -> Iterator[Exec]:
        with self.pool.connection() as conn, conn.transaction():
            yield _executor(conn)

    @contextmanager
    def _auto(self) -> Iterator[Exec]:
        with self.pool.connection() as conn:
            yield _executor(conn)

    def _insert(self, x: Exec, sql: str, args: Sequence[Any]) -> int:
        row = x(sql + " RETURNING id", args).fetchone()
        assert row is not None
        return int(row[0])

    def _lock_port(self, x: Exec, switch: str, port: str, *, wait: bool) -> bool:
        if wait:
            x("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (_port_key(switch, port),))
            return True
        got = x("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0))",
                (_port_key(switch, port),)).fetchone()
        return bool(got and got[0])
