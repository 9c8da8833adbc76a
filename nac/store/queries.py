"""The read queries both store backends answer alike, written once.

Placeholders are `?`; the PostgreSQL backend's `_query` turns them into `%s`. Newest-first
orders break ties by id so both backends list rows the same way.
"""

from __future__ import annotations

from typing import Any


class ReadQueries:
    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def list_nodes(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM nodes ORDER BY mac")

    def get_node(self, mac: str) -> dict[str, Any] | None:
        """The node with its last whole posture (posture, posture_at; None without one)."""
        rows = self._query(
            "SELECT n.*, p.posture, p.posture_at FROM nodes n "
            "LEFT JOIN node_postures p ON p.mac = n.mac WHERE n.mac = ?", (mac,))
        return rows[0] if rows else None

    def posture_of(self, mac: str) -> tuple[str, float] | None:
        """(posture JSON, posture_at) of a node's last whole posture."""
        rows = self._query("SELECT posture, posture_at FROM node_postures WHERE mac = ?",
                           (mac,))
        return (rows[0]["posture"], rows[0]["posture_at"]) if rows else None

    def count_decisions(self, mac: str | None = None) -> int:
        if mac is None:
            return int(self._query("SELECT COUNT(*) AS n FROM decisions")[0]["n"])
        return int(self._query("SELECT COUNT(*) AS n FROM decisions WHERE mac = ?",
                               (mac,))[0]["n"])

    def sessions_for(self, mac: str, limit: int = 20) -> list[dict[str, Any]]:
        return self._query(
            "SELECT * FROM sessions WHERE mac = ? ORDER BY updated_at DESC, id DESC LIMIT ?",
            (mac, limit))

    def session_by_ip(self, address: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT * FROM sessions WHERE framed_ip = ? ORDER BY updated_at DESC, id DESC "
            "LIMIT 1", (address,))
        return rows[0] if rows else None

    def nodes_with_posture(self) -> list[dict[str, Any]]:
        """Nodes whose last inspection left a posture: what a policy or feed change re-checks."""
        return self._query(
            "SELECT n.mac, n.segment, n.vlan, n.role, n.identity, n.last_nas, n.last_port, "
            "p.posture FROM nodes n JOIN node_postures p ON p.mac = n.mac ORDER BY n.mac")

    def live_session(self, mac: str) -> dict[str, Any] | None:
        """The node's newest accounting session that has not stopped."""
        rows = self._query(
            "SELECT * FROM sessions WHERE mac = ? AND stopped_at IS NULL "
            "ORDER BY updated_at DESC, id DESC LIMIT 1", (mac,))
        return rows[0] if rows else None
