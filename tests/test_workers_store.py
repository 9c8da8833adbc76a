"""`nac serve --workers 2` on SQLite: the pool's one store writer process.

Both workers send their records to the writer the supervisor runs; every decision is a row
whichever worker made it, and a writer killed mid-run is restarted, the workers resending
what it had not committed."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import NacServer, radclient, start_server

pytestmark = pytest.mark.peer


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def writers(srv: NacServer) -> list[int]:
    """The store writer processes in the server's process tree."""
    out, todo = [], [srv.proc.pid]
    while todo:
        pid = todo.pop()
        kids = _children(pid)
        todo += kids
        for k in kids:
            try:
                if b"writer_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                    out.append(k)
            except OSError:
                pass
    return out


def mab(srv: NacServer, i: int) -> None:
    mac = f"02:00:00:00:0d:{i:02x}"
    r = radclient(srv.auth_port, "auth",
                  f'User-Name = "{mac}", Calling-Station-Id = "{mac}", '
                  "Service-Type = Call-Check, Message-Authenticator = 0x00",
                  timeout=2, retries=3)
    assert r.code == "Access-Accept", r.raw


def stored(srv: NacServer) -> tuple[int, int]:
    conn = sqlite3.connect(srv.state_dir / "nac.db")
    try:
        return (conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM nodes").fetchone()[0])
    finally:
        conn.close()


def wait_for(what: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_two_workers_share_one_writer_and_every_decision_is_a_row(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(re.findall(r"\bready: ", srv.log())) == 2)
        assert len(writers(srv)) == 1, srv.log()
        for i in range(24):  # each radclient run is a new source port: both workers decide
            mab(srv, i)
        log = srv.log()
        assert re.search(r"\[w0\].*decision", log) and re.search(r"\[w1\].*decision", log)
        # committed within the batch interval, whichever worker decided
        wait_for(lambda: stored(srv) == (24, 24))
    finally:
        srv.stop()
    assert "all workers stopped" in srv.log()
    assert stored(srv) == (24, 24)


def test_a_killed_shared_writer_is_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(re.findall(r"\bready: ", srv.log())) == 2)
        (first,) = writers(srv)
        for i in range(10):
            mab(srv, i)
        wait_for(lambda: stored(srv)[0] == 10)
        os.kill(first, signal.SIGKILL)
        for i in range(10, 30):  # decided while the writer is dead or just back
            mab(srv, i)
        wait_for(lambda: len(writers(srv)) == 1 and writers(srv) != [first])
        assert srv.log().count("store writer (pid") == 1, srv.log()  # one death, said once
        wait_for(lambda: stored(srv) == (30, 30))
    finally:
        srv.stop()
    decisions, nodes = stored(srv)
    assert (decisions, nodes) == (30, 30)  # none lost, none twice


def test_a_server_s_own_writer_stopped_then_killed_loses_nothing(tmp_path: Path) -> None:
    """One server, its own writer: the loop hands records over without feeder or acks
    thread. A writer stopped (SIGSTOP) then killed is replaced without any further request
    (housekeeping notices), and every batch it had not committed is resent; a stopped
    writer holds an Accounting-Response back (it waits for its commit), not the Accepts."""
    srv = start_server(tmp_path)
    try:
        wait_for(lambda: "ready: " in srv.log())
        (first,) = writers(srv)
        for i in range(5):
            mab(srv, i)
        wait_for(lambda: stored(srv) == (5, 5))
        os.kill(first, signal.SIGSTOP)
        for i in range(5, 10):  # answered, their rows not committed
            mab(srv, i)
        time.sleep(0.3)
        assert stored(srv) == (5, 5)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(writers(srv)) == 1 and writers(srv) != [first])
        wait_for(lambda: stored(srv) == (10, 10))
        (second,) = writers(srv)
        os.kill(second, signal.SIGSTOP)
        try:
            acct = radclient(srv.acct_port, "acct",
                             'Acct-Status-Type = Start, Acct-Session-Id = "S-1", '
                             'Calling-Station-Id = "02:00:00:00:0d:01", '
                             "NAS-IP-Address = 127.0.0.1", timeout=1, retries=1)
            assert acct.code is None, acct.raw  # not committed: not acknowledged
        finally:
            os.kill(second, signal.SIGCONT)
        for i in range(10, 15):
            mab(srv, i)
        acct = radclient(srv.acct_port, "acct",
                         'Acct-Status-Type = Start, Acct-Session-Id = "S-2", '
                         'Calling-Station-Id = "02:00:00:00:0d:02", '
                         "NAS-IP-Address = 127.0.0.1", timeout=2, retries=2)
        assert acct.code == "Accounting-Response", acct.raw
    finally:
        srv.stop()
    assert stored(srv) == (15, 15)  # none lost, none twice
    conn = sqlite3.connect(srv.state_dir / "nac.db")
    try:
        sessions = {r[0] for r in conn.execute("SELECT acct_session_id FROM sessions")}
    finally:
        conn.close()
    assert sessions == {"S-1", "S-2"}  # the unanswered one was still recorded


def test_a_writer_each_and_every_decision_is_a_row(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """NAC_STORE_WRITERS=each: every worker its own writer; decisions made while another
    connection holds the write lock wait in them, and land once it is released."""
    monkeypatch.setenv("NAC_STORE_WRITERS", "each")
    srv = start_server(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(re.findall(r"\bready: ", srv.log())) == 2)
        assert len(writers(srv)) == 2, srv.log()
        for i in range(8):
            mab(srv, i)
        wait_for(lambda: stored(srv) == (8, 8))
        lock = sqlite3.connect(srv.state_dir / "nac.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            for i in range(8, 16):
                mab(srv, i)
            assert stored(srv) == (8, 8)
        finally:
            lock.rollback()
            lock.close()
        wait_for(lambda: stored(srv) == (16, 16))
    finally:
        srv.stop()
    assert stored(srv) == (16, 16)
