"""The store interface: what the server and CLI need, whatever the database.

SQLite (nac/store/sqlite.py) is the embedded default; a PostgreSQL backend implements the
same methods. Rows come back as plain dicts.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from nac.events import AccountingRecord, DecisionRecord

__all__ = ["AccountingRecord", "DecisionRecord", "Store", "name_os_thread"]


def name_os_thread(name: str) -> None:
    """Give the calling thread its name in the OS too (top -H, /proc/PID/task/TID/comm):
    Python 3.11 names threads only for itself, and the store's threads are what one
    looks for when a worker's CPU per request is split by thread. Best effort (Linux)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


class Store(Protocol):
    url: str

    # Writes from the packet path: queued, never blocking.
    def record_decision(self, rec: DecisionRecord) -> None: ...
    def record_accounting(self, rec: AccountingRecord) -> int: ...
    def flush(self, timeout: float = 5.0) -> None: ...

    # Administrative writes and reads (CLI, background tasks).
    def register_node(self, mac: str, segment: str | None, reason: str) -> None: ...
    def registrations_since(self, seq: int) -> tuple[int, list[tuple[str, str | None]]]:
        """(top seq, [(mac, segment or None)]): seq 0 = every registered MAC (a scan);
        seq > 0 = changes after it; a negative seq = every change ever recorded."""
        ...
    def list_nodes(self) -> list[dict[str, Any]]: ...
    def get_node(self, mac: str) -> dict[str, Any] | None: ...
    def decisions_for(self, mac: str, limit: int = 20) -> list[dict[str, Any]]: ...
    def sessions_for(self, mac: str, limit: int = 20) -> list[dict[str, Any]]: ...
    def session_by_ip(self, address: str) -> dict[str, Any] | None: ...
    def nodes_with_posture(self) -> list[dict[str, Any]]: ...
    def posture_of(self, mac: str) -> tuple[str, float] | None: ...
    def live_session(self, mac: str) -> dict[str, Any] | None: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...
