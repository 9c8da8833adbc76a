"""Faults: nac serve SIGKILLed under load loses nothing it acknowledged (SQLite and
PostgreSQL stores); PostgreSQL restarted under the load of two servers: both answer again
within seconds and lose nothing they acknowledged."""

from __future__ import annotations

import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from pyrad.dictionary import Dictionary
from pyrad.packet import AcctPacket

from tests.conftest import ROOT, SECRET, NacServer, radclient, start_server
from tests.pg import PgServer, pg_server, start_pg, stop_pg  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.peer

DICT = Dictionary(str(ROOT / "radius_dict" / "dictionary"))


def accounting_load(port: int, worker: int, stop: threading.Event,
                    acked: list[tuple[str, float]]) -> None:
    """Accounting-Starts one after another; (session id, when) of each one answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    outstanding: dict[int, str] = {}
    i = 0
    while not stop.is_set():
        i += 1
        sid = f"K-{port}-{worker}-{i}"
        p = AcctPacket(code=4, id=i % 256, secret=SECRET.encode(), dict=DICT)
        p["Acct-Status-Type"] = "Start"
        p["Acct-Session-Id"] = sid
        p["Calling-Station-Id"] = f"02:00:{worker:02x}:01:{(i >> 8) & 255:02x}:{i & 255:02x}"
        p["NAS-IP-Address"] = "127.0.0.1"
        # Answers to earlier requests arrive late (held until their record committed): any
        # answer counts for the request it names, and reading goes on until this one's.
        outstanding[i % 256] = sid
        try:
            sock.sendto(p.RequestPacket(), ("127.0.0.1", port))
            while True:
                reply = sock.recv(4096)
                if reply[0] == 5 and reply[1] in outstanding:
                    acked.append((outstanding.pop(reply[1]), time.monotonic()))
                    if reply[1] == i % 256:
                        break
        except OSError:
            continue
    sock.close()


def pg_sessions(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT acct_session_id FROM sessions")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_under_accounting_load_loses_no_acknowledged_record(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    store: tuple[str, ...] = ()
    url = ""
    if backend == "postgresql":
        url = request.getfixturevalue("pg_server").create_database(migrate=True)
        store = ("--store", url)
    srv = start_server(tmp_path, *store)
    pairs: list[tuple[str, float]] = []
    stop = threading.Event()

    # Several senders keep records in flight when the kill lands.
    threads = [threading.Thread(target=accounting_load, args=(srv.acct_port, w, stop, pairs))
               for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    acked = [sid for sid, _ in pairs]
    assert len(acked) > 20, "the load generator got too few answers to prove anything"

    # Restarted on the same state: everything acknowledged is in the store.
    again = tmp_path / "again"
    again.mkdir()
    srv2 = start_server(again, "--state-dir", str(srv.state_dir), *store)
    try:
        r = radclient(srv2.auth_port, "auth",
                      'User-Name = "020000000001", Calling-Station-Id = "02:00:00:00:00:01", '
                      "Service-Type = Call-Check, Message-Authenticator = 0x00")
        assert r.code == "Access-Accept"
    finally:
        srv2.stop()
    if url:
        stored = pg_sessions(url)
    else:
        conn = sqlite3.connect(srv.state_dir / "nac.db")
        stored = {row[0] for row in conn.execute("SELECT acct_session_id FROM sessions")}
    missing = [s for s in acked if s not in stored]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"


def test_postgres_restart_under_load_of_two_servers(tmp_path: Path) -> None:
    """Two servers on one PostgreSQL under accounting load; the database restarts. Both
    answer again within seconds of its return, MAB never stops, and every record either
    acknowledged is in the database afterwards."""
    pg = start_pg()  # our own cluster: this test restarts it
    servers: list[NacServer] = []
    try:
        url = pg.create_database(migrate=True)
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(start_server(tmp_path / name, "--store", url, "--posture", "off"))
        stop = threading.Event()
        acked: dict[int, list[tuple[str, float]]] = {s.acct_port: [] for s in servers}
        threads = [threading.Thread(target=accounting_load,
                                    args=(s.acct_port, w, stop, acked[s.acct_port]))
                   for s in servers for w in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        down_at = time.monotonic()
        pg.stop("fast")
        time.sleep(1.0)
        # Without the database: MAB still answered (registrations are in memory).
        mab = ('User-Name = "020000000a01", Calling-Station-Id = "02:00:00:00:0a:01", '
               "Service-Type = Call-Check, Message-Authenticator = 0x00")
        assert [radclient(s.auth_port, "auth", mab).code for s in servers] == \
            ["Access-Accept"] * 2
        pg.start()
        back_at = time.monotonic()
        time.sleep(4.0)
        stop.set()
        for t in threads:
            t.join()
        recovered = {}
        for srv in servers:
            times = [at for _, at in acked[srv.acct_port]]
            assert sum(1 for at in times if at < down_at) > 10, "too little load before"
            after = [at for at in times if at > back_at]
            assert after, f"server on {srv.acct_port} never answered again:\n{srv.log()}"
            recovered[srv.acct_port] = min(after) - back_at
        print(f"answering accounting again after the database came back (s): {recovered}")
        assert max(recovered.values()) < 5.0, recovered
    finally:
        for srv in servers:
            srv.stop()
    try:
        for srv in servers:
            assert srv.proc.returncode == 0, srv.log()
        stored = pg_sessions(url)
        missing = [sid for pairs in acked.values() for sid, _ in pairs if sid not in stored]
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
        import psycopg

        with psycopg.connect(url) as conn:
            n = conn.execute("SELECT COUNT(*) FROM decisions WHERE mac = '02:00:00:00:0a:01'"
                             ).fetchone()
        assert n is not None and n[0] == 2  # the decisions taken while it was down landed
    finally:
        stop_pg(pg)
