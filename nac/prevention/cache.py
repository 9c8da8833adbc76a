"""The feed cache: tables in the shared store file (STATE/nac.db).

Plain SQL that also runs on PostgreSQL (TEXT/INTEGER, no SQLite-only syntax) so the lead's
store can move these tables with the rest. The epoch counts feed changes: quarantine
certificates carry it and nodes are re-evaluated when it moves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "nac.db"

TRUST_LEVELS = ("vendor", "community", "local")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS feed_sources (
        name TEXT PRIMARY KEY,
        url TEXT,
        path TEXT,
        trust TEXT NOT NULL,
        pubkey TEXT,
        cafile TEXT,
        etag TEXT,
        last_modified TEXT,
        last_sync TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS advisories (
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        modified TEXT NOT NULL,
        published TEXT,
        withdrawn TEXT,
        aliases TEXT NOT NULL,
        summary TEXT NOT NULL,
        severity TEXT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (source, id)
    )""",
    """CREATE TABLE IF NOT EXISTS affected (
        source TEXT NOT NULL,
        advisory_id TEXT NOT NULL,
        ecosystem TEXT NOT NULL,
        package TEXT NOT NULL,
        ranges TEXT NOT NULL,
        versions TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS affected_advisory ON affected (source, advisory_id)",
    """CREATE TABLE IF NOT EXISTS feed_state (
        id INTEGER PRIMARY KEY,
        epoch INTEGER NOT NULL
    )""",
)


@dataclass(frozen=True)
class FeedSource:
    name: str
    url: str | None
    path: str | None
    trust: str
    pubkey: str | None  # PEM text: kept in the store so the key travels with the config
    cafile: str | None  # extra CA bundle for an HTTPS source (e.g. a private feed server)
    etag: str | None
    last_modified: str | None
    last_sync: str | None


def db_path_for(state_dir: Path) -> Path:
    return state_dir / DB_NAME


def connect(db_path: Path) -> sqlite3.Connection:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # The store shares this file with other writers: wait for their locks rather than fail.
    conn = sqlite3.connect(db_path, timeout=30)
    ensure_schema(conn)
    return conn


def ensure_schema(conn: sqlite3.Connection) -> None:
    with conn:
        for stmt in SCHEMA:
            conn.execute(stmt)
        if conn.execute("SELECT epoch FROM feed_state WHERE id = 1").fetchone() is None:
            conn.execute("INSERT INTO feed_state (id, epoch) VALUES (1, 0)")


@contextmanager
def opened(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(db_path)
    try:
        yield conn
    finally:
        conn.close()


def get_epoch(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT epoch FROM feed_state WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def bump_epoch(conn: sqlite3.Connection) -> int:
    """Increment inside the caller's transaction, so the epoch moves with the data."""
    conn.execute("UPDATE feed_state SET epoch = epoch + 1 WHERE id = 1")
    return get_epoch(conn)


_SOURCE_COLS = "name, url, path, trust, pubkey, cafile, etag, last_modified, last_sync"


def add_source(conn: sqlite3.Connection, src: FeedSource) -> None:
    if src.trust not in TRUST_LEVELS:
        raise ValueError(f"trust must be one of {', '.join(TRUST_LEVELS)}")
    if (src.url is None) == (src.path is None) and src.trust != "local":
        raise ValueError("a feed source needs exactly one of url or path")
    with conn:
        conn.execute(
            f"INSERT INTO feed_sources ({_SOURCE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (src.name, src.url, src.path, src.trust, src.pubkey, src.cafile, None, None, None),
        )


def get_source(conn: sqlite3.Connection, name: str) -> FeedSource | None:
    row = conn.execute(
        f"SELECT {_SOURCE_COLS} FROM feed_sources WHERE name = ?", (name,)
    ).fetchone()
    return FeedSource(*row) if row else None


def list_sources(conn: sqlite3.Connection) -> list[FeedSource]:
    rows = conn.execute(f"SELECT {_SOURCE_COLS} FROM feed_sources ORDER BY name").fetchall()
    return [FeedSource(*r) for r in rows]


def advisory_counts(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """source -> (active advisories, withdrawn advisories)."""
    out: dict[str, tuple[int, int]] = {}
    rows = conn.execute(
        "SELECT source, SUM(CASE WHEN withdrawn IS NULL THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN withdrawn IS NULL THEN 0 ELSE 1 END) FROM advisories GROUP BY source"
    )
    for source, active, withdrawn in rows:
        out[source] = (int(active or 0), int(withdrawn or 0))
    return out
