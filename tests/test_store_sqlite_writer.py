"""The SQLite writer: a record the database refuses is set aside; the rest still land."""

from __future__ import annotations

import time
from pathlib import Path

from nac.events import DecisionRecord
from nac.store.sqlite import SqliteStore


def test_refused_record_does_not_stall_the_batch(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "n.db")
    for i, vlan in enumerate((10, object(), 10)):
        st.record_decision(DecisionRecord(at=time.time(), mac=f"02:00:00:00:00:0{i}",
                                          segment="quarantine", vlan=vlan,  # type: ignore[arg-type]
                                          source="mab", reasons=("r",)))
    st.flush()
    assert st.dropped == 1
    assert [n["mac"] for n in st.list_nodes()] == ["02:00:00:00:00:00", "02:00:00:00:00:02"]
    st.record_decision(DecisionRecord(at=time.time(), mac="02:00:00:00:00:09",
                                      segment="normal", vlan=30, source="mab"))
    st.flush()
    assert st.count_decisions() == 3  # the writer is still alive
    st.close()


def test_plain_decisions_give_the_rows_of_rows_py() -> None:
    """The writer's shortcut for decisions without posture writes exactly the rows that
    nac/store/rows.py defines for both backends (and is in use: it still agrees)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from nac.store import sqlite as s
    from nac.store.rows import decision_row, node_row

    assert s._PLAIN_ROWS_OK
    text = st.none() | st.text(max_size=8)
    records = st.builds(
        DecisionRecord, at=st.floats(0, 2e9), mac=st.text(min_size=1, max_size=17),
        segment=st.text(max_size=10), vlan=st.integers(0, 4094), source=st.text(max_size=8),
        reasons=st.lists(st.text(max_size=20), max_size=3).map(tuple),
        remediation=st.lists(st.text(max_size=20), max_size=2).map(tuple),
        identity=text, nas=text, nas_port=text, method=text, role=text, nas_port_id=text,
        nas_port_number=st.none() | st.integers(0, 2**32 - 1))

    @given(records)
    @settings(max_examples=200, deadline=None)
    def check(rec: DecisionRecord) -> None:
        assert s._plain_rows(s._decision_fields(rec)) == (decision_row(rec), node_row(rec))

    check()


def test_a_batch_resent_to_a_new_writer_is_not_committed_twice(tmp_path: Path) -> None:
    """A writer process that committed a batch and died before saying so: the batch comes
    again to its successor, which acknowledges it without a second copy of its rows."""
    import json
    import pickle
    import subprocess

    from nac.store import sqlite as s

    path = tmp_path / "n.db"
    SqliteStore(path).close()  # the schema

    def frame(stream: int, end: int, first: int, count: int) -> bytes:
        recs = [s._decision_fields(DecisionRecord(
            at=1.0 + i, mac=f"02:00:00:00:0c:{i:02x}", segment="quarantine", vlan=10,
            source="mab")) for i in range(first, first + count)]
        body = (stream.to_bytes(8, "big") + end.to_bytes(8, "big")
                + pickle.dumps((recs, []), protocol=pickle.HIGHEST_PROTOCOL))
        return s._FRAME.pack(len(body)) + body

    def writer(*frames: bytes) -> list[dict[str, object]]:
        out = subprocess.run(s._writer_command(path), input=b"".join(frames),
                             capture_output=True, env=s._writer_env(), timeout=60, check=True)
        return [json.loads(line) for line in out.stdout.splitlines()]

    def rows() -> int:
        st = SqliteStore(path)
        try:
            return st.count_decisions()
        finally:
            st.close()

    first = frame(7, 3, 0, 3)
    assert writer(first) == [{"committed": 3, "refused": []}]
    assert rows() == 3
    # its successor gets the same batch again, then the next one; another stream's batch
    # with the same count is its own
    reports = writer(first, frame(7, 5, 3, 2), frame(8, 3, 10, 3))
    assert [r["committed"] for r in reports] == [3, 5, 3]
    assert rows() == 8
