"""One site policy for several `nac serve` processes on one PostgreSQL store (issue #8).

`nac policy apply --store postgresql://...` publishes a version in the database; every server
on it installs it (a real radclient MAB answer's VLAN changes on the server the CLI never
touched), a server started later takes it at start, `--wait` names a server that does not
follow, and a malformed policy publishes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from nac.posture.policy import sample_policy_text
from nac.store.migrations import latest
from tests.conftest import NacServer, nac_cmd, radclient, start_server
from tests.pg import PgServer, pg_server  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.peer

MAC = "02:00:00:00:5e:08"


def nac(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*nac_cmd(), *args], capture_output=True, text=True, check=check,
                          timeout=120)


def mab_vlan(srv: NacServer) -> str | None:
    """An unknown MAC by MAB: the policy's quarantine segment's VLAN."""
    m = MAC.replace(":", "")
    r = radclient(srv.auth_port, "auth",
                  f'User-Name = "{m}", User-Password = "{m}", '
                  f'Calling-Station-Id = "{MAC.replace(":", "-").upper()}", '
                  f"Service-Type = Call-Check, Message-Authenticator = 0x00")
    assert r.code == "Access-Accept", r.raw
    return r.attrs.get("Tunnel-Private-Group-Id:1", [None])[0]


def policy_with_vlan(path: Path, vlan: int, name: str) -> Path:
    text = sample_policy_text().replace('name = "sample"', f'name = "{name}"')
    text = text.replace("level = 10\nvlan = 10", f"level = 10\nvlan = {vlan}")
    assert f"vlan = {vlan}" in text
    path.write_text(text)
    return path


def site_rows(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return [(int(v), n) for v, n in conn.execute(
            "SELECT version, name FROM site_policy ORDER BY version")]


def wait_for(pred: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_migrate_twice_and_malformed_policy_publishes_nothing(
        pg_server: PgServer, tmp_path: Path) -> None:  # noqa: F811
    url = pg_server.create_database()
    first = nac("store", "migrate", "--store", url, check=True)
    assert first.stdout.strip().endswith(f"schema version 0 -> {latest('postgresql')}")
    again = nac("store", "migrate", "--store", url, check=True)  # idempotent: nothing to do
    top = latest("postgresql")
    assert again.stdout.strip().endswith(f"schema version {top} (up to date)"), again.stdout
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(top,)]
    assert site_rows(url) == []

    # A policy with an unknown segment in a role: refused, the key named, nothing published.
    bad = tmp_path / "bad.toml"
    bad.write_text(sample_policy_text().replace('guest = "quarantine"', 'guest = "lobby"'))
    r = nac("policy", "apply", str(bad), "--store", url, "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 1
    assert "roles.guest" in r.stderr and "lobby" in r.stderr, r.stderr
    assert site_rows(url) == []
    assert not (tmp_path / "s" / "policy.toml").exists()

    # Two good ones: two versions, the history kept, `show` prints the newest.
    for n, vlan in ((1, 110), (2, 120)):
        good = policy_with_vlan(tmp_path / f"v{n}.toml", vlan, f"site-v{n}")
        r = nac("policy", "apply", str(good), "--store", url, "--state-dir", str(tmp_path / "s"),
                "--wait", "1")
        assert r.returncode == 0, r.stderr
        assert f"published as site policy version {n} ('site-v{n}'" in r.stdout, r.stdout
        assert "no live server on this store yet" in r.stdout
    assert site_rows(url) == [(1, "site-v1"), (2, "site-v2")]
    shown = nac("policy", "show", "--store", url, "--state-dir", str(tmp_path / "t"), check=True)
    assert shown.stdout == (tmp_path / "v2.toml").read_text()
    status = json.loads(nac("policy", "status", "--store", url, "--json", check=True).stdout)
    assert [v["version"] for v in status["versions"]] == [2, 1]
    assert status["servers"] == []

    # A store not migrated to the site policy's schema: refused, not half published.
    old = pg_server.create_database()
    with psycopg.connect(old) as conn:
        from nac.store.migrations import migrate_postgres

        migrate_postgres(conn, 6)
    r = nac("policy", "apply", str(tmp_path / "v1.toml"), "--store", old, "--state-dir",
            str(tmp_path / "u"))
    assert r.returncode == 1 and "nac store migrate" in r.stderr, r.stderr


def test_servers_follow_the_site_policy(pg_server: PgServer, tmp_path: Path,  # noqa: F811
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url = pg_server.create_database(migrate=True)
    # The servers learn their store from NAC_STORE as well as --store (the LivePolicy a
    # server builds reads the environment until nac/app.py passes cfg.store to it).
    monkeypatch.setenv("NAC_STORE", url)
    servers: list[NacServer] = []
    cli_state = tmp_path / "cli"  # the operator's host: no server runs there

    def start(name: str, workers: int = 1) -> NacServer:
        (tmp_path / name).mkdir()
        srv = start_server(tmp_path / name, "--store", url, "--workers", str(workers))
        servers.append(srv)
        return srv

    def live_servers() -> list[dict]:
        out = nac("policy", "status", "--store", url, "--json", check=True).stdout
        return [s for s in json.loads(out)["servers"] if s["live"]]

    try:
        # a: a pool of two worker processes on one state dir, each follows on its own.
        a, b = start("a", workers=2), start("b")
        assert mab_vlan(a) == "10" and mab_vlan(b) == "10"  # no site policy: the sample's
        assert "site policy: none published" in a.log()
        assert wait_for(lambda: len(live_servers()) == 3), live_servers()

        v1 = policy_with_vlan(tmp_path / "v1.toml", 110, "site-v1")
        t0 = time.monotonic()
        r = nac("policy", "apply", str(v1), "--store", url, "--state-dir", str(cli_state),
                "--wait", "10")
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        assert "enforced by 3 server process(es)" in r.stdout, r.stdout
        print(f"apply + every server process enforcing: {took:.2f} s")
        # Both answer with it, b included, though the CLI ran on neither's state dir; a's
        # answers come from either worker (radclient's source port picks one).
        assert {mab_vlan(a) for _ in range(8)} == {"110"}
        assert mab_vlan(b) == "110"
        for srv in (a, b):
            assert (srv.state_dir / "policy.toml").read_text() == v1.read_text()
            assert "the database's wins" in srv.log(), srv.log()
        assert {s["version"] for s in live_servers()} == {1}

        # A server started after the apply enforces the site policy from its first answer.
        c = start("c")
        assert mab_vlan(c) == "110"
        assert "site policy version 1" in c.log()

        # A server that does not follow is named by --wait (stopped: still "live" for a
        # few seconds by its last heartbeat), the others follow; it catches up on SIGCONT.
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            v2 = policy_with_vlan(tmp_path / "v2.toml", 120, "site-v2")
            r = nac("policy", "apply", str(v2), "--store", url, "--state-dir",
                    str(cli_state), "--wait", "2")
            assert r.returncode == 1, r.stdout + r.stderr
            assert "1 live server process(es) do not enforce it" in r.stderr, r.stderr
            named = f":{b.state_dir}:{b.proc.pid} (enforces version 1, last heard"
            assert named in r.stderr, r.stderr
            assert {mab_vlan(a) for _ in range(8)} == {"120"} and mab_vlan(c) == "120"
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        assert wait_for(lambda: mab_vlan(b) == "120", 5.0)

        # Edited by hand on one server: ignored and put back; the site's policy stays.
        (a.state_dir / "policy.toml").write_text(v1.read_text())
        assert wait_for(lambda: "was changed on this server (digest" in a.log(), 5.0)
        assert wait_for(lambda: (a.state_dir / "policy.toml").read_text()
                        == v2.read_text(), 5.0)
        assert {mab_vlan(a) for _ in range(8)} == {"120"}
        assert wait_for(lambda: {s["version"] for s in live_servers()} == {2}, 5.0)
        assert len(live_servers()) == 4
    finally:
        for srv in servers:
            srv.stop()
    for srv in servers:
        assert srv.proc.returncode == 0, srv.log()
    # A clean stop leaves the servers' table: nobody to wait for.
    assert live_servers() == []


def test_live_policy_takes_the_site_version_at_start(
        pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    """What `nac serve` builds: the newest site version wins over the config's policy_file;
    one this code cannot read is refused (logged) and the local policy kept; a caller that
    says "no store" (None) is not sent to NAC_STORE's."""
    from nac.runtime import LivePolicy
    from nac.store import pg_policy

    url = pg_server.create_database(migrate=True)
    own = policy_with_vlan(tmp_path / "own.toml", 130, "own")
    state = tmp_path / "state"
    state.mkdir()
    # Nothing published: the server's own policy.
    live = LivePolicy(state, state / "nac.db", str(own), store_url=url)
    assert live.policy.name == "own" and live.site is None

    # Published text this nac refuses (a key it does not know): logged, own policy kept.
    bad = sample_policy_text().replace('name = "sample"', 'name = "future"\nnew_key = 1')
    pg_policy.publish(url, bad, "future", "0" * 64)
    with caplog.at_level("ERROR", logger="nac.policy"):
        live = LivePolicy(state, state / "nac.db", str(own), store_url=url)
    assert live.policy.name == "own" and live.site is None
    assert "site policy version 1 refused by this server" in caplog.text
    assert "new_key" in caplog.text

    site = policy_with_vlan(tmp_path / "site.toml", 140, "site")
    from nac.posture.policy import load_policy

    pg_policy.publish(url, site.read_text(), "site", load_policy(site).digest)
    caplog.clear()
    with caplog.at_level("WARNING", logger="nac.policy"):
        live = LivePolicy(state, state / "nac.db", str(own), store_url=url)
    assert live.policy.name == "site" and live.policy.segments["quarantine"].vlan == 140
    assert live.site is not None and live.site.version == 2
    assert live.loaded() == (load_policy(site).digest, 2)
    assert "the config's policy_file" in caplog.text and "the database's wins" in caplog.text
    assert (state / "policy.toml").read_text() == site.read_text()

    # NAC_STORE names the store only when the caller does not: None means SQLite.
    monkeypatch.setenv("NAC_STORE", url)
    other = tmp_path / "other"
    other.mkdir()
    assert LivePolicy(other, other / "nac.db", str(own), store_url=None).policy.name == "own"
    assert LivePolicy(other, other / "nac.db", str(own)).policy.name == "site"

    # The site thread: a NOTIFY brings a new version at once; after a database restart it
    # reconnects and catches up on the version published while it was away.
    live = LivePolicy(state, state / "nac.db", str(own), store_url=url)
    live.follow_site()
    try:
        v3 = policy_with_vlan(tmp_path / "v3.toml", 150, "site-v3")
        t0 = time.monotonic()
        pg_policy.publish(url, v3.read_text(), "site-v3", load_policy(v3).digest)
        assert wait_for(lambda: live.site is not None and live.site.version == 3, 5.0)
        print(f"site thread installed a published version after {time.monotonic() - t0:.3f} s")
        # The thread sets the version, then writes the file the poll installs.
        assert wait_for(lambda: live.poll() == ["policy"], 5.0)
        assert live.policy.segments["quarantine"].vlan == 150
        with psycopg.connect(url) as conn:  # its heartbeat names the version it enforces
            assert wait_for(lambda: conn.execute(
                "SELECT version FROM site_policy_servers").fetchall() == [(3,)], 5.0)
        pg_server.restart()
        v4 = policy_with_vlan(tmp_path / "v4.toml", 160, "site-v4")
        pg_policy.publish(url, v4.read_text(), "site-v4", load_policy(v4).digest)
        assert wait_for(lambda: live.site is not None and live.site.version == 4, 10.0)
        assert wait_for(lambda: live.poll() == ["policy"], 5.0)
        assert live.policy.segments["quarantine"].vlan == 160
    finally:
        live.close()
    with psycopg.connect(url) as conn:  # a clean stop leaves the servers' table
        assert conn.execute("SELECT count(*) FROM site_policy_servers").fetchone() == (0,)
