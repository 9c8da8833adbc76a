"""Faults: nac serve SIGKILLed under load loses nothing it acknowledged."""

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

from tests.conftest import ROOT, SECRET, radclient, start_server

pytestmark = pytest.mark.peer


def test_sigkill_under_accounting_load_loses_no_acknowledged_record(tmp_path: Path) -> None:
    d = Dictionary(str(ROOT / "radius_dict" / "dictionary"))
    srv = start_server(tmp_path)
    acked: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.2)
        i = 0
        while not stop.is_set():
            i += 1
            sid = f"K-{worker}-{i}"
            p = AcctPacket(code=4, id=i % 256, secret=SECRET.encode(), dict=d)
            p["Acct-Status-Type"] = "Start"
            p["Acct-Session-Id"] = sid
            p["Calling-Station-Id"] = f"02:00:{worker:02x}:01:{(i >> 8) & 255:02x}:{i & 255:02x}"
            p["NAS-IP-Address"] = "127.0.0.1"
            try:
                sock.sendto(p.RequestPacket(), ("127.0.0.1", srv.acct_port))
                reply = sock.recv(4096)
            except OSError:
                continue
            if reply[0] == 5 and reply[1] == i % 256:
                acked.append(sid)
        sock.close()

    # Several senders keep records in flight when the kill lands.
    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 20, "the load generator got too few answers to prove anything"

    # Restarted on the same state: everything acknowledged is in the store.
    again = tmp_path / "again"
    again.mkdir()
    srv2 = start_server(again, "--state-dir", str(srv.state_dir))
    try:
        r = radclient(srv2.auth_port, "auth",
                      'User-Name = "020000000001", Calling-Station-Id = "02:00:00:00:00:01", '
                      "Service-Type = Call-Check, Message-Authenticator = 0x00")
        assert r.code == "Access-Accept"
    finally:
        srv2.stop()
    conn = sqlite3.connect(srv.state_dir / "nac.db")
    stored = {row[0] for row in conn.execute("SELECT acct_session_id FROM sessions")}
    missing = [s for s in acked if s not in stored]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
