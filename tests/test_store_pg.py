"""The PostgreSQL store behaves like the SQLite one: same calls, same rows, same answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nac.events import AccountingRecord, DecisionRecord
from nac.store import SqliteStore, open_store
from nac.store.migrations import SchemaError, latest
from tests.pg import PgServer, pg_server, pg_url  # noqa: F401  (pytest fixtures)

MAC = "00:11:22:33:44:55"
OTHER = "66:77:88:99:aa:bb"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        s: Any = SqliteStore(tmp_path / "nac.db")
    else:
        from nac.store.postgres import PostgresStore

        s = PostgresStore(request.getfixturevalue("pg_url"), migrate=True)
    yield s
    s.close()


def decision(at: float, mac: str | None = MAC, segment: str = "normal", vlan: int = 30,
             **kw: Any) -> DecisionRecord:
    return DecisionRecord(at=at, mac=mac, segment=segment, vlan=vlan, source="eap",
                          reasons=("compliant",), remediation=(), identity="alice",
                          nas="sw1", nas_port="7", method="peap", role="staff", **kw)


def test_decisions_nodes_and_audit(store: Any) -> None:
    store.record_decision(decision(100.0, segment="quarantine", vlan=10,
                                   posture={"os": "debian"}))
    store.flush()  # a batch keeps only its last decision per MAC: COALESCE works across
    store.record_decision(DecisionRecord(
        at=101.0, mac=MAC, segment="isolated", vlan=20, source="eap",
        reasons=("patch missing", "av off"), remediation=("apt upgrade",)))
    store.record_decision(decision(102.0, mac=None))
    store.flush()

    node = store.get_node(MAC)
    assert node is not None
    assert (node["segment"], node["vlan"], node["reason"]) == (
        "isolated", 20, "patch missing; av off")
    # Fields the later decision left out keep their earlier values (COALESCE).
    assert (node["identity"], node["role"], json.loads(node["posture"])) == (
        "alice", "staff", {"os": "debian"})
    assert node["first_seen"] == 100.0 and node["posture_at"] == 100.0
    assert store.get_node(OTHER) is None
    assert [n["mac"] for n in store.list_nodes()] == [MAC]

    ds = store.decisions_for(MAC)
    assert [d["segment"] for d in ds] == ["isolated", "quarantine"]
    assert ds[0]["reasons"] == ["patch missing", "av off"]
    assert ds[0]["remediation"] == ["apt upgrade"]
    assert ds[1]["reasons"] == ["compliant"] and ds[1]["remediation"] == []
    assert isinstance(ds[0]["id"], int) and isinstance(ds[0]["at"], float)
    assert len(store.decisions_for(MAC, limit=1)) == 1
    assert store.count_decisions() == 3 and store.count_decisions(MAC) == 2

    posture = store.nodes_with_posture()
    assert [(p["mac"], p["segment"], json.loads(p["posture"])) for p in posture] == [
        (MAC, "isolated", {"os": "debian"})]
    assert store.healthy()


def test_accounting_sessions(store: Any) -> None:
    store.record_decision(decision(50.0))
    store.record_accounting(AccountingRecord(
        at=100.0, nas="sw1", status=1, session_id="s1", mac=MAC, user_name="alice",
        nas_port=4294967295, framed_ip="10.0.0.5"))
    store.record_accounting(AccountingRecord(
        at=160.0, nas="sw1", status=3, session_id="s1", input_octets=4_000_000_000,
        output_octets=5, session_time=60))
    store.record_accounting(AccountingRecord(
        at=90.0, nas="sw2", status=1, session_id="s9", mac=MAC, framed_ip="10.0.0.5"))
    store.flush()

    live = store.live_session(MAC)
    assert live is not None and live["acct_session_id"] == "s1"
    assert live["started_at"] == 100.0 and live["updated_at"] == 160.0
    assert live["nas_port"] == 4294967295 and live["input_octets"] == 4_000_000_000
    assert live["user_name"] == "alice" and live["session_time"] == 60
    assert store.session_by_ip("10.0.0.5")["acct_session_id"] == "s1"
    assert store.session_by_ip("10.9.9.9") is None
    assert [s["acct_session_id"] for s in store.sessions_for(MAC)] == ["s1", "s9"]
    assert store.get_node(MAC)["last_seen"] == 100.0  # accounting touches last_seen

    store.record_accounting(AccountingRecord(
        at=200.0, nas="sw1", status=2, session_id="s1", terminate_cause=1, session_time=100))
    store.record_accounting(AccountingRecord(
        at=210.0, nas="sw2", status=2, session_id="s9"))
    store.flush()
    assert store.live_session(MAC) is None
    s1 = [s for s in store.sessions_for(MAC) if s["acct_session_id"] == "s1"][0]
    assert (s1["stopped_at"], s1["terminate_cause"], s1["started_at"]) == (200.0, 1, 100.0)


def test_registrations(store: Any) -> None:
    assert store.registrations_since(0) == (0, [])
    store.register_node(MAC, "normal", "admin")
    store.register_node(OTHER, "isolated", "admin")
    seq, regs = store.registrations_since(0)
    assert seq == 2 and sorted(regs) == [(MAC, "normal"), (OTHER, "isolated")]
    assert store.registrations_since(seq) == (seq, [])
    store.register_node(MAC, None, "admin")
    seq2, regs2 = store.registrations_since(seq)
    assert seq2 == seq + 1 and regs2 == [(MAC, None)]
    assert store.get_node(OTHER)["registered_segment"] == "isolated"
    # A later decision does not undo the registration.
    store.record_decision(decision(1.0, mac=OTHER))
    store.flush()
    assert store.get_node(OTHER)["registered_segment"] == "isolated"
    assert store.registrations_since(0) == (seq2, [(OTHER, "isolated")])


def test_many_writes_in_batches(store: Any) -> None:
    for i in range(12_000):
        store.record_decision(decision(float(i), mac=f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"))
    store.flush(timeout=60)
    assert store.count_decisions() == 12_000
    assert len(store.list_nodes()) == 12_000
    assert store.last_write_error is None


def test_open_store_dispatch(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    from nac.store.postgres import PostgresStore

    with pytest.raises(SchemaError, match="nac store migrate"):
        open_store(pg_url, tmp_path)
    PostgresStore(pg_url, migrate=True).close()
    s = open_store(pg_url.replace("postgresql://", "postgres://"), tmp_path)
    assert isinstance(s, PostgresStore) and s.healthy()
    s.close()
    with pytest.raises(ValueError, match="unknown store URL"):
        open_store("mysql://x", tmp_path)


def test_postgres_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    from nac.store.postgres import PostgresStore

    with pytest.raises(ConnectionError, match="cannot reach the store"):
        PostgresStore("postgresql://nac:secret@127.0.0.1:1/nope", connect_timeout=1)


def test_schema_version_recorded(store: Any) -> None:
    import sqlite3

    if isinstance(store, SqliteStore):
        conn = sqlite3.connect(store.path)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (latest("sqlite"),)]
        conn.close()
    else:
        assert store._query("SELECT version FROM schema_version") == [
            {"version": latest("postgresql")}]


def test_registration_seen_by_other_server(pg_server: PgServer) -> None:  # noqa: F811
    """Two stores on one database: what one registers, the other's poll returns."""
    from nac.store.postgres import PostgresStore

    url = pg_server.create_database()
    a, b = PostgresStore(url, migrate=True), PostgresStore(url)
    try:
        seq_b, _ = b.registrations_since(0)
        a.register_node(MAC, "normal", "cli")
        seq_b2, regs = b.registrations_since(seq_b)
        assert regs == [(MAC, "normal")] and seq_b2 > seq_b
        b.record_decision(decision(5.0, mac=OTHER))
        b.flush()
        assert a.get_node(OTHER)["segment"] == "normal"
    finally:
        a.close()
        b.close()


def test_accounting_tickets_and_commit_callbacks(pg_url: str) -> None:  # noqa: F811
    """Accounting replies wait for their record's commit: tickets, `committed`, on_commit."""
    import threading

    from nac.store.postgres import PostgresStore

    s = PostgresStore(pg_url, migrate=True, flush_interval=5.0)  # long sleep: wake must work
    seen: list[int] = []
    done = threading.Event()

    def progress(committed: int) -> None:
        seen.append(committed)
        if committed >= 2:
            done.set()

    s.on_commit(progress)
    try:
        t1 = s.record_accounting(AccountingRecord(at=1.0, nas="sw1", status=1, session_id="a"))
        t2 = s.record_accounting(AccountingRecord(at=2.0, nas="sw1", status=1, session_id="b"))
        assert (t1, t2) == (1, 2)
        assert done.wait(3.0), "the writer slept on an accounting record"
        assert s.committed >= t2 and seen == sorted(seen)
        assert s.session_by_ip("x") is None and len(s.sessions_for("none")) == 0
    finally:
        s.close()


def test_unstorable_text_does_not_stop_the_writer(store: Any) -> None:
    """A NUL byte (valid in a RADIUS User-Name, refused by PostgreSQL text) in one record of a
    batch: the other records are written, the odd one is kept with the character replaced."""
    for i in range(50):
        ident = "evil\x00user" if i == 17 else f"user{i}"
        store.record_decision(DecisionRecord(
            at=float(i), mac=f"02:00:00:00:00:{i:02x}", segment="normal", vlan=30,
            source="mab", reasons=("r\x00" if i == 17 else "ok",), identity=ident))
    store.record_accounting(AccountingRecord(at=60.0, nas="sw1", status=1, session_id="x\x00",
                                             mac="02:00:00:00:00:01", user_name="a\x00b"))
    store.flush(timeout=30)
    assert store.count_decisions() == 50
    odd = store.decisions_for("02:00:00:00:00:11")[0]
    assert odd["identity"] in ("evil\x00user", "evil\ufffduser")
    assert odd["reasons"] in (["r\x00"], ["r\ufffd"])
    assert len(store.sessions_for("02:00:00:00:00:01")) == 1
    assert store.last_write_error is None and store.healthy()
    # Later writes flow as usual.
    store.record_decision(decision(99.0, mac=OTHER))
    store.flush()
    assert store.get_node(OTHER) is not None


def test_a_number_in_a_text_field_is_stored_as_its_text(store: Any) -> None:
    """Decisions go in by binary COPY, which takes only str for text columns: a record whose
    NAS-Port came as a number is stored with it as text (as the text format did), and the
    rest of its batch goes in with it."""
    for i in range(20):
        store.record_decision(DecisionRecord(
            at=float(i), mac=f"02:00:00:00:01:{i:02x}", segment="normal", vlan=30,
            source="mab", reasons=("ok",), nas="sw1",
            nas_port=7 if i == 5 else "Gi1/0/7"))  # type: ignore[arg-type]
    store.flush(timeout=30)
    assert store.count_decisions() == 20
    assert store.decisions_for("02:00:00:00:01:05")[0]["nas_port"] == "7"
    assert store.get_node("02:00:00:00:01:05")["last_port"] == "7"  # type: ignore[index]
    assert store.dropped == 0 and store.last_write_error is None
