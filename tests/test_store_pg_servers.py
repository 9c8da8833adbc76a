"""Two real `nac serve` processes on one PostgreSQL store, driven with radclient."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from nac.store.migrations import migrate_postgres
from tests.conftest import nac_cmd, radclient, start_server
from tests.pg import PgServer, pg_server  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.peer

MAC = "02:00:00:00:5e:01"


def mab(mac: str, nas_port: int) -> str:
    return (f'User-Name = "{mac.replace(":", "")}", User-Password = "{mac.replace(":", "")}", '
            f'Calling-Station-Id = "{mac.replace(":", "-").upper()}", '
            f'Service-Type = Call-Check, NAS-Port = {nas_port}, Message-Authenticator = 0x00')


SENT: dict[int, int] = {}  # auth port -> Access-Requests answered


def vlan_of(port: int, mac: str) -> str | None:
    """MAB through the server on `port`; its NAS-Port marks which server decided."""
    r = radclient(port, "auth", mab(mac, port))
    assert r.code == "Access-Accept", r.raw
    SENT[port] = SENT.get(port, 0) + 1
    return r.attrs.get("Tunnel-Private-Group-Id:1", [None])[0]


def test_two_servers_share_registrations_and_audit(pg_server: PgServer,  # noqa: F811
                                                   tmp_path: Path) -> None:
    import psycopg

    url = pg_server.create_database()
    with psycopg.connect(url) as conn:
        migrate_postgres(conn)
    servers = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(start_server(tmp_path / name, "--store", url, "--workers", "1"))
        a, b = servers
        assert "store postgresql://" in a.log()

        assert vlan_of(a.auth_port, MAC) == "10"  # unknown: quarantine
        assert vlan_of(b.auth_port, MAC) == "10"

        # Registered through the CLI against the shared store (not via either server).
        t0 = time.monotonic()
        r = subprocess.run([*nac_cmd(), "nodes", "set", MAC, "normal", "--store", url,
                            "--state-dir", str(a.state_dir)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()  # committed: measure from here, not from the CLI's start
        seen: dict[str, float] = {}
        while len(seen) < 2 and time.monotonic() - t0 < 10:
            for srv, name in ((a, "a"), (b, "b")):
                if name not in seen and vlan_of(srv.auth_port, MAC) == "30":
                    seen[name] = time.monotonic() - t0
            time.sleep(0.05)
        assert set(seen) == {"a", "b"}, f"registration not honoured: {seen}"
        print(f"registration honoured after (s from commit): {seen}")
        # Servers poll every 0.5 s; the margin is for radclient and a loaded CI machine.
        assert max(seen.values()) < 2.0, seen

        # Decisions from both servers land in the one audit trail.
        sent_after = {"a": 5, "b": 7}
        for srv, name in ((a, "a"), (b, "b")):
            for _ in range(sent_after[name]):
                assert vlan_of(srv.auth_port, MAC) == "30"
        with psycopg.connect(url) as conn:
            before = conn.execute("SELECT COUNT(*) FROM decisions WHERE mac = %s",
                                  (MAC,)).fetchone()[0]
        deadline = time.monotonic() + 10
        show: dict = {}
        while time.monotonic() < deadline:
            out = subprocess.run([*nac_cmd(), "nodes", "show", MAC, "--json", "--store", url,
                                  "--state-dir", str(b.state_dir)],
                                 capture_output=True, text=True, timeout=60)
            show = json.loads(out.stdout)
            if [d["segment"] for d in show["decisions"][:12]] == ["normal"] * 12:
                break
            time.sleep(0.2)
        assert [d["segment"] for d in show["decisions"][:12]] == ["normal"] * 12, show
        assert show["node"]["registered_segment"] == "normal"
        assert before >= 2 + 12
    finally:
        for srv in servers:
            srv.stop()
    for srv in servers:
        assert srv.proc.returncode == 0, srv.log()
    # Every decision of both servers is in the trail after their clean stop, once.
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT nas_port, COUNT(*) FROM decisions WHERE mac = %s "
                            "GROUP BY nas_port", (MAC,)).fetchall()
    assert {int(p): n for p, n in rows} == {s.auth_port: SENT[s.auth_port] for s in servers}
