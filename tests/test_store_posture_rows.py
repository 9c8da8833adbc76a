"""The stored posture of a node is the last *whole* posture: a digest-only confirmation or a
decision without posture never replaces it, in either backend, within a batch or across; and
it lives in node_postures, so the many decisions without one never rewrite it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nac.events import DecisionRecord
from nac.store import SqliteStore
from nac.store.postgres import PostgresStore
from nac.store.rows import put_node
from tests.pg import PgServer, pg_server, pg_store_url, pg_url  # noqa: F401  (fixtures)

MAC = "02:00:00:00:00:07"
WHOLE = {"os": {"id": "debian", "version": "12"}, "packages": [{"name": "openssl",
                                                              "version": "3.0.11-1~deb12u2"}]}
DIGEST_ONLY = {"certificate": {"token": "t", "digest": "d"}, "digest_only": True}


def _decision(at: float, posture: dict[str, Any] | None, segment: str = "normal") -> DecisionRecord:
    return DecisionRecord(at=at, mac=MAC, segment=segment, vlan=30, source="eap",
                          reasons=("ok",), posture=posture)


def test_put_node_keeps_the_batch_s_whole_posture() -> None:
    nodes: dict[str, tuple[object, ...]] = {}
    postures: dict[str, tuple[object, ...]] = {}
    put_node(nodes, postures, MAC, _decision(1.0, WHOLE))
    put_node(nodes, postures, MAC, _decision(2.0, None, "quarantine"))
    assert nodes[MAC][3] == "quarantine"  # the latest decision's segment
    assert postures[MAC][1] == 1.0 and json.loads(str(postures[MAC][2])) == WHOLE
    put_node(nodes, postures, MAC, _decision(3.0, DIGEST_ONLY))
    assert nodes[MAC][2] == 3.0  # last seen
    assert postures[MAC][1] == 1.0  # the whole posture and when it arrived


def _check_across_batches(store: Any) -> None:
    store.record_decision(_decision(10.0, WHOLE))
    store.flush()
    store.record_decision(_decision(20.0, DIGEST_ONLY))
    store.flush()
    node = store.get_node(MAC)
    assert node is not None and node["segment"] == "normal"
    stored = node["posture"]
    assert (json.loads(stored) if isinstance(stored, str) else stored) == WHOLE
    assert node["posture_at"] == 10.0 and node["last_seen"] == 20.0
    store.record_decision(_decision(30.0, None, "quarantine"))
    store.flush()
    [row] = store.nodes_with_posture()
    got = row["posture"]
    assert (json.loads(got) if isinstance(got, str) else got) == WHOLE
    assert row["segment"] == "quarantine"


def test_sqlite_keeps_the_whole_posture(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "nac.db")
    try:
        _check_across_batches(store)
    finally:
        store.close()


def test_postgres_keeps_the_whole_posture(pg_store_url: str) -> None:  # noqa: F811
    store = PostgresStore(pg_store_url)
    try:
        _check_across_batches(store)
    finally:
        store.close()


@pytest.mark.parametrize("posture", [None, DIGEST_ONLY])
def test_first_decision_without_whole_posture_stores_none(posture: Any) -> None:
    nodes: dict[str, tuple[object, ...]] = {}
    postures: dict[str, tuple[object, ...]] = {}
    put_node(nodes, postures, MAC, _decision(1.0, posture))
    assert MAC in nodes and postures == {}


def test_sqlite_migration_4_moves_postures_out_of_nodes(tmp_path: Path) -> None:
    """A store at schema 3 (posture inside nodes) keeps every node's posture and its date."""
    import sqlite3

    from nac.store.migrations import migrate_sqlite

    path = tmp_path / "nac.db"
    conn = sqlite3.connect(path)
    migrate_sqlite(conn, target=3)
    conn.execute("INSERT INTO nodes (mac, first_seen, last_seen, segment, posture, posture_at) "
                 "VALUES (?, 1, 5, 'normal', ?, 4)", (MAC, json.dumps(WHOLE)))
    conn.execute("INSERT INTO nodes (mac, first_seen, last_seen, segment) "
                 "VALUES ('02:00:00:00:00:08', 1, 2, 'quarantine')")
    conn.commit()
    assert migrate_sqlite(conn, target=4) == (3, 4)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(nodes)")]
    assert "posture" not in cols and "posture_at" not in cols
    conn.close()
    store = SqliteStore(path)
    try:
        node = store.get_node(MAC)
        assert node is not None and json.loads(node["posture"]) == WHOLE
        assert node["posture_at"] == 4.0
        other = store.get_node("02:00:00:00:00:08")
        assert other is not None and other["posture"] is None
        assert [r["mac"] for r in store.nodes_with_posture()] == [MAC]
    finally:
        store.close()


def test_postgres_migration_4_moves_postures_out_of_nodes(pg_url: str) -> None:  # noqa: F811
    import psycopg

    from nac.store.migrations import latest, migrate_postgres

    with psycopg.connect(pg_url) as conn:
        migrate_postgres(conn, target=3)
        conn.execute("INSERT INTO nodes (mac, first_seen, last_seen, segment, posture, "
                     "posture_at) VALUES (%s, 1, 5, 'normal', %s, 4)", (MAC, json.dumps(WHOLE)))
        conn.commit()
        assert migrate_postgres(conn) == (3, latest("postgresql"))
    store = PostgresStore(pg_url)
    try:
        node = store.get_node(MAC)
        assert node is not None and json.loads(node["posture"]) == WHOLE
        assert node["posture_at"] == 4.0
    finally:
        store.close()
