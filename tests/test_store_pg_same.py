"""SqliteStore and PostgresStore fed the same random records end with the same rows."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nac.events import AccountingRecord, DecisionRecord
from nac.store import SqliteStore
from tests.pg import PgServer, pg_server  # noqa: F401  (pytest fixture)

MACS = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"]
maybe_text = st.none() | st.sampled_from(["alice", "bob", "", "x y"])
maybe_int = st.none() | st.integers(0, 2**32 - 1)

decisions = st.builds(
    DecisionRecord,
    at=st.floats(1, 1e6, allow_nan=False),
    mac=st.none() | st.sampled_from(MACS),
    segment=st.sampled_from(["quarantine", "isolated", "normal"]),
    vlan=st.integers(1, 4094),
    source=st.sampled_from(["eap", "mab", "reevaluate"]),
    reasons=st.lists(st.sampled_from(["ok", "av off", "patch"]), max_size=2).map(tuple),
    remediation=st.lists(st.sampled_from(["apt upgrade"]), max_size=1).map(tuple),
    identity=maybe_text,
    role=maybe_text,
    nas=st.none() | st.sampled_from(["sw1", "sw2"]),
    nas_port=st.none() | st.sampled_from(["1", "Gi1/0/2"]),
    posture=st.none() | st.fixed_dictionaries({"os": st.sampled_from(["debian", "win"])}),
)
accounting = st.builds(
    AccountingRecord,
    at=st.floats(1, 1e6, allow_nan=False),
    nas=st.sampled_from(["sw1", "sw2"]),
    status=st.sampled_from([1, 2, 3]),
    session_id=st.sampled_from(["s1", "s2", "s3"]),
    mac=st.none() | st.sampled_from(MACS),
    user_name=maybe_text,
    nas_port=maybe_int,
    framed_ip=st.none() | st.sampled_from(["10.0.0.1", "10.0.0.2"]),
    input_octets=maybe_int,
    output_octets=maybe_int,
    session_time=st.none() | st.integers(0, 10**6),
    terminate_cause=st.none() | st.integers(1, 20),
)
# A decision gets a batch of its own: both stores keep one node row per MAC per batch, and
# an accounting touch of a node created later in the same batch counts (earlier, it does
# not), so results would otherwise depend on where the writer threads cut batches.
# Accounting updates share batches freely: the PostgreSQL merge equals SQLite's replay.


def _distinct_times(items: list[Any], order: list[int]) -> list[Any]:
    # Equal timestamps leave "newest session" undefined in both backends: make them
    # distinct, in an arbitrary order (records arrive out of time order too).
    out = []
    for it, rank in zip(items, order, strict=True):
        if isinstance(it, DecisionRecord | AccountingRecord):
            it = dataclasses.replace(it, at=float(rank + 1))
        out.append(it)
    return out


steps = st.lists(st.one_of(decisions, accounting,
                           st.tuples(st.sampled_from(MACS), maybe_text)), max_size=40
                 ).flatmap(lambda items: st.permutations(list(range(len(items)))).map(
                     lambda order: _distinct_times(items, order)))


def apply(store: Any, items: list[Any]) -> None:
    for it in items:
        if isinstance(it, DecisionRecord):
            store.flush()  # alone in its batch: see the note on `steps`
            store.record_decision(it)
            store.flush()
        elif isinstance(it, AccountingRecord):
            store.record_accounting(it)
        else:
            store.flush()
            store.register_node(it[0], it[1], "test")
    store.flush()


def snapshot(store: Any) -> dict[str, Any]:
    nodes = store.list_nodes()
    for n in nodes:  # register_node stamps wall-clock times (the records' are small)
        for key in ("first_seen", "last_seen"):
            if n[key] > 1e6:
                n[key] = "wall clock"
    top, regs = store.registrations_since(0)
    out: dict[str, Any] = {"nodes": nodes, "registrations": (top, sorted(regs))}
    for mac in MACS:
        out[f"decisions {mac}"] = [{k: v for k, v in d.items() if k != "id"}
                                   for d in store.decisions_for(mac, limit=100)]
        out[f"sessions {mac}"] = [{k: v for k, v in s.items() if k != "id"}
                                  for s in store.sessions_for(mac, limit=100)]
        out[f"live {mac}"] = (store.live_session(mac) or {}).get("acct_session_id")
    out["posture"] = store.nodes_with_posture()
    out["by ip"] = [(store.session_by_ip(ip) or {}).get("acct_session_id")
                    for ip in ("10.0.0.1", "10.0.0.2")]
    out["count"] = store.count_decisions()
    return out


def test_same_rows_as_sqlite(pg_server: PgServer) -> None:  # noqa: F811
    import psycopg

    from nac.store.postgres import PostgresStore

    url = pg_server.create_database(migrate=True)
    pg = PostgresStore(url, flush_interval=0.001)

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(steps)
    def check(items: list[Any]) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE nodes, node_postures, node_changes, decisions, sessions "
                         "RESTART IDENTITY")
        with tempfile.TemporaryDirectory() as d:
            lite = SqliteStore(Path(d) / "nac.db", flush_interval=0.001)
            try:
                apply(lite, items)
                apply(pg, items)
                assert snapshot(pg) == snapshot(lite)
            finally:
                lite.close()

    try:
        check()
    finally:
        pg.close()
