"""Issue #8: a node row follows the decision with the latest decision time, whatever order
the commits come in (two writers of a pool, a shared writer's joined batches, two servers on
one PostgreSQL). An older decision committed later keeps its decisions row only."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from nac.events import AccountingRecord, DecisionRecord
from nac.store import SqliteStore
from nac.store.migrations import latest, migrate_postgres, migrate_sqlite
from nac.store.sqlite import _commit, _decision_fields, connect
from tests.conftest import nac_cmd
from tests.pg import PgServer, pg_server  # noqa: F401  (pytest fixture)

MAC = "02:00:00:00:08:01"
T = 1_700_000_000.0


def decision(at: float, segment: str, vlan: int, *, nas: str = "sw1",
             posture: dict[str, Any] | None = None) -> DecisionRecord:
    return DecisionRecord(at=at, mac=MAC, segment=segment, vlan=vlan, source="mab",
                          reasons=(f"because {segment}",), identity=f"id-{segment}",
                          nas=nas, nas_port=f"port-{segment}", posture=posture)


def segments(store: Any) -> list[str]:
    """The MAC's decisions' segments, oldest first."""
    return [d["segment"] for d in reversed(store.decisions_for(MAC, limit=100))]


def assert_newer_kept(store: Any) -> None:
    node = store.get_node(MAC)
    assert node is not None
    assert (node["segment"], node["vlan"], node["reason"], node["identity"], node["last_nas"],
            node["last_port"]) == ("normal", 10, "because normal", "id-normal", "sw2",
                                   "port-normal"), node
    assert node["decided_at"] == T + 1 and node["last_seen"] == T + 1, node
    assert node["first_seen"] == T + 1, node  # the row was made by the first commit
    assert sorted(segments(store)) == ["isolated", "normal"]  # both stay in the audit trail


def test_sqlite_two_writers_older_committed_last(tmp_path: Path) -> None:
    """Two stores on one file, each with a writer process of its own (as with
    NAC_STORE_WRITERS=each): the newer decision commits first, the older one after."""
    db = tmp_path / "nac.db"
    a = SqliteStore(db, flush_interval=0.001)
    b = SqliteStore(db, flush_interval=0.001)
    try:
        a.record_decision(decision(T + 1, "normal", 10, nas="sw2"))
        a.flush()
        b.record_decision(decision(T, "isolated", 20))
        b.flush()
        assert segments(a) == ["normal", "isolated"]  # in commit order
        assert_newer_kept(a)
        # In order, the next (newer) decision takes the row as before.
        b.record_decision(decision(T + 2, "quarantine", 30))
        b.flush()
        node = a.get_node(MAC)
        assert node is not None
        assert (node["segment"], node["decided_at"], node["last_seen"]) == \
            ("quarantine", T + 2, T + 2)
    finally:
        a.close()
        b.close()


def test_sqlite_joined_batch_takes_latest_decision(tmp_path: Path) -> None:
    """A shared writer commits batches that arrive together as one (their records chained
    in connection order): the MAC's latest decision makes the row, not its last in the
    batch; with postures too (the general path) the latest posture stays."""
    conn = connect(tmp_path / "nac.db")
    migrate_sqlite(conn)
    newer, older = decision(T + 1, "normal", 10, nas="sw2"), decision(T, "isolated", 20)
    _commit(conn, [_decision_fields(newer), _decision_fields(older)], [])
    row = conn.execute("SELECT segment, decided_at FROM nodes WHERE mac = ?", (MAC,)).fetchone()
    assert tuple(row) == ("normal", T + 1)
    newer_p = decision(T + 3, "normal", 10, posture={"os": "new"})
    older_p = decision(T + 2, "isolated", 20, posture={"os": "old"})
    _commit(conn, [_decision_fields(newer_p), _decision_fields(older_p)], [])
    row = conn.execute("SELECT segment, decided_at FROM nodes WHERE mac = ?", (MAC,)).fetchone()
    assert tuple(row) == ("normal", T + 3)
    posture = conn.execute("SELECT posture_at, posture FROM node_postures WHERE mac = ?",
                           (MAC,)).fetchone()
    assert posture[0] == T + 3 and '"new"' in posture[1], tuple(posture)
    # The older posture in a batch of its own, committed after: the newer stays.
    _commit(conn, [_decision_fields(decision(T + 2.5, "isolated", 20, posture={"os": "x"}))],
            [])
    posture = conn.execute("SELECT posture_at FROM node_postures WHERE mac = ?",
                           (MAC,)).fetchone()
    assert posture[0] == T + 3
    assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 5
    conn.close()


def accounting_then_decision(store: Any) -> None:
    """A decision, accounting newer than it, then a decision between the two: the
    accounting's last_seen does not block it (decided_at is the guard, not last_seen)."""
    store.record_decision(decision(T, "isolated", 20))
    store.flush()
    store.record_accounting(AccountingRecord(at=T + 10, nas="sw1", status=3,
                                             session_id="s1", mac=MAC))
    store.flush()
    node = store.get_node(MAC)
    assert (node["segment"], node["decided_at"], node["last_seen"]) == ("isolated", T, T + 10)
    store.record_decision(decision(T + 5, "normal", 10))
    store.flush()
    node = store.get_node(MAC)
    # last_seen stays the latest of decisions and accounting
    assert (node["segment"], node["decided_at"], node["last_seen"]) == ("normal", T + 5, T + 10)


def registration_kept(store: Any) -> None:
    """`nac nodes set` on a MAC never decided (decided_at NULL), then a decision: the
    decision takes the row; a registration after it leaves the decision's columns."""
    other = "02:00:00:00:08:02"
    store.register_node(other, "isolated", "test")
    node = store.get_node(other)
    assert node["decided_at"] is None and node["registered_segment"] == "isolated"
    store.record_decision(dataclass_for(other, T - 100, "normal"))
    store.flush()
    node = store.get_node(other)
    assert (node["segment"], node["decided_at"], node["registered_segment"]) == \
        ("normal", T - 100, "isolated")
    store.register_node(other, None, "test")
    node = store.get_node(other)
    assert (node["segment"], node["decided_at"], node["registered_segment"]) == \
        ("normal", T - 100, None)


def dataclass_for(mac: str, at: float, segment: str) -> DecisionRecord:
    return DecisionRecord(at=at, mac=mac, segment=segment, vlan=10, source="mab")


def test_sqlite_accounting_and_registrations(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "nac.db", flush_interval=0.001)
    try:
        accounting_then_decision(store)
        registration_kept(store)
    finally:
        store.close()


def nac(*args: str) -> str:
    r = subprocess.run([*nac_cmd(), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_sqlite_migration_on_old_rows(tmp_path: Path) -> None:
    """A file at the schema before decided_at, with a decided node and a registered one:
    `nac store migrate` adds the column (NULL), twice is a no-op; the old row's segment
    then loses to any decision, even one older than its last_seen."""
    db = tmp_path / "nac.db"
    conn = sqlite3.connect(db)
    migrate_sqlite(conn, latest("sqlite") - 1)
    conn.execute("INSERT INTO nodes (mac, first_seen, last_seen, segment, vlan, reason) "
                 "VALUES (?, ?, ?, 'isolated', 20, 'old')", (MAC, T, T + 50))
    conn.execute("INSERT INTO nodes (mac, first_seen, last_seen, registered_segment, reason) "
                 "VALUES ('02:00:00:00:08:02', ?, ?, 'normal', 'reg')", (T, T))
    conn.commit()
    conn.close()
    top = latest("sqlite")
    assert f"schema version {top - 1} -> {top}" in nac("store", "migrate", "--store",
                                                       f"sqlite:///{db}")
    assert f"schema version {top} (up to date)" in nac("store", "migrate", "--store",
                                                       f"sqlite:///{db}")
    store = SqliteStore(db, flush_interval=0.001)
    try:
        node = store.get_node(MAC)
        assert (node["segment"], node["decided_at"], node["last_seen"]) == \
            ("isolated", None, T + 50)
        assert store.get_node("02:00:00:00:08:02")["registered_segment"] == "normal"
        store.record_decision(decision(T + 1, "normal", 10))
        store.flush()
        node = store.get_node(MAC)
        assert (node["segment"], node["decided_at"], node["last_seen"]) == \
            ("normal", T + 1, T + 50)
    finally:
        store.close()


def test_postgres_two_servers_older_committed_last(pg_server: PgServer) -> None:  # noqa: F811
    """Two stores on one PostgreSQL database (two servers): the same as with SQLite."""
    from nac.store.postgres import PostgresStore

    url = pg_server.create_database(migrate=True)
    a = PostgresStore(url, flush_interval=0.001)
    b = PostgresStore(url, flush_interval=0.001)
    try:
        a.record_decision(decision(T + 1, "normal", 10, nas="sw2"))
        a.flush()
        b.record_decision(decision(T, "isolated", 20, posture={"os": "old"}))
        b.flush()
        assert segments(a) == ["normal", "isolated"]
        assert_newer_kept(a)
        # Within one batch the latest decision wins, whatever its place.
        b.record_decision(decision(T + 3, "quarantine", 30))
        b.record_decision(decision(T + 2, "isolated", 20))
        b.flush()
        node = a.get_node(MAC)
        assert (node["segment"], node["decided_at"]) == ("quarantine", T + 3)
        accounting_then_decision_after(a, T + 3)
        registration_kept(b)
    finally:
        a.close()
        b.close()


def accounting_then_decision_after(store: Any, since: float) -> None:
    store.record_accounting(AccountingRecord(at=since + 10, nas="sw1", status=3,
                                             session_id="s1", mac=MAC))
    store.flush()
    store.record_decision(decision(since + 5, "normal", 10))
    store.flush()
    node = store.get_node(MAC)
    assert (node["segment"], node["decided_at"], node["last_seen"]) == \
        ("normal", since + 5, since + 10)


def test_postgres_migration_on_old_rows(pg_server: PgServer) -> None:  # noqa: F811
    import psycopg

    from nac.store.postgres import PostgresStore

    url = pg_server.create_database()
    top = latest("postgresql")
    with psycopg.connect(url) as conn:
        migrate_postgres(conn, top - 1)
        conn.execute("INSERT INTO nodes (mac, first_seen, last_seen, segment, vlan, reason) "
                     "VALUES (%s, %s, %s, 'isolated', 20, 'old')", (MAC, T, T + 50))
    assert f"schema version {top - 1} -> {top}" in nac("store", "migrate", "--store", url)
    assert f"schema version {top} (up to date)" in nac("store", "migrate", "--store", url)
    store = PostgresStore(url, flush_interval=0.001)
    try:
        node = store.get_node(MAC)
        assert (node["segment"], node["decided_at"]) == ("isolated", None)
        store.record_decision(decision(T + 1, "normal", 10))
        store.flush()
        node = store.get_node(MAC)
        assert (node["segment"], node["decided_at"], node["last_seen"]) == \
            ("normal", T + 1, T + 50)
    finally:
        store.close()
