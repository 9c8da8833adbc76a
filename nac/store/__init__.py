"""State: nodes, sessions, decisions (and, from other modules, jobs and feeds)."""

from __future__ import annotations

from pathlib import Path

from nac.store.base import AccountingRecord, DecisionRecord, Store
from nac.store.sqlite import SqliteStore

__all__ = ["AccountingRecord", "DecisionRecord", "Store", "SqliteStore", "open_store"]


def open_store(url: str | None, state_dir: Path) -> SqliteStore:
    """sqlite:///PATH (or None: STATE/nac.db). PostgreSQL arrives with the scale-out work."""
    if url is None:
        return SqliteStore(state_dir / "nac.db")
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url[len("sqlite:///") :]))
    if url.startswith(("postgresql://", "postgres://")):
        raise ValueError("the PostgreSQL store is not available in this version; use sqlite:///")
    raise ValueError(f"unknown store URL {url!r}: expected sqlite:///PATH or postgresql://...")
