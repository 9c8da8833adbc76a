"""The stored posture of a node is the last *whole* posture: a digest-only confirmation or a
decision without posture never replaces it, in either backend, within a batch or across."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nac.events import DecisionRecord
from nac.store import SqliteStore
from nac.store.postgres import PostgresStore
from nac.store.rows import put_node
from tests.pg import PgServer, pg_server, pg_store_url  # noqa: F401  (pytest fixtures)

MAC = "02:00:00:00:00:07"
WHOLE = {"os": {"id": "debian", "version": "12"}, "packages": [{"name": "openssl",
                                                              "version": "3.0.11-1~deb12u2"}]}
DIGEST_ONLY = {"certificate": {"token": "t", "digest": "d"}, "digest_only": True}


def _decision(at: float, posture: dict[str, Any] | None, segment: str = "normal") -> DecisionRecord:
    return DecisionRecord(at=at, mac=MAC, segment=segment, vlan=30, source="eap",
                          reasons=("ok",), posture=posture)


def test_put_node_keeps_the_batch_s_whole_posture() -> None:
    nodes: dict[str, tuple[object, ...]] = {}
    put_node(nodes, MAC, _decision(1.0, WHOLE))
    put_node(nodes, MAC, _decision(2.0, None, "quarantine"))
    row = nodes[MAC]
    assert row[3] == "quarantine"  # the latest decision's segment
    assert json.loads(str(row[10])) == WHOLE and row[11] == 1.0
    put_node(nodes, MAC, _decision(3.0, DIGEST_ONLY))
    row = nodes[MAC]
    assert json.loads(str(row[10])) == WHOLE and row[11] == 1.0  # when it arrived


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
    put_node(nodes, MAC, _decision(1.0, posture))
    assert nodes[MAC][10] is None
