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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from enforcers.queue import Exec, SqlJobQueue, format_style
from nac.store.migrations import SchemaError, latest, postgres_version

log = logging.getLogger("enforcers.queue")

JOBS_SCHEMA_VERSION = 3  # the migration that creates the table


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

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()

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
