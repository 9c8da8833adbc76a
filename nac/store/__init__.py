"""State: nodes, sessions, decisions (and, from other modules, jobs and feeds)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nac.store.base import AccountingRecord, DecisionRecord, Store
from nac.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from nac.store.postgres import PostgresStore

__all__ = ["AccountingRecord", "DecisionRecord", "Store", "SqliteStore", "open_job_queue",
           "open_store"]


def open_store(url: str | None, state_dir: Path,
               writer: str | None = None) -> SqliteStore | PostgresStore:
    """sqlite:///PATH (or None: STATE/nac.db), or postgresql://USER@HOST/DB.

    SQLite migrates on open; PostgreSQL raises SchemaError on an older schema (run
    `nac store migrate`). Returns a SqliteStore or a PostgresStore (the Store protocol).
    writer: a SQLite store's shared writer process (a pool's; see SqliteStore).
    """
    if url is None:
        return SqliteStore(state_dir / "nac.db", writer=writer)
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url[len("sqlite:///") :]), writer=writer)
    if url.startswith(("postgresql://", "postgres://")):
        # Imported here: psycopg is needed only by sites that run PostgreSQL.
        from nac.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unknown store URL {url!r}: expected sqlite:///PATH or postgresql://...")


def open_job_queue(url: str | None, state_dir: Path, **kwargs: Any) -> Any:
    """The enforcement job queue of the store at ``url`` (as open_store): a JobQueue on the
    SQLite file, or the PgJobQueue every server on a PostgreSQL store shares. ``kwargs``:
    the queue's (lease, max_attempts, ...). Close it when done."""
    from enforcers.queue import JobQueue

    if url is None:
        return JobQueue(state_dir / "nac.db", **kwargs)
    if url.startswith("sqlite:///"):
        return JobQueue(Path(url[len("sqlite:///") :]), **kwargs)
    if url.startswith(("postgresql://", "postgres://")):
        from nac.store.pg_jobs import PgJobQueue

        return PgJobQueue(url, **kwargs)
    raise ValueError(f"unknown store URL {url!r}: expected sqlite:///PATH or postgresql://...")
