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
