"""`nac store migrate` / `nac store info` on both backends; servers refuse an old schema."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from nac.store import SqliteStore, open_store
from nac.store.migrations import SchemaError, latest, migrate_sqlite
from tests.conftest import nac_cmd
from tests.pg import PgServer, pg_server  # noqa: F401  (pytest fixture)


def nac(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*nac_cmd(), *args], capture_output=True, text=True, check=check,
                          timeout=120)


def test_sqlite_migrates_on_open(tmp_path: Path) -> None:
    db = tmp_path / "nac.db"
    conn = sqlite3.connect(db)
    assert migrate_sqlite(conn, 1) == (0, 1)
    conn.execute("INSERT INTO nodes (mac, first_seen, last_seen) VALUES ('m', 1, 1)")
    conn.commit()
    conn.close()
    out = json.loads(nac("store", "info", "--json", "--state-dir", str(tmp_path)).stdout)
    assert out["schema_version"] == 1 and out["rows"]["nodes"] == 1 and not out["up_to_date"]

    SqliteStore(db).close()  # a server opening the file migrates it
    out = json.loads(nac("store", "info", "--json", "--state-dir", str(tmp_path)).stdout)
    assert out["schema_version"] == latest("sqlite") and out["up_to_date"]
    assert out["rows"]["nodes"] == 1
    conn = sqlite3.connect(db)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    # migration 2 made decisions_at, migration 5 dropped it (nothing read it)
    assert "decisions_mac" in names and "decisions_at" not in names
    conn.close()


def test_sqlite_from_before_migrations(tmp_path: Path) -> None:
    """A file written by the old code (schema + version row 1, no migration runner)."""
    from nac.store.migrations import SQLITE_MIGRATIONS

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in SQLITE_MIGRATIONS[0].statements:  # what the old code created
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.commit()
    conn.close()
    r = nac("store", "migrate", "--store", f"sqlite:///{db}")
    assert r.stdout.strip() == f"sqlite:///{db}: schema version 1 -> {latest('sqlite')}"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [
        (latest("sqlite"),)]
    conn.close()


def test_postgres_migrate_and_info(pg_server: PgServer, tmp_path: Path) -> None:  # noqa: F811
    url = pg_server.create_database()
    info = json.loads(nac("store", "info", "--json", "--store", url).stdout)
    assert info["backend"] == "postgresql" and info["schema_version"] == 0

    # A server refuses the unmigrated database and says what to do.
    with pytest.raises(SchemaError, match="run `nac store migrate"):
        open_store(url, tmp_path)
    r = nac("serve", "--store", url, "--state-dir", str(tmp_path / "s"), "--auth-port",
            "1", "--workers", "1", check=False)
    assert r.returncode != 0 and "nac store migrate" in r.stderr

    # Two operators migrating at once: one waits for the other, both end at the top.
    procs = [subprocess.Popen([*nac_cmd(), "store", "migrate", "--store", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = sorted(o[0].strip() for o in outs)
    top = latest("postgresql")
    assert lines == sorted([f"{url}: schema version 0 -> {top}",
                            f"{url}: schema version {top} (up to date)"])

    s = open_store(url, tmp_path)
    s.register_node("00:00:00:00:00:01", "normal", "test")
    s.close()
    info = json.loads(nac("store", "info", "--json", "--store", url).stdout)
    assert info["schema_version"] == top and info["up_to_date"]
    assert info["rows"]["nodes"] == 1 and info["rows"]["node_changes"] == 1
    assert info["rows"]["enforcement_jobs"] == 0
    text = nac("store", "info", "--store", url).stdout
    assert "Backend:        postgresql" in text and f"Schema version: {top}" in text


def test_postgres_unreachable(tmp_path: Path) -> None:
    r = nac("store", "info", "--store", "postgresql://nac:pw@127.0.0.1:1/x", check=False)
    assert r.returncode == 1 and "cannot reach the store" in r.stderr and "pw" not in r.stderr


def test_open_store_or_fail(pg_server: PgServer, tmp_path: Path,  # noqa: F811
                            capsys: pytest.CaptureFixture[str]) -> None:
    from nac.cli.store import open_store_or_fail

    url = pg_server.create_database()
    with pytest.raises(SystemExit) as exc:
        open_store_or_fail(url, tmp_path)
    assert exc.value.code == 1
    assert "run `nac store migrate" in capsys.readouterr().err
    s = open_store_or_fail(None, tmp_path)
    assert s.url.startswith("sqlite:///")
    s.close()
