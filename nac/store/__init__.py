"""State: nodes, sessions, decisions (and, from other modules, jobs and feeds)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nac.store.base import AccountingRecord, DecisionRecord, Store
from nac.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from nac.store.postgres import PostgresStore

__all__ = ["AccountingRecord", "DecisionRecord", "Store", "SqliteStore", "open_store"]


def open_store(url: str | None, state_dir: Path) -> SqliteStore | PostgresStore:
    """sqlite:///PATH (or None: STATE/nac.db), or postgresql://USER@HOST/DB.

    SQLite migrates on open; PostgreSQL raises SchemaError on an older schema (run
    `nac store migrate`). Returns a SqliteStore or a PostgresStore (the Store protocol).
    """
    if url is None:
        return SqliteStore(state_dir / "nac.db")
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url[len("sqlite:///") :]))
    if url.startswith(("postgresql://", "postgres://")):
        # Imported here: psycopg is needed only by sites that run PostgreSQL.
        from nac.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unknown store URL {url!r}: expected sqlite:///PATH or postgresql://...")
